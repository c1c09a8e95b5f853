"""``medmask.cohort``: the exact rows of ``case_stats`` and ``case_compare`` (named background,
structures the case lacks, names stored in several members, Dice of structures empty on both
sides), the decode limits on either side of a comparison, and ``open_case``'s ``head``."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spacetransformer import Space

import medmask
from medmask import AllocationLimitError, LabelNotFoundError, MaskArchive, SegmentationMask
from medmask.cohort import (
    CENTROID_COLUMNS,
    COMPARE_COLUMNS,
    STATS_COLUMNS,
    case_compare,
    case_stats,
    open_case,
)

SPACE = Space(shape=(4, 6, 6), spacing=(2.0, 1.0, 1.0))


def organs() -> SegmentationMask:
    a = np.zeros((4, 6, 6), np.uint8)
    a[1:3, 1:3, 1:3] = 1
    a[0, 4:6, 4:6] = 2
    return SegmentationMask(a, {"background": 0, "liver": 1, "spleen": 2}, SPACE)


@pytest.fixture
def msk(tmp_path: Path) -> Path:
    path = tmp_path / "c.msk"
    medmask.save_mask(organs(), path)
    return path


@pytest.fixture
def twice(tmp_path: Path) -> Path:
    """An archive storing "liver" in two members."""
    b = np.zeros((4, 6, 6), np.uint8)
    b[2:4, 0:2, 0:2] = 1
    path = tmp_path / "a.mska"
    with MaskArchive(path, "w", space=SPACE) as archive:
        archive.add_segmask(organs(), "organs")
        archive.add_segmask(SegmentationMask(b, {"liver": 1}, SPACE), "second")
    return path


def test_case_stats_rows_are_exact(msk: Path) -> None:
    rows = case_stats(msk, structures=["spleen", "absent"], measures=("centroid_mm",))
    columns = [*STATS_COLUMNS, *CENTROID_COLUMNS]
    assert [list(row) for row in rows] == [columns, columns]  # no internal keys left
    spleen = dict.fromkeys(columns, None) | {
        "source": str(msk), "member": "", "structure": "spleen", "value": 2, "voxels": 4,
        "volume_ml": pytest.approx(0.008), "z0": 0, "z1": 0, "y0": 4, "y1": 5, "x0": 4,
        "x1": 5, "centroid_l_mm": 0.0, "centroid_p_mm": 4.5, "centroid_s_mm": 4.5,
    }  # fmt: skip
    absent = dict.fromkeys(columns, None) | {
        "source": str(msk), "member": "", "structure": "absent", "voxels": 0, "volume_ml": 0.0,
    }  # fmt: skip
    assert rows == [spleen, absent]
    assert [r["structure"] for r in case_stats(msk)] == ["liver", "spleen"]  # not background


def test_case_compare_skips_a_named_background_and_scores_every_structure(msk: Path) -> None:
    rows = case_compare(msk, msk)
    assert [(r["case"], r["structure"], r["dice"], r["intersection_voxels"]) for r in rows] == [
        ("c.msk", "liver", 1.0, 8),
        ("c.msk", "spleen", 1.0, 4),
    ]


@pytest.mark.parametrize("side", ["prediction", "reference"])
def test_case_compare_refuses_a_structure_stored_in_several_members(
    msk: Path, twice: Path, side: str
) -> None:
    pred, ref = (twice, msk) if side == "prediction" else (msk, twice)
    problem = rf"\['liver'\] are in several members of the {side}"
    with pytest.raises(LabelNotFoundError, match=problem):
        case_compare(pred, ref)
    stats = case_stats(twice, measures=("centroid_mm",))  # stats list each member's row
    assert [(r["member"], r["structure"], r["centroid_l_mm"]) for r in stats] == [
        ("organs", "liver", 3.0),
        ("organs", "spleen", 0.0),
        ("second", "liver", 5.0),
    ]


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A prediction and its reference (same file name, different folders): liver overlaps
    (8 and 4 voxels, 4 shared), spleen is in the prediction only, heart in the reference only,
    kidney is a label of both with no voxels."""
    pred, ref = np.zeros((4, 6, 6), np.uint8), np.zeros((4, 6, 6), np.uint8)
    pred[1:3, 1:3, 1:3] = 1
    pred[0, 4:6, 4:6] = 2
    ref[1:3, 1:3, 1:2] = 1
    ref[3, 0, 0:2] = 2
    paths = tmp_path / "preds" / "case7.msk", tmp_path / "refs" / "case7.msk"
    for path, data, labels in zip(paths, (pred, ref), ({"spleen": 2}, {"heart": 2}), strict=True):
        path.parent.mkdir()
        mapping = {"liver": 1, **labels, "kidney": 3}
        medmask.save_mask(SegmentationMask(data, mapping, SPACE), path)
    return paths


