"""Mask descriptor, chunk grid and ROI parsing (docs/format.md sections 2-3)."""

from __future__ import annotations

import numpy as np
import pytest
from spacetransformer import Space

import medmask
from medmask.format.descriptor import (
    DEFAULT_CHUNK_BYTES,
    LabelEntry,
    MaskDescriptor,
    default_chunks,
    label_holders,
    parse_chunks,
    parse_roi,
    space_from_json,
    space_to_json,
)


def descriptor(shape=(7, 13, 3), chunks=(3, 5, 2)) -> MaskDescriptor:  # type: ignore[no-untyped-def]
    return MaskDescriptor(
        shape=shape,
        bit_depth=16,
        labels=(LabelEntry("a", 1, 4, ((0, 1), (2, 3), (0, 0))), LabelEntry("b", 300, 0, None)),
        codec={"id": "medmask.labels", "level": 3},
        chunks=chunks,
        space=Space(shape=shape, origin=(1.0, 2.0, 3.0), spacing=(0.5, 0.25, 4.0)),
        attributes={"k": [1, "v"]},
        created_by="test",
    )


def test_descriptor_json_roundtrip() -> None:
    d = descriptor()
    obj = d.to_json()
    assert obj["axes"] == "zyx"
    assert obj["dtype"] == "uint16"
    assert obj["labels"][1] == {"name": "b", "value": 300, "count": 0, "bbox": None}
    back = MaskDescriptor.from_json(obj, name="d")
    assert back.shape == d.shape
    assert back.labels == d.labels
    assert back.chunks == d.chunks
    assert back.attributes == d.attributes
    assert back.space == d.space
    assert back.nbytes == 7 * 13 * 3 * 2


def test_bool_descriptor_dtype_name() -> None:
    d = MaskDescriptor(shape=(1, 2, 3), bit_depth=1, labels=(), codec={"id": "x"}, chunks=(1, 2, 3))
    assert d.to_json(include_space=False)["dtype"] == "bool"
    assert "space" not in d.to_json(include_space=False)
    with pytest.raises(medmask.FormatError, match="d: invalid metadata: missing 'space'"):
        MaskDescriptor.from_json(d.to_json(), name="d")
    assert MaskDescriptor.from_json(d.to_json(), name="d", require_space=False).space is None


def test_chunk_grid_covers_the_array_once() -> None:
    d = descriptor()
    assert d.grid == (3, 3, 2)
    assert d.n_chunks == 18
    seen = np.zeros(d.shape, dtype=int)
    for i in range(d.n_chunks):
        seen[d.chunk_box(i)] += 1
    assert (seen == 1).all()
    assert d.chunk_box(17) == (slice(6, 7), slice(10, 13), slice(2, 3))  # far-edge chunk
    assert d.chunk_box(1) == (slice(0, 3), slice(0, 5), slice(2, 3))  # C order: x fastest


def test_chunks_in_roi() -> None:
    d = descriptor()
    full = parse_roi(None, d.shape)
    assert d.chunks_in(full) == list(range(18))
    roi = parse_roi((slice(3, 4), slice(4, 6), slice(0, 1)), d.shape)
    assert d.chunks_in(roi) == [6, 8]  # z-chunk 1, y-chunks 0 and 1, x-chunk 0
    for i in range(d.n_chunks):
        box = d.chunk_box(i)
        assert d.chunks_in(box) == [i]


def test_parse_chunks() -> None:
    shape = (7, 13, 3)
    assert parse_chunks(2, shape, 1) == (2, 13, 3)
    assert parse_chunks((100, 100, 100), shape, 1) == shape
    assert parse_chunks(None, shape, 1) == shape
    slices = round(DEFAULT_CHUNK_BYTES / (512 * 512))  # whole slices, about DEFAULT_CHUNK_BYTES
    assert default_chunks((1000, 512, 512), 1) == (slices, 512, 512)
    assert default_chunks((1000, 512, 512), 4) == (round(slices / 4), 512, 512)
    assert default_chunks((3, 5000, 5000), 4) == (1, 5000, 5000)  # at least one slice
    assert default_chunks((3, 5, 5), 4) == (3, 5, 5)


def test_parse_roi() -> None:
    shape = (4, 5, 6)
    assert parse_roi((1, -1, slice(None, -2)), shape) == (slice(1, 2), slice(4, 5), slice(0, 4))
    with pytest.raises(ValueError, match="step-1"):
        parse_roi((slice(None, None, 2), 0, 0), shape)
    with pytest.raises(ValueError, match="3 slices"):
        parse_roi((0, 0), shape)


def test_space_json_roundtrip_is_exact() -> None:
    space = Space(
        shape=(3, 4, 5),
        origin=(0.1, -1e-17, 12345.678901234567),
        spacing=(0.3, 1 / 3, 2.0),
        x_orientation=(0.0, 0.6, 0.8),
        y_orientation=(0.0, -0.8, 0.6),
        z_orientation=(1.0, 0.0, 0.0),
    )
    obj = space_to_json(space)
    assert obj["coordinate_system"] == "LPS"
    back = space_from_json(obj, name="s")
    for key in ("origin", "spacing", "x_orientation", "y_orientation", "z_orientation"):
        assert tuple(getattr(back, key)) == tuple(getattr(space, key))
    with pytest.raises(medmask.FormatError, match="s: invalid metadata: expected positive"):
        space_from_json({**obj, "spacing": [0.0, 1.0, 1.0]}, name="s")


def test_label_holders_is_the_one_rule_for_names_across_members() -> None:
    """A name one member holds is a structure; several members: ambiguous (all listed, in
    member order); value 0 is left out with background=False (cohort, zarr store)."""
    a = LabelEntry("a", 1, 4, None)
    shared_1, shared_2 = LabelEntry("s", 2, 1, None), LabelEntry("s", 7, 1, None)
    background = LabelEntry("bg", 0, 9, None)
    one = MaskDescriptor(shape=(1, 1, 1), bit_depth=8, labels=(a, shared_1, background),
                         codec={"id": "medmask.edges"}, chunks=(1, 1, 1))  # fmt: skip
    two = MaskDescriptor(shape=(1, 1, 1), bit_depth=8, labels=(shared_2,),
                         codec={"id": "medmask.edges"}, chunks=(1, 1, 1))  # fmt: skip
    holders = label_holders([("m1", one), ("m2", two)])
    assert holders == {"a": [("m1", a)], "s": [("m1", shared_1), ("m2", shared_2)],
                       "bg": [("m1", background)]}  # fmt: skip
    assert label_holders([("m1", one), ("m2", two)], background=False) == {
        "a": [("m1", a)],
        "s": [("m1", shared_1), ("m2", shared_2)],
    }
    assert label_holders([]) == {}
