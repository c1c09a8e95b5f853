"""medmask.config: the environment read once, settings changed for a block, explicit
arguments winning over both."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

import medmask
from medmask import config
from medmask.errors import InvalidValueError


def test_defaults_match_docs_format_section_6() -> None:
    defaults = config.from_environ({})
    assert defaults == config.Config()
    assert (defaults.max_voxels, defaults.max_bytes) == (1 << 33, 8 << 30)
    assert (defaults.range_gap, defaults.range_block) == (4096, 16 << 20)
    assert (defaults.max_concurrency, defaults.decode_threads) == (32, 8)
    assert (defaults.head_cache_entries, defaults.head_cache_bytes) == (1024, 256 << 20)
    assert defaults.head_cache_ttl == 60.0


def test_every_setting_has_its_environment_variable() -> None:
    environ = {variable: "7" for variable in config.ENVIRONMENT_VARIABLES.values()}
    environ["MEDMASK_HEAD_CACHE_TTL"] = "2.5"
    settings = config.from_environ(environ)
    assert settings.max_voxels == settings.decode_threads == settings.range_gap == 7
    assert settings.head_cache_ttl == 2.5
    assert config.from_environ({"MEDMASK_MAX_BYTES": " "}) == config.Config()  # blank: unset


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MEDMASK_MAX_VOXELS": "many"}, "MEDMASK_MAX_VOXELS: expected a number. Got 'many'."),
        ({"MEDMASK_MAX_VOXELS": "1.5"}, "MEDMASK_MAX_VOXELS: expected a number. Got '1.5'."),
        ({"MEDMASK_RANGE_GAP": "-1"}, "expected range_gap as a non-negative int. Got -1."),
        ({"MEDMASK_DECODE_THREADS": "0"}, "decode_threads and max_concurrency must be at least 1"),
    ],
)
def test_bad_environment_values_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidValueError) as caught:
        config.from_environ(environ)
    assert message in str(caught.value)


def test_the_environment_is_read_once_at_import(tmp_path: object) -> None:
    script = (
        "import os, medmask\n"
        "first = medmask.config.get().max_voxels\n"
        "os.environ['MEDMASK_MAX_VOXELS'] = '5'\n"
        "later = medmask.config.get().max_voxels\n"
        "print(first, later, medmask.config.refresh().max_voxels)\n"
    )
    env = {**os.environ, "MEDMASK_MAX_VOXELS": "1234"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["1234", "1234", "5"]


def test_set_changes_settings_for_a_block_and_restores_them() -> None:
    before = config.get()
    with config.set(max_voxels=10, range_gap=0) as inside:
        assert config.get() is inside
        assert (inside.max_voxels, inside.range_gap) == (10, 0)
        assert inside.max_bytes == before.max_bytes
        with config.set(max_voxels=20):
            assert config.get().max_voxels == 20
        assert config.get().max_voxels == 10
    assert config.get() == before
    with pytest.raises(RuntimeError), config.set(max_voxels=10):
        raise RuntimeError
    assert config.get() == before


def test_set_is_process_wide(  # as zarr.config.set: worker threads see the block's settings
) -> None:
    seen: list[int] = []
    with config.set(max_voxels=99):
        worker = threading.Thread(target=lambda: seen.append(config.get().max_voxels))
        worker.start()
        worker.join()
    assert seen == [99]


def test_set_refuses_unknown_and_bad_settings() -> None:
    with pytest.raises(InvalidValueError, match=r"unknown settings \['max_voxel'\]"):
        config.set(max_voxel=1).__enter__()
    for bad in (-1, True, "8"):
        with pytest.raises(InvalidValueError, match="expected max_bytes as a non-negative int"):
            config.set(max_bytes=bad).__enter__()
    assert config.get() == config.from_environ()


def test_limit_helpers_prefer_the_argument() -> None:
    with config.set(max_voxels=10, max_bytes=20):
        assert config.max_voxels_limit() == 10
        assert config.max_voxels_limit(0) == 0
        assert config.max_bytes_limit() == 20
        assert config.max_bytes_limit(5) == 5


def test_range_planning_follows_the_settings() -> None:
    from medmask.io import merge_ranges

    ranges = [(0, 10), (20, 30), (100, 110)]
    assert merge_ranges(ranges) == [(0, 110)]  # 4 KiB gap by default
    with config.set(range_gap=10):
        assert merge_ranges(ranges) == [(0, 30), (100, 110)]
    with config.set(range_block=50):
        assert merge_ranges(ranges) == [(0, 30), (100, 110)]  # (0, 110) would exceed 50 bytes
    assert merge_ranges(ranges, gap=0) == ranges  # explicit arguments win


def test_config_is_importable_without_io() -> None:
    code = "import sys, medmask; print('medmask.io' in sys.modules, 'fsspec' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
    assert medmask.config is config
