"""Cohort statistics and comparisons read hostile files with the checks and limits of
``load_mask`` (issue 17, item 3): ``case_stats`` / ``case_compare`` raise a ``MedmaskError``,
never a builtin error; ``dask.cohort_stats`` / ``dask.compare`` make it that case's error row
and read the other cases."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import crafted
import numpy as np
import pytest
from spacetransformer import Space

import medmask
from medmask import AllocationLimitError, FormatError, MedmaskError, SegmentationMask
from medmask.codecs import EdgesCodec
from medmask.cohort import case_compare, case_stats

SHAPE = (6, 8, 8)
HUGE = 1 << 20


def _edges_msk(array: np.ndarray, labels: list[dict[str, Any]], **kw: Any) -> bytes:
    meta = crafted.descriptor(array.shape, labels=labels, codec="medmask.edges", **kw)
    return crafted.msk(meta, [EdgesCodec().encode(np.ascontiguousarray(array))])


def hostile_files(root: Path) -> dict[str, Path]:
    """One file per kind of lie, each with valid CRCs."""
    organ = np.zeros(SHAPE, np.uint8)
    organ[1:3, 2:4, 2:6] = 1  # 16 voxels, bbox z 1-2, y 2-3, x 2-5
    truth = {"name": "organ", "value": 1, "count": 16, "bbox": [[1, 2], [2, 3], [2, 5]]}
    files = {
        # 2^60 voxels declared, one all-zero chunk, a label whose bbox is everything (611 bytes)
        "huge": crafted.msk(
            crafted.descriptor(
                [HUGE] * 3,
                labels=[{"name": "organ", "value": 1, "count": 1, "bbox": [[0, HUGE - 1]] * 3}],
            ),
            [b""],
        ),
        # a uint16 stream (258 reads as 2 if cast) in a uint8 file
        "wide": crafted.msk(
            crafted.descriptor(SHAPE, labels=[truth], codec="medmask.edges"),
            [EdgesCodec().encode(np.where(organ == 1, 258, 0).astype(np.uint16))],
        ),
        # a (3, 4, 4) stream in the (6, 8, 8) chunk
        "small": crafted.msk(
            crafted.descriptor(SHAPE, labels=[truth], codec="medmask.edges"),
            [EdgesCodec().encode(np.ascontiguousarray(organ[:3, :4, :4]))],
        ),
        # the bbox says z 2-3: 16 voxels fit there, 8 are there (the other 8 are in z 1)
        "lying-bbox": _edges_msk(organ, [{**truth, "bbox": [[2, 3], [2, 3], [2, 5]]}]),
        # a chunk index entry past the end of the file
        "past-end": crafted.msk(
            crafted.descriptor(SHAPE, labels=[truth], codec="medmask.edges"),
            entries=crafted.index([(4096, 1 << 20, 0)]),
        ),
    }
    out = {}
    for name, data in files.items():
        out[name] = root / f"{name}.msk"
        out[name].write_bytes(data)
    assert len(files["huge"]) < 700
    return out


@pytest.fixture
def sound(tmp_path: Path) -> Path:
    data = np.zeros(SHAPE, np.uint8)
    data[1:3, 2:4, 2:6] = 1
    path = tmp_path / "sound.msk"
    medmask.save_mask(SegmentationMask(data, {"organ": 1}, Space(shape=SHAPE)), path)
    return path


EXPECTED = {
    "huge": (AllocationLimitError, "declares"),
    "wide": (FormatError, r"chunk 0 cannot be decoded: .*dtype uint8 .*Got .*dtype uint16"),
    "small": (FormatError, r"shape \(6, 8, 8\)\. Got .*shape \(3, 4, 4\)"),
    "lying-bbox": (FormatError, r"label 'organ' \(value 1\): expected the 16 voxels .*Got 8"),
    "past-end": (FormatError, "points past the end of the file"),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_case_stats_and_compare_refuse_hostile_files_with_medmask_errors(
    tmp_path: Path, sound: Path, kind: str
) -> None:
    path = hostile_files(tmp_path)[kind]
    error, problem = EXPECTED[kind]
    rows = case_stats(path)  # the stored statistics alone: nothing decoded, nothing refused
    assert [(r["structure"], r["voxels"]) for r in rows] == [("organ", 16 if kind != "huge" else 1)]
    with pytest.raises(error, match=problem) as info:
        case_stats(path, measures=("centroid_mm",))
    assert str(path) in str(info.value)
    if kind == "huge":  # not the sound file's space: a SpaceMismatchError comes first
        with pytest.raises(error, match=problem):
            case_compare(path, path)
        return
    for pred, ref in ((path, sound), (sound, path)):
        with pytest.raises(error, match=problem):
            case_compare(pred, ref)


def test_dask_turns_every_hostile_case_into_an_error_row(tmp_path: Path, sound: Path) -> None:
    from medmask.dask import cohort_stats, compare

    files = hostile_files(tmp_path)
    sources = [sound, *files.values()]
    frame = cohort_stats([str(p) for p in sources], measures=("centroid_mm",))
    by_source = frame.set_index("source")
    assert by_source.loc[str(sound), "error"] is None or np.isnan(
        by_source.loc[str(sound), "error"]
    )
    # identity geometry: LPS = (z, y, x) index of the centroid of z 1-2, y 2-3, x 2-5
    assert by_source.loc[
        str(sound), ["centroid_l_mm", "centroid_p_mm", "centroid_s_mm"]
    ].tolist() == ([1.5, 2.5, 3.5])
    for kind, path in files.items():
        error = by_source.loc[str(path), "error"]
        assert error.startswith(EXPECTED[kind][0].__name__), error
        assert "internal error" not in error
    pairs = [(str(sound), str(p)) for k, p in files.items() if k != "huge"]
    pairs.append((str(files["huge"]), str(files["huge"])))
    rows = compare(pairs, structures=["organ"]).set_index("reference")
    for kind, path in files.items():
        error = rows.loc[str(path), "error"]
        assert error.startswith(EXPECTED[kind][0].__name__), error
        assert "internal error" not in error


def test_max_voxels_is_honoured_by_every_cohort_read(
    tmp_path: Path, sound: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medmask.dask import cohort_stats, compare

    limit = "above the limit of 100"
    with pytest.raises(AllocationLimitError, match=limit):
        case_stats(sound, measures=("centroid_mm",), max_voxels=100)
    with pytest.raises(AllocationLimitError, match="above the limit of 100 bytes"):
        case_stats(sound, measures=("centroid_mm",), max_bytes=100)
    with pytest.raises(AllocationLimitError, match=limit):
        case_compare(sound, sound, max_voxels=100)
    assert case_stats(sound, max_voxels=100)[0]["voxels"] == 16  # nothing decoded
    assert case_compare(sound, sound, max_voxels=384)[0]["dice"] == 1.0
    frame = cohort_stats([str(sound)], measures=("centroid_mm",), max_voxels=100)
    assert frame["error"].str.contains(limit).all()
    frame = compare([(str(sound), str(sound))], max_voxels=100)
    assert frame["error"].str.contains(limit).all()
    with medmask.config.set(max_voxels=100), pytest.raises(AllocationLimitError, match=limit):
        case_compare(sound, sound)
    with medmask.config.set(max_voxels=100):  # the client's settings travel to the tasks
        frame = compare([(str(sound), str(sound))])
    assert frame["error"].str.contains(limit).all()


def test_an_unexpected_exception_is_an_internal_error_row(
    sound: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medmask.dask as mdask

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(mdask, "case_stats", broken)
    frame = mdask.cohort_stats([str(sound)])
    assert frame["error"].tolist() == [
        "internal error (a medmask bug, please report it): RuntimeError: a bug"
    ]
    with pytest.raises(RuntimeError, match="a bug"):
        mdask.cohort_stats([str(sound)], errors="raise")

    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(mdask, "case_compare", out_of_memory)
    with pytest.raises(MemoryError):  # never hidden: the engine's limits bound allocations
        mdask.compare([(str(sound), str(sound))])
    assert issubclass(AllocationLimitError, MedmaskError)


def test_a_label_stored_without_count_or_bbox_has_no_voxels(tmp_path: Path, sound: Path) -> None:
    """docs/format.md, section 2: a reader takes a missing ``count`` as 0 and a missing ``bbox``
    as null (another writer's file; one all-zero chunk)."""
    path = tmp_path / "no-count.msk"
    meta = crafted.descriptor(SHAPE, labels=[{"name": "organ", "value": 1}])
    path.write_bytes(crafted.msk(meta, [b""]))
    bbox = dict.fromkeys(["z0", "z1", "y0", "y1", "x0", "x1"])
    centroid = dict.fromkeys(["centroid_l_mm", "centroid_p_mm", "centroid_s_mm"])
    assert case_stats(path, measures=("centroid_mm",)) == [
        {"source": str(path), "member": "", "structure": "organ", "value": 1, "voxels": 0,
         "volume_ml": 0.0, **bbox, **centroid}
    ]  # fmt: skip
    ml = 0.001  # one voxel: 1 mm^3
    [row] = case_compare(path, sound)  # in the reference only: Dice 0
    assert row == {
        "case": "no-count.msk", "prediction": str(path), "reference": str(sound),
        "structure": "organ", "dice": 0.0, "volume_pred_ml": 0.0,
        "volume_ref_ml": pytest.approx(16 * ml), "volume_diff_ml": pytest.approx(-16 * ml),
        "intersection_voxels": 0,
    }  # fmt: skip
    [row] = case_compare(path, path)  # empty on both sides: Dice NaN
    assert math.isnan(row.pop("dice"))
    assert row == {
        "case": "no-count.msk", "prediction": str(path), "reference": str(path),
        "structure": "organ", "volume_pred_ml": 0.0, "volume_ref_ml": 0.0, "volume_diff_ml": 0.0,
        "intersection_voxels": 0,
    }  # fmt: skip
