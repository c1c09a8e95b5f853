"""Fixtures shared by the codec tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from codec_helpers import numpy_paths

from medmask.codecs import CODECS


@pytest.fixture(params=list(CODECS.values()), ids=[i.rpartition(".")[2] for i in CODECS])
def codec_cls(request: pytest.FixtureRequest) -> type:
    """Every codec of the registry (so a new codec runs through the shared tests)."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=["kernel", "numpy"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test with the compiled kernel (where built) and again with the numpy/Python
    edges paths."""
    with numpy_paths(request.param == "numpy"):
        yield str(request.param)
