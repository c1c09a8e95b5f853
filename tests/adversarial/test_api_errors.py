"""Every error a user can trigger through the public API is a ``MedmaskError`` (issue 7, item 6).

Each case is a misuse of the API with a plausible mistake; the error must be one of ours and
also the builtin that fits (``ValueError`` for bad values, ``TypeError`` for wrong types...).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spacetransformer import Space

import medmask
from medmask import LabelMapping, MaskArchive, MedmaskError, SegmentationMask
from medmask.codecs import BinaryCodec, LabelCodec, get_codec

SPACE = Space(shape=(4, 5, 6))


def _mask() -> SegmentationMask:
    data = np.zeros((4, 5, 6), np.uint8)
    data[1:3, 1:4, 2:5] = 1
    return SegmentationMask(data, {"liver": 1}, SPACE)


def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "m.msk"
    medmask.save_mask(_mask(), path)
    return path


def _archive(tmp_path: Path) -> Path:
    path = tmp_path / "a.mska"
    with MaskArchive(path, "w") as archive:
        archive.add_segmask(_mask(), "m")
    return path


class _NotAFile:
    pass


# (id, builtin expected besides MedmaskError, call)
CASES: list[tuple[str, type[Exception], Callable[[Path], Any]]] = [
    # arrays
    ("float array", TypeError, lambda p: SegmentationMask(np.zeros((2, 2, 2)), {})),
    ("complex array", TypeError, lambda p: SegmentationMask(np.zeros((2, 2, 2), complex), {})),
    ("object array", TypeError, lambda p: SegmentationMask(np.array([[[None]]]), {})),
    ("string array", TypeError, lambda p: SegmentationMask(np.array([[["a"]]]), {})),
    ("4-D array", ValueError, lambda p: SegmentationMask(np.zeros((1, 2, 2, 2), np.uint8), {})),
    ("2-D array", ValueError, lambda p: SegmentationMask(np.zeros((2, 2), np.uint8), {})),
    ("0-size axis", ValueError, lambda p: SegmentationMask(np.zeros((0, 2, 2), np.uint8), {})),
    ("ragged list", ValueError, lambda p: SegmentationMask([[[1]], [[1, 2]]], {"a": 1})),
    ("scalar", ValueError, lambda p: SegmentationMask(3, {"a": 3})),
    (
        "value >= 2**32",
        ValueError,
        lambda p: SegmentationMask(np.full((2, 2, 2), 2**32, np.int64), {"a": 2**32}),
    ),
    ("negative value", ValueError, lambda p: SegmentationMask(np.full((2, 2, 2), -1), {})),
    ("unmapped value", ValueError, lambda p: SegmentationMask(np.ones((2, 2, 2), np.uint8), {})),
    ("bad bit depth", ValueError, lambda p: SegmentationMask.lazy_init(12, shape=(2, 2, 2))),
    (
        "bit depth too small",
        ValueError,
        lambda p: SegmentationMask(np.full((1, 1, 2), 300), {"a": 300}, bit_depth=8),
    ),
    ("lazy_init no shape", ValueError, lambda p: SegmentationMask.lazy_init(8)),
    ("lazy_init bad shape", ValueError, lambda p: SegmentationMask.lazy_init(8, shape=(2, -1, 2))),
    (
        "space not a Space",
        TypeError,
        lambda p: SegmentationMask(np.zeros((2, 2, 2), bool), {}, space="x"),
    ),  # type: ignore[arg-type]
    (
        "space shape mismatch",
        ValueError,
        lambda p: SegmentationMask(np.zeros((2, 2, 2), bool), {}, space=SPACE),
    ),
    # mappings
    ("mapping not a mapping", TypeError, lambda p: LabelMapping(5)),  # type: ignore[arg-type]
    ("mapping of strings", TypeError, lambda p: LabelMapping(["liver"])),  # type: ignore[list-item]
    ("colliding values", ValueError, lambda p: LabelMapping({"a": 1, "b": 1})),
    ("duplicate names", ValueError, lambda p: LabelMapping([("a", 1), ("a", 2)])),
    ("name not a str", TypeError, lambda p: LabelMapping({1: 1})),  # type: ignore[dict-item]
    ("empty name", ValueError, lambda p: LabelMapping({" ": 1})),
    ("float value", TypeError, lambda p: LabelMapping({"a": 1.5})),
    ("value too big", ValueError, lambda p: LabelMapping({"a": 2**40})),
    ("unknown label", KeyError, lambda p: LabelMapping({"a": 1})["b"]),
    ("unknown value", KeyError, lambda p: LabelMapping({"a": 1}).inverse(7)),
    ("from_json not JSON", ValueError, lambda p: LabelMapping.from_json("{")),
    ("from_json nested", ValueError, lambda p: LabelMapping.from_json("[" * 100_000)),
    (
        "from_json long int",
        ValueError,
        lambda p: LabelMapping.from_json('{"a": ' + "9" * 5000 + "}"),
    ),
    ("from_json not text", TypeError, lambda p: LabelMapping.from_json(5)),  # type: ignore[arg-type]
    # building masks
    (
        "add_label value 0",
        ValueError,
        lambda p: _mask().add_label(np.ones((4, 5, 6), bool), 0, "bg"),
    ),
    ("add_label shape", ValueError, lambda p: _mask().add_label(np.ones((2, 2, 2), bool), 2, "x")),
    (
        "add_label name taken",
        ValueError,
        lambda p: _mask().add_label(np.ones((4, 5, 6), bool), 2, "liver"),
    ),
    (
        "add_label value taken",
        ValueError,
        lambda p: _mask().add_label(np.ones((4, 5, 6), bool), 1, "x"),
    ),
    ("query unknown name", KeyError, lambda p: _mask().get_binary_mask_by_names("spleen")),
    ("query unknown value", KeyError, lambda p: _mask().get_binary_mask_by_labels(9)),
    ("query bad value type", TypeError, lambda p: _mask().get_binary_mask_by_labels("x")),  # type: ignore[arg-type]
    # saving
    (
        "save a plain array",
        TypeError,
        lambda p: medmask.save_mask(np.zeros((2, 2, 2)), p / "x.msk"),
    ),  # type: ignore[arg-type]
    (
        "save bad chunks",
        ValueError,
        lambda p: medmask.save_mask(_mask(), p / "x.msk", chunks=(0, 1, 1)),
    ),
    (
        "save chunks as str",
        ValueError,
        lambda p: medmask.save_mask(_mask(), p / "x.msk", chunks="big"),
    ),
    ("save bad level", ValueError, lambda p: medmask.save_mask(_mask(), p / "x.msk", level=99)),
    (
        "save NaN attribute",
        ValueError,
        lambda p: medmask.save_mask(_mask(), p / "x.msk", attributes={"a": float("nan")}),
    ),
    (
        "save object attribute",
        ValueError,
        lambda p: medmask.save_mask(_mask(), p / "x.msk", attributes={"a": object()}),
    ),
    (
        "save surrogate attribute",
        ValueError,
        lambda p: medmask.save_mask(_mask(), p / "x.msk", attributes={"a": "\ud800"}),
    ),
    (
        "save deep attribute",
        ValueError,
        lambda p: medmask.save_mask(_mask(), p / "x.msk", attributes={"a": _nested(100)}),
    ),
    (
        "save huge int attribute",
        ValueError,
        lambda p: medmask.save_mask(_mask(), p / "x.msk", attributes={"a": 10**60}),
    ),
    (
        "save to missing dir",
        FileNotFoundError,
        lambda p: medmask.save_mask(_mask(), p / "no" / "x.msk"),
    ),
    ("save to a non-file", TypeError, lambda p: medmask.save_mask(_mask(), _NotAFile())),  # type: ignore[arg-type]
    (
        "save over existing, no overwrite",
        FileExistsError,
        lambda p: medmask.save_mask(_mask(), _saved(p), overwrite=False),
    ),
    (
        "save unknown protocol",
        ValueError,
        lambda p: medmask.save_mask(_mask(), "nosuchproto://x/y.msk"),
    ),
    # loading
    ("load missing", FileNotFoundError, lambda p: medmask.load_mask(p / "missing.msk")),
    ("load a folder", FileNotFoundError, lambda p: medmask.load_mask(p)),
    (
        "load roi with step",
        ValueError,
        lambda p: medmask.load_mask(_saved(p), roi=(slice(0, 4, 2), slice(None), slice(None))),
    ),
    (
        "load roi empty",
        ValueError,
        lambda p: medmask.load_mask(_saved(p), roi=(slice(2, 2), slice(None), slice(None))),
    ),
    (
        "load roi 2 axes",
        ValueError,
        lambda p: medmask.load_mask(_saved(p), roi=(slice(None), slice(None))),
    ),
    (
        "load roi of strings",
        ValueError,
        lambda p: medmask.load_mask(_saved(p), roi=("a", "b", "c")),
    ),
    ("load a non-file", TypeError, lambda p: medmask.load_mask(_NotAFile())),  # type: ignore[arg-type]
    ("load text file object", TypeError, lambda p: medmask.load_mask(io.StringIO("x" * 100))),  # type: ignore[arg-type]
    ("load an archive as .msk", ValueError, lambda p: medmask.load_mask(_archive(p))),
    ("read_info of a .msk as archive", ValueError, lambda p: MaskArchive(_saved(p))),
    ("load with tiny max_bytes", ValueError, lambda p: medmask.load_mask(_saved(p), max_bytes=10)),
    # archives
    ("archive bad mode", ValueError, lambda p: MaskArchive(p / "a.mska", "x")),  # type: ignore[arg-type]
    ("archive bad space", TypeError, lambda p: MaskArchive(p / "a.mska", "w", space="s")),  # type: ignore[arg-type]
    ("archive missing", FileNotFoundError, lambda p: MaskArchive(p / "none.mska")),
    ("archive unknown member", KeyError, lambda p: MaskArchive(_archive(p)).load_segmask("zz")),
    (
        "archive unknown structure",
        KeyError,
        lambda p: MaskArchive(_archive(p)).load_structure("zz"),
    ),
    (
        "archive write read-only",
        PermissionError,
        lambda p: MaskArchive(_archive(p)).add_segmask(_mask(), "n"),
    ),
    (
        "archive add non-mask",
        TypeError,
        lambda p: MaskArchive(p / "b.mska", "w").add_segmask(np.zeros(3), "n"),
    ),  # type: ignore[arg-type]
    ("archive duplicate member", ValueError, lambda p: _add_twice(p)),
    (
        "archive empty member name",
        ValueError,
        lambda p: MaskArchive(p / "c.mska", "w").add_segmask(_mask(), ""),
    ),
    (
        "archive member name not str",
        TypeError,
        lambda p: MaskArchive(p / "c.mska", "w").add_segmask(_mask(), 3),
    ),  # type: ignore[arg-type]
    ("archive space mismatch", ValueError, lambda p: _space_mismatch(p)),
    (
        "archive float structure",
        TypeError,
        lambda p: MaskArchive(p / "d.mska", "w").add_structures({"a": np.zeros((4, 5, 6))}),
    ),
    ("archive closed", ValueError, lambda p: _closed_archive(p).read_all_masks()),
    (
        "archive roi with step",
        ValueError,
        lambda p: MaskArchive(_archive(p)).load_segmask(
            "m", roi=(slice(0, 4, 2), slice(None), slice(None))
        ),
    ),
    # codecs
    ("codec float array", ValueError, lambda p: LabelCodec().encode(np.zeros(4))),
    (
        "codec 4-D array",
        ValueError,
        lambda p: LabelCodec().encode(np.zeros((1, 1, 1, 1), np.uint8)),
    ),
    ("codec binary with 2", ValueError, lambda p: BinaryCodec().encode(np.full(3, 2, np.uint8))),
    ("codec garbage", ValueError, lambda p: LabelCodec().decode(b"garbage")),
    ("codec bad level", ValueError, lambda p: LabelCodec(level=0)),
    ("codec unknown id", ValueError, lambda p: get_codec({"id": "nope"})),
    ("codec config not a dict", ValueError, lambda p: get_codec("medmask.labels")),  # type: ignore[arg-type]
]


def _nested(depth: int) -> object:
    out: object = 1
    for _ in range(depth):
        out = [out]
    return out


def _add_twice(p: Path) -> None:
    archive = MaskArchive(p / "twice.mska", "w")
    archive.add_segmask(_mask(), "m")
    archive.add_segmask(_mask(), "m")


def _space_mismatch(p: Path) -> None:
    archive = MaskArchive(p / "mismatch.mska", "w")
    archive.add_segmask(_mask(), "m")
    other = SegmentationMask(
        np.zeros((4, 5, 6), bool), {}, Space(shape=(4, 5, 6), spacing=(2, 2, 2))
    )
    archive.add_segmask(other, "o")


def _closed_archive(p: Path) -> MaskArchive:
    archive = MaskArchive(_archive(p))
    archive.close()
    return archive


@pytest.mark.parametrize(("builtin", "call"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_misuse_raises_a_medmask_error(
    tmp_path: Path, builtin: type[Exception], call: Callable[[Path], Any]
) -> None:
    with pytest.raises(MedmaskError) as info:
        call(tmp_path)
    assert isinstance(info.value, builtin), f"{type(info.value).__mro__} is not a {builtin}"
    assert str(info.value)  # every error explains itself


def test_missing_s3_credentials_is_a_permission_error(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore's NoCredentialsError is no OSError; users get a StorageCredentialsError (a
    StoragePermissionError) that says how to pass credentials."""
    path = s3.url("m.msk")
    medmask.save_mask(_mask(), path, storage_options=s3.storage_options)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    options = {"endpoint_url": s3.endpoint_url, "skip_instance_cache": True}
    with pytest.raises(medmask.StoragePermissionError, match=r"m\.msk.*no credentials") as info:
        medmask.load_mask(path, storage_options=options)
    assert isinstance(info.value, PermissionError)
    assert type(info.value) is medmask.errors.StorageCredentialsError
    assert "storage_options={'key': KEY, 'secret': SECRET}" in str(info.value)
    assert info.value.__cause__ is not None  # the backend's exception stays chained
    assert "Credentials" in type(info.value.__cause__).__name__ or "credentials" in str(info.value)
