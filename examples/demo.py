"""medmask demo: label names and geometry travel with the mask."""

import runpy
from pathlib import Path

HERE = Path(__file__).parent

for script in ("01_labels.py", "02_segmentation_mask.py"):
    print(f"=== {script} ===")
    runpy.run_path(str(HERE / script), run_name="__main__")
