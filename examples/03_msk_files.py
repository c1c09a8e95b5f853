"""Save a TotalSegmentator labelmap as .msk, read metadata without decoding, load an ROI."""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import medmask
from medmask.interop.nifti import read_nifti

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg"
if not DATA.is_dir():
    sys.exit(f"shared data not found at {DATA}: clone the project beside shared/")

labels = json.loads((DATA / "labels_total.json").read_text())
array, space = read_nifti(DATA / "multilabel_42.nii.gz")  # (z, y, x) array, LPS space
present = set(np.unique(array).tolist()) - {0}
mapping = {name: value for name, value in labels.items() if value in present}
mask = medmask.SegmentationMask(array, mapping, space)

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "case.msk"
    nbytes = medmask.save_mask(mask, path)
    nifti_bytes = (DATA / "multilabel_42.nii.gz").stat().st_size
    print(f"Saved {nbytes} bytes (.nii.gz: {nifti_bytes} bytes)")

    info = medmask.read_info(path)  # header only, no voxels decoded
    print("Shape (z, y, x):", info.shape, "| labels:", len(info.labels))
    print(f"Liver volume from the header: {info.volumes_mm3()['liver'] / 1000:.1f} ml")
    print("Liver bounding box:", info.bboxes()["liver"])

    loaded = medmask.load_mask(path)
    print("Round trip equal:", loaded == mask)

    (z0, z1), (y0, y1), (x0, x1) = info.bboxes()["liver"]
    roi = medmask.load_mask(path, roi=(slice(z0, z1 + 1), slice(y0, y1 + 1), slice(x0, x1 + 1)))
    liver_voxels = int(roi.get_binary_mask_by_names("liver").sum())
    print("ROI shape:", roi.shape, "| liver voxels in ROI:", liver_voxels)
    print("ROI matches header count:", liver_voxels == info.voxel_counts()["liver"])
