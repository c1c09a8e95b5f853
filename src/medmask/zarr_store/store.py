"""A read-only zarr v3 store over a ``.msk`` or ``.mska`` file: :class:`ArchiveStore`, and
:func:`open_zarr`, which opens it as a ``zarr.Group``.

The keys and documents are those of :class:`~medmask.zarr_store.layout.Layout`; every chunk
key maps to the byte range of that chunk in the file, checked against its CRC on each read.
Nothing is copied.

Round trips: zarr asks for a selection's chunks with concurrent ``get`` calls (at most
``async.concurrency`` at once). The store gathers those that arrive within
:data:`COALESCE_WINDOW` seconds into one merged read, and once a wave of them fills zarr's
concurrency it reads ahead the chunks that follow in zarr's order
(:mod:`~medmask.zarr_store.readahead`). Every chunk is still checked on its own when served.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import zarr
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ..config import get as get_config
from ..engine import check_chunk, check_label_count, check_member, count_in_bbox, member_name
from ..errors import ConcurrentModificationError, InvalidTypeError, MedmaskError, ReadOnlyError
from ..format.descriptor import Roi
from ..io import AsyncByteSource, local_path, open_source_async, split_by_head
from ..reader import Directory, read_directory_async
from .convert import SELECT_LABEL
from .layout import ChunkRef, Layout
from .readahead import ReadAhead

if TYPE_CHECKING:
    from zarr.core.buffer import Buffer, BufferPrototype

__all__ = ["COALESCE_WINDOW", "ArchiveStore", "open_zarr"]

#: Seconds a chunk request waits for others to share its read (zarr issues a selection's
#: requests together, so they arrive within one or two turns of the event loop).
COALESCE_WINDOW = 0.002
#: Chunks read ahead after the first full wave, per chunk of the wave (then: the rest of the
#: selection as far as it can be told, up to ``range_block`` bytes).
_FIRST_AHEAD = 2
Result = bytes | MedmaskError


def _check_byte_range(byte_range: ByteRequest | None) -> None:
    if byte_range is not None and not isinstance(
        byte_range, RangeByteRequest | OffsetByteRequest | SuffixByteRequest
    ):
        raise TypeError(f"Unexpected byte_range, got {byte_range!r}.")


def _slice_bytes(data: bytes, byte_range: ByteRequest | None) -> bytes:
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[-byte_range.suffix :] if byte_range.suffix else b""
    raise TypeError(f"Unexpected byte_range, got {byte_range!r}.")


class ArchiveStore(Store):
    """Read-only zarr v3 store over a ``.msk`` or ``.mska`` at any path or fsspec URL.

    The file's directory is read on first use (one request when it fits in the first 64 KiB);
    chunk keys map to the exact byte ranges of the file. Every member is checked when the
    store opens, as :func:`medmask.load_mask` checks it (chunk index, and ``max_voxels`` /
    ``max_bytes``: a member above them makes opening fail with
    :class:`AllocationLimitError`); every chunk is checked before it is returned (length,
    CRC, and a stream header of the member's codec, dtype and chunk shape). The store is
    pinned to what it opened: a local file that changes afterwards raises
    :class:`ConcurrentModificationError`, a replaced remote object fails its chunk checksums.
    It pickles (dask ships it to workers) with its directory.
    """

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        storage_options: dict[str, Any] | None = None,
        read_only: bool = True,
        max_voxels: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        if not read_only:
            raise ReadOnlyError(f"{os.fspath(source)}: ArchiveStore is read-only.")
        if not isinstance(source, str | os.PathLike):
            raise InvalidTypeError(f"Expected a path or URL. Got {type(source).__name__}.")
        super().__init__(read_only=True)
        self.source = os.fspath(source)
        self.storage_options = dict(storage_options or {})
        self._directory: Directory | None = None
        self._layout: Layout | None = None
        self._reader: AsyncByteSource | None = None
        self._local = local_path(self.source, self.storage_options)
        self._identity: tuple[int, ...] | None = None
        self._reader_loop = 0
        self.max_voxels, self.max_bytes = max_voxels, max_bytes
        self._verified: set[str] = set()  # structure arrays whose stored count was checked
        self._verify_locks: dict[int, asyncio.Lock] = {}  # per event loop
        # chunks fetched to check a structure, kept until zarr asks for them once
        self._fetched: dict[tuple[str, int], bytes] = {}
        self._init_coalescing()

    def _init_coalescing(self) -> None:
        # chunk requests waiting for their window to close, per event loop
        self._waiting: dict[int, list[tuple[ChunkRef, asyncio.Future[Result]]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        # chunks read ahead, kept until zarr asks for them once
        self._ahead: dict[tuple[str, int], bytes] = {}
        # chunks being read ahead: the read's arrival, per chunk
        self._inflight: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._planners: dict[str, ReadAhead] = {}  # per member array

    # -- opening -----------------------------------------------------------------------------
    async def _open(self) -> None:
        await super()._open()
        await self._load()

    async def _load(self) -> None:
        if self._directory is not None:
            return
        reader = self._source_reader()
        directory = await read_directory_async(reader)
        for member in directory.members:
            check_member(
                member,
                name=member_name(self.source, member),
                payload_start=directory.payload_start,
                file_size=reader.size,
                max_voxels=self.max_voxels,
                max_bytes=self.max_bytes,
            )
        self._layout = Layout(directory, select_codec=SELECT_LABEL)
        self._identity = self._stat()
        self._directory = directory  # two racing loads read the same file: either one wins

    @property
    def layout(self) -> Layout:
        """The keys of the store (the directory is read on first use)."""
        if self._layout is None:
            sync(self._load())
        assert self._layout is not None
        return self._layout

    def _source_reader(self) -> AsyncByteSource:
        """The byte reader of the running event loop (async filesystems are loop-bound)."""
        loop = id(asyncio.get_running_loop())
        if self._reader is None or self._reader_loop != loop:
            self._reader = open_source_async(self.source, self.storage_options)
            self._reader_loop = loop
        return self._reader

    def _stat(self) -> tuple[int, ...] | None:
        if self._local is None:
            return None
        st = os.stat(self._local)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @property
    def directory(self) -> Directory:
        """The directory the store is pinned to (read on first use)."""
        if self._directory is None:
            sync(self._load())
        assert self._directory is not None
        return self._directory

    # -- reading -----------------------------------------------------------------------------
    async def _read(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Bytes of ``ranges``: from the first read where it covers them, the rest fetched."""
        found, missing = split_by_head(self.directory.head, ranges)
        fetched = iter(await self._source_reader().read_ranges(missing) if missing else [])
        return [next(fetched) if block is None else block for block in found]

    async def _verify_structure(self, path: str) -> None:
        """Check once that a structure's stored bbox holds exactly its stored voxel count: its
        array has chunk keys only inside that bbox, so a bbox that lies would hide voxels.
        Decodes the bbox chunk by chunk (as ``MaskArchive.load_structure`` checks it)."""
        if path in self._verified:
            return
        lock = self._verify_locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
        async with lock:
            if path in self._verified:
                return
            node = self.layout.arrays[path]
            member, entry = node.member, node.label
            assert entry is not None
            assert entry.bbox is not None  # an empty structure has no chunk keys
            d, name = member.descriptor, member_name(self.source, member)
            z, y, x = (slice(lo, hi + 1) for lo, hi in entry.bbox)
            bbox: Roi = (z, y, x)
            spans = [(c, self.directory.chunk_range(member, c)) for c in d.chunks_in(bbox)]
            stored = [(c, span) for c, span in spans if span is not None]
            blobs = await self._read([span for _, span in stored])
            found = 0
            for (chunk_id, _), stream in zip(stored, blobs, strict=True):
                found += await asyncio.to_thread(
                    count_in_bbox, member, entry, chunk_id, stream, name=name
                )
                self._fetched[member.name, chunk_id] = stream
            check_label_count(entry, found, name=name)
            self._verified.add(path)

    def _kept(self, ref: ChunkRef) -> bool:
        key = (ref.member.name, ref.chunk_id)
        return key in self._fetched or key in self._ahead

    def _take(self, ref: ChunkRef) -> bytes | None:
        key = (ref.member.name, ref.chunk_id)
        kept = self._fetched.pop(key, None)
        return self._ahead.pop(key, None) if kept is None else kept

    def _plan_ahead(self, refs: Sequence[ChunkRef]) -> list[ChunkRef]:
        """Chunks to read with ``refs`` because zarr will ask for them next
        (:class:`~medmask.zarr_store.readahead.ReadAhead`), at most ``range_block`` bytes."""
        limit = zarr.config.get("async.concurrency")
        budget_bytes = get_config().range_block
        out: list[ChunkRef] = []
        groups: dict[str, list[ChunkRef]] = {}
        for ref in refs:
            if ref.structure is None:  # a structure's chunks were fetched to check its bbox
                groups.setdefault(ref.member.name, []).append(ref)
        for name, group in groups.items():
            member = group[0].member
            planner = self._planners.setdefault(name, ReadAhead(member.descriptor.grid))
            ids = sorted(ref.chunk_id for ref in group)
            candidates, budget = planner.plan(ids, limit if isinstance(limit, int) else None)
            if planner.restarted:
                for key in [k for k in self._ahead if k[0] == name]:
                    del self._ahead[key]  # guesses for an earlier selection
            asked, size = set(ids), 0
            chosen: list[ChunkRef] = []
            for chunk_id in candidates:
                if budget is not None and len(chosen) >= budget:
                    break
                key = (name, chunk_id)
                span = self.directory.chunk_range(member, chunk_id)
                if span is None or chunk_id in asked or key in self._ahead or key in self._inflight:
                    continue
                if size + span[1] - span[0] > budget_bytes:
                    break
                chosen.append(ChunkRef(member, chunk_id, *span))
                size += span[1] - span[0]
            planner.read_to(chosen[-1].chunk_id if chosen else ids[-1])
            out += chosen
        return out

    async def _chunk_results(
        self, refs: Sequence[ChunkRef], *, read_ahead: bool = False
    ) -> list[Result]:
        """The checked bytes (or the error) of each stored chunk: those not already in memory
        are fetched in one merged read (after any structure among them has had its bbox
        checked), with the chunks read ahead when ``read_ahead``."""
        if not refs:
            return []
        for path in dict.fromkeys(ref.structure for ref in refs if ref.structure is not None):
            await self._verify_structure(path)
        loop = asyncio.get_running_loop()
        for ref in refs:  # chunks a read in flight brings: wait for it, do not ask again
            arriving = self._inflight.get((ref.member.name, ref.chunk_id))
            if arriving is not None and arriving.get_loop() is loop:
                await asyncio.shield(arriving)
        kept = [self._take(ref) for ref in refs]
        missing = [ref for ref, stream in zip(refs, kept, strict=True) if stream is None]
        ahead = self._plan_ahead(missing) if read_ahead and missing else []
        wanted = [(r.start, r.end) for r in (*missing, *ahead)]
        arrived: asyncio.Future[None] = loop.create_future()
        for ref in ahead:  # requests for these wait for this read instead of sending another
            self._inflight[ref.member.name, ref.chunk_id] = arrived
        try:
            fetched = iter(await self._read(wanted) if wanted else [])
            streams = [next(fetched) if stream is None else stream for stream in kept]
            for ref in ahead:
                self._ahead[ref.member.name, ref.chunk_id] = next(fetched)
        finally:
            for ref in ahead:
                self._inflight.pop((ref.member.name, ref.chunk_id), None)
            arrived.set_result(None)
        if self._local is not None and self._stat() != self._identity:
            raise ConcurrentModificationError(
                f"{self.source}: the file changed since the store opened it (generation "
                f"{self.directory.generation}); open it again to see the new state."
            )
        results: list[Result] = []
        for ref, stream in zip(refs, streams, strict=True):
            name = member_name(self.source, ref.member)
            try:
                results.append(bytes(check_chunk(ref.member, ref.chunk_id, stream, name=name)))
            except MedmaskError as exc:
                results.append(exc)
        return results

    async def _chunks(self, refs: Sequence[ChunkRef]) -> list[bytes]:
        """:meth:`_chunk_results`, raising the first error."""
        out = []
        for result in await self._chunk_results(refs):
            if isinstance(result, MedmaskError):
                raise result
            out.append(result)
        return out

    async def _coalesced(self, ref: ChunkRef) -> bytes:
        """The checked bytes of one chunk: from memory when read ahead, else with the other
        requests that arrive within :data:`COALESCE_WINDOW` (one merged read)."""
        if ref.structure is None:
            planner = self._planners.get(ref.member.name)
            if planner is not None:
                planner.ask(ref.chunk_id)
            arriving = self._inflight.get((ref.member.name, ref.chunk_id))
            if arriving is not None and arriving.get_loop() is asyncio.get_running_loop():
                await asyncio.shield(arriving)  # read ahead by a read in flight
        if self._kept(ref) and (ref.structure is None or ref.structure in self._verified):
            result = (await self._chunk_results([ref]))[0]
        else:
            loop = asyncio.get_running_loop()
            waiting = self._waiting.get(id(loop))
            if waiting is None:
                waiting = self._waiting[id(loop)] = []
                loop.call_later(COALESCE_WINDOW, self._start_flush, loop)
            future: asyncio.Future[Result] = loop.create_future()
            waiting.append((ref, future))
            result = await future
        if isinstance(result, MedmaskError):
            raise result
        return result

    def _start_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._flush(self._waiting.pop(id(loop), [])))
        self._flushes.add(task)  # a task only weakly referenced by the loop may vanish
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, waiting: list[tuple[ChunkRef, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._chunk_results([ref for ref, _ in waiting], read_ahead=True)
        except BaseException as exc:
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(waiting, results, strict=True):
            if not future.done():  # (a cancelled request)
                future.set_result(result)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        _check_byte_range(byte_range)
        await self._load()
        data = self.layout.document(key)
        if data is None:
            ref = self.layout.chunk(key)
            if ref is None:
                return None
            data = await self._coalesced(ref)
        return prototype.buffer.from_bytes(_slice_bytes(data, byte_range))

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Blocking :meth:`get` (not from inside zarr's event loop): zarr's
        ``SupportsGetSync`` protocol, which ``StorePath.get_sync`` uses."""
        return sync(self.get(key, prototype or default_buffer_prototype(), byte_range))

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        """The values of ``key_ranges`` (None for a missing key). The chunks among them are
        fetched together (one merged read through the source) and each checked."""
        key_ranges = list(key_ranges)
        for _, byte_range in key_ranges:
            _check_byte_range(byte_range)
        await self._load()
        values: list[bytes | None] = []
        chunks: list[tuple[int, ChunkRef]] = []  # (position in key_ranges, chunk)
        for i, (key, _) in enumerate(key_ranges):
            values.append(self.layout.document(key))
            ref = self.layout.chunk(key) if values[i] is None else None
            if ref is not None:
                chunks.append((i, ref))
        for (i, _), data in zip(chunks, await self._chunks([r for _, r in chunks]), strict=True):
            values[i] = data
        return [
            None if data is None else prototype.buffer.from_bytes(_slice_bytes(data, byte_range))
            for data, (_, byte_range) in zip(values, key_ranges, strict=True)
        ]

    async def getsize(self, key: str) -> int:
        await self._load()
        data = self.layout.document(key)
        if data is not None:
            return len(data)
        ref = self.layout.chunk(key)
        if ref is None:
            raise FileNotFoundError(key)
        return ref.end - ref.start

    async def exists(self, key: str) -> bool:
        await self._load()
        return self.layout.document(key) is not None or self.layout.chunk(key) is not None

    # -- listing -----------------------------------------------------------------------------
    async def _keys(self) -> list[str]:
        await self._load()
        return self.layout.keys()

    async def list(self) -> AsyncIterator[str]:
        for key in await self._keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in await self._keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        base = prefix.rstrip("/")
        base = f"{base}/" if base else ""
        seen: set[str] = set()
        for key in await self._keys():
            if key.startswith(base):
                child = key[len(base) :].split("/", 1)[0]
                if child not in seen:
                    seen.add(child)
                    yield child

    # -- writing (refused) ---------------------------------------------------------------------
    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()

    async def set_partial_values(
        self, key_start_values: Iterable[tuple[str, int, bytes | bytearray | memoryview]]
    ) -> None:  # abstract in zarr < 3.1.3
        self._check_writable()

    # -- protocol ----------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ArchiveStore)
            and self.source == other.source
            and self.storage_options == other.storage_options
        )

    def __hash__(self) -> int:
        return hash((type(self), self.source))

    def __repr__(self) -> str:
        return f"ArchiveStore({self.source!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None  # bound to this process's event loop
        state["_verify_locks"], state["_fetched"] = {}, {}
        for name in ("_waiting", "_flushes", "_ahead", "_inflight", "_planners"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_coalescing()


def open_zarr(
    source: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> zarr.Group:
    """Open a ``.msk`` or ``.mska`` at any path or URL as a read-only ``zarr.Group``.

    ``group["<member>"]`` is a member's label array, ``group["structures/<name>"]`` one
    structure as a bool array (docs/zarr.md). ``max_voxels`` / ``max_bytes``: the limits on
    one member, as for :func:`medmask.load_mask`.
    """
    store = ArchiveStore(
        source, storage_options=storage_options, max_voxels=max_voxels, max_bytes=max_bytes
    )
    return zarr.open_group(store=store, mode="r", zarr_format=3)
