"""Fixtures shared by the codec tests."""

from __future__ import annotations

import pytest

from medmask.codecs import BinaryCodec, LabelCodec


@pytest.fixture(params=[BinaryCodec, LabelCodec], ids=["binary", "labels"])
def codec_cls(request: pytest.FixtureRequest) -> type:
    return request.param  # type: ignore[no-any-return]
