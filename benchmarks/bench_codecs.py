#!/usr/bin/env python
"""Benchmark medmask's chunk codecs against nibabel .nii.gz and other label compressors.

Prints markdown tables (bytes, ratio vs .nii.gz, encode ms, decode ms, decode MB/s, decode
speed-up vs nibabel) for:

- the shared 3 mm ``multilabel_42.nii.gz`` (122 x 101 x 30),
- full-resolution multi-label volumes generated with ``../shared/tools/upsample_labels.py``
  (0.8 mm isotropic: 458 x 379 x 112; 0.8 x 0.8 x 0.4 mm: 458 x 379 x 225),
- 6 big organs of the 0.4 mm volume as bool masks (sums over the 6 masks).

Volumes are cached in ``benchmarks/_data/``. Times are the best of ``--reps`` runs (slow
encoders, > 2 s, run once). medmask rows: whole volume in one call, and "chunked": z-slabs of
``--chunk-slices`` slices encoded one by one and decoded by a 2-thread pool into one array.

Usage::

    python benchmarks/bench_codecs.py            # full run (several minutes: zstd-19 rows)
    python benchmarks/bench_codecs.py --quick    # 3 mm + 0.8 mm iso only, fewer reps
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard as zstd

import medmask
from medmask.codecs import BinaryCodec, LabelCodec

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO / ".." / "shared"
TOTALSEG = SHARED / "data" / "totalseg"
UPSAMPLE = SHARED / "tools" / "upsample_labels.py"
ORGANS = ["liver", "spleen", "kidney_right", "kidney_left", "stomach", "colon"]

try:
    import nibabel as nib
except ImportError:  # pragma: no cover
    sys.exit("bench_codecs.py needs nibabel: pip install 'medmask[bench]'")


@dataclass
class Row:
    name: str
    nbytes: int
    enc_ms: float
    dec_ms: float


def best_time(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """Best wall time (ms) of ``reps`` calls, and the last result."""
    best = float("inf")
    out = None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        if best > 2.0:  # slow: one run is enough
            break
    return best * 1e3, out


def load_zyx(path: Path) -> np.ndarray:
    """NIfTI (x, y, z) -> C-contiguous (z, y, x)."""
    return np.ascontiguousarray(np.asarray(nib.load(path).dataobj).transpose(2, 1, 0))


def ensure_volume(spacing: Sequence[float], data_dir: Path) -> Path:
    """Generate (once) the full-resolution volume at ``spacing`` mm."""
    name = "full_" + "x".join(f"{s:g}" for s in spacing) + ".nii.gz"
    out = data_dir / name
    if not out.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        spc = [str(s) for s in spacing]
        cmd = [sys.executable, str(UPSAMPLE), "--out", str(out), "--spacing", *spc]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


# --- reference compressors -------------------------------------------------------------


def nifti_row(arrays: list[np.ndarray], reps: int, tmp: Path) -> Row:
    enc = dec = 0.0
    size = 0
    for i, a in enumerate(arrays):
        path = tmp / f"bench_{i}.nii.gz"
        u8 = a.view(np.uint8) if a.dtype == np.bool_ else a
        img = nib.Nifti1Image(u8.transpose(2, 1, 0), np.eye(4))
        t, _ = best_time(lambda img=img, path=path: nib.save(img, path), reps)
        enc += t
        t, _ = best_time(lambda path=path: np.asarray(nib.load(path).dataobj), reps)
        dec += t
        size += path.stat().st_size
    return Row("nibabel .nii.gz", size, enc, dec)


def generic_row(
    name: str,
    arrays: list[np.ndarray],
    reps: int,
    enc_fn: Callable[[np.ndarray], Any],
    dec_fn: Callable[[Any, np.ndarray], np.ndarray],
    size_fn: Callable[[Any], int],
) -> Row:
    enc = dec = 0.0
    size = 0
    for a in arrays:
        t, blob = best_time(lambda a=a: enc_fn(a), reps)
        enc += t
        t, got = best_time(lambda blob=blob, a=a: dec_fn(blob, a), reps)
        dec += t
        if not np.array_equal(got, a):
            raise AssertionError(f"{name}: round trip differs")
        size += size_fn(blob)
    return Row(name, size, enc, dec)


def savez_enc(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, a=a)
    return buf.getvalue()


def savez_dec(blob: bytes, a: np.ndarray) -> np.ndarray:
    with np.load(io.BytesIO(blob)) as f:
        return f["a"]  # type: ignore[no-any-return]


def zstd_raw_enc(a: np.ndarray, level: int = 3) -> bytes:
    return zstd.ZstdCompressor(level=level).compress(a.tobytes())


def zstd_raw_dec(blob: bytes, a: np.ndarray) -> np.ndarray:
    raw = zstd.ZstdDecompressor().decompress(blob)
    return np.frombuffer(raw, dtype=a.dtype).reshape(a.shape)


def bitpack_enc(a: np.ndarray) -> bytes:
    return zstd.ZstdCompressor(level=19).compress(np.packbits(a, axis=-1).tobytes())


def bitpack_dec(blob: bytes, a: np.ndarray) -> np.ndarray:
    raw = zstd.ZstdDecompressor().decompress(blob)
    packed = np.frombuffer(raw, np.uint8).reshape(*a.shape[:-1], -1)
    return np.unpackbits(packed, axis=-1, count=a.shape[-1]).view(np.bool_)


def rlex_enc(a: np.ndarray) -> tuple[bytes, bytes]:
    """Run lengths along x (runs restart at every row), values and lengths as 2 zstd-19 frames."""
    flat = a.reshape(-1).view(np.uint8)
    nx = a.shape[-1]
    change = np.empty(flat.size, dtype=bool)
    change[0] = True
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    change[::nx] = True
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, flat.size)).astype("<u2")
    cctx = zstd.ZstdCompressor(level=19)
    return cctx.compress(flat[starts].tobytes()), cctx.compress(lengths.tobytes())


def rlex_dec(blob: tuple[bytes, bytes], a: np.ndarray) -> np.ndarray:
    dctx = zstd.ZstdDecompressor()
    values = np.frombuffer(dctx.decompress(blob[0]), np.uint8)
    lengths = np.frombuffer(dctx.decompress(blob[1]), "<u2")
    return np.repeat(values, lengths).view(a.dtype).reshape(a.shape)


# --- medmask ------------------------------------------------------------------------------


def medmask_row(codec: BinaryCodec | LabelCodec, arrays: list[np.ndarray], reps: int) -> Row:
    def dec(blob: bytes, a: np.ndarray) -> np.ndarray:
        return codec.decode(blob)

    name = f"medmask {codec.codec_id} level {codec.level}"
    return generic_row(name, arrays, reps, codec.encode, dec, len)


def medmask_chunked_row(
    codec: BinaryCodec | LabelCodec,
    arrays: list[np.ndarray],
    reps: int,
    slices: int,
    pool: ThreadPoolExecutor,
) -> Row:
    def enc(a: np.ndarray) -> list[tuple[int, bytes]]:
        return [
            (z, codec.encode(np.ascontiguousarray(a[z : z + slices])))
            for z in range(0, a.shape[0], slices)
        ]

    def dec(blobs: list[tuple[int, bytes]], a: np.ndarray) -> np.ndarray:
        out = np.empty(a.shape, a.dtype)

        def one(item: tuple[int, bytes]) -> None:
            z, blob = item
            out[z : z + slices] = codec.decode(blob)

        list(pool.map(one, blobs))
        return out

    def size(blobs: list[tuple[int, bytes]]) -> int:
        return sum(len(b) for _, b in blobs)

    name = f"medmask {codec.codec_id} level {codec.level}, {slices}-slice chunks, 2 threads"
    return generic_row(name, arrays, reps, enc, dec, size)


def optional_rows(arrays: list[np.ndarray], reps: int) -> list[Row]:
    rows = []
    try:
        import crackle
    except ImportError:
        print("(crackle-codec not importable: row skipped)")
    else:
        rows.append(
            generic_row(
                "crackle-codec",
                arrays,
                reps,
                lambda a: crackle.compress(a.view(np.uint8).T),
                lambda b, a: crackle.decompress(b).T.view(a.dtype),
                len,
            )
        )
    try:
        import compresso
    except ImportError:
        print("(compresso not importable: row skipped)")
    else:
        rows.append(
            generic_row(
                "compresso + xz",
                arrays,
                reps,
                lambda a: lzma.compress(compresso.compress(np.asfortranarray(a.view(np.uint8).T))),
                lambda b, a: compresso.decompress(lzma.decompress(b)).T.view(a.dtype),
                len,
            )
        )
    return rows


# --- tables -------------------------------------------------------------------------------


def table(title: str, arrays: list[np.ndarray], rows: list[Row]) -> str:
    raw = sum(a.nbytes for a in arrays)
    ref = rows[0]
    lines = [
        f"### {title}",
        "",
        f"raw {raw:,} B; shape (z, y, x) {arrays[0].shape} x {len(arrays)}, "
        f"dtype {arrays[0].dtype}",
        "",
        "| method | bytes | ratio vs nii.gz | encode ms | decode ms | decode MB/s "
        "| decode speed-up vs nibabel |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.nbytes:,} | {ref.nbytes / r.nbytes:.2f} | {r.enc_ms:.0f} "
            f"| {r.dec_ms:.1f} | {raw / r.dec_ms / 1e3:,.0f} | {ref.dec_ms / r.dec_ms:.2f} |"
        )
    return "\n".join(lines) + "\n"


def msk_file_row(arrays: list[np.ndarray], reps: int, tmp: Path) -> Row:
    """End to end: ``save_mask`` to a .msk file (stats, chunking, checksums) and ``load_mask``."""
    enc = dec = 0.0
    size = 0
    for i, a in enumerate(arrays):
        labels = [int(v) for v in np.flatnonzero(np.bincount(a.ravel().astype(np.int64))) if v]
        mask = medmask.SegmentationMask(a, {f"label_{v}": v for v in labels})
        path = tmp / f"bench_{i}.msk"
        t, _ = best_time(lambda mask=mask, path=path: medmask.save_mask(mask, path), reps)
        enc += t
        t, got = best_time(lambda path=path: medmask.load_mask(path).data, reps)
        dec += t
        if not np.array_equal(got, a):
            raise AssertionError("medmask .msk: round trip differs")
        size += path.stat().st_size
    return Row("**medmask .msk file, default** (save_mask / load_mask)", size, enc, dec)


def run_case(
    title: str,
    arrays: list[np.ndarray],
    binary: bool,
    args: argparse.Namespace,
    pool: ThreadPoolExecutor,
    tmp: Path,
) -> str:
    reps = args.reps
    print(f"... {title}", file=sys.stderr)
    rows = [nifti_row(arrays, reps, tmp), msk_file_row(arrays, reps, tmp)]
    rows.append(generic_row("np.savez_compressed", arrays, reps, savez_enc, savez_dec, len))
    rows.append(generic_row("zstd-3 raw", arrays, reps, zstd_raw_enc, zstd_raw_dec, len))
    if binary:
        rows.append(generic_row("bitpack + zstd-19", arrays, reps, bitpack_enc, bitpack_dec, len))
    if not args.quick:
        rows.append(
            generic_row(
                "RLE-x + zstd-19", arrays, reps, rlex_enc, rlex_dec, lambda b: len(b[0]) + len(b[1])
            )
        )
    rows.extend(optional_rows(arrays, reps))
    cls = BinaryCodec if binary else LabelCodec
    for level in args.levels:
        rows.append(medmask_row(cls(level=level), arrays, reps))
    if arrays[0].shape[0] > args.chunk_slices:
        rows.append(
            medmask_chunked_row(cls(level=args.levels[0]), arrays, reps, args.chunk_slices, pool)
        )
    return table(title, arrays, rows)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run: 3 mm + 0.8 mm iso, 2 reps")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5, quick 2)")
    ap.add_argument(
        "--levels", type=int, nargs="+", default=None, help="medmask levels (default 9 1 3 19)"
    )
    ap.add_argument("--chunk-slices", type=int, default=32, help="z-slab chunk size (slices)")
    ap.add_argument("--data-dir", type=Path, default=HERE / "_data", help="volume cache")
    args = ap.parse_args(argv)
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    if args.levels is None:
        args.levels = [9, 3] if args.quick else [9, 1, 3, 19]
    if not TOTALSEG.is_dir():
        sys.exit(f"shared data not found at {TOTALSEG}")

    labels = json.loads((TOTALSEG / "labels_total.json").read_text())
    small = load_zyx(TOTALSEG / "multilabel_42.nii.gz")
    iso = load_zyx(ensure_volume((0.8, 0.8, 0.8), args.data_dir))
    cases: list[tuple[str, list[np.ndarray], bool]] = [
        ("multilabel_42, 3 mm", [small], False),
        ("full-res multi-label, 0.8 mm iso (458 x 379 x 112)", [iso], False),
    ]
    if args.quick:
        masks = [np.ascontiguousarray(iso == labels[n]) for n in ORGANS]
        cases.append(("6 binary organ masks, 0.8 mm iso", masks, True))
    else:
        fine = load_zyx(ensure_volume((0.8, 0.8, 0.4), args.data_dir))
        masks = [np.ascontiguousarray(fine == labels[n]) for n in ORGANS]
        cases.append(("full-res multi-label, 0.8 x 0.8 x 0.4 mm (458 x 379 x 225)", [fine], False))
        cases.append(("6 binary organ masks (" + ", ".join(ORGANS) + "), 0.4 mm", masks, True))

    print(
        f"numpy {np.__version__}, zstandard {zstd.__version__}, nibabel {nib.__version__}, "
        f"{os.cpu_count()} CPUs; best of {args.reps}\n"
    )
    with ThreadPoolExecutor(2) as pool, tempfile.TemporaryDirectory() as tmp:
        for title, arrays, binary in cases:
            print(run_case(title, arrays, binary, args, pool, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
