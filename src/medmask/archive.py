"""``MaskArchive``: many named, possibly overlapping masks sharing one space, in one ``.mska``."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from ._version import __version__
from .config import max_bytes_limit
from .dtypes import smallest_bit_depth
from .engine import (
    MaskInfo,
    OpenedFile,
    StoredArray,
    check_chunk,
    check_decoded_values,
    check_label_counts,
    decode_unstored,
    info_from,
    known_size,
    labels_have_gaps,
    mask_from_region,
    member_name,
    structure_roi,
    verify_decoded,
)
from .errors import (
    ConcurrentModificationError,
    InvalidTypeError,
    InvalidValueError,
    LabelNotFoundError,
    LegacyFormatError,
    MaskFileExistsError,
    MaskFileNotFoundError,
    MedmaskError,
    MemberNotFoundError,
    ReadOnlyError,
    SpaceMismatchError,
)
from .format.container import HEADER_SIZE, INDEX_DTYPE, Header
from .format.descriptor import MaskDescriptor, Roi, parse_roi
from .format.encoding import (
    EncodedMask,
    check_size_limits,
    encode_mask,
)
from .format.legacy import LegacyArchive, read_legacy_member, read_legacy_mska_directory
from .format.mska import (
    SLOTS_SIZE,
    ArchiveDirectory,
    Member,
    directory_bytes,
    slot_header,
)
from .geometry import spaces_match
from .io import (
    HEAD_GUESS,
    ByteSource,
    FileObjectSource,
    LocalLock,
    ObjectVersion,
    Target,
    local_path,
    object_version,
    open_source,
    read_all,
    read_ranges_after_head,
    write_atomic,
    write_local_atomic,
)
from .mapping import LabelMapping, close_matches_hint, mapping_items, parse_label_name
from .mask import SegmentationMask
from .reader import Directory, RecoveryReport, RecoveryWarning, newer_directories, read_directory
from .values import match_allowed_values

__all__ = ["LayeringReport", "MaskArchive", "MemberArray", "RecoveryReport", "RecoveryWarning"]

#: Default wait for another writer's lock on a local archive (seconds).
DEFAULT_LOCK_TIMEOUT = 60.0
_REGION_SLACK = 64  # bytes of room (and rounding) in a fresh archive's directory region


def _round_up(value: int, step: int = 4096) -> int:
    return -(-value // step) * step


@dataclass(frozen=True)
class LayeringReport:
    """How :meth:`MaskArchive.add_structures` split structures into exclusive layers."""

    layers: dict[str, list[str]]  # member name -> structure names

    @property
    def n_layers(self) -> int:
        """Number of layer members written."""
        return len(self.layers)


@dataclass(frozen=True)
class _Pending:
    """A member added in this session and not yet written."""

    name: str
    encoded: EncodedMask
    layer: bool


class _LegacyMembers:
    """The members of a medmask 0.1 archive, decoded when first read.

    A member is decoded and re-encoded in memory on demand; its descriptor and chunk index
    are kept, its encoded streams only until the next member is decoded, so memory stays
    at about one member however many the archive holds.
    """

    def __init__(
        self,
        data: bytes,
        directory: LegacyArchive,
        name: str,
        max_voxels: int | None,
        max_bytes: int | None,
    ) -> None:
        self.directory = directory
        self._data, self._name = data, name
        self._max_voxels, self._max_bytes = max_voxels, max_bytes
        self._known: dict[str, tuple[MaskDescriptor, npt.NDArray[Any]]] = {}
        self._last: tuple[str, EncodedMask] | None = None

    def encoded(self, member: str) -> EncodedMask:
        """Member ``member`` re-encoded (decoded now unless it was the last one decoded)."""
        last = self._last  # read once: threads (dask) may swap it meanwhile
        if last is not None and last[0] == member:
            return last[1]
        self._last = last = None  # release the previous member before decoding this one
        legacy = read_legacy_member(
            self._data,
            self.directory,
            member,
            name=self._name,
            max_voxels=self._max_voxels,
            max_bytes=self._max_bytes,
        )
        encoded = encode_mask(legacy.to_mask(self._name), include_space=False)
        self._known[member] = (encoded.descriptor, encoded.index(0))
        self._last = (member, encoded)
        return encoded

    def descriptor(self, member: str) -> MaskDescriptor:
        """The member's descriptor (decodes the member the first time)."""
        if member not in self._known:
            self.encoded(member)
        return self._known[member][0]

    def index(self, member: str) -> npt.NDArray[Any]:
        """The member's chunk index as re-encoded (decodes the member the first time)."""
        if member not in self._known:
            self.encoded(member)
        return self._known[member][1]


