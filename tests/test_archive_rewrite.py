"""No laundering: a rewrite (``compact()``, a remote append) checks every chunk it carries over
before writing it with a fresh CRC, and on damage raises and leaves the file as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from damaged_archives import CHUNKS, crc_mismatch, member, overwritten, sound, wrong_stream
from medmask import ChecksumError, FormatError, MaskArchive
from medmask.errors import MedmaskError

DAMAGE: dict[str, tuple[Callable[[Path], bytes], type[MedmaskError], str]] = {
    "crc mismatch": (crc_mismatch, ChecksumError, "checksum mismatch"),
    "m2's chunk in m1's place": (overwritten, ChecksumError, "checksum mismatch"),
    "uint16 stream in a uint8 member": (
        lambda p: wrong_stream(p, "dtype"),
        FormatError,
        "dtype uint8 .*Got .*dtype uint16",
    ),
    "stream of half the chunk's shape": (
        lambda p: wrong_stream(p, "shape"),
        FormatError,
        r"shape \(6, 10, 24\)\. Got .*shape \(3, 10, 24\)",
    ),
}


@pytest.fixture(params=list(DAMAGE))
def damaged(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, bytes, Any, str]:
    build, error, message = DAMAGE[request.param]
    path = tmp_path / "damaged.mska"
    return path, build(path), error, message


def _assert_m2_intact(path: Path) -> None:
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["m1", "m2"]
        np.testing.assert_array_equal(archive.load_segmask("m2").data, member(2).data)


def test_damage_is_what_the_reader_refuses(damaged: tuple[Path, bytes, Any, str]) -> None:
    """The fixtures are honest: reading m1 fails the same way (never m2's voxels)."""
    path, _, error, message = damaged
    with MaskArchive(path) as archive:
        with pytest.raises(error, match=message):
            archive.load_segmask("m1")
        problems = archive.verify()
    assert len(problems) == 1
    assert "[m1]" in problems[0]


def test_compact_refuses_a_damaged_chunk(damaged: tuple[Path, bytes, Any, str]) -> None:
    path, before, error, message = damaged
    with MaskArchive(path, "a") as archive:
        with pytest.raises(error, match=rf"damaged\.mska \[m1\]: chunk 0 .*{message}"):
            archive.compact()
        assert archive.all_names() == ["m1", "m2"]  # the handle still shows the old state
    assert path.read_bytes() == before
    _assert_m2_intact(path)


def test_compact_with_pending_members_refuses_too(damaged: tuple[Path, bytes, Any, str]) -> None:
    path, before, error, _ = damaged
    with MaskArchive(path, "a") as archive:
        archive.add_segmask(member(3), "m3", chunks=CHUNKS)  # committed in place
        after_append = path.read_bytes()
        assert after_append[: len(before)] != before  # a new slot...
        assert len(after_append) > len(before)  # ...and m3 after the old bytes
        with pytest.raises(error, match=r"\[m1\]: chunk 0"):
            archive.compact()
    assert path.read_bytes() == after_append
    with MaskArchive(path) as archive:
        np.testing.assert_array_equal(archive.load_segmask("m3").data, member(3).data)


def test_compact_of_a_sound_archive_keeps_every_voxel(tmp_path: Path) -> None:
    path = tmp_path / "sound.mska"
    sound(path)
    with MaskArchive(path, "a") as archive:
        archive.remove("m1")
        archive.compact()
    with MaskArchive(path) as archive:
        assert archive.all_names() == ["m2"]
        assert archive.verify() == []
        np.testing.assert_array_equal(archive.load_segmask("m2").data, member(2).data)


# --- remote: the object is rewritten with one conditional PUT -----------------------------------


@pytest.mark.parametrize("operation", ["append", "compact"])
def test_s3_rewrite_refuses_a_damaged_chunk(
    s3: Any, tmp_path: Path, damaged: tuple[Path, bytes, Any, str], operation: str
) -> None:
    _, before, error, message = damaged
    s3.fs.pipe_file(s3.path("damaged.mska"), before)
    url = s3.url("damaged.mska")
    s3.log.clear()
    archive = MaskArchive(url, "a", storage_options=s3.storage_options)
    if operation == "append":
        archive.add_segmask(member(3), "m3", chunks=CHUNKS)  # written when closed
        rewrite = archive.close
    else:
        rewrite = archive.compact
    with pytest.raises(error, match=rf"damaged\.mska \[m1\]: chunk 0 .*{message}"):
        rewrite()
    archive.close()  # after a failed compact: nothing pending, nothing written
    assert s3.log.count(method="PUT") == 0, s3.log.summary()
    assert s3.fs.cat_file(s3.path("damaged.mska")) == before
    with MaskArchive(url, storage_options=s3.storage_options) as archive:
        assert archive.all_names() == ["m1", "m2"]
        np.testing.assert_array_equal(archive.load_segmask("m2").data, member(2).data)


def test_s3_append_to_a_sound_archive_still_works(s3: Any, tmp_path: Path) -> None:
    s3.fs.pipe_file(s3.path("sound.mska"), sound(tmp_path / "sound.mska"))
    url = s3.url("sound.mska")
    with MaskArchive(url, "a", storage_options=s3.storage_options) as archive:
        archive.add_segmask(member(3), "m3", chunks=CHUNKS)
    with MaskArchive(url, storage_options=s3.storage_options) as archive:
        assert archive.verify() == []
        for i in (1, 2, 3):
            np.testing.assert_array_equal(archive.load_segmask(f"m{i}").data, member(i).data)
