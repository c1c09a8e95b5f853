"""Every script in examples/ runs to completion; key printed lines are checked where listed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "examples").glob("*.py"))

# Substrings that must appear in a script's stdout. Scripts without an entry only have to run
# and exit 0.
EXPECTED: dict[str, list[str]] = {
    "01_labels.py": [
        "By item: 1",
        "By attribute: 2",
        "By call: 3",
        "Inverse of 2: spleen",
        "Has label 3: True | has label 9: False",
        "Names: ['liver', 'spleen', 'kidney_left'] | count: 3",
        "Round trip equal: True",
        "Unknown name: No label named 'livr'. Did you mean 'liver'?",
        "Duplicate value rejected: Duplicate label value 1",
        "Label called 'items': 7",
        "Attribute access refused: 'items' is both a label name and a LabelMapping attribute",
    ],
    "02_segmentation_mask.py": [
        "bit_depth=8",
        "Bit depth: 8",
        "Liver voxels: 2",
        "Liver+spleen voxels: 5",
        "Label 3 voxels: 3",
        "All labelled voxels: 8",
        "Counts: {'liver': 2, 'spleen': 3, 'kidney': 3}",
        "Liver after overwrite: 3",
        "Combined nonzero: 7",
        "Duplicate label rejected: Label value 2 already exists (name 'spleen').",
    ],
    "06_cohort.py": [
        "Uploaded 50 references and 50 predictions to s3://cohort/",
        "Rows: 267 statistics, 280 comparisons",
        "Missed kidney_right cases (Dice 0): 10",
        "Plot written to",
    ],
    "05_zarr_notebook.py": [
        "3 layers (lesion overlaps)",
        "Structures: ['body', 'lesion', 'liver']",
        "Same as stored statistics: True",
    ],
}


def test_examples_exist() -> None:
    names = [script.name for script in SCRIPTS]
    assert "01_labels.py" in names
    assert "02_segmentation_mask.py" in names


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expectations_name_existing_scripts(name: str) -> None:
    # a renamed script must not silently lose its checks
    assert (ROOT / "examples" / name).is_file()


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_example_runs(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script.name} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.strip(), f"{script.name} printed nothing"
    missing = [line for line in EXPECTED.get(script.name, []) if line not in result.stdout]
    assert not missing, f"{script.name}: missing {missing} in stdout:\n{result.stdout}"
