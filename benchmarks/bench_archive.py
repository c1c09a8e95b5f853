"""Archive benchmark: 117 TotalSegmentator organ files vs one .mska, .npz and nibabel.

Every row does the same work on the same data, written by this run into one temporary
folder: "write" stores the 117 binary masks (with their geometry), "read liver" gives the
liver as a bool array, "read all" gives all 117 structures as bool arrays (for the archive:
the decoded layers split by label). Prints a markdown table of sizes and times (best of
--repeat runs). Run from the project root:

    python benchmarks/bench_archive.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

import medmask
from medmask.interop.nifti import affine_from_space, read_nifti

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg"


def _zyx(img: Any) -> np.ndarray:
    """A NIfTI image's (x, y, z) voxels as the (z, y, x) view medmask uses."""
    return np.asarray(img.dataobj).transpose(2, 1, 0)


def best_ms(func: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one repetition")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    organs = sorted((DATA / "organs").glob("*.nii.gz"))
    names = [p.name.removesuffix(".nii.gz") for p in organs]
    nifti_bytes = sum(p.stat().st_size for p in organs)
    arrays = {n: read_nifti(p)[0] != 0 for n, p in zip(names, organs, strict=True)}
    _, space = read_nifti(organs[0])
    raw_bytes = sum(a.size for a in arrays.values())  # as uint8 0/1 volumes

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        path = tmpdir / "organs.mska"

        def write_archive() -> medmask.archive.LayeringReport:
            with medmask.MaskArchive(path, "w", space=space) as archive:
                return archive.add_structures(arrays, mapping=None)

        write_ms = best_ms(write_archive, repeat)
        report = write_archive()
        archive_bytes = path.stat().st_size

        one_per = tmpdir / "one_per_structure.mska"
        with medmask.MaskArchive(one_per, "w", space=space) as archive:
            for name, array in arrays.items():
                archive.add_segmask(medmask.SegmentationMask(array, {name: 1}, space), name)
        one_per_bytes = one_per.stat().st_size

        def write_npz() -> bytes:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **{n: a.astype(np.uint8) for n, a in arrays.items()})
            return buffer.getvalue()

        npz_ms = best_ms(write_npz, repeat)
        npz_blob = write_npz()

        nifti_dir = tmpdir / "nifti"
        nifti_dir.mkdir()
        affine = affine_from_space(space)

        def nib_write_all() -> None:
            for name, array in arrays.items():
                img = nib.Nifti1Image(array.astype(np.uint8).transpose(2, 1, 0), affine)
                nib.save(img, nifti_dir / f"{name}.nii.gz")

        nib_write_ms = best_ms(nib_write_all, repeat)
        nib_bytes = sum(p.stat().st_size for p in nifti_dir.iterdir())

        def nib_read_all() -> dict[str, np.ndarray]:
            return {n: _zyx(nib.load(nifti_dir / f"{n}.nii.gz")) != 0 for n in names}

        def nib_read_one() -> np.ndarray:
            return _zyx(nib.load(nifti_dir / "liver.nii.gz")) != 0

        def npz_read_all() -> dict[str, np.ndarray]:
            with np.load(io.BytesIO(npz_blob)) as z:
                return {n: z[n] != 0 for n in z.files}

        def npz_read_one() -> np.ndarray:
            with np.load(io.BytesIO(npz_blob)) as z:
                return z["liver"] != 0

        def mska_read_all() -> dict[str, np.ndarray]:
            with medmask.MaskArchive(path) as archive:
                layers = archive.read_all_masks()
            return {
                name: layer.data == value
                for layer in layers.values()
                for name, value in layer.mapping.items()
            }

        def mska_read_one() -> np.ndarray:
            with medmask.MaskArchive(path) as archive:
                return archive.load_structure("liver")

        for read_all in (nib_read_all, npz_read_all, mska_read_all):
            got = read_all()
            assert got.keys() == arrays.keys()
            assert all(np.array_equal(got[n], arrays[n]) for n in names)

        def mska_info() -> None:
            with medmask.MaskArchive(path) as archive:
                archive.info()

        rows = [
            (
                "117 x .nii.gz (nibabel)",
                nib_bytes,
                nib_write_ms,
                best_ms(nib_read_one, repeat),
                best_ms(nib_read_all, repeat),
            ),
            (
                "one .npz (savez_compressed)",
                len(npz_blob),
                npz_ms,
                best_ms(npz_read_one, repeat),
                best_ms(npz_read_all, repeat),
            ),
            (
                f"medmask .mska ({report.n_layers} layer)",
                archive_bytes,
                write_ms,
                best_ms(mska_read_one, repeat),
                best_ms(mska_read_all, repeat),
            ),
            (
                "medmask .mska, one member per structure",
                one_per_bytes,
                float("nan"),
                float("nan"),
                float("nan"),
            ),
        ]
        print(f"117 organ masks, shape (z, y, x) {space.shape}, raw {raw_bytes:,} bytes as uint8\n")
        print("| container | bytes | vs .nii.gz | write ms | read liver ms | read all ms |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for label, size, w, r1, ra in rows:
            cells = [f"{v:.1f}" if v == v else "-" for v in (w, r1, ra)]
            smaller = f"{nib_bytes / size:.1f}x smaller"
            print(f"| {label} | {size:,} | {smaller} | " + " | ".join(cells) + " |")
        print(
            f"\nTotalSegmentator's own 117 files: {nifti_bytes:,} B "
            f"({nifti_bytes / archive_bytes:.1f}x the archive)"
        )
        print(f"metadata only (open + info(), no decoding): {best_ms(mska_info, repeat):.2f} ms")
        print(
            f"layers: {report.n_layers}; archive is {one_per_bytes / archive_bytes:.2f}x smaller "
            "than one member per structure"
        )


if __name__ == "__main__":
    main()
