#!/usr/bin/env python
"""Round trips, not bytes: medmask reads against an S3 server that answers late.

A moto S3 server runs in a separate process (so that it does not compete with the reader for
the GIL) behind a per-request delay of 0, 10, 30 and 100 ms. For every scenario and latency
the table gives seconds, requests and bytes the server sent, and the round trips paid:
(seconds at L - seconds at 0) / L, which does not depend on the machine's speed.

Scenarios:

- cohort: per-structure statistics of ``--cases`` small cases (``medmask.dask.cohort_stats``,
  batched heads), the same one case per task (``max_concurrency=1``), and the naive loop
  (one ``load_mask`` per case, then counting);
- archive: one structure of a 117-member TotalSegmentator archive plus a noise member (the
  structure's chunks beyond the first read): ``MaskArchive`` cold, warm with the head cache,
  and through ``open_zarr``;
- ROI: half of a full-resolution 0.5 mm label volume (``../shared/tools``) from a ``.msk``
  (``load_mask(roi=)``) against zarr's own concurrency on the same chunks (a zarr v3 array with
  medmask's serializer, read through zarr's ``FsspecStore``).

Usage::

    python benchmarks/bench_latency.py            # 1,000 cases, 0/10/30/100 ms (minutes)
    python benchmarks/bench_latency.py --quick    # 200 cases, 0/30 ms
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
sys.path.insert(0, str(HERE.parent / "tests"))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from s3_process import Server  # noqa: E402

import medmask  # noqa: E402
from cohort_data import msk_case_bytes  # noqa: E402
from medmask import MaskArchive, SegmentationMask  # noqa: E402
from medmask.io import head_cache  # noqa: E402

SHARED = HERE.parent / ".." / "shared"
BUCKET = "bench"


# --- the server, in its own process ------------------------------------------------------------


# --- data --------------------------------------------------------------------------------------


def organs_archive(path: Path) -> None:
    """117 TotalSegmentator organs, one member each, and a noise member (beyond the head)."""
    from medmask.interop.folders import pack_folder

    totalseg = SHARED / "data" / "totalseg"
    pack_folder(totalseg / "organs", path, labels=totalseg / "labels_total.json")
    with MaskArchive(path) as packed:
        space = packed.space
        assert space is not None
        organs = {
            name: SegmentationMask(packed.load_structure(name), {name: 1}, space)
            for name in packed.structures()
        }
    shape = tuple(int(s) for s in space.shape)
    noise = np.random.default_rng(0).integers(0, 200, shape).astype(np.uint8)
    with MaskArchive(path, "w", space=space) as archive:
        for name, mask in organs.items():
            archive.add_segmask(mask, name)
        archive.add_segmask(
            SegmentationMask(noise, {f"n{v}": v for v in range(1, 200)}, space), "noise"
        )


def full_volume() -> np.ndarray:
    import nibabel as nib

    path = HERE / "_data" / "full_0.5x0.5x0.5.nii.gz"
    if not path.exists():
        import subprocess

        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(SHARED / "tools" / "upsample_labels.py"), "--out", str(path),
             "--spacing", "0.5", "0.5", "0.5"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return np.ascontiguousarray(np.asarray(nib.load(path).dataobj).transpose(2, 1, 0))


# --- measuring ---------------------------------------------------------------------------------


def measure(
    server: Server, fn: Callable[[], Any], setup: Callable[[], Any] | None
) -> tuple[float, int, int, Any]:
    """Seconds (the best of 3 runs when a run takes under 2 s; setup before each run),
    requests and bytes of the last run, and its result."""
    best = float("inf")
    for _ in range(3):
        if setup is not None:
            setup()
        server.call("clear")
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        best = min(best, seconds)
        requests, sent = server.call("stats")
        if seconds > 2.0:
            break
    return best, requests, sent, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 cases, latencies 0 and 30 ms")
    ap.add_argument("--cases", type=int, default=None, help="cohort size (default 1000)")
    args = ap.parse_args()
    cases = args.cases or (200 if args.quick else 1000)
    latencies = (0.0, 0.03) if args.quick else (0.0, 0.01, 0.03, 0.1)

    import s3fs
    import zarr

    from medmask.codecs.zarr3 import EdgesCodec
    from medmask.dask import cohort_stats
    from medmask.zarr_store import open_zarr

    server = Server(BUCKET)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.options)
    opts = server.options
    print(f"uploading {cases} cases, an archive and a full-resolution volume ...", file=sys.stderr)
    urls = []
    for i in range(cases):
        fs.pipe(f"{BUCKET}/cases/case{i:04d}.msk", msk_case_bytes(i))
        urls.append(f"s3://{BUCKET}/cases/case{i:04d}.msk")
    with tempfile.TemporaryDirectory() as tmp:
        organs_archive(Path(tmp) / "organs.mska")
        fs.put_file(str(Path(tmp) / "organs.mska"), f"{BUCKET}/organs.mska")
        volume = full_volume()
        names = {f"l{v}": int(v) for v in np.flatnonzero(np.bincount(volume.ravel())) if v}
        big = SegmentationMask(volume, names)
        medmask.save_mask(big, Path(tmp) / "full.msk", chunks=32)
        fs.put_file(str(Path(tmp) / "full.msk"), f"{BUCKET}/full.msk")
    store = zarr.storage.FsspecStore.from_url(f"s3://{BUCKET}/full.zarr", storage_options=opts)
    zarr.create_array(
        store, shape=volume.shape, chunks=(32, *volume.shape[1:]), dtype=volume.dtype,
        serializer=EdgesCodec(), compressors=None, fill_value=0,
    )[...] = volume  # fmt: skip
    archive_url = f"s3://{BUCKET}/organs.mska"
    full_url = f"s3://{BUCKET}/full.msk"
    half = volume.shape[0] // 2
    roi = (slice(half // 2, half // 2 + half), slice(None), slice(None))

    def naive() -> int:
        total = 0
        for url in urls:
            mask = medmask.load_mask(url, storage_options=opts)
            total += int(np.count_nonzero(np.bincount(mask.data.reshape(-1))))
        return total

    def archive_read() -> Any:
        with MaskArchive(archive_url, storage_options=opts) as archive:
            return archive.load_structure("n5")

    def warm_read() -> Any:
        head_cache.enable()
        archive_read()  # fills the cache (the row's setup: not measured)
        return None

    scenarios: list[tuple[str, str, Callable[[], Any], Callable[[], Any] | None]] = [
        (
            "cohort",
            "medmask cohort_stats (batched heads)",
            lambda: cohort_stats(urls, storage_options=opts),
            None,
        ),
        (
            "cohort",
            "cohort_stats, one case per task",
            lambda: cohort_stats(urls, storage_options=opts, max_concurrency=1),
            None,
        ),
        ("cohort", "naive loop: load_mask per case", naive, None),
        ("archive", "MaskArchive, one structure, cold", archive_read, None),
        ("archive", "MaskArchive, one structure, warm head cache", archive_read, warm_read),
        (
            "archive",
            "open_zarr(...)['structures/n5'], cold",
            lambda: open_zarr(archive_url, storage_options=opts)["structures/n5"][...],
            None,
        ),
        (
            "ROI",
            "medmask load_mask(roi=) of half the 0.5 mm volume",
            lambda: medmask.load_mask(full_url, roi=roi, storage_options=opts).data,
            None,
        ),
        (
            "ROI",
            "zarr v3 (same chunks, medmask.edges), the same ROI",
            lambda: zarr.open_array(store, mode="r")[roi],
            None,
        ),
    ]
    results: dict[tuple[str, float], tuple[float, int, int]] = {}
    reference: dict[str, Any] = {}
    for latency in latencies:
        server.call("latency", latency)
        for _scenario, label, fn, setup in scenarios:
            if label.startswith("naive") and latency > 0.03 and cases > 200:
                continue  # 1,000 sequential round trips of 100 ms: the point is made at 30 ms

            def prepare(setup: Callable[[], Any] | None = setup) -> None:
                head_cache.disable()
                head_cache.clear()
                fs.invalidate_cache()
                if setup is not None:
                    setup()

            print(f"... {label} at {latency * 1000:.0f} ms", file=sys.stderr)
            seconds, requests, sent, out = measure(server, fn, prepare)
            results[(label, latency)] = (seconds, requests, sent)
            if hasattr(out, "equals"):
                reference.setdefault(label, out)
                assert out.equals(reference[label]), "results differ from the 0 ms run"
        head_cache.disable()
    server.close()

    print(f"{cases} cases; moto S3 in its own process; 2 cores; injected latency per request\n")
    print("| scenario | method | latency ms | seconds | requests | MB sent | round trips paid |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for scenario, label, _, _setup in scenarios:
        base = results.get((label, 0.0))
        for latency in latencies:
            got = results.get((label, latency))
            if got is None or base is None:
                continue
            seconds, requests, sent = got
            paid = "" if latency == 0 else f"{(seconds - base[0]) / latency:,.1f}"
            print(
                f"| {scenario} | {label} | {latency * 1000:.0f} | {seconds:,.2f} | {requests:,} "
                f"| {sent / 1e6:,.2f} | {paid} |"
            )


if __name__ == "__main__":
    main()
