#!/usr/bin/env python
"""Cohort statistics and model evaluation on a local S3 server (moto): medmask.dask against
the naive way (download every per-structure .nii.gz and load it with nibabel).

Synthetic cases (``medmask.synthetic``) are stored twice on the server: as one ``.mska`` per
case, and as one ``.nii.gz`` per structure per case (TotalSegmentator's layout). Prints cases
per second, requests and bytes received per case (as the server counted them) against the
stored size per case, for the threaded scheduler and ``LocalCluster`` with 1 and 2 workers.

    python benchmarks/bench_cohort.py [--cases 200] [--pairs 100]
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import medmask  # noqa: E402
from medmask.dask import cohort_stats, compare  # noqa: E402
from medmask.interop.nifti import write_nifti  # noqa: E402
from medmask.synthetic import synthetic_case, synthetic_prediction, synthetic_space  # noqa: E402


def archive_bytes(structures: dict[str, np.ndarray], space: Any) -> bytes:
    buf = io.BytesIO()
    with medmask.MaskArchive(buf, "w", space=space) as archive:
        archive.add_structures(structures)
    return buf.getvalue()


def nifti_bytes(mask: np.ndarray, space: Any, tmp: Path) -> bytes:
    path = tmp / "x.nii.gz"
    write_nifti(mask, space, path)
    return path.read_bytes()


def upload(fs: Any, cases: int, pairs: int, tmp: Path) -> dict[str, int]:
    sizes = {"mska": 0, "nifti": 0}
    for seed in range(cases):
        space = synthetic_space(seed=seed)
        ref = synthetic_case(seed)
        data = archive_bytes(ref, space)
        fs.pipe(f"bench/refs/case{seed:04d}.mska", data)
        sizes["mska"] += len(data)
        for name, mask in ref.items():
            nii = nifti_bytes(mask, space, tmp)
            fs.pipe(f"bench/refs_nifti/case{seed:04d}/{name}.nii.gz", nii)
            sizes["nifti"] += len(nii)
        if seed < pairs:
            pred = synthetic_prediction(ref, seed)
            fs.pipe(f"bench/preds/case{seed:04d}.mska", archive_bytes(pred, space))
            for name, mask in pred.items():
                fs.pipe(
                    f"bench/preds_nifti/case{seed:04d}/{name}.nii.gz", nifti_bytes(mask, space, tmp)
                )
    return sizes


def naive_stats(fs: Any, cases: int) -> None:
    """Download every structure file of every case, load it, count and bound it."""
    import nibabel as nib

    for seed in range(cases):
        for path in fs.ls(f"bench/refs_nifti/case{seed:04d}/", detail=False):
            img = nib.Nifti1Image.from_bytes(gzip.decompress(fs.cat(path)))
            data = np.asarray(img.dataobj) != 0
            where = np.nonzero(data)
            if where[0].size:
                [(w.min(), w.max()) for w in where]


def naive_compare(fs: Any, pairs: int) -> None:
    import nibabel as nib

    def load(path: str) -> np.ndarray:
        return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(fs.cat(path))).dataobj) != 0

    for seed in range(pairs):
        preds = {
            p.rsplit("/", 1)[-1]: p
            for p in fs.ls(f"bench/preds_nifti/case{seed:04d}/", detail=False)
        }
        refs = {
            p.rsplit("/", 1)[-1]: p
            for p in fs.ls(f"bench/refs_nifti/case{seed:04d}/", detail=False)
        }
        for name in sorted({*preds, *refs}):
            p = load(preds[name]) if name in preds else None
            r = load(refs[name]) if name in refs else None
            n_p = int(p.sum()) if p is not None else 0
            n_r = int(r.sum()) if r is not None else 0
            both = int((p & r).sum()) if p is not None and r is not None else 0
            2 * both / (n_p + n_r) if n_p + n_r else float("nan")


def measure(fn: Callable[[], Any], log: Any) -> tuple[float, int, int]:
    fs_log_clear = log.clear
    fs_log_clear()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    requests = [r for r in log.requests if "/bench/" in r.path or r.path.startswith("/bench")]
    return seconds, len(requests), sum(r.bytes_sent or 0 for r in requests if r.method == "GET")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=100)
    args = parser.parse_args()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        os.environ.setdefault(key, value)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    import tempfile

    import s3fs
    from distributed import Client, LocalCluster

    from servers import RecordingMotoServer

    with RecordingMotoServer() as server, tempfile.TemporaryDirectory() as tmp:
        options = {"endpoint_url": server.endpoint_url, "key": "testing", "secret": "testing"}
        fs = s3fs.S3FileSystem(**options)
        server.create_bucket("bench")
        sizes = upload(fs, args.cases, args.pairs, Path(tmp))
        refs, preds = "s3://bench/refs/*.mska", "s3://bench/preds/*.mska"
        rows = []

        def add(job: str, how: str, n: int, fn: Callable[[], Any], stored: int) -> None:
            seconds, requests, received = measure(fn, server.log)
            rows.append((job, how, f"{n / seconds:,.0f}", f"{requests / n:.1f}",
                         f"{received / n:,.0f}", f"{stored / n:,.0f}"))  # fmt: skip

        fs.invalidate_cache()
        add("cohort_stats", "naive: nibabel per structure file", args.cases,
            lambda: naive_stats(fs, args.cases), sizes["nifti"])  # fmt: skip
        add("cohort_stats", "medmask.dask, threads", args.cases,
            lambda: cohort_stats(refs, storage_options=options), sizes["mska"])  # fmt: skip
        pair_size = sizes["mska"] * 2 * args.pairs // args.cases
        nifti_pairs = sizes["nifti"] * 2 * args.pairs // args.cases
        add("compare", "naive: nibabel per structure file", args.pairs,
            lambda: naive_compare(fs, args.pairs), nifti_pairs)  # fmt: skip
        add("compare", "medmask.dask, threads", args.pairs,
            lambda: compare(preds, refs.replace("*", "case00[0-9][0-9]"), storage_options=options),
            pair_size)  # fmt: skip
        for workers in (1, 2):
            with (
                LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as lc,
                Client(lc) as client,
            ):
                cohort_stats(refs, storage_options=options, client=client)  # warm the workers
                add("cohort_stats", f"medmask.dask, LocalCluster {workers} worker(s)", args.cases,
                    lambda client=client: cohort_stats(refs, storage_options=options,
                                                       client=client),
                    sizes["mska"])  # fmt: skip
                add("compare", f"medmask.dask, LocalCluster {workers} worker(s)", args.pairs,
                    lambda client=client: compare(preds, refs.replace("*", "case00[0-9][0-9]"),
                                                  storage_options=options, client=client),
                    pair_size)  # fmt: skip
    grid = medmask.synthetic.SYNTHETIC_SHAPE
    print(f"{args.cases} cases ({args.pairs} with predictions), grid {grid}, moto S3, 2 cores\n")
    print("| job | how | cases/s | requests/case | bytes received/case | stored bytes/case |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