def _split_nan_dice(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows without their NaN Dice values, and the structures whose Dice was NaN."""
    nan = [row["structure"] for row in rows if math.isnan(row["dice"])]
    return [row | {"dice": None} if math.isnan(row["dice"]) else row for row in rows], nan


def test_case_compare_rows_are_exact(pair: tuple[Path, Path]) -> None:
    pred, ref = pair
    ml = 0.002  # one voxel: 2 x 1 x 1 mm
    common = {"case": "case7.msk", "prediction": str(pred), "reference": str(ref)}
    expected = {
        "heart": (0.0, 0, 2, 0),  # reference only: Dice 0
        "kidney": (None, 0, 0, 0),  # a label of both sides, empty on both: Dice NaN
        "liver": (pytest.approx(2 * 4 / 12), 8, 4, 4),
        "spleen": (0.0, 4, 0, 0),  # prediction only
        "absent": (None, 0, 0, 0),  # on neither side: Dice NaN
    }

    def row(structure: str, case: str = "case7.msk") -> dict[str, Any]:
        dice, n_pred, n_ref, both = expected[structure]
        return common | {
            "case": case, "structure": structure, "dice": dice,
            "volume_pred_ml": pytest.approx(n_pred * ml),
            "volume_ref_ml": pytest.approx(n_ref * ml),
            "volume_diff_ml": pytest.approx((n_pred - n_ref) * ml), "intersection_voxels": both,
        }  # fmt: skip

    rows = case_compare(pred, ref)
    assert [list(r) for r in rows] == [list(COMPARE_COLUMNS)] * 4
    rows, nan = _split_nan_dice(rows)
    assert nan == ["kidney"]
    assert rows == [row(s) for s in ("heart", "kidney", "liver", "spleen")]

    rows = case_compare(pred, ref, case="P7", structures=["absent", "spleen", "kidney"])
    rows, nan = _split_nan_dice(rows)
    assert nan == ["absent", "kidney"]
    assert rows == [row(s, "P7") for s in ("absent", "spleen", "kidney")]


def test_case_compare_names_a_case_after_a_path_without_folders(
    msk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(msk.parent)
    rows = case_compare(msk.name, msk.name)
    assert [(r["case"], r["prediction"], r["reference"]) for r in rows] == [("c.msk",) * 3] * 2


def test_case_compare_applies_the_decode_limits_to_both_sides(tmp_path: Path) -> None:
    narrow, copy, wide = tmp_path / "narrow.msk", tmp_path / "copy.msk", tmp_path / "wide.msk"
    medmask.save_mask(organs(), narrow)  # 144 voxels, uint8: 144 bytes
    medmask.save_mask(organs(), copy)
    data = np.asarray(organs().data, np.uint16)
    medmask.save_mask(SegmentationMask(data, organs().mapping, SPACE, bit_depth=16), wide)
    problem = "declares (4, 6, 6) uint16 = 288 bytes, above the limit of 200 bytes"
    for pred, ref in ((narrow, wide), (wide, narrow)):  # the side over the limit is named
        with pytest.raises(AllocationLimitError, match=f"^{re.escape(f'{wide}: {problem}')}"):
            case_compare(pred, ref, max_bytes=200)
    with pytest.raises(AllocationLimitError) as info:
        case_compare(narrow, copy, max_voxels=143)
    message = str(info.value)
    assert message.startswith((f"{narrow}: ", f"{copy}: ")), message
    assert "declares (4, 6, 6) = 144 voxels, above the limit of 143 " in message
    # limits the members just fit: the rows of an unbounded comparison
    assert case_compare(narrow, wide, max_voxels=144, max_bytes=288) == case_compare(narrow, wide)
    assert [r["dice"] for r in case_compare(wide, narrow, max_bytes=288)] == [1.0, 1.0]


class CountingFile(io.BytesIO):
    """A binary file object that counts its reads."""

    reads = 0

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads += 1
        return super().read(size)

    def readinto(self, buffer: Any, /) -> int:
        self.reads += 1
        return super().readinto(buffer)


def test_open_case_reads_the_head_unless_given(msk: Path) -> None:
    data = msk.read_bytes()
    assert len(data) < 65536  # the head (first read) is the whole file
    source = CountingFile(data)
    with open_case(source) as case:  # head=None: one read of the directory
        assert [m.name for m in case.directory.members] == [""]
        assert source.reads == 1
    source = CountingFile(data)
    with open_case(source, head=data) as case:
        assert [label.name for label in case.directory.members[0].descriptor.labels] == [
            "background", "liver", "spleen",
        ]  # fmt: skip
    assert source.reads == 0
    rows = case_stats(source, head=data, measures=("centroid_mm",))  # decoded from the head
    assert [(r["structure"], r["centroid_l_mm"]) for r in rows] == [("liver", 3.0), ("spleen", 0.0)]
    assert source.reads == 0
