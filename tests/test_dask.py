"""``medmask.dask``: cohort statistics and prediction/reference comparison over synthetic
cohorts on the local S3 server, with threads and with a 2-process ``LocalCluster``."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import cohort_data as cd
import medmask
from medmask.dask import cohort_stats, compare
from servers import BucketFixture

N_CASES = 200
N_COMPARE = 50


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """200 references and 50 predictions, written once (uploaded per test)."""
    root = tmp_path_factory.mktemp("cohort")
    files: dict[str, bytes] = {}
    truth: dict[str, dict[str, Any]] = {}
    spaces = {}
    refs, preds = {}, {}
    for seed in range(N_CASES):
        structures, space, data = cd.reference(seed)
        name = cd.file_name(seed)
        files[f"refs/{name}"] = data
        truth[name] = cd.truth_stats(name, structures, space)
        refs[name], spaces[name] = structures, space
        if seed < N_COMPARE:
            p_structures, _, p_data = cd.prediction(seed)
            files[f"preds/{name}"] = p_data
            preds[name] = p_structures
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return {"root": root, "files": files, "truth": truth, "refs": refs, "preds": preds,
            "spaces": spaces}  # fmt: skip


def _upload(bucket: BucketFixture, files: dict[str, bytes]) -> None:
    for key, data in files.items():
        bucket.fs.pipe_file(bucket.path(key), data)
    bucket.fs.invalidate_cache()
    bucket.log.clear()


def _assert_stats(frame: pd.DataFrame, truth: dict[str, dict[str, Any]], prefix: str) -> None:
    assert list(frame.columns) == list(cd_columns())
    assert frame["source"].str.startswith(prefix).all()
    seen = 0
    for _, row in frame.iterrows():
        name = row["source"].rsplit("/", 1)[-1]
        expected = truth[name][row["structure"]]
        assert row["voxels"] == expected["voxels"], (name, row["structure"])
        assert row["volume_ml"] == pytest.approx(expected["volume_ml"], rel=1e-12)
        for key in ("z0", "z1", "y0", "y1", "x0", "x1"):
            got = None if pd.isna(row[key]) else int(row[key])
            assert got == expected[key], (name, row["structure"], key)
        assert row["value"] == cd.LABELS[row["structure"]]
        assert (row["member"] == "") == name.endswith(".msk")
        seen += 1
    assert seen == sum(len(t) for t in truth.values())


def cd_columns() -> tuple[str, ...]:
    from medmask.cohort import STATS_COLUMNS

    return STATS_COLUMNS


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any chunk decode fails the test (threaded scheduler: same process)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a codec decode was called")

    monkeypatch.setattr(medmask.codecs.LabelCodec, "_decode", refuse)
    monkeypatch.setattr(medmask.codecs.BinaryCodec, "_decode", refuse)


def test_cohort_stats_threads_one_get_per_case(
    s3: BucketFixture, cohort_files: dict[str, Any], no_decoding: None
) -> None:
    _upload(s3, {k: v for k, v in cohort_files["files"].items() if k.startswith("refs/")})
    frame = cohort_stats(s3.url("refs/*.msk*"), storage_options=s3.storage_options)
    _assert_stats(frame, cohort_files["truth"], f"s3://{s3.bucket}/refs/case")
    gets = [r for r in s3.log.gets() if "/refs/case" in r.path]
    assert len(gets) == N_CASES, s3.log.summary()
    assert {r.path.rsplit("/", 1)[-1] for r in gets} == set(cohort_files["truth"])
    assert all(r.range == "bytes=0-65535" for r in gets)
    assert not s3.log.filter("HEAD")


def test_cohort_stats_on_a_local_cluster(
    s3: BucketFixture, cohort_files: dict[str, Any], cluster: Any
) -> None:
    _upload(s3, {k: v for k, v in cohort_files["files"].items() if k.startswith("refs/")})
    urls = [s3.url(f"refs/{name}") for name in sorted(cohort_files["truth"])]
    frame = cohort_stats(urls, storage_options=s3.storage_options, client=cluster)
    _assert_stats(frame, cohort_files["truth"], f"s3://{s3.bucket}/refs/case")
    gets = [r for r in s3.log.gets() if "/refs/case" in r.path]
    assert len(gets) == N_CASES, s3.log.summary()
    assert len(cluster.scheduler_info()["workers"]) == 2


def test_structure_filter_and_centroids(cohort_files: dict[str, Any]) -> None:
    root: Path = cohort_files["root"]
    paths = [str(root / "refs" / cd.file_name(seed)) for seed in range(12)]
    frame = cohort_stats(paths, structures=["tumor", "liver"], measures=("centroid_mm",))
    assert list(frame.columns[-3:]) == ["centroid_l_mm", "centroid_p_mm", "centroid_s_mm"]
    assert len(frame) == 2 * 12
    for _, row in frame.iterrows():
        name = row["source"].rsplit("/", 1)[-1]
        mask = cohort_files["refs"][name].get(row["structure"])
        if mask is None or not mask.any():
            assert row["voxels"] == 0
            assert pd.isna(row["centroid_l_mm"])
            continue
        space = cohort_files["spaces"][name]
        index = np.array([w.mean() for w in np.nonzero(mask)])
        axes = np.stack(
            [np.asarray(getattr(space, f"{a}_orientation")) * s
             for a, s in zip("xyz", space.spacing, strict=True)]
        )  # fmt: skip
        expected = np.asarray(space.origin) + index @ axes
        got = row[["centroid_l_mm", "centroid_p_mm", "centroid_s_mm"]].to_numpy(float)
        np.testing.assert_allclose(got, expected, atol=1e-9)


def _assert_compare(frame: pd.DataFrame, cohort: dict[str, Any], names: list[str]) -> None:
    from medmask.cohort import COMPARE_COLUMNS

    assert list(frame.columns) == list(COMPARE_COLUMNS)
    for name in names:
        expected = cd.truth_compare(
            cohort["preds"][name], cohort["refs"][name], cohort["spaces"][name]
        )
        rows = frame[frame["case"] == name].set_index("structure")
        assert sorted(rows.index) == sorted(expected), name
        for structure, want in expected.items():
            got = rows.loc[structure]
            if math.isnan(want["dice"]):
                assert math.isnan(got["dice"]), (name, structure)
            else:
                assert got["dice"] == pytest.approx(want["dice"], abs=0, rel=1e-12), (
                    name,
                    structure,
                )
            for key in ("volume_pred_ml", "volume_ref_ml", "volume_diff_ml"):
                assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), (name, key)
            assert got["intersection_voxels"] == want["intersection_voxels"], (name, structure)


def test_compare_equals_numpy_including_missing_and_empty(
    s3: BucketFixture, cohort_files: dict[str, Any]
) -> None:
    _upload(s3, cohort_files["files"])
    frame = compare(  # the 50 references that have a prediction: case0000 ... case0049
        s3.url("preds/*.msk*"), s3.url("refs/case00[0-4]?.msk*"), storage_options=s3.storage_options
    )
    names = sorted(cohort_files["preds"])
    _assert_compare(frame, cohort_files, names)
    # every kind of case is in there
    assert (frame["dice"] == 0).any()  # kidney_right missed, spleen empty in the prediction
    assert (frame["structure"] == "gallbladder").any()  # only in some predictions
    cases = {r.path.rsplit("/", 1)[-1] for r in s3.log.gets() if "/case" in r.path}
    assert cases == set(names)  # the 150 references without a prediction are not read


def test_compare_on_a_local_cluster_with_explicit_pairs(
    s3: BucketFixture, cohort_files: dict[str, Any], cluster: Any
) -> None:
    _upload(s3, cohort_files["files"])
    names = sorted(cohort_files["preds"])[:20]
    pairs = [(s3.url(f"preds/{n}"), s3.url(f"refs/{n}")) for n in names]
    frame = compare(pairs, storage_options=s3.storage_options, client=cluster)
    _assert_compare(frame, cohort_files, names)


def test_compare_reads_only_the_bboxes_of_intersecting_structures(s3: BucketFixture) -> None:
    """Cases big enough that chunks lie past the first 64 KiB read: the bytes the server sends
    are the head reads plus exactly the chunks inside each side's bbox of the structures whose
    bboxes intersect (a whole bbox, so that its stored count can be checked)."""
    shape = (48, 64, 64)
    space = cd.synthetic_space(shape)
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 200, shape, dtype=np.uint8)  # incompressible: ~190 KB
    ref = {"organ": np.zeros(shape, bool), "far": np.zeros(shape, bool)}
    ref["organ"][30:40, 10:50, 10:50] = True
    ref["far"][2:6, 5:9, 5:9] = True
    pred = {"organ": np.roll(ref["organ"], 2, axis=0), "far": np.roll(ref["far"], 20, axis=0)}
    files = {}
    chunk_bytes = 0
    for side, structures in (("ref", ref), ("pred", pred)):
        buf = io.BytesIO()
        with medmask.MaskArchive(buf, "w", space=space) as archive:
            mapping = {f"n{v}": v for v in range(1, 200)}
            archive.add_segmask(medmask.SegmentationMask(noise, mapping, space), "noise")
            for name, mask in structures.items():
                member = medmask.SegmentationMask(mask, {name: 1}, space)
                archive.add_segmask(member, name, chunks=4)
        files[f"{side}/case.mska"] = buf.getvalue()
        with medmask.MaskArchive(io.BytesIO(buf.getvalue())) as archive:
            organ = archive._directory.member("organ")
            assert organ is not None
            stored = organ.index["length"] > 0
            assert int(organ.index["offset"][stored].min()) > 65536  # past the first read
            # the organs' bboxes intersect; ref's is z 30..39, pred's z 32..41 (4-slice chunks)
            chunks = (7, 8, 9) if side == "ref" else (8, 9, 10)
            chunk_bytes += sum(int(organ.index["length"][i]) for i in chunks)
    _upload(s3, files)
    frame = compare(
        [(s3.url("pred/case.mska"), s3.url("ref/case.mska"))],
        structures=["organ", "far"],
        storage_options=s3.storage_options,
    )
    rows = frame.set_index("structure")
    assert rows.loc["organ", "intersection_voxels"] == 8 * 40 * 40
    assert rows.loc["far", "dice"] == 0  # disjoint bboxes: nothing decoded
    body = sum(r.bytes_sent or 0 for r in s3.log.gets())
    assert body == 2 * 65536 + chunk_bytes, s3.log.summary()
    assert len(s3.log.filter("GET")) == 4  # one head and one merged chunk read per side


def test_failures_are_error_rows(s3: BucketFixture, cohort_files: dict[str, Any]) -> None:
    good = {k: v for k, v in cohort_files["files"].items() if k.startswith("refs/")}
    names = sorted(cohort_files["truth"])[:6]
    files = {f"refs/{n}": good[f"refs/{n}"] for n in names}
    files["refs/corrupt.mska"] = b"\x89MSA\r\n\x1a\n" + bytes(200)
    _upload(s3, files)
    urls = [s3.url(f"refs/{n}") for n in [*names[:3], "corrupt.mska", "missing.mska", *names[3:]]]
    frame = cohort_stats(urls, storage_options=s3.storage_options)
    assert list(frame.columns)[-1] == "error"
    errors = frame[frame["error"].notna()]
    assert list(errors["source"]) == [urls[3], urls[4]]
    assert "FormatError" in errors.iloc[0]["error"] or "ChecksumError" in errors.iloc[0]["error"]
    assert "MaskFileNotFoundError" in errors.iloc[1]["error"]
    _assert_stats(
        frame[frame["error"].isna()].drop(columns="error"),
        {n: cohort_files["truth"][n] for n in names},
        f"s3://{s3.bucket}/refs/case",
    )
    with pytest.raises(medmask.MaskFileNotFoundError):
        cohort_stats([urls[4]], storage_options=s3.storage_options, errors="raise")


def test_compare_space_mismatch_and_unpaired_files(
    tmp_path: Path, cohort_files: dict[str, Any]
) -> None:
    root: Path = cohort_files["root"]
    (tmp_path / "preds").mkdir()
    (tmp_path / "refs").mkdir()
    a, b = cd.file_name(3), cd.file_name(6)
    (tmp_path / "refs" / a).write_bytes((root / "refs" / a).read_bytes())
    (tmp_path / "preds" / a).write_bytes((root / "refs" / b).read_bytes())  # another space
    (tmp_path / "preds" / "only_pred.mska").write_bytes((root / "refs" / b).read_bytes())
    frame = compare(str(tmp_path / "preds" / "*"), str(tmp_path / "refs" / "*"))
    by_case = frame.set_index("case")["error"]
    assert "SpaceMismatchError" in by_case[a]
    assert f"case {a!r}" in by_case[a]
    assert "no reference" in by_case["only_pred.mska"]
    with pytest.raises(medmask.SpaceMismatchError, match=a):
        compare(str(tmp_path / "preds" / a), str(tmp_path / "refs" / a), errors="raise")


def test_progress_bar_and_argument_errors(cohort_files: dict[str, Any], capsys: Any) -> None:
    root: Path = cohort_files["root"]
    frame = cohort_stats(str(root / "refs" / "case000*.mska"), progress=True)
    assert len(frame)
    assert "100%" in capsys.readouterr().out
    with pytest.raises(medmask.InvalidValueError, match="errors="):
        cohort_stats([], errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(medmask.InvalidValueError, match="measures"):
        cohort_stats([str(root / "refs" / cd.file_name(0))], measures=("volume",), errors="raise")
    assert list(cohort_stats([]).columns) == list(cd_columns())


def test_unknown_structure_names_are_a_did_you_mean_error(
    cohort_files: dict[str, Any], tmp_path: Path
) -> None:
    """A name that no case holds is a typo (issue 19: ``--structures multy`` printed a 0-voxel
    row); a name only some cases lack stays a 0-voxel row."""
    root: Path = cohort_files["root"]
    paths = [str(root / "refs" / cd.file_name(seed)) for seed in range(4)]
    names = medmask.cohort.structure_names(paths[0])
    assert "liver" in names
    with pytest.raises(medmask.errors.LabelNotFoundError) as info:
        cohort_stats(paths, structures=["livr", "liver"])
    assert str(info.value) == (
        "No case has a structure named 'livr'. Did you mean 'liver'? "
        f"(asked for in structures=; {paths[0]} has {', '.join(names)})."
    )
    assert isinstance(info.value, KeyError)
    with pytest.raises(medmask.errors.LabelNotFoundError, match=r"'zzz'\. No case .* 'livr'"):
        cohort_stats(paths, structures=["zzz", "livr"])
    # absent from some cases only (case0001 and case0002 have no tumor): 0-voxel rows
    assert [("tumor" in cohort_files["refs"][cd.file_name(s)]) for s in range(4)] == [
        True, False, False, True
    ]  # fmt: skip
    frame = cohort_stats(paths, structures=["tumor"])
    assert list(frame["voxels"] == 0) == [False, True, True, False]
    # nothing read (every case failed): the error rows say why, no name is judged
    frame = cohort_stats([str(tmp_path / "gone.msk")], structures=["livr"])
    assert frame["error"].notna().all()


def test_compare_unknown_structure_names(cohort_files: dict[str, Any]) -> None:
    root: Path = cohort_files["root"]
    pairs = [
        (str(root / "preds" / cd.file_name(s)), str(root / "refs" / cd.file_name(s)))
        for s in range(3)
    ]
    with pytest.raises(medmask.errors.LabelNotFoundError) as info:
        compare(pairs, structures=["spleen", "splen"])
    assert str(info.value).startswith(
        "No case has a structure named 'splen'. Did you mean 'spleen'?"
    )
    frame = compare(pairs, structures=["spleen"])
    assert set(frame["structure"]) == {"spleen"}
