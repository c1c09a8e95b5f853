#!/usr/bin/env python
"""Ingesting a bucket (issue 20): ``medmask.dask.ingest`` on a local S3 server (moto), from one
prefix to another, against a plain loop and the floor of only reading the inputs.

Cases are made from ``../shared/data/totalseg``: folders (the 117 organ files of the fast-mode
result, every other case flipped left-right) and label maps (``multilabel_42.nii.gz`` with
``labels_total.json`` beside it, every other case flipped), copied under different case names.
At 0 and 30 ms of injected latency it runs:

- the read floor: every input GET and read with nibabel (``np.asarray(img.dataobj)``), a
  case's files fetched together, as many cases at once as ingest runs;
- a plain serial loop (``pack_folder`` per folder, ``from_nifti`` + ``save_mask`` per map);
- ``ingest`` on Dask threads;
- ``ingest`` on a 1- and a 2-worker ``LocalCluster`` (processes, one thread each).

It prints cases/s, bytes in and out, and each time over the floor's. The server runs in a
process of its own. Then ``pack_folder``'s
peak memory (tracemalloc) for a folder of one file per structure split from a 0.8 mm map made
by ``../shared/tools/upsample_labels.py``, before (the implementation of the commit before
issue 20's, from git) and after.

    python benchmarks/bench_ingest.py [--folders 20] [--maps 20] [--spacing 0.8]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
TOTALSEG = ROOT.parent / "shared" / "data" / "totalseg"
UPSAMPLE = ROOT.parent / "shared" / "tools" / "upsample_labels.py"
BEFORE = "4cd4c5a~1"  # the commit before pack_folder streamed its layers

from s3_process import Server  # noqa: E402

import medmask  # noqa: E402
from medmask.dask import ingest  # noqa: E402
from medmask.interop.folders import pack_folder  # noqa: E402
from medmask.interop.nifti import from_nifti  # noqa: E402


def _gz(img: Any) -> bytes:
    import gzip

    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def make_cases(fs: Any, folders: int, maps: int) -> dict[str, int]:
    """Upload the cases under ``bench/in/``; return {input key: size}."""
    sizes: dict[str, int] = {}
    organs = sorted((TOTALSEG / "organs").iterdir())
    for i in range(folders):
        for path in organs:
            data = path.read_bytes()
            if i % 2:  # a flipped variant: other bytes, same kind of case
                img = nib.load(path)
                data = _gz(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine))
            key = f"bench/in/folder{i:03d}/{path.name}"
            fs.pipe(key, data)
            sizes[key] = len(data)
    table = (TOTALSEG / "labels_total.json").read_bytes()
    source = nib.load(TOTALSEG / "multilabel_42.nii.gz")
    for i in range(maps):
        data = (TOTALSEG / "multilabel_42.nii.gz").read_bytes()
        if i % 2:
            data = _gz(nib.Nifti1Image(np.asarray(source.dataobj)[::-1].copy(), source.affine))
        key = f"bench/in/map{i:03d}.nii.gz"
        fs.pipe(key, data)
        fs.pipe(f"bench/in/map{i:03d}.json", table)
        sizes[key] = len(data)
    fs.invalidate_cache()
    return sizes


def read_floor(fs: Any, keys: list[str], threads: int) -> None:
    """GET every input and read it with nibabel: a case's files fetched together (one
    concurrent ``cat``, as ingest fetches a folder), ``threads`` cases at once."""
    by_case: dict[str, list[str]] = {}
    for key in keys:
        case = key.split("/")[2].removesuffix(".nii.gz")
        by_case.setdefault(case, []).append(key)

    def read(case_keys: list[str]) -> None:
        for blob in fs.cat(case_keys).values():
            img = nib.Nifti1Image.from_bytes(_gunzip(blob))
            np.asarray(img.dataobj)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read, by_case.values()))


def _gunzip(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data)


def plain_loop(opts: dict[str, Any], folders: int, maps: int) -> None:
    for i in range(folders):
        pack_folder(
            f"s3://bench/in/folder{i:03d}", f"s3://bench/loop/folder{i:03d}.mska",
            storage_options=opts,
        )  # fmt: skip
    for i in range(maps):
        mask = from_nifti(
            f"s3://bench/in/map{i:03d}.nii.gz", f"s3://bench/in/map{i:03d}.json",
            storage_options=opts,
        )  # fmt: skip
        medmask.save_mask(mask, f"s3://bench/loop/map{i:03d}.msk", storage_options=opts)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def ingest_runs(server: Any, opts: dict[str, Any], args: argparse.Namespace) -> None:
    from distributed import Client, LocalCluster

    fs = server_fs(opts)
    sizes = make_cases(fs, args.folders, args.maps)
    cases = args.folders + args.maps
    bytes_in = sum(sizes.values())
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    print(f"\n{cases} cases ({args.folders} folders of 117 files, {args.maps} label maps), "
          f"{bytes_in / 1e6:.1f} MB in; {threads} threads")  # fmt: skip
    header = f"{'latency':>8} {'method':<28} {'s':>7} {'cases/s':>8} {'MB out':>7} {'x floor':>8}"
    print(header)
    print("-" * len(header))
    clusters = {}
    for workers in (1, 2):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        clusters[workers] = (cluster, Client(cluster))
    try:
        for latency in (0.0, 0.03):
            server.latency = latency
            floor, _ = timed(lambda: read_floor(fs, list(sizes), threads))
            rows = [("read floor (nibabel)", floor, 0)]

            def out_bytes(prefix: str) -> int:
                fs.invalidate_cache()
                return sum(int(e["size"]) for e in fs.ls(f"bench/{prefix}", detail=True))

            def clean(prefix: str) -> None:
                fs.invalidate_cache()
                if fs.exists(f"bench/{prefix}"):
                    fs.rm(f"bench/{prefix}", recursive=True)
                fs.invalidate_cache()

            clean("loop")
            seconds, _ = timed(lambda: plain_loop(opts, args.folders, args.maps))
            rows.append(("plain loop", seconds, out_bytes("loop")))
            runs: list[tuple[str, Any]] = [("ingest, threads", None)]
            runs += [(f"ingest, LocalCluster {w} worker", clusters[w][1]) for w in (1, 2)]
            for name, client in runs:
                clean("out")
                seconds, report = timed(
                    lambda c=client: ingest(
                        "s3://bench/in/*",
                        "s3://bench/out",
                        storage_options=opts,
                        client=c,
                        progress=False,
                    )
                )
                failed = report[report["status"] != "done"]
                assert failed.empty, failed[["case", "error"]].to_string()
                rows.append((name, seconds, int(report["output_bytes"].sum())))
            seconds, report = timed(
                lambda: ingest(
                    "s3://bench/in/*", "s3://bench/out", storage_options=opts, progress=False
                )
            )
            assert set(report["status"]) == {"skipped"}
            rows.append(("ingest rerun (all skipped)", seconds, 0))
            for name, seconds, out in rows:
                rate = cases / seconds
                print(
                    f"{round(latency * 1000):>6}ms {name:<28} {seconds:7.2f} {rate:8.1f} "
                    f"{out / 1e6:7.2f} {seconds / floor:8.2f}"
                )
    finally:
        server.latency = 0.0
        for cluster, client in clusters.values():
            client.close()
            cluster.close()


def server_fs(opts: dict[str, Any]) -> Any:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **opts)


def before_module() -> types.ModuleType | None:
    """``medmask.interop.folders`` as it was before issue 20 (from git), or None."""
    try:
        code = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BEFORE}:src/medmask/interop/folders.py"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("medmask.interop._folders_before", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "medmask.interop"
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(code, "folders_before.py", "exec"), module.__dict__)
    return module


def memory_run(spacing: float, tmp: Path) -> None:
    from bounded import traced_peak

    fine = tmp / "fine.nii.gz"
    print(f"\npack_folder peak memory: one file per structure of a {spacing} mm map")
    subprocess.run(
        [sys.executable, str(UPSAMPLE), "--out", str(fine), "--spacing", *[str(spacing)] * 3],
        check=True, capture_output=True,
    )  # fmt: skip
    img = nib.load(fine)
    labels = np.asarray(img.dataobj)
    folder = tmp / "split"
    folder.mkdir()
    values = [int(v) for v in np.unique(labels) if v]
    for value in values:
        nib.save(nib.Nifti1Image((labels == value).astype(np.uint8), img.affine),
                 folder / f"s{value:03d}.nii.gz")  # fmt: skip
    full = labels.nbytes
    del labels
    one = folder / f"s{values[0]:03d}.nii.gz"
    _, read_peak = traced_peak(lambda: np.asarray(nib.load(one).dataobj))
    print(f"{len(values)} structures, shape {img.shape}, one uint8 label array "
          f"{full / 1e6:.0f} MB, reading one file with nibabel peaks at "
          f"{read_peak / 1e6:.0f} MB")  # fmt: skip
    old = before_module()
    for name, pack in (("before", getattr(old, "pack_folder", None)), ("after", pack_folder)):
        if pack is None:
            print(f"{name:>7}: (git not available)")
            continue
        seconds, (result, peak) = timed(lambda p=pack, n=name: traced_peak(
            lambda: p(folder, tmp / f"{n}.mska")))  # fmt: skip
        assert not isinstance(result, BaseException), result
        print(f"{name:>7}: peak {peak / 1e6:8.0f} MB = {peak / full:5.2f} x one label array, "
              f"{seconds:6.1f} s (traced)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folders", type=int, default=20)
    parser.add_argument("--maps", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=0.8, help="mm of the memory case")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_ingest:
            with Server("bench") as server:
                opts = {"endpoint_url": server.endpoint_url, "key": "testing",
                        "secret": "testing"}  # fmt: skip
                ingest_runs(server, opts, args)
        if not args.skip_memory:
            memory_run(args.spacing, Path(tmp))


if __name__ == "__main__":
    main()
