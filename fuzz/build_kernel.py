"""Build the medmask.edges kernel with sanitizers into a copy of the package.

    python fuzz/build_kernel.py OUT [--src SRC] [--cc gcc] [--fuzzer]

Copies ``SRC/medmask`` (default: this checkout's ``src/medmask``) to ``OUT/medmask`` and
compiles ``codecs/_edges_kernel.c`` there with AddressSanitizer and UndefinedBehaviorSanitizer
(``-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1``;
with ``--fuzzer``, clang's ``-fsanitize=fuzzer-no-link`` too, for atheris' coverage of the C
code). Put ``OUT`` first on ``PYTHONPATH`` and preload the sanitizer runtime (the interpreter is
not instrumented) to run anything against that build; prints the ``LD_PRELOAD`` value.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
    "-g",
    "-O1",
    "-std=c99",
    "-Wall",
    "-Werror=implicit-function-declaration",
]


def runtime(cc: str) -> str:
    """The ASan runtime to preload into an uninstrumented interpreter."""
    clang = "clang" in cc
    name = "libclang_rt.asan-x86_64.so" if clang else "libasan.so"
    out = subprocess.run(
        [cc, f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if out != name or not clang:
        return out
    # clang answers with the bare name when the runtime is not on its library path
    out = subprocess.run(
        [cc, "--print-runtime-dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return str(Path(out) / name)


def build(out: Path, src: Path, cc: str, fuzzer: bool) -> Path:
    package = out / "medmask"
    if package.exists():
        shutil.rmtree(package)
    shutil.copytree(src / "medmask", package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = package / "codecs" / f"_edges_kernel{suffix}"
    flags = [*FLAGS, "-fsanitize=fuzzer-no-link"] if fuzzer else FLAGS
    cmd = [
        cc,
        *flags,
        "-shared",
        "-fPIC",
        f"-I{sysconfig.get_paths()['include']}",
        str(package / "codecs" / "_edges_kernel.c"),
        "-o",
        str(target),
    ]
    subprocess.run(cmd, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--src", type=Path, default=ROOT / "src")
    parser.add_argument("--cc", default="gcc")
    parser.add_argument("--fuzzer", action="store_true")
    args = parser.parse_args()
    target = build(args.out, args.src, args.cc, args.fuzzer)
    print(f"built {target}", file=sys.stderr)
    print(runtime(args.cc))


if __name__ == "__main__":
    main()
