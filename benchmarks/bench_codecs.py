#!/usr/bin/env python
"""Segmentation codecs, one run: sizes and speeds of medmask against nibabel ``.nii.gz``,
``np.savez_compressed``, crackle-codec, compresso + xz and zarr v3 arrays (zstd, blosc, and
medmask's own serializer) on the same chunks.

Volumes: the shared 3 mm ``multilabel_42.nii.gz`` and full-resolution upsampled versions of it
(``../shared/tools/upsample_labels.py``: 0.8 mm, 0.8 x 0.8 x 0.4 mm, 0.5 mm), plus six binary
organ masks on the 0.8 x 0.8 x 0.4 mm grid. Volumes are cached in ``benchmarks/_data/``.

Every row writes and reads the same array and checks the round trip; times are the best of
at least ``--reps`` runs (up to 4x as many for fast ones; encoders slower than 2 s run once).
Decode MB/s is raw array bytes per second, C-order (z, y, x) out. Chunked rows use z-slabs
of ``--chunk-slices`` slices and both cores (zarr's own thread pool; medmask's parallel chunk
decode). Prints markdown tables and writes the size / decode-speed frontier to ``--plot``.

Usage::

    python benchmarks/bench_codecs.py             # everything (a few minutes: zstd-19 rows)
    python benchmarks/bench_codecs.py --quick     # 3 mm and 0.8 mm only, fewer rows
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import medmask
from medmask.codecs import kernel_available

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent / ".." / "shared"
TOTALSEG = SHARED / "data" / "totalseg"
UPSAMPLE = SHARED / "tools" / "upsample_labels.py"
ORGANS = ["liver", "spleen", "kidney_right", "kidney_left", "stomach", "colon"]

try:
    import compresso
    import crackle
    import nibabel as nib
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec
except ImportError as exc:  # pragma: no cover
    sys.exit(f"bench_codecs.py needs the bench extra: pip install -e '.[bench]' ({exc})")


@dataclass
class Row:
    name: str
    nbytes: int
    enc_ms: float
    dec_ms: float


def best_time(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """Best wall time (ms) of at least ``reps`` calls (more, up to 4x, while they take under
    half a second in all: a shared 2-core machine has noisy moments), and the last result."""
    best, out, spent, calls = float("inf"), None, 0.0, 0
    while calls < reps or (spent < 0.5 and calls < 4 * reps):
        t0 = time.perf_counter()
        out = fn()
        took = time.perf_counter() - t0
        best, spent, calls = min(best, took), spent + took, calls + 1
        if best > 2.0:
            break
    return best * 1e3, out


def load_zyx(path: Path) -> np.ndarray:
    """NIfTI (x, y, z) -> C-contiguous (z, y, x)."""
    return np.ascontiguousarray(np.asarray(nib.load(path).dataobj).transpose(2, 1, 0))


def ensure_volume(spacing: Sequence[float], data_dir: Path) -> Path:
    """Generate (once) the full-resolution volume at ``spacing`` mm."""
    out = data_dir / ("full_" + "x".join(f"{s:g}" for s in spacing) + ".nii.gz")
    if not out.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(UPSAMPLE), "--out", str(out), "--spacing"]
        subprocess.run([*cmd, *(str(s) for s in spacing)], check=True, stdout=subprocess.DEVNULL)
    return out


def measure(
    name: str,
    arrays: list[np.ndarray],
    reps: int,
    write: Callable[[np.ndarray, int], Any],
    read: Callable[[Any, np.ndarray], np.ndarray],
    size: Callable[[Any], int],
) -> Row:
    """Encode every array (``write(array, i)`` gives a handle), decode, check, sum sizes."""
    enc = dec = 0.0
    total = 0
    for i, a in enumerate(arrays):
        t, handle = best_time(lambda a=a, i=i: write(a, i), max(2, reps // 2))
        enc += t
        t, got = best_time(lambda handle=handle, a=a: read(handle, a), reps)
        dec += t
        if got.shape != a.shape or not np.array_equal(got, a):
            raise AssertionError(f"{name}: round trip differs")
        total += size(handle)
    return Row(name, total, enc, dec)


# --- the rows -----------------------------------------------------------------------------------


def nifti(arrays: list[np.ndarray], reps: int, tmp: Path) -> Row:
    def write(a: np.ndarray, i: int) -> Path:
        path = tmp / f"x{i}.nii.gz"
        u8 = a.view(np.uint8) if a.dtype == np.bool_ else a
        nib.save(nib.Nifti1Image(u8.transpose(2, 1, 0), np.eye(4)), path)
        return path

    def read(path: Path, a: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(np.asarray(nib.load(path).dataobj).transpose(2, 1, 0))
        return out.view(np.bool_) if a.dtype == np.bool_ else out

    return measure("nibabel .nii.gz", arrays, reps, write, read, lambda p: p.stat().st_size)


def savez(arrays: list[np.ndarray], reps: int) -> Row:
    def write(a: np.ndarray, i: int) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, a=a)
        return buf.getvalue()

    def read(blob: bytes, a: np.ndarray) -> np.ndarray:
        with np.load(io.BytesIO(blob)) as f:
            return f["a"]  # type: ignore[no-any-return]

    return measure("np.savez_compressed", arrays, reps, write, read, len)


def crackle_row(arrays: list[np.ndarray], reps: int, order: int | None) -> Row:
    kwargs = {} if order is None else {"markov_model_order": order}

    def read(blob: bytes, a: np.ndarray) -> np.ndarray:
        out = crackle.decompress(blob)
        return out.view(np.bool_) if a.dtype == np.bool_ else out

    name = "crackle-codec" + ("" if order is None else f" (markov order {order})")
    return measure(
        name, arrays, reps, lambda a, i: crackle.compress(a.view(np.uint8), **kwargs), read, len
    )


def compresso_row(arrays: list[np.ndarray], reps: int) -> Row:
    def write(a: np.ndarray, i: int) -> bytes:
        return lzma.compress(compresso.compress(np.asfortranarray(a.view(np.uint8).T)))

    def read(blob: bytes, a: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(compresso.decompress(lzma.decompress(blob)).T)
        return out.view(np.bool_) if a.dtype == np.bool_ else out

    return measure("compresso + xz", arrays, reps, write, read, len)


def zarr_row(
    name: str, arrays: list[np.ndarray], reps: int, tmp: Path, slices: int, **codecs: Any
) -> Row:
    def write(a: np.ndarray, i: int) -> Path:
        path = tmp / f"z{i}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        z = zarr.create_array(
            zarr.storage.LocalStore(path),
            shape=a.shape,
            chunks=(min(slices, a.shape[0]), a.shape[1], a.shape[2]),
            dtype=a.dtype,
            fill_value=0,
            **codecs,
        )
        z[...] = a
        return path

    def read(path: Path, a: np.ndarray) -> np.ndarray:
        return zarr.open_array(zarr.storage.LocalStore(path, read_only=True), mode="r")[...]  # type: ignore[no-any-return]

    def size(path: Path) -> int:
        return sum(
            p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "zarr.json"
        )

    return measure(name, arrays, reps, write, read, size)


def msk_row(name: str, arrays: list[np.ndarray], reps: int, tmp: Path, **options: Any) -> Row:
    """``save_mask`` / ``load_mask`` of masks built beforehand (building one validates and
    copies the array: not part of writing a file)."""
    masks = []
    for a in arrays:
        flat = a.reshape(-1)
        values = (
            np.flatnonzero(np.bincount(flat.view(np.uint8))) if a.itemsize == 1 else np.unique(flat)
        )
        masks.append(medmask.SegmentationMask(a, {f"label_{int(v)}": int(v) for v in values if v}))

    def write(a: np.ndarray, i: int) -> Path:
        path = tmp / f"m{i}.msk"
        medmask.save_mask(masks[i], path, **options)
        return path

    def read(path: Path, a: np.ndarray) -> np.ndarray:
        return medmask.load_mask(path).data

    return measure(name, arrays, reps, write, read, lambda p: p.stat().st_size)


def rows_for(arrays: list[np.ndarray], args: argparse.Namespace, tmp: Path) -> list[Row]:
    reps, slices = args.reps, args.chunk_slices
    rows = [nifti(arrays, reps, tmp), savez(arrays, reps)]
    rows += [crackle_row(arrays, reps, None), crackle_row(arrays, reps, 5)]
    rows.append(compresso_row(arrays, reps))
    blosc = BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")
    zarr_rows = [("zstd level 3", ZstdCodec(level=3)), ("blosc zstd-5 bitshuffle", blosc)]
    if not args.quick:
        zarr_rows.append(("zstd level 19", ZstdCodec(level=19)))
    for label, codec in zarr_rows:
        rows.append(
            zarr_row(
                f"zarr v3 + {label}, {slices}-slice chunks",
                arrays,
                reps,
                tmp,
                slices,
                compressors=codec,
            )
        )
    from medmask.codecs.zarr3 import EdgesCodec

    serializer = EdgesCodec()
    rows.append(
        zarr_row(
            f"zarr v3 + medmask.edges, {slices}-slice chunks",
            arrays,
            reps,
            tmp,
            slices,
            serializer=serializer,
            compressors=None,
        )
    )
    rows.append(
        msk_row(
            "medmask .msk, medmask.labels (0.1-era codec)",
            arrays,
            reps,
            tmp,
            codec="medmask.labels",
        )
    )
    rows.append(msk_row(f"medmask .msk, {slices}-slice chunks", arrays, reps, tmp, chunks=slices))
    rows.append(msk_row("**medmask .msk, default** (save_mask / load_mask)", arrays, reps, tmp))
    if not args.quick:
        rows.append(msk_row("medmask .msk, level 19 (archive)", arrays, reps, tmp, level=19))
    return rows


# --- output -------------------------------------------------------------------------------------


def table(title: str, arrays: list[np.ndarray], rows: list[Row]) -> str:
    raw = sum(a.nbytes for a in arrays)
    ref = rows[0]
    crackle5 = next(r for r in rows if "markov" in r.name)
    lines = [
        f"### {title}",
        "",
        f"raw {raw:,} B; (z, y, x) {arrays[0].shape} x {len(arrays)}, {arrays[0].dtype}",
        "",
        "| method | bytes | vs .nii.gz | vs crackle-5 | encode ms | decode ms | decode MB/s "
        "| decode vs nibabel |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.nbytes:,} | 1/{ref.nbytes / r.nbytes:.2f} "
            f"| {r.nbytes / crackle5.nbytes:.2f} | {r.enc_ms:.0f} | {r.dec_ms:.1f} "
            f"| {raw / r.dec_ms / 1e3:,.0f} | {ref.dec_ms / r.dec_ms:.1f}x |"
        )
    return "\n".join(lines) + "\n"


def short(name: str) -> str:
    """A row's name for the plot."""
    name = name.replace("**", "").replace(" (save_mask / load_mask)", "")
    name = name.replace("crackle-codec (markov order 5)", "crackle markov-5")
    name = name.replace("medmask .msk, medmask.labels (0.1-era codec)", "medmask.labels .msk")
    return name.replace(", 32-slice chunks", " /32").replace("zarr v3 + ", "zarr ")


