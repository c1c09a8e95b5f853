"""Fixtures shared by the codec tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from codec_helpers import numpy_paths

from medmask.codecs import BinaryCodec, LabelCodec


@pytest.fixture(params=[BinaryCodec, LabelCodec], ids=["binary", "labels"])
def codec_cls(request: pytest.FixtureRequest) -> type:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=["kernel", "numpy"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test with the compiled kernel (where built) and again with the numpy/Python
    edges paths."""
    with numpy_paths(request.param == "numpy"):
        yield str(request.param)
