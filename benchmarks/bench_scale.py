#!/usr/bin/env python
"""Construction and save at scale: ``SegmentationMask(array, mapping)`` and ``save_mask`` on
uint8 label maps of 39 MB to 1.2 GB, beside nibabel's ``.nii.gz`` and ``np.save`` in the same
run.

Arrays: the shared 3 mm TotalSegmentator map upsampled to 0.8 mm
(``../shared/tools/upsample_labels.py``, 458 x 379 x 112, cached in ``benchmarks/_data/``),
stacked twice along z (the "1x" map, 39 MB) and then tiled 4x, 8x, 16x and 32x along z (156 MB,
311 MB, 622 MB, 1,244 MB).

Columns (seconds, median of ``--reps``; the two largest sizes use at most 3):

- construct: ``SegmentationMask(array, mapping)`` with the names of the values present (41 of
  the 117 TotalSegmentator values: the check must find which values occur);
- construct (table): the same with the whole 117-name table (``labels_total.json``): every
  value up to the maximum has a name, so nothing needs counting;
- save: ``save_mask`` of the mask to a local ``.msk`` (fsync included);
- construct + save: both, one after the other;
- nib save: ``nib.save`` of the same array as ``.nii.gz`` (nibabel's defaults);
- load / nib load: ``load_mask`` and ``np.asarray(nib.load(path).dataobj)``;
- np.save / np.load of the raw array;
- peak MB: tracemalloc's peak above the input array during construct + save, and during load;
- construct + save CPU / nib save CPU: CPU seconds of both (every thread), which a busy
  machine disturbs less than wall time;
- speed-up: nib save / (construct + save), wall time: above 1 medmask builds and writes faster
  than nibabel writes alone.

Usage::

    python benchmarks/bench_scale.py            # 39 MB .. 1.2 GB (a few minutes)
    python benchmarks/bench_scale.py --quick    # 39, 156 and 311 MB, 3 repetitions
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import medmask
from medmask import _workers

try:
    import nibabel as nib
except ImportError as exc:  # pragma: no cover
    sys.exit(f"bench_scale.py needs nibabel: pip install -e '.[bench]' ({exc})")

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent / ".." / "shared"
TOTALSEG = SHARED / "data" / "totalseg"
UPSAMPLE = SHARED / "tools" / "upsample_labels.py"
FACTORS = (1, 4, 8, 16, 32)


def fine_map(data_dir: Path) -> np.ndarray:
    """The 0.8 mm map, (z, y, x) C order, stacked twice along z (the 1x array, ~39 MB)."""
    path = data_dir / "full_0.8x0.8x0.8.nii.gz"  # the name bench_codecs.py caches it under
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(UPSAMPLE), "--out", str(path), "--spacing", "0.8", "0.8", "0.8"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    zyx = np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)
    return np.ascontiguousarray(np.concatenate([zyx, zyx]), dtype=np.uint8)


def median_time(fn: Callable[[], Any], reps: int, cpu: list[float] | None = None) -> float:
    """Median wall seconds of ``fn``; with ``cpu``, append the median CPU seconds (all threads)."""
    times, cpus = [], []
    for _ in range(reps):
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    if cpu is not None:
        cpu.append(statistics.median(cpus))
    return statistics.median(times)


def traced_peak_mb(fn: Callable[[], Any]) -> float:
    """Peak of traced allocations (numpy's included) while ``fn`` runs, in MB."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def measure(
    arr: np.ndarray, present: dict[str, int], table: dict[str, int], reps: int, tmp: Path
) -> dict[str, float]:
    msk, nii, npy = tmp / "m.msk", tmp / "m.nii.gz", tmp / "m.npy"
    image = nib.Nifti1Image(arr.transpose(2, 1, 0), np.diag([0.8, 0.8, 0.8, 1.0]))
    mask = medmask.SegmentationMask(arr, present)
    cpu: list[float] = []
    row = {
        "construct": median_time(lambda: medmask.SegmentationMask(arr, present), reps),
        "construct (table)": median_time(lambda: medmask.SegmentationMask(arr, table), reps),
        "save": median_time(lambda: medmask.save_mask(mask, msk), reps),
        "construct + save": median_time(
            lambda: medmask.save_mask(medmask.SegmentationMask(arr, present), msk), reps, cpu
        ),
        "nib save": median_time(lambda: nib.save(image, nii), reps, cpu),
        "load": median_time(lambda: medmask.load_mask(msk), reps),
        "nib load": median_time(lambda: np.asarray(nib.load(nii).dataobj), reps),
        "np.save": median_time(lambda: np.save(npy, arr), reps),
        "np.load": median_time(lambda: np.load(npy), reps),
    }
    back = medmask.load_mask(msk)
    assert np.array_equal(back.data, arr), "the round trip changed the voxels"
    assert back.label_counts() == mask.label_counts()
    del back
    row["peak MB (construct + save)"] = traced_peak_mb(
        lambda: medmask.save_mask(medmask.SegmentationMask(arr, present), msk)
    )
    row["peak MB (load)"] = traced_peak_mb(lambda: medmask.load_mask(msk))
    row[".msk MB"] = msk.stat().st_size / 1e6
    row[".nii.gz MB"] = nii.stat().st_size / 1e6
    row["construct + save CPU"], row["nib save CPU"] = cpu
    row["speed-up"] = row["nib save"] / row["construct + save"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=5, help="repetitions (median); default 5")
    ap.add_argument("--quick", action="store_true", help="1x, 4x and 8x only, 3 repetitions")
    ap.add_argument("--factors", type=int, nargs="+", default=None, help="tiles of the 1x map")
    ap.add_argument("--data-dir", type=Path, default=HERE / "_data", help="volume cache")
    args = ap.parse_args()
    factors = args.factors or ((1, 4, 8) if args.quick else FACTORS)
    reps = 3 if args.quick else args.reps

    base = fine_map(args.data_dir)
    labels = json.loads((TOTALSEG / "labels_total.json").read_text())
    values = set(np.unique(base).tolist())
    present = {name: value for name, value in labels.items() if value in values}
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"medmask {medmask.__version__} from {Path(medmask.__file__).parent}; 1x map "
        f"{base.shape} uint8, {len(present)} of {len(labels)} names present; {cpus} CPUs, "
        f"{_workers.chunk_threads()} chunk threads"
    )
    rows: list[tuple[str, dict[str, float], int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for factor in factors:
            arr = np.ascontiguousarray(np.tile(base, (factor, 1, 1)))
            n = reps if factor < 16 else min(reps, 3)
            row = measure(arr, present, labels, n, Path(tmp))
            rows.append((f"{arr.nbytes / 1e6:,.0f} MB ({factor}x)", row, n))
            print(f"  {rows[-1][0]}: done ({n} repetitions)", file=sys.stderr)
            del arr
    columns = list(rows[0][1])
    print()
    print("| array | reps | " + " | ".join(columns) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in columns) + " |")
    for label, row, n in rows:
        cells = []
        for column in columns:
            value = row[column]
            if column == "speed-up":
                cells.append(f"{value:.2f}x")
            elif "MB" in column:
                cells.append(f"{value:,.0f}" if value >= 10 else f"{value:.1f}")
            else:
                cells.append(f"{value:.3f} s")
        print(f"| {label} | {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
