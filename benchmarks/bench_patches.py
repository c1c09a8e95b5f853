#!/usr/bin/env python
"""Random 96^3 patches from a 0.8 mm label map on an S3 server that answers late: GETs per
patch and patches per second, medmask beside zarr v3 + zstd and ``.nii.gz``.

A moto S3 server runs in its own process behind a per-request delay (0 and 30 ms). The map is
a real TotalSegmentator label map upsampled to 0.8 mm (``../shared/tools``, 113 x 379 x 458)
and tiled twice along z (mirrored): 224 x 379 x 458 uint8, 39 MB, issue 20's smallest size.
Methods, each reading the same random patches one after another:

- ``.msk`` with 32^3, 64^3 and the default chunks (whole slices): a ``MaskFile`` opened once,
  and ``load_mask(url, roi=)`` per patch (the head read again each time);
- ``open_zarr(url)["mask"]`` (medmask's zarr store, opened once) on the 64^3 file;
- zarr v3 + zstd (64^3 chunks) through zarr's own ``FsspecStore`` on s3fs, tuned
  (``max_concurrency=1``: s3fs otherwise sends a HEAD before every whole-chunk GET), opened
  once;
- ``.nii.gz``: GET the object, gunzip, crop.

``--gaps`` also sweeps medmask's remote merge gap (``range_gap_remote``) for the ``MaskFile``
rows at the highest latency: the gap that makes every chunking one GET per patch.

Usage::

    python benchmarks/bench_patches.py              # 20 patches, 0 and 30 ms
    python benchmarks/bench_patches.py --gaps       # and the gap sweep
    PYTHONPATH=/path/to/older/src python benchmarks/bench_patches.py   # another medmask
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from s3_process import Server  # noqa: E402

import medmask  # noqa: E402

BUCKET = "bench"
PATCH = 96
Roi = tuple[slice, slice, slice]


def label_map() -> np.ndarray:
    """The 0.8 mm map, tiled twice along z (generated once into benchmarks/_data)."""
    import subprocess

    import nibabel as nib

    path = HERE / "_data" / "map_0.8.nii.gz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tool = HERE.parent / ".." / "shared" / "tools" / "upsample_labels.py"
        subprocess.run([sys.executable, str(tool), "--out", str(path)], check=True)
    data = np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)
    return np.ascontiguousarray(np.concatenate([data, data[::-1]], axis=0))


def patches(shape: tuple[int, ...], n: int, seed: int = 0) -> list[Roi]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        z, y, x = (int(rng.integers(0, s - PATCH + 1)) for s in shape)
        out.append((slice(z, z + PATCH), slice(y, y + PATCH), slice(x, x + PATCH)))
    return out


def measure(server: Server, read: Callable[[Roi], np.ndarray], rois: list[Roi], truth: np.ndarray):
    """Patches per second (the rois read one after another), GETs and HEADs per patch; every
    patch compared with the truth (outside the timing)."""
    read(rois[0])  # warm: imports, connection pools (not a patch of the table)
    server.call("clear")
    got = []
    t0 = time.perf_counter()
    for roi in rois:
        got.append(read(roi))
    seconds = time.perf_counter() - t0
    gets, heads, _ = server.call("counts")
    for roi, data in zip(rois, got, strict=True):
        assert np.array_equal(data, truth[roi]), "a patch differs from the map"
    n = len(rois)
    return n / seconds, gets / n, heads / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--patches", type=int, default=20, help="patches per method (default 20)")
    ap.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.03], help="seconds")
    ap.add_argument("--gaps", action="store_true", help="sweep range_gap_remote too")
    args = ap.parse_args()

    import nibabel as nib
    import s3fs
    import zarr
    from zarr.codecs import ZstdCodec

    from medmask.zarr_store import open_zarr

    print("reading the 0.8 mm map and uploading ...", file=sys.stderr)
    truth = label_map()
    names = {f"label{v}": int(v) for v in np.flatnonzero(np.bincount(truth.ravel())) if v}
    mask = medmask.SegmentationMask(truth, names)
    server = Server(BUCKET)
    opts = server.options
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, chunks in (("32", (32, 32, 32)), ("64", (64, 64, 64)), ("default", None)):
            path = Path(tmp) / f"c{name}.msk"
            medmask.save_mask(mask, path, chunks=chunks)
            fs.put_file(str(path), f"{BUCKET}/c{name}.msk")
            sizes[f"c{name}.msk"] = path.stat().st_size
        nii = Path(tmp) / "map.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(truth.transpose(2, 1, 0)), np.eye(4)), nii)
        fs.put_file(str(nii), f"{BUCKET}/map.nii.gz")
        sizes["map.nii.gz"] = nii.stat().st_size
    zstore = zarr.storage.FsspecStore.from_url(f"s3://{BUCKET}/z64.zarr", storage_options=opts)
    zarr.create_array(
        zstore, shape=truth.shape, chunks=(64, 64, 64), dtype=truth.dtype,
        compressors=ZstdCodec(level=3), fill_value=0,
    )[...] = truth  # fmt: skip
    url = {name: f"s3://{BUCKET}/c{name}.msk" for name in ("32", "64", "default")}
    rois = patches(truth.shape, args.patches)

    opened = {name: medmask.MaskFile(u, storage_options=opts) for name, u in url.items()}
    zarr_store_array = open_zarr(url["64"], storage_options=opts)["mask"]
    plain_zarr = zarr.open_array(
        zarr.storage.FsspecStore.from_url(  # tuned: no HEAD before each whole-chunk GET
            f"s3://{BUCKET}/z64.zarr",
            storage_options={**opts, "max_concurrency": 1},
            read_only=True,
        ),
        mode="r",
    )

    def nifti(roi: Roi) -> np.ndarray:
        blob = fs.cat_file(f"{BUCKET}/map.nii.gz")
        image = nib.Nifti1Image.from_bytes(gzip.decompress(blob))
        return np.asarray(image.dataobj).transpose(2, 1, 0)[roi]

    methods: list[tuple[str, Callable[[Roi], np.ndarray]]] = []
    for name in ("32", "64", "default"):
        label = f"{name}^3" if name != "default" else "default"
        methods.append((f"`.msk` {label} chunks, `MaskFile` opened once", opened[name].read_array))
        methods.append(
            (
                f"`.msk` {label} chunks, `load_mask(roi=)` per patch",
                lambda roi, u=url[name]: medmask.load_mask(u, roi=roi, storage_options=opts).data,
            )
        )
    methods.append(("`open_zarr(.msk 64^3)['mask']`, opened once", lambda r: zarr_store_array[r]))
    methods.append(
        ("zarr v3 + zstd 64^3, `FsspecStore` (s3fs), opened once", lambda r: plain_zarr[r])
    )
    methods.append(("`.nii.gz` GET + gunzip + crop", nifti))

    results: dict[tuple[str, float], tuple[float, float, float]] = {}
    for latency in args.latency:
        server.call("latency", latency)
        for label, read in methods:
            print(f"... {label} at {latency * 1000:.0f} ms", file=sys.stderr)
            few = rois if "nii" not in label else rois[: max(3, len(rois) // 4)]
            results[label, latency] = measure(server, read, few, truth)

    print(
        f"\nRandom {PATCH}^3 patches of a {truth.shape} uint8 map (0.8 mm), "
        f"{len(rois)} patches per method ({max(3, len(rois) // 4)} for .nii.gz); moto S3 in its "
        "own process; 2 cores. medmask", medmask.__version__, medmask.__file__,
    )  # fmt: skip
    print("Sizes:", ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()), "\n")
    head = " | ".join(f"{lat * 1000:.0f} ms patches/s" for lat in args.latency)
    print(f"| method | {head} | GETs/patch | HEADs/patch |")
    print("| --- |" + " ---: |" * (len(args.latency) + 2))
    for label, _ in methods:
        rates = " | ".join(f"{results[label, lat][0]:.1f}" for lat in args.latency)
        _, gets, heads = results[label, args.latency[-1]]
        print(f"| {label} | {rates} | {gets:.2f} | {heads:.2f} |")

    if args.gaps:
        latency = args.latency[-1]
        server.call("latency", latency)
        gaps = [4 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20]
        # medmask before 0.x had one gap for every store
        remote = hasattr(medmask.config.get(), "range_gap_remote")
        gap_setting = "range_gap_remote" if remote else "range_gap"
        print(f"\nMerge gap sweep, `MaskFile` opened once, {latency * 1000:.0f} ms:\n")
        print("| gap KiB | " + " | ".join(f"{n}^3: patches/s, GETs" for n in ("32", "64")) + " |")
        print("| ---: | ---: | ---: |")
        for gap in gaps:
            cells = []
            for name in ("32", "64"):
                with medmask.config.set(**{gap_setting: gap}):
                    rate, gets, _ = measure(server, opened[name].read_array, rois, truth)
                cells.append(f"{rate:.1f}, {gets:.2f}")
            print(f"| {gap >> 10} | " + " | ".join(cells) + " |")
    for f in opened.values():
        f.close()
    server.close()


if __name__ == "__main__":
    main()
