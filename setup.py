"""Builds the optional C kernel of the medmask.edges codec (everything else is in pyproject.toml).

The kernel is optional: without a C compiler the package installs and reads every file with
its numpy decoder (slower), and writes with the codecs that need no kernel.
"""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-std=c99"]
setup(
    ext_modules=[
        Extension(
            "medmask.codecs._edges_kernel",
            ["src/medmask/codecs/_edges_kernel.c"],
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
