"""One archive for exclusive and overlapping structures: lobes, their union, a lesion."""

import sys
import tempfile
from pathlib import Path

import numpy as np

import medmask
from medmask.interop.nifti import read_nifti

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg"
if not DATA.is_dir():
    sys.exit(f"shared data not found at {DATA}: clone the project beside shared/")

lobe_names = [
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
]
lobes = {}
for name in lobe_names:
    array, space = read_nifti(DATA / "organs" / f"{name}.nii.gz")
    lobes[name] = array != 0
lung = np.logical_or.reduce(list(lobes.values()))
print("Lobe voxels:", {name: int(mask.sum()) for name, mask in lobes.items()})
print("(the example CT covers the lower chest: the right upper and middle lobes are empty)")

# A synthetic lesion: a box around a point where the left upper and lower lobes meet.
upper, lower = lobes["lung_upper_lobe_left"], lobes["lung_lower_lobe_left"]
touch = np.argwhere(upper & np.roll(lower, 1, axis=0))
z, y, x = touch[len(touch) // 2]
lesion = np.zeros_like(lung)
lesion[z - 1 : z + 2, y - 2 : y + 3, x - 2 : x + 3] = True
lesion &= lung
print(
    "Lesion voxels:",
    int(lesion.sum()),
    "| in upper lobe:",
    int((lesion & upper).sum()),
    "| in lower lobe:",
    int((lesion & lower).sum()),
)

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "lungs.mska"
    with medmask.MaskArchive(path, "w", space=space) as archive:
        report = archive.add_structures({**lobes, "lung": lung, "lesion_1": lesion})
    print("Layers:", report.n_layers)
    for member, names in report.layers.items():
        print(f"  {member}: {', '.join(names)}")

    with medmask.MaskArchive(path) as archive:
        print("Where is lesion_1:", archive.locate("lesion_1"))
        both = archive.get_binary_mask_by_names(["lung_upper_lobe_left", "lesion_1"])
        print("Upper lobe or lesion voxels:", int(both.sum()))
        exact = all(
            np.array_equal(archive.load_structure(name), mask)
            for name, mask in {**lobes, "lung": lung, "lesion_1": lesion}.items()
        )
        print("Every structure reads back identical:", exact)
        for info in archive.info():
            print(f"  {info.name}: {len(info.labels)} labels, {info.compressed_bytes} bytes")
    print("Archive bytes:", path.stat().st_size)
