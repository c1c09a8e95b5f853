"""``medmask.cohort``: the exact rows of ``case_stats`` and ``case_compare`` (named background,
structures the case lacks, names stored in several members)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from spacetransformer import Space

import medmask
from medmask import LabelNotFoundError, MaskArchive, SegmentationMask
from medmask.cohort import CENTROID_COLUMNS, STATS_COLUMNS, case_compare, case_stats

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
