"""Coverage-guided fuzz target of the medmask.edges decoders (atheris / libFuzzer).

    python fuzz/fuzz_edges.py CORPUS_DIR [SEED_DIR ...] -max_total_time=60   # fuzz
    python fuzz/fuzz_edges.py --seeds OUT_DIR       # write the seed corpus from tests/fixtures
    python fuzz/fuzz_edges.py --replay PATH ...     # run files (or folders) once, no atheris

Each input is an edges stream: its CRC-32 field is rewritten to match (so mutations reach the
sections instead of dying at the checksum) and it is decoded by the compiled kernel and by the
numpy decoder. Both must give the same array, or both a CodecError; any other exception, a
disagreement or a crash (under the sanitizers of ``nox -s sanitize``/``nox -s fuzz``) is a
finding. Streams declaring more than :data:`MAX_OUTPUT` bytes are skipped (speed, not safety:
tests/codecs/test_edges_memory.py covers large declarations).
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_OUTPUT = 1 << 16  # declared output bytes; the numpy first slice is a scalar loop


def fix_crc(data: bytes) -> bytes:
    """``data`` with the CRC-32 field of a kind-3 stream recomputed (version 2 after the shape,
    version 1 at the end); anything else unchanged."""
    if len(data) < 12 or data[:3] != b"MMC" or data[4] != 3 or not 1 <= data[6] <= 3:
        return data
    at = 8 + 4 * data[6]
    if data[3] == 2 and len(data) >= at + 4:
        rest = data[at + 4 :]
        crc = zlib.crc32(rest, zlib.crc32(data[:at]))
        return data[:at] + crc.to_bytes(4, "little") + rest
    if data[3] == 1:
        return data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "little")
    return data


def declared_bytes(data: bytes) -> int:
    """Output bytes a stream's header declares (0 when it cannot be read; an unknown dtype code
    counts 8 bytes an element)."""
    from medmask.codecs._stream import BIG_ENDIAN, DTYPE_CODES

    if len(data) < 8 or not 1 <= data[6] <= 3 or len(data) < 8 + 4 * data[6]:
        return 0
    n = 1
    for i in range(data[6]):
        n *= int.from_bytes(data[8 + 4 * i : 12 + 4 * i], "little")
    dtype = DTYPE_CODES.get(data[5] & ~BIG_ENDIAN)
    return n * (8 if dtype is None else dtype.itemsize)


def check(data: bytes, limit: int | None = None) -> None:
    """Decode ``data`` (CRC fixed) on both paths; raise AssertionError when they disagree.
    Streams declaring more than ``limit`` output bytes are skipped."""
    import numpy as np

    from medmask.codecs import EdgesCodec
    from medmask.codecs import _edges as edges
    from medmask.errors import CodecError

    data = fix_crc(data)
    if limit is not None and declared_bytes(data) > limit:
        return
    answers = []
    for numpy_path in (False, True):
        edges._FORCE_NUMPY[0] = numpy_path
        try:
            answers.append(EdgesCodec().decode(data))
        except CodecError as exc:
            answers.append(exc)
        finally:
            edges._FORCE_NUMPY[0] = False
    fast, slow = answers
    if isinstance(fast, np.ndarray) and isinstance(slow, np.ndarray):
        assert fast.dtype == slow.dtype, (fast.dtype, slow.dtype)
        assert fast.shape == slow.shape, (fast.shape, slow.shape)
        assert np.array_equal(fast, slow), "the kernel and numpy decoded different arrays"
    else:
        assert isinstance(fast, CodecError), (fast, slow)
        assert isinstance(slow, CodecError), (fast, slow)


# --- the seed corpus ------------------------------------------------------------------------------


def _varint(buf: bytes, off: int) -> tuple[int, int]:
    """The varint at ``buf[off]`` and the offset after it (the decoder's reader: a CodecError,
    which is a ValueError, when it is malformed)."""
    from medmask.codecs._edges import _read_varint

    return _read_varint(memoryview(buf), off, len(buf), "varint")


def stream_end(buf: bytes, at: int) -> int | None:
    """Where the kind-3 stream starting at ``buf[at]`` ends (None when it does not parse)."""
    try:
        version, ndim, mode = buf[at + 3], buf[at + 6], buf[at + 7]
        if buf[at + 4] != 3 or version not in (1, 2) or not 1 <= ndim <= 3:
            return None
        off = at + 8 + 4 * ndim + (4 if version == 2 else 0)
        if mode == 0:
            _, off = _varint(buf, off)
        elif mode == 2:
            stored, off = _varint(buf, off)
            _, off = _varint(buf, off)
            off += stored
        elif mode == 1:
            k = buf[off]
            off += 3
            total = 0
            for _ in range(2 * k + 5):
                stored, off = _varint(buf, off)
                _, off = _varint(buf, off)
                total += stored
            off += total
        else:
            return None
        end = off + (4 if version == 1 else 0)
        return end if end <= len(buf) else None
    except (IndexError, ValueError):
        return None


def seeds() -> list[bytes]:
    """Every kind-3 stream found in the committed fixtures (bare streams and the chunks of
    ``.msk``/``.mska`` files), smallest first, without duplicates."""
    found: set[bytes] = set()
    for path in sorted((ROOT / "tests" / "fixtures").rglob("*")):
        if not path.is_file() or path.suffix not in (".mmc", ".msk", ".mska", ".bin"):
            continue
        buf = path.read_bytes()
        at = buf.find(b"MMC")
        while at >= 0:
            end = stream_end(buf, at)
            if end is not None:
                found.add(buf[at:end])
            at = buf.find(b"MMC", at + 1)
    return sorted(found, key=lambda s: (len(s), s))


def write_seeds(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    kept = 0
    for i, data in enumerate(seeds()):
        if declared_bytes(data) <= MAX_OUTPUT:
            (out / f"seed-{i:04d}.mmc").write_bytes(data)
            kept += 1
    return kept


def replay(paths: list[Path]) -> int:
    """Check every file given or under a folder given (hidden files and ``.md`` notes, such as
    the regression folder's README, are no inputs); the number checked."""
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p])]
    count = 0
    for f in files:
        if f.is_file() and not f.name.startswith(".") and f.suffix != ".md":
            check(f.read_bytes())
            count += 1
    return count


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--seeds":
        print(f"{write_seeds(Path(sys.argv[2]))} seeds in {sys.argv[2]}")
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--replay":
        print(f"replayed {replay([Path(p) for p in sys.argv[2:]])} inputs: same answer on both")
        return
    import atheris

    with atheris.instrument_imports(include=["medmask"]):
        import medmask.codecs._edges
        import medmask.codecs._stream  # noqa: F401

    def one_input(data: bytes) -> None:
        check(data, MAX_OUTPUT)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
