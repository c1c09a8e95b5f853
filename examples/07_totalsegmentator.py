"""TotalSegmentator's 117 organ files -> one archive, queried by name (real data).

Run from the project root with the shared data beside it (../shared/data). The same from the
command line: `medmask pack ../shared/data/totalseg/organs case.mska --labels
../shared/data/totalseg/labels_total.json`, then `medmask info case.mska`.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import medmask
from medmask.interop.nifti import read_nifti

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg"
if not DATA.is_dir():
    sys.exit(f"shared data not found at {DATA}: clone the project beside shared/")

organs = sorted((DATA / "organs").glob("*.nii.gz"))
nifti_bytes = sum(p.stat().st_size for p in organs)
print(f"Input: {len(organs)} per-organ .nii.gz files, {nifti_bytes:,} bytes")

with tempfile.TemporaryDirectory() as tmp:
    archive_path = Path(tmp) / "case.mska"
    t0 = time.perf_counter()
    report = medmask.pack_folder(DATA / "organs", archive_path, mapping=DATA / "labels_total.json")
    seconds = time.perf_counter() - t0
    size = archive_path.stat().st_size
    print(
        f"Packed into {report.n_layers} layer(s): {size:,} bytes "
        f"({nifti_bytes / size:.1f}x smaller) in {seconds:.2f} s"
    )

    with medmask.MaskArchive(archive_path) as archive:
        info = archive.info()[0]
        volumes = info.volumes_mm3()
        print(
            "Structures:",
            len(archive.structures()),
            "| space spacing (z, y, x):",
            tuple(round(float(s), 2) for s in archive.space.spacing),
        )
        print(f"Liver volume from the header alone: {volumes['liver'] / 1000:.1f} ml")
        liver = archive.load_structure("liver")
        reference, _ = read_nifti(DATA / "organs" / "liver.nii.gz")
        print("Liver identical to its .nii.gz:", bool(np.array_equal(liver, reference != 0)))
        kidneys = archive.get_binary_mask_by_names(["kidney_left", "kidney_right"])
        print("Kidney voxels:", int(kidneys.sum()))

    out = Path(tmp) / "unpacked"
    files = medmask.unpack(archive_path, out)
    print(f"Unpacked back to {len(files)} .nii.gz files")