def plot(results: list[tuple[str, list[np.ndarray], list[Row]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    cols = 2
    rows_n = -(-len(results) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(13, 5.2 * rows_n), squeeze=False)
    for ax in axes.flat[len(results) :]:
        ax.set_visible(False)
    for ax, (title, arrays, rows) in zip(axes.flat, results, strict=False):
        raw = sum(a.nbytes for a in arrays)
        for r in rows:
            mbs = raw / r.dec_ms / 1e3
            ours = "medmask" in r.name and "labels" not in r.name
            ax.scatter(mbs, r.nbytes / 1e3, color="tab:red" if ours else "tab:blue", s=28)
            ax.annotate(
                short(r.name),
                (mbs, r.nbytes / 1e3),
                fontsize=7,
                xytext=(4, 2),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("decode MB/s (raw voxels, C order out)")
        ax.set_ylabel("stored kB")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Segmentation codecs: size vs decode speed (lower right is better; red: medmask)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 mm + 0.8 mm only, fewer rows")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5, quick 2)")
    ap.add_argument("--chunk-slices", type=int, default=32, help="z-slab chunks of chunked rows")
    ap.add_argument("--data-dir", type=Path, default=HERE / "_data", help="volume cache")
    ap.add_argument("--plot", type=Path, default=HERE / "codec_frontier.png", help="PNG output")
    args = ap.parse_args(argv)
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    if not TOTALSEG.is_dir():
        sys.exit(f"shared data not found at {TOTALSEG}")

    labels = json.loads((TOTALSEG / "labels_total.json").read_text())
    cases: list[tuple[str, list[np.ndarray]]] = [
        ("multilabel_42, 3 mm (122 x 101 x 30)", [load_zyx(TOTALSEG / "multilabel_42.nii.gz")]),
        (
            "multi-label, 0.8 mm (458 x 379 x 112)",
            [load_zyx(ensure_volume((0.8, 0.8, 0.8), args.data_dir))],
        ),
    ]
    if not args.quick:
        fine = load_zyx(ensure_volume((0.8, 0.8, 0.4), args.data_dir))
        cases += [
            ("multi-label, 0.8 x 0.8 x 0.4 mm (458 x 379 x 225)", [fine]),
            (
                "multi-label, 0.5 mm (732 x 606 x 180)",
                [load_zyx(ensure_volume((0.5, 0.5, 0.5), args.data_dir))],
            ),
            (
                "6 binary organ masks, 0.8 x 0.8 x 0.4 mm",
                [np.ascontiguousarray(fine == labels[n]) for n in ORGANS],
            ),
        ]
    import numcodecs
    import zstandard

    print(
        f"numpy {np.__version__}, zstandard {zstandard.__version__}, nibabel {nib.__version__}, "
        f"zarr {zarr.__version__}, numcodecs {numcodecs.__version__}, "
        f"crackle-codec {getattr(crackle, '__version__', '?')}, medmask {medmask.__version__} "
        f"(compiled kernel: {kernel_available()}); {os.cpu_count()} CPUs; best of {args.reps}\n"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for title, arrays in cases:
            print(f"... {title}", file=sys.stderr)
            rows = rows_for(arrays, args, Path(tmp))
            results.append((title, arrays, rows))
            print(table(title, arrays, rows), flush=True)
    plot(results[1:] if len(results) > 1 else results, args.plot)
    print(f"frontier plot: {args.plot}")


if __name__ == "__main__":
    main()
