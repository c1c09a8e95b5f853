"""The fuzz target's regression inputs and seed corpus replay with one answer from both edges
decoders (fuzz/fuzz_edges.py), in a child process so that a crash fails the test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = ROOT / "tests" / "fixtures" / "fuzz-regressions"
TARGET = ROOT / "fuzz" / "fuzz_edges.py"


def replay(*paths: Path) -> str:
    env = {**os.environ, "MEDMASK_KERNEL": "1"}
    proc = subprocess.run(
        [sys.executable, str(TARGET), "--replay", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    return proc.stdout


def test_the_regression_inputs_replay() -> None:
    inputs = [p for p in REGRESSIONS.iterdir() if p.suffix != ".md"]
    assert len(inputs) >= 3
    assert f"replayed {len(inputs)} inputs" in replay(*inputs)


def test_the_seed_corpus_replays(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(TARGET), "--seeds", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    seeds = list(tmp_path.iterdir())
    assert len(seeds) >= 20  # every kind-3 stream of tests/fixtures, modes 0, 1 and 2
    assert f"replayed {len(seeds)} inputs" in replay(tmp_path)
