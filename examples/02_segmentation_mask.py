"""A SegmentationMask: a (z, y, x) label array with names and geometry."""

import numpy as np
from spacetransformer import Space

from medmask import LabelMapping, SegmentationMask

# A 1 x 3 x 4 volume (z, y, x) with three organs.
array = np.array(
    [
        [
            [1, 1, 0, 0],
            [2, 2, 2, 0],
            [0, 3, 3, 3],
        ]
    ],
    dtype=np.uint8,
)
mapping = LabelMapping({"liver": 1, "spleen": 2, "kidney": 3})
space = Space(shape=(1, 3, 4), spacing=(2.0, 0.8, 0.8))  # (z, y, x) order, LPS
mask = SegmentationMask(array, mapping, space)

print(mask)
print("Bit depth:", mask.bit_depth)
print("Liver voxels:", int(mask.get_binary_mask_by_names("liver").sum()))
print("Liver+spleen voxels:", int(mask.get_binary_mask_by_names(["liver", "spleen"]).sum()))
print("Label 3 voxels:", int(mask.get_binary_mask_by_labels(3).sum()))
print("All labelled voxels:", int(mask.to_binary().sum()))
print("Counts:", mask.label_counts())

# Incremental build: start empty, add one structure at a time.
built = SegmentationMask.lazy_init(8, shape=(1, 3, 4))
liver = np.zeros((1, 3, 4), dtype=bool)
liver[0, 0, :] = True  # 4 voxels
spleen = np.zeros((1, 3, 4), dtype=bool)
spleen[0, 0, 3] = True  # overwrites one liver voxel
spleen[0, 1, 1:4] = True
built.add_label(liver, 1, "liver")
built.add_label(spleen, 2, "spleen")
print("Liver after overwrite:", int(built.get_binary_mask_by_names("liver").sum()))
print("Combined nonzero:", int(np.count_nonzero(built.data)))

try:
    built.add_label(spleen, 2, "kidney")
except ValueError as error:
    print("Duplicate label rejected:", error)
