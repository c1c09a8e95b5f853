#!/usr/bin/env python
"""Reading through zarr (``medmask.open_zarr``) against medmask's own readers.

Prints markdown tables (best of ``--reps``):

- the full-resolution 458 x 379 x 225 multi-label volume as a ``.msk``: ``load_mask`` vs
  ``open_zarr(...)["mask"][...]`` (the goal: zarr within 1.5x), plus ``dask.array.from_zarr``;
- a 3-member archive of that volume's organs, local and on a local S3 server (moto): one
  member through ``open_zarr`` vs ``MaskArchive.load_segmask``, and one structure through zarr
  (``structures/liver``, only its bbox chunks) vs decoding the whole member; GET requests and
  bytes as the server counted them.

Usage::

    python benchmarks/bench_zarr.py [--reps 5] [--data-dir benchmarks/_data]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_codecs import ensure_volume, load_zyx  # noqa: E402

import medmask  # noqa: E402
from medmask import MaskArchive, SegmentationMask  # noqa: E402
from medmask.zarr_store import open_zarr  # noqa: E402


def best_ms(fn: Callable[[], Any], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" if i == 0 else "---:" for i in range(len(header))) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def bench_msk(volume: np.ndarray, tmp: Path, reps: int) -> None:
    import dask.array as da

    mask = SegmentationMask(volume, {f"l{v}": int(v) for v in np.unique(volume) if v})
    path = tmp / "full.msk"
    size = medmask.save_mask(mask, path, chunks=32)
    expected = mask.data
    assert np.array_equal(open_zarr(path)["mask"][...], expected)
    load = best_ms(lambda: medmask.load_mask(path), reps)
    raw = best_ms(lambda: medmask.MaskFile(path).read_array(), reps)
    via_zarr = best_ms(lambda: open_zarr(path)["mask"][...], reps)
    open_only = best_ms(lambda: open_zarr(path)["mask"], reps)
    via_dask = best_ms(lambda: da.from_zarr(open_zarr(path)["mask"]).compute(), reps)
    mb = expected.nbytes / 1e6

    def row(label: str, ms: float) -> tuple[str, ...]:
        return (label, f"{ms:.1f}", f"{mb / ms * 1e3:,.0f}", f"{ms / load:.2f}")

    rows = [
        row("medmask.load_mask", load),
        row("MaskFile.read_array (no value check)", raw),
        row("open_zarr(...)['mask'][...]", via_zarr),
        ("  of which open_zarr + array metadata", f"{open_only:.1f}", "", ""),
        row("dask.array.from_zarr(...).compute()", via_dask),
    ]
    print(f"### Full-resolution .msk: {volume.shape} uint8, {size:,} bytes, 32-slice chunks\n")
    table(rows, ("reader", "ms", "MB/s", "vs load_mask"))


def build_archive(volume: np.ndarray, path: Path) -> None:
    """Three members: the full label map, and two organs as binary members."""
    with MaskArchive(path, "w") as archive:
        values = [int(v) for v in np.unique(volume) if v]
        archive.add_segmask(
            SegmentationMask(volume, {f"l{v}": v for v in values}), "labels", chunks=32
        )
        for v in (5, 17):
            archive.add_segmask(SegmentationMask(volume == v, {f"organ{v}": 1}), f"organ{v}")


def bench_archive(volume: np.ndarray, tmp: Path, reps: int, s3: Any) -> None:
    path = tmp / "case.mska"
    build_archive(volume, path)
    url = "s3://bench/case.mska"
    s3["fs"].put_file(str(path), url)
    rows = []
    with MaskArchive(path) as archive:
        member = archive.load_segmask("labels").data
        entries = archive.info()[0].labels  # the structure with the thinnest z extent
        small = min(
            (e for e in entries if e.count > 1000), key=lambda e: e.bbox[0][1] - e.bbox[0][0]
        )
        structure = archive.get_binary_mask_by_names(small.name)
    name, value = small.name, small.value
    print(f"(structure {name}: z {small.bbox[0][0]}-{small.bbox[0][1]} of {member.shape[0]})\n")
    for where, source, options in (("local", str(path), None), ("S3 (moto)", url, s3["options"])):
        assert np.array_equal(open_zarr(source, storage_options=options)["labels"][...], member)

        def archive_member(source: str = source, options: Any = options) -> None:
            with MaskArchive(source, storage_options=options) as archive:
                archive.load_segmask("labels")

        def zarr_member(source: str = source, options: Any = options) -> None:
            open_zarr(source, storage_options=options)["labels"][...]

        def whole_then_select(source: str = source, options: Any = options) -> None:
            with MaskArchive(source, storage_options=options) as archive:
                archive.load_segmask("labels").data == value  # noqa: B015

        def zarr_structure(source: str = source, options: Any = options) -> None:
            got = open_zarr(source, storage_options=options)[f"structures/{name}"][...]
            assert got.shape == structure.shape

        for label, fn in (
            ("member: MaskArchive.load_segmask", archive_member),
            ("member: open_zarr(...)['labels'][...]", zarr_member),
            ("structure: decode the member, == value", whole_then_select),
            ("structure: open_zarr(...)['structures/<name>'][...]", zarr_structure),
        ):
            ms = best_ms(fn, reps)
            requests = bytes_ = "-"
            if where != "local":
                s3["log"].clear()
                fn()
                gets = s3["log"].gets("case.mska")
                requests, bytes_ = str(len(gets)), f"{sum(g.bytes_sent or 0 for g in gets):,}"
            rows.append((where, label, f"{ms:.1f}", requests, bytes_))
    print(f"### Archive: 3 members, {path.stat().st_size:,} bytes\n")
    table(rows, ("where", "read", "ms", "GETs", "bytes received"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=HERE / "_data")
    args = parser.parse_args()
    volume = load_zyx(ensure_volume((0.8, 0.8, 0.4), args.data_dir))
    from servers import RecordingMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import s3fs

    with tempfile.TemporaryDirectory() as tmp, RecordingMotoServer() as server:
        server.create_bucket("bench")
        options = {"endpoint_url": server.endpoint_url, "key": "testing", "secret": "testing"}
        s3 = {"fs": s3fs.S3FileSystem(**options), "options": options, "log": server.log}
        bench_msk(volume, Path(tmp), args.reps)
        bench_archive(volume, Path(tmp), args.reps, s3)


if __name__ == "__main__":
    main()