def assign_layers(masks: Mapping[str, npt.NDArray[np.bool_]]) -> list[list[str]]:
    """Greedy colouring of the overlap graph: each structure, largest first, goes to the first
    layer in which it overlaps nothing."""
    sizes = {name: int(np.count_nonzero(m)) for name, m in masks.items()}
    order = sorted(masks, key=lambda n: (-sizes[n], n))
    layers: list[list[str]] = []
    occupied: list[npt.NDArray[np.bool_]] = []
    for name in order:
        mask = masks[name]
        coords = np.nonzero(mask.any(axis=(1, 2)))[0] if sizes[name] else np.array([], int)
        for layer, occ in zip(layers, occupied, strict=True):
            if sizes[name] == 0 or not _overlaps(occ, mask, coords):
                layer.append(name)
                occ |= mask
                break
        else:
            layers.append([name])
            occupied.append(mask.copy())
    return layers


def _overlaps(
    occupied: npt.NDArray[np.bool_], mask: npt.NDArray[np.bool_], zs: npt.NDArray[np.intp]
) -> bool:
    z0, z1 = int(zs[0]), int(zs[-1]) + 1
    return bool(np.any(occupied[z0:z1] & mask[z0:z1]))


def usable_regions(directory: ArchiveDirectory, file_end: int) -> tuple[tuple[int, int], ...]:
    """The writer's ``directory_regions`` that are safe to reuse for a new directory.

    ``directory_regions`` is only bookkeeping (readers ignore it) and its CRC says nothing
    about its truth: a region is kept only if it lies after the slots, inside the file and
    overlaps neither a live member's chunks nor another kept region.
    """
    entries = np.concatenate(
        [np.zeros(0, dtype=INDEX_DTYPE), *(m.index for m in directory.members)]
    )
    entries = entries[entries["length"] > 0]
    starts = entries["offset"].astype(np.uint64)
    ends = starts + entries["length"].astype(np.uint64)
    kept: list[tuple[int, int]] = []
    for start, capacity in directory.regions:
        stop = start + capacity
        if start < SLOTS_SIZE or capacity <= 0 or stop > file_end:
            continue
        if np.any((starts < np.uint64(stop)) & (ends > np.uint64(start))):
            continue
        if any(start < b + c and b < stop for b, c in kept):
            continue
        kept.append((start, capacity))
    return tuple(kept)


class MaskArchive:
    """Many named :class:`SegmentationMask` members sharing one space, in one ``.mska`` file.

    Parameters
    ----------
    source
        Path, ``pathlib.Path``, fsspec URL or ``OpenFile``.
    mode
        ``"r"`` read, ``"w"`` create/overwrite (written atomically when closed), ``"a"`` append.
        Local ``"a"``: the file is created if missing, locked against other writers until
        :meth:`close` (``lock_timeout``), and every added member is committed at once,
        crash-safely. Remote ``"a"``: the object is rewritten with one conditional PUT when
        closed; if another writer replaced it meanwhile, :class:`ConcurrentModificationError`.
    space
        The shared space; default: the first member's.
    recover
        If the newest archive state fails verification (a damaged directory), open the newest
        intact generation instead, read-only (see :attr:`recovered`). Without it such an
        archive raises :class:`ChecksumError` (or another :class:`FormatError`). Also
        restores a newer generation that a header slot damaged in one bit names, when its
        directory and chunks verify (``docs/format.md`` section 5, rule 5; :meth:`verify`
        reports such a slot).
    allow_rollback
        With ``recover=True`` and mode ``"a"``: allow appending on top of the recovered
        generation; the next commit supersedes the damaged one, whose changes are lost.
    lock_timeout
        Seconds to wait for another writer's lock on a local archive (mode ``"a"``/``"w"``).
    overwrite
        Mode ``"w"``: False refuses an existing file or object (:class:`MaskFileExistsError`),
        checked when opening and again, atomically, when writing.
    max_voxels, max_bytes
        Limits on one decoded member (defaults: see ``docs/format.md``, section 6).
    """

    def __init__(
        self,
        source: Target,
        mode: Literal["r", "w", "a"] = "r",
        *,
        space: Space | None = None,
        storage_options: dict[str, Any] | None = None,
        recover: bool = False,
        allow_rollback: bool = False,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        overwrite: bool = True,
        max_voxels: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        if mode not in ("r", "w", "a"):
            raise InvalidValueError(f"Expected mode 'r', 'w' or 'a'. Got {mode!r}.")
        if space is not None and not isinstance(space, Space):
            raise InvalidTypeError(
                f"Expected a spacetransformer.Space or None. Got {type(space).__name__}."
            )
        self._target = source
        self._mode = mode
        self._options = storage_options
        self._max_voxels = max_voxels
        self._max_bytes = max_bytes
        self._lock_timeout = float(lock_timeout)
        self._overwrite = bool(overwrite)
        self._local = local_path(source, storage_options)
        self._name = self._local or str(source)
        self._source: ByteSource | None = None
        self._head = b""
        self._header: Header | None = None  # slot header of the state we hold
        self._slot = 0
        self._slot_bytes = b""  # both slots as last seen: compared before every commit
        self._max_generation = 0  # highest generation of any valid slot
        self._lock: LocalLock | None = None
        self._version: ObjectVersion | None = None  # remote "a": what a conditional PUT expects
        self._pending: list[_Pending] = []
        self._closed = False
        self._dirty = False
        self._read_only_reason = ""
        self._legacy = False  # a medmask 0.1 archive: members re-encoded in memory on demand
        self._legacy_size = 0
        self._legacy_members: _LegacyMembers | None = None
        self.recovered: RecoveryReport | None = None
        self._opened: Directory | None = None  # as read when opening (until the next write)
        self._directory = ArchiveDirectory(space=space)
        try:
            self._open(recover, allow_rollback, space)
        except BaseException:
            self._release()
            raise
        if space is not None and self._directory.space is not None:
            problem = spaces_match(space, self._directory.space)
            if problem:
                self._release()
                raise SpaceMismatchError(
                    f"{self._name}: space differs from the archive's: {problem}."
                )

    # -- opening -------------------------------------------------------------------------------
    def _open(self, recover: bool, allow_rollback: bool, space: Space | None) -> None:
        if self._mode == "w":
            if not self._overwrite and object_version(self._target, self._options).exists:
                raise MaskFileExistsError(f"{self._name}: exists; nothing was written.")
            return
        if self._mode == "a" and self._local is not None:
            self._lock = self._lock_or_create(self._local, space)
        elif self._mode == "a":
            self._version = object_version(self._target, self._options)
            if not self._version.exists:
                return  # created by the first (conditional) write
        self._open_existing(recover)
        if self._mode != "a" or (recover and allow_rollback):
            return
        damaged = [d for d in self._opened.damaged if d.bit is not None] if self._opened else []
        if self.recovered is not None and self.recovered.restored:
            self._read_only_reason = (
                f"generation {self.recovered.generation} was restored from a damaged header "
                "slot (readers without recover=True do not open it); a commit on it makes "
                "it current (pass allow_rollback=True to do so)"
            )
        elif self.recovered is not None:
            self._read_only_reason = (
                f"opened at generation {self.recovered.generation} because generation "
                f"{self.recovered.damaged_generation} is damaged; appending would discard it "
                "(pass allow_rollback=True to do so)"
            )
        elif damaged:  # an append would overwrite that slot, or a rewrite drop its directory
            self._read_only_reason = (
                f"{damaged[0].describe()}, newer than generation {self.generation} opened, and "
                "a commit would lose it; open with recover=True to restore it, with "
                "recover=True, allow_rollback=True to commit on top (of it, or of generation "
                f"{self.generation} if it cannot be restored)"
            )

    def _lock_or_create(self, path: str, space: Space | None) -> LocalLock:
        """Lock an existing local archive, or create (and lock) an empty one."""
        lock = LocalLock.acquire(path, self._lock_timeout)
        if lock is not None:
            return lock
        empty = self._full_file_pieces([], ArchiveDirectory(space=space), generation=1)[0]
        try:
            created = write_local_atomic(path, empty, exclusive=True, keep_lock=True)
            assert created is not None
            return created
        except MaskFileExistsError:  # another writer created it first: use theirs
            lock = LocalLock.acquire(path, self._lock_timeout)
            if lock is None:
                raise MaskFileNotFoundError(f"{path}: was deleted while opening.") from None
            return lock

    def _open_existing(self, recover: bool) -> None:
        source = self._reopen()
        try:
            directory = read_directory(
                source, kind="mska", recover=recover, cache=self._mode == "r"
            )
        except LegacyFormatError as exc:
            if self._mode != "r" or exc.kind != "mska":
                raise
            directory = self._open_legacy(source)
        self._directory, self._header = directory.archive, directory.header
        self._slot, self._max_generation = directory.slot, directory.max_generation
        self._head, self._slot_bytes = directory.head, directory.slot_bytes
        self.recovered = directory.recovered
        self._opened = directory

    def _open_legacy(self, source: ByteSource) -> Directory:
        """Read a medmask 0.1 archive's file and directory (read-only); each member is decoded,
        and re-encoded in memory, only when it is read (:class:`_LegacyMembers`)."""
        data = read_all(source, max_bytes_limit(self._max_bytes), name=self._name)
        legacy = read_legacy_mska_directory(
            data, name=self._name, max_voxels=self._max_voxels, max_bytes=self._max_bytes
        )
        members = _LegacyMembers(data, legacy, self._name, self._max_voxels, self._max_bytes)
        space = legacy.shared_space(self._name)
        pieces = self._full_file_pieces([], ArchiveDirectory(space=space), generation=1)[0]
        source.close()
        self._source = FileObjectSource(io.BytesIO(b"".join(pieces)), self._name)
        self._legacy, self._legacy_size = True, len(data)
        self._legacy_members = members
        return read_directory(self._source, kind="mska")

    def _reopen(self) -> ByteSource:
        """(Re)open the file; the first read is taken when a directory is read."""
        if self._source is not None:
            self._source.close()
        self._source = open_source(self._target, self._options)
        self._name = self._source.name
        self._head = b""
        return self._source

    def _current_slot_bytes(self) -> bytes:
        if self._lock is not None:
            return self._lock.file.pread(0, SLOTS_SIZE)
        if self._source is not None:
            return self._source.read(0, SLOTS_SIZE)
        source = open_source(self._target, self._options)
        try:
            return source.read(0, SLOTS_SIZE)
        finally:
            source.close()

    def _slots_changed(self) -> bool:
        return self._current_slot_bytes() != self._slot_bytes

    def _ensure_source(self) -> ByteSource:
        if self._source is None:
            source = self._reopen()
            self._head = source.read(0, HEAD_GUESS)
            return source
        return self._source

    def _read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Serve ranges from the first read when it covers them; fetch the rest (merged)."""
        if not ranges:  # e.g. only unwritten members: there may be no file to open yet
            return []
        source = self._ensure_source()
        return read_ranges_after_head(source, self._head, ranges)

    # -- queries -------------------------------------------------------------------------------
    @property
    def file_size(self) -> int | None:
        """Size of the stored file in bytes, when known without another request."""
        if self._legacy:
            return self._legacy_size
        if self._source is None:
            return None
        return known_size(self._source, self._head)

    @property
    def is_legacy(self) -> bool:
        """A medmask 0.1 archive: read whole at open, read-only; a member is decoded (and
        re-encoded in memory) when it is first read, and its statistics are known from then
        on, so :meth:`info`, :meth:`structures` and :meth:`read_all_mapping` decode every
        member, one at a time. :meth:`listing` decodes nothing."""
        return self._legacy

    @property
    def space(self) -> Space | None:
        """The shared space (None for an empty archive created without one)."""
        return self._directory.space

    @property
    def mode(self) -> str:
        """``"r"``, ``"w"`` or ``"a"``."""
        return self._mode

    @property
    def generation(self) -> int:
        """Generation of the state this handle holds (0 before anything is written)."""
        return self._header.generation if self._header is not None else 0

    def _pending_member(self, name: str) -> _Pending | None:
        legacy = self._legacy_members
        if legacy is not None and name in legacy.directory.members:
            return _Pending(name, legacy.encoded(name), False)
        return next((p for p in self._pending if p.name == name), None)

    def _legacy_names(self) -> list[str]:
        return [] if self._legacy_members is None else list(self._legacy_members.directory.members)

    def all_names(self) -> list[str]:
        """Member names in insertion order."""
        return (
            [m.name for m in self._directory.members]
            + self._legacy_names()
            + [p.name for p in self._pending]
        )

    def __contains__(self, name: object) -> bool:
        return name in self.all_names()

    def __len__(self) -> int:
        return len(self._directory.members) + len(self._legacy_names()) + len(self._pending)

    def __iter__(self) -> Iterator[str]:
        return iter(self.all_names())

    def __getitem__(self, name: str) -> MemberArray:
        """Member ``name`` as an array (``shape``, ``dtype``, ``chunks``, slicing) that decodes
        only what is indexed; ``dask.array.from_array(archive[name])`` works."""
        return MemberArray(self, name)  # MemberNotFoundError when absent

    def _descriptor(self, name: str) -> MaskDescriptor:
        member = self._directory.member(name)
        if member is not None:
            return member.descriptor
        legacy = self._legacy_members
        if legacy is not None and name in legacy.directory.members:
            return replace(legacy.descriptor(name), space=self.space)
        pending = self._pending_member(name)
        if pending is not None:
            return replace(pending.encoded.descriptor, space=self.space)
        raise MemberNotFoundError(
            f"{self._name}: no member named {name!r}." + close_matches_hint(name, self.all_names())
        )

    def info(self) -> list[MaskInfo]:
        """Per member: name, shape, dtype, labels (counts, bboxes), compressed and raw bytes."""
        out = [info_from(m.descriptor, m.index, m.name) for m in self._directory.members]
        if self._legacy_members is not None:  # decodes each 0.1 member once, one at a time
            for name in self._legacy_names():
                legacy = self._legacy_members
                out.append(info_from(self._descriptor(name), legacy.index(name), name))
        for p in self._pending:
            desc = replace(p.encoded.descriptor, space=self.space)
            out.append(info_from(desc, p.encoded.index(0), p.name))
        return out

    def listing(self) -> list[tuple[str, LabelMapping, int]]:
        """``(member, label names, stored bytes)`` per member, from the directory alone.

        Nothing is decoded, also in a medmask 0.1 archive: its names are those the file
        stores (a value without a name gets ``label_<value>`` when the member is decoded).
        """
        out = [
            (m.name, m.descriptor.mapping, int(m.index["length"].sum()))
            for m in self._directory.members
        ]
        if self._legacy_members is not None:
            out += [
                (e.name, LabelMapping(e.mapping), e.length)
                for e in self._legacy_members.directory.members.values()
            ]
        out += [
            (p.name, p.encoded.descriptor.mapping, p.encoded.payload_size) for p in self._pending
        ]
        return out

    def read_all_mapping(self) -> dict[str, LabelMapping]:
        """``{member name: LabelMapping}`` without decoding."""
        return {name: self._descriptor(name).mapping for name in self.all_names()}

    def structures(self) -> dict[str, tuple[str, int]]:
        """``{structure name: (member, label)}`` for names that occur in exactly one member."""
        found: dict[str, list[tuple[str, int]]] = {}
        for member in self.all_names():
            for label_name, value in mapping_items(self._descriptor(member).mapping):
                found.setdefault(label_name, []).append((member, value))
        return {name: where[0] for name, where in found.items() if len(where) == 1}

    def locate(self, structure: str) -> tuple[str, int]:
        """``(member, label)`` holding ``structure``; KeyError if absent or ambiguous."""
        holders = [
            (member, value)
            for member in self.all_names()
            for label_name, value in mapping_items(self._descriptor(member).mapping)
            if label_name == structure
        ]
        if len(holders) == 1:
            return holders[0]
        if holders:
            raise LabelNotFoundError(
                f"{self._name}: structure {structure!r} is in several members "
                f"{[m for m, _ in holders]}; load it with load_segmask(member)."
            )
        names = list(self.structures())
        raise LabelNotFoundError(
            f"{self._name}: no structure named {structure!r}."
            + close_matches_hint(str(structure), names)
        )

    # -- reading -------------------------------------------------------------------------------
    def _decode_members(
        self,
        names: Sequence[str],
        roi: object = None,
        rois: Mapping[str, Roi] | None = None,
        present: dict[str, list[npt.NDArray[Any] | None]] | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """Decode several members (``roi`` for all, or per member ``rois``) with merged reads;
        ``present`` collects the chunks' distinct values per member."""
        out = {}
        seen = present if present is not None else {}
        reads: list[tuple[str, Member, Roi]] = []
        for name in names:
            member = self._directory.member(name)
            if member is None:
                descriptor = self._descriptor(name)  # MemberNotFoundError when absent
                pending = self._pending_member(name)
                assert pending is not None
                region = parse_roi(rois[name] if rois else roi, descriptor.shape)
                streams = {i: s for i, s in enumerate(pending.encoded.streams) if s}
                out[name] = decode_unstored(
                    descriptor,
                    pending.encoded.index(0),
                    streams,
                    region,
                    name=member_name(self._name, name),
                    present=seen.get(name),
                    max_voxels=self._max_voxels,
                    max_bytes=self._max_bytes,
                )
                continue
            region = parse_roi(rois[name] if rois else roi, member.descriptor.shape)
            reads.append((name, member, region))
        if reads:
            blocks = self._engine().iter_regions(
                [(member, region) for _, member, region in reads],
                [seen.get(name) for name, _, _ in reads],
            )
            for (name, _, _), block in zip(reads, blocks, strict=True):
                out[name] = block
        return out

    def _engine(self) -> OpenedFile:
        """The read engine over the stored file (which is opened if it is not)."""
        source = self._ensure_source()
        return OpenedFile(
            self._name,
            self._read_ranges,
            SLOTS_SIZE,
            source.size,
            self._max_voxels,
            self._max_bytes,
        )

    def _masks(self, names: Sequence[str], roi: object = None) -> dict[str, SegmentationMask]:
        """Decode members into checked :class:`SegmentationMask` objects."""
        present: dict[str, list[npt.NDArray[Any] | None]] = {
            name: [] for name in names if labels_have_gaps(self._descriptor(name))
        }
        arrays = self._decode_members(names, roi, present=present)
        out = {}
        for name in names:
            descriptor, data = self._descriptor(name), arrays[name]
            where = f"{self._name} [{name}]"
            check_decoded_values(data, descriptor, name=where, present=present.get(name))
            region = parse_roi(roi, descriptor.shape)
            out[name] = mask_from_region(descriptor, self._shared_space(), data, region)
        return out

    def load_segmask(self, name: str, *, roi: object = None) -> SegmentationMask:
        """Decode member ``name`` (or only ``roi``)."""
        self._check_open()
        return self._masks([name], parse_roi(roi, self._descriptor(name).shape))[name]

    def read_all_masks(self) -> dict[str, SegmentationMask]:
        """Decode every member (one merged read for all of them)."""
        self._check_open()
        return self._masks(self.all_names())

    def verify(self) -> list[str]:
        """Decode every member and compare its voxels with the stored label statistics.

        Returns the problems found (empty when the archive is sound); checksum and format
        errors of a member are reported, not raised, so every member is checked.
        """
        self._check_open()
        problems = self._slot_problems()
        for name in self.all_names():
            where = f"{self._name} [{name}]"
            try:
                data = self._decode_members([name])[name]
            except MedmaskError as exc:
                problems.append(f"{where}: {exc}")
                continue
            problems += verify_decoded(data, self._descriptor(name), name=where)
        return problems

    def _slot_problems(self) -> list[str]:
        """A damaged header slot naming a newer generation than the one in use (format.md
        section 5): what its directory holds and what to do."""
        if self._opened is None or not self._opened.damaged:
            return []
        problems = []
        current = self.generation
        for found in newer_directories(self._ensure_source(), self._opened):
            slot = found.damaged
            text = f"{self._name}: {slot.describe()}, newer than generation {current} in use"
            if found.archive is None:
                if slot.bit is None:
                    continue  # a torn slot whose fields lead nowhere (slot rule 1)
                problems.append(
                    f"{text}; the directory it points to does not verify ({found.problem}), so "
                    f"generation {slot.header.generation} cannot be restored. Readers use "
                    f"generation {current}; the next commit overwrites that slot."
                )
                continue
            names = [m.name for m in found.archive.members]
            hidden = [n for n in names if self._directory.member(n) is None]
            text += f"; it points to a complete directory of {len(names)} member(s) whose "
            text += f"chunks verify (not visible now: {hidden[:10]})" if hidden else "chunks verify"
            if slot.bit is not None:
                fix = (
                    f"MaskArchive(path, recover=True) restores generation "
                    f"{slot.header.generation} (read-only); with mode='a' and "
                    "allow_rollback=True a commit on top makes it current"
                )
            else:
                fix = (
                    "its generation cannot be confirmed, so recover=True does not restore it; "
                    "copy the file before the next commit, which overwrites that slot"
                )
            problems.append(f"{text}. Readers use generation {current}. {fix}.")
        return problems

    def _shared_space(self) -> Space:
        if self.space is None:
            raise MemberNotFoundError(f"{self._name}: the archive is empty.")
        return self.space

    def get_binary_mask_by_names(self, names: str | Sequence[str]) -> npt.NDArray[np.bool_]:
        """Union of the named structures, wherever (whichever member) they are stored."""
        self._check_open()
        wanted = [names] if isinstance(names, str) else list(names)
        space = self._shared_space()
        shape = tuple(int(s) for s in space.shape)
        limits = {"max_voxels": self._max_voxels, "max_bytes": self._max_bytes}
        check_size_limits(shape, np.dtype(bool), name=self._name, **limits)  # before allocating
        located = [self.locate(n) for n in wanted]
        values = {
            member: {v for m, v in located if m == member}
            for member in sorted({m for m, _ in located}, key=self.all_names().index)
        }
        rois: dict[str, Roi] = {}
        for member, member_values in values.items():
            region = structure_roi(self._descriptor(member), member_values)
            if region is not None:  # decode only the chunks around the structures
                rois[member] = region
        arrays = self._decode_members(list(rois), rois=rois)
        out = np.zeros(shape, dtype=bool)
        for member, region in rois.items():
            block = arrays[member]
            where = member_name(self._name, member)
            check_label_counts(
                self._descriptor(member), values[member], region, block, name=where
            )
            out[region] |= match_allowed_values(block, list(values[member]))
        return out

    def load_structure(self, name: str) -> npt.NDArray[np.bool_]:
        """The binary mask of one structure, by name, from whichever member holds it."""
        return self.get_binary_mask_by_names([name])

    # -- writing -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InvalidValueError(f"{self._name}: archive is closed.")

    def _check_writable(self) -> None:
        self._check_open()
        if self._mode == "r":
            raise ReadOnlyError(f"{self._name}: archive is open read-only (mode='r').")
        if self._read_only_reason:
            raise ReadOnlyError(f"{self._name}: archive is read-only: {self._read_only_reason}.")

    @property
    def _appends_in_place(self) -> bool:
        return self._lock is not None and self._header is not None

    def add_segmask(
        self,
        mask: SegmentationMask,
        name: str,
        *,
        level: int | None = None,
        chunks: object = None,
        codec: str | Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
        _layer: bool = False,
    ) -> None:
        """Add ``mask`` as member ``name``; its space must match the archive's (``codec``,
        ``attributes``: as for :func:`medmask.save_mask`)."""
        self._check_writable()
        if not isinstance(mask, SegmentationMask):
            raise InvalidTypeError(f"Expected a SegmentationMask. Got {type(mask).__name__}.")
        name = parse_label_name(name)
        if name in self:
            raise InvalidValueError(f"{self._name}: a member named {name!r} already exists.")
        if self.space is not None:
            problem = spaces_match(mask.space, self.space)
            if problem:
                raise SpaceMismatchError(
                    f"{self._name}: mask {name!r} does not share the archive's space: {problem}."
                )
        encoded = encode_mask(
            mask,
            level=level,
            chunks=chunks,
            attributes=attributes,
            include_space=False,
            codec=codec,
        )
        before = (self._directory, list(self._pending), self._dirty)
        if self.space is None:
            self._directory = replace(self._directory, space=mask.space)
        self._pending.append(_Pending(name, encoded, _layer))
        self._commit_or_restore(before)

    def _commit_or_restore(self, before: tuple[ArchiveDirectory, list[_Pending], bool]) -> None:
        """Commit in-place appends now; if that fails, the handle is as it was before."""
        self._dirty = True
        if not self._appends_in_place:
            return
        try:
            self._commit_local_append()
        except BaseException:  # nothing committed: this handle stays usable
            self._directory, self._pending, self._dirty = before
            raise

    def add_structures(
        self,
        structures: Mapping[str, npt.ArrayLike],
        *,
        labels: Mapping[str, int] | None = None,
        prefix: str = "layer_",
        level: int | None = None,
        codec: str | Mapping[str, Any] | None = None,
    ) -> LayeringReport:
        """Add binary structures, packed losslessly into as few exclusive layers as possible.

        Each structure goes to the first layer in which it overlaps nothing (largest first);
        each layer is stored as one multi-label member. ``labels`` gives label values
        (default: 1, 2, ... within each layer in name order). Structure names must be new.
        """
        self._check_writable()
        masks: dict[str, npt.NDArray[np.bool_]] = {}
        existing = set(self.structures())
        for name, array in structures.items():
            parse_label_name(name)
            if name in existing:
                raise InvalidValueError(f"{self._name}: structure {name!r} already exists.")
            arr = np.asarray(array)
            if arr.dtype != np.bool_ and arr.dtype.kind not in "iu":
                raise InvalidTypeError(f"Structure {name!r}: expected a bool or integer array.")
            masks[name] = arr if arr.dtype == np.bool_ else arr != 0
        report: dict[str, list[str]] = {}
        taken = set(self.all_names())
        counter = 0
        for layer in assign_layers(masks):
            while f"{prefix}{counter}" in taken:
                counter += 1
            member = f"{prefix}{counter}"
            taken.add(member)
            names = sorted(layer, key=lambda n: (labels[n] if labels else 0, n))
            values = {n: (labels[n] if labels else i + 1) for i, n in enumerate(names)}
            depth = smallest_bit_depth(max(values.values()))
            shape = next(iter(masks.values())).shape
            space = self.space if self.space is not None else Space(shape=shape)
            layer_mask = SegmentationMask.lazy_init(depth, space=space)
            for n in names:
                layer_mask.add_label(masks[n], values[n], n)
            self.add_segmask(layer_mask, member, level=level, codec=codec, _layer=True)
            report[member] = names
        return LayeringReport(report)

    def remove(self, name: str) -> None:
        """Drop member ``name`` (its bytes remain until :meth:`compact`)."""
        self._check_writable()
        self._descriptor(name)
        before = (self._directory, list(self._pending), self._dirty)
        self._pending = [p for p in self._pending if p.name != name]
        members = tuple(m for m in self._directory.members if m.name != name)
        self._directory = replace(self._directory, members=members)
        self._commit_or_restore(before)

    def compact(self) -> None:
        """Rewrite the archive with only its live members (atomically)."""
        self._check_writable()
        self._write_full()  # re-lays out live members (and pending ones) in a new file

    def _reload_encoded(self, member: Member) -> EncodedMask:
        """A stored member's chunk streams, each checked before it is carried into a rewrite
        (length and CRC against its index entry, stream header against the descriptor): a
        rewrite computes fresh CRCs, so it must never launder a damaged chunk."""
        ranges = [
            (int(e["offset"]), int(e["offset"] + e["length"])) for e in member.index if e["length"]
        ]
        blobs = iter(self._read_ranges(ranges))
        where = member_name(self._name, member)
        streams = [
            bytes(check_chunk(member, i, next(blobs), name=where))
            if int(e["length"])
            else b""
            for i, e in enumerate(member.index)
        ]
        return EncodedMask(member.descriptor, streams)

    # -- committing ----------------------------------------------------------------------------
    @staticmethod
    def _layout(members: Sequence[_Pending], payload_at: int) -> tuple[list[Member], list[bytes]]:
        placed: list[Member] = []
        pieces: list[bytes] = []
        offset = payload_at
        for p in members:
            placed.append(Member(p.name, p.encoded.descriptor, p.encoded.index(offset), p.layer))
            pieces.extend(s for s in p.encoded.streams if s)
            offset += p.encoded.payload_size
        return placed, pieces

    def _full_file_pieces(
        self, members: Sequence[_Pending], base: ArchiveDirectory, generation: int
    ) -> tuple[list[bytes], ArchiveDirectory, Header]:
        """A fresh archive: slots, one directory region sized to fit, payload.

        Small archives are common (one case, a few structures), so no space is reserved for
        later directories: an append writes its directory at the end of the file (and reuses
        this region once it is free and large enough).
        """
        probe, _ = self._layout(members, 0)
        meta, _, index, _ = directory_bytes(replace(base, members=tuple(probe)))
        region = _round_up(len(meta) + len(index) + _REGION_SLACK, _REGION_SLACK)
        while True:  # offsets change the directory's size a little: grow until it fits
            placed, payload = self._layout(members, SLOTS_SIZE + region)
            directory = ArchiveDirectory(
                space=base.space,
                members=tuple(placed),
                regions=((SLOTS_SIZE, region),),
                created_by=f"medmask {__version__}",
            )
            meta, flags, index, _ = directory_bytes(directory)
            if len(meta) + len(index) <= region:
                break
            region = _round_up(len(meta) + len(index) + _REGION_SLACK, _REGION_SLACK)
        header = slot_header(generation, SLOTS_SIZE, meta, flags, SLOTS_SIZE + len(meta), index)
        area = (meta + index).ljust(region, b"\0")
        return [header.pack(), bytes(HEADER_SIZE), area, *payload], directory, header

    def _write_full(self) -> None:
        """Write the whole archive as a new file (atomically) and continue from it."""
        members = [
            _Pending(m.name, self._reload_encoded(m), m.layer) for m in self._directory.members
        ] + self._pending
        generation = self._max_generation + 1 if self._header is not None else 1
        pieces, directory, header = self._full_file_pieces(members, self._directory, generation)
        if self._local is None:
            self._version = write_atomic(
                self._target,
                pieces,
                self._options,
                overwrite=self._overwrite,
                expect=self._version if self._mode == "a" else None,
            )
        elif self._mode == "a":
            assert self._lock is not None
            self._check_unchanged()
            new_lock = write_local_atomic(self._local, pieces, keep_lock=True)
            self._lock.release()  # waiters on the replaced file move on to the new one
            self._lock = new_lock
        else:  # "w": wait for an appender of the file we replace to finish
            old = LocalLock.acquire(self._local, self._lock_timeout)
            try:
                write_local_atomic(self._local, pieces, exclusive=not self._overwrite)
            finally:
                if old is not None:
                    old.release()
        self._overwrite = True  # the file is ours now: later flushes replace it
        self._after_write(directory, header, slot=0, slots=pieces[0] + pieces[1])

    def _after_write(
        self, directory: ArchiveDirectory, header: Header, slot: int, slots: bytes
    ) -> None:
        self._directory, self._header, self._slot = directory, header, slot
        self._slot_bytes = slots
        self._max_generation = max(self._max_generation, header.generation)
        self._pending = []
        self._dirty = False
        self._read_only_reason = ""
        self._opened = None
        if self._source is not None:  # reopened (and the first read re-taken) on next read
            self._source.close()
            self._source = None

    def _check_unchanged(self) -> None:
        """Compare-before-commit: the slots and the file must be as this handle last saw them."""
        assert self._lock is not None
        if not self._lock.is_current() or self._slots_changed():
            raise ConcurrentModificationError(
                f"{self._name}: was changed by another writer since it was opened; nothing "
                "was written. Open it again and retry."
            )

    def _commit_local_append(self) -> None:
        """Append pending members to a local archive in place, crash-safely (format.md 5)."""
        assert self._lock is not None
        assert self._header is not None
        self._check_unchanged()
        file = self._lock.file
        end = file.size()
        placed, payload = self._layout(self._pending, end)
        file.pwrite(b"".join(payload), end)
        new_end = end + sum(len(p) for p in payload)
        regions = usable_regions(self._directory, end)
        directory = replace(
            self._directory, members=(*self._directory.members, *placed), regions=regions
        )
        meta, flags, index, _ = directory_bytes(directory)
        size = len(meta) + len(index)
        active = (
            self._header.metadata_offset,
            self._header.index_offset + self._header.index_length,
        )
        target = next(
            (
                start
                for start, cap in regions
                if size <= cap and (start + cap <= active[0] or start >= active[1])
            ),
            new_end,
        )
        file.pwrite(meta + index, target)
        file.fsync()
        slot = 1 - self._slot
        generation = max(self._max_generation, self._header.generation) + 1
        header = slot_header(generation, target, meta, flags, target + len(meta), index)
        file.pwrite(header.pack(), slot * HEADER_SIZE)
        file.fsync()
        slots = file.pread(0, SLOTS_SIZE)
        self._after_write(directory, header, slot, slots)

    def flush(self) -> None:
        """Write pending changes now (``w`` and remote ``a``: rewrites the whole file)."""
        if not self._dirty or self._mode == "r":
            return
        self._check_writable()
        if self._appends_in_place:
            self._commit_local_append()
        else:
            self._write_full()

    def _release(self) -> None:
        source, lock = getattr(self, "_source", None), getattr(self, "_lock", None)
        self._source = self._lock = None
        if source is not None:
            source.close()
        if lock is not None:
            lock.release()

    def close(self) -> None:
        """Write pending changes and release the file (and its lock)."""
        if self._closed:
            return
        try:
            if self._mode == "w" or self._dirty:
                self.flush()
        finally:
            self._closed = True
            self._release()

    def __enter__(self) -> MaskArchive:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None and self._mode == "w":
            # a failed "w" session must not replace the previous file
            self._closed = True
            self._release()
            return
        self.close()

    def __del__(self) -> None:
        self._release()

    def __repr__(self) -> str:
        return f"MaskArchive({self._name!r}, mode={self._mode!r}, members={len(self)})"


class MemberArray(StoredArray):
    """One archive member seen as an array; indexing decodes only the chunks it touches."""

    def __init__(self, archive: MaskArchive, name: str) -> None:
        self.archive, self.name = archive, name
        self._descriptor = archive._descriptor(name)

    @property
    def descriptor(self) -> MaskDescriptor:
        """The member's descriptor."""
        return self._descriptor

    def _read_roi(self, roi: Roi | None) -> npt.NDArray[Any]:
        self.archive._check_open()
        return self.archive._decode_members([self.name], roi)[self.name]

    def __repr__(self) -> str:
        return f"MemberArray({self.name!r}, shape={self.shape}, dtype={self.dtype})"
