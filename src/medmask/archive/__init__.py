"""``MaskArchive``: many named, possibly overlapping masks sharing one space, in one ``.mska``.

This module is the façade (opening, queries, reads, the write API, lifecycle). The rest of
the package: :mod:`.layers` packs structures into exclusive layers, ``_commit`` writes a
change to storage, ``_layout`` places new members in the file, ``_legacy`` serves a medmask
0.1 archive and ``_recovery`` words what damaged header slots mean for this handle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from .._deprecate import renamed_keywords
from .._workers import chunk_executor
from ..dtypes import smallest_bit_depth
from ..engine import (
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
from ..errors import (
    InvalidTypeError,
    InvalidValueError,
    LabelNotFoundError,
    LegacyFormatError,
    MaskFileExistsError,
    MedmaskError,
    MemberNotFoundError,
    ReadOnlyError,
    SpaceMismatchError,
)
from ..format.container import Header
from ..format.descriptor import LabelEntry, MaskDescriptor, Roi, label_holders, parse_roi
from ..format.encoding import EncodedMask, check_size_limits, encode_mask
from ..format.mska import SLOTS_SIZE, ArchiveDirectory, Member
from ..geometry import spaces_match
from ..io import (
    HEAD_GUESS,
    ByteSource,
    LocalLock,
    ObjectVersion,
    Target,
    local_path,
    object_version,
    open_source,
    read_ranges_after_head,
)
from ..mapping import LabelMapping, close_matches_hint, parse_label_name
from ..mask import SegmentationMask
from ..reader import Directory, RecoveryReport, RecoveryWarning, read_directory
from ..values import match_allowed_values
from ._commit import (
    Committed,
    append_in_place,
    lock_or_create,
    put_remote,
    rewrite_local,
)
from ._commit import usable_regions as usable_regions
from ._layout import PendingMember, full_file_pieces
from ._legacy import LegacyMembers, open_legacy
from ._recovery import read_only_reason, slot_problems
from .layers import LayeringReport, plan_layers
from .layers import assign_layers as assign_layers

__all__ = ["LayeringReport", "MaskArchive", "MemberArray", "RecoveryReport", "RecoveryWarning"]

#: Default wait for another writer's lock on a local archive (seconds).
DEFAULT_LOCK_TIMEOUT = 60.0

_Pending = PendingMember  # the name tests/damaged_archives.py imports


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
        self._pending: list[PendingMember] = []
        self._closed = False
        self._dirty = False
        self._read_only_reason = ""
        self._legacy = False  # a medmask 0.1 archive: members re-encoded in memory on demand
        self._legacy_size = 0
        self._legacy_members: LegacyMembers | None = None
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
            self._lock = lock_or_create(self._local, space, self._lock_timeout)
        elif self._mode == "a":
            self._version = object_version(self._target, self._options)
            if not self._version.exists:
                return  # created by the first (conditional) write
        self._open_existing(recover)
        if self._mode != "a" or (recover and allow_rollback):
            return
        self._read_only_reason = read_only_reason(self.recovered, self._opened, self.generation)

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
        and re-encoded in memory, only when it is read (:class:`LegacyMembers`)."""
        members, self._source, self._legacy_size = open_legacy(
            source, self._name, self._max_voxels, self._max_bytes
        )
        self._legacy, self._legacy_members = True, members
        return read_directory(self._source, kind="mska")

    def _reopen(self) -> ByteSource:
        """(Re)open the file; the first read is taken when a directory is read."""
        if self._source is not None:
            self._source.close()
        self._source = open_source(self._target, self._options)
        self._name = self._source.name
        self._head = b""
        return self._source

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

    def _pending_member(self, name: str) -> PendingMember | None:
        legacy = self._legacy_members
        if legacy is not None and name in legacy.directory.members:
            return PendingMember(name, legacy.encoded(name), False)
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
        return {
            name: (where[0][0], where[0][1].value)
            for name, where in self._label_holders().items()
            if len(where) == 1
        }

    def _label_holders(self) -> dict[str, list[tuple[str, LabelEntry]]]:
        return label_holders((m, self._descriptor(m)) for m in self.all_names())

    def locate(self, structure: str) -> tuple[str, int]:
        """``(member, label)`` holding ``structure``; KeyError if absent or ambiguous."""
        holders = [(m, label.value) for m, label in self._label_holders().get(structure, [])]
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
        return slot_problems(
            self._name, self._ensure_source(), self._opened, self._directory, self.generation
        )

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
            check_label_counts(self._descriptor(member), values[member], region, block, name=where)
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
    ) -> None:
        """Add ``mask`` as member ``name``; its space must match the archive's (``codec``,
        ``attributes``: as for :func:`medmask.save_mask`)."""
        self._add_member(
            mask, name, level=level, chunks=chunks, codec=codec, attributes=attributes, layer=False
        )

    def _add_member(
        self,
        mask: SegmentationMask,
        name: str,
        *,
        level: int | None,
        chunks: object,
        codec: str | Mapping[str, Any] | None,
        attributes: Mapping[str, Any] | None,
        layer: bool,
    ) -> None:
        """:meth:`add_segmask`; ``layer`` marks an exclusive layer of :meth:`add_structures`."""
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
            executor=chunk_executor(),
        )
        before = (self._directory, list(self._pending), self._dirty)
        if self.space is None:
            self._directory = replace(self._directory, space=mask.space)
        self._pending.append(PendingMember(name, encoded, layer))
        self._commit_or_restore(before)

    def _commit_or_restore(
        self, before: tuple[ArchiveDirectory, list[PendingMember], bool]
    ) -> None:
        """Commit in-place appends now; if that fails, the handle is as it was before."""
        self._dirty = True
        if not self._appends_in_place:
            return
        try:
            self._commit_local_append()
        except BaseException:  # nothing committed: this handle stays usable
            self._directory, self._pending, self._dirty = before
            raise

    @renamed_keywords(labels="mapping")
    def add_structures(
        self,
        structures: Mapping[str, npt.ArrayLike],
        *,
        mapping: Mapping[str, int] | None = None,
        prefix: str = "layer_",
        level: int | None = None,
        codec: str | Mapping[str, Any] | None = None,
    ) -> LayeringReport:
        """Add binary structures, packed losslessly into as few exclusive layers as possible.

        Each structure goes to the first layer in which it overlaps nothing (largest first);
        each layer is stored as one multi-label member. ``mapping`` gives label values
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
        for plan in plan_layers(masks, mapping, prefix, set(self.all_names())):
            depth = smallest_bit_depth(max(plan.values.values()))
            shape = next(iter(masks.values())).shape
            space = self.space if self.space is not None else Space(shape=shape)
            layer_mask = SegmentationMask.lazy_init(depth, space=space)
            for n, value in plan.values.items():
                layer_mask.add_label(masks[n], value, n)
            self._add_member(
                layer_mask,
                plan.member,
                level=level,
                chunks=None,
                codec=codec,
                attributes=None,
                layer=True,
            )
            report[plan.member] = list(plan.values)
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
            bytes(check_chunk(member, i, next(blobs), name=where)) if int(e["length"]) else b""
            for i, e in enumerate(member.index)
        ]
        return EncodedMask(member.descriptor, streams)

    # -- committing ----------------------------------------------------------------------------
    def _write_full(self) -> None:
        """Write the whole archive as a new file (atomically) and continue from it."""
        members = [
            PendingMember(m.name, self._reload_encoded(m), m.layer) for m in self._directory.members
        ] + self._pending
        generation = self._max_generation + 1 if self._header is not None else 1
        pieces, directory, header = full_file_pieces(members, self._directory, generation)
        if self._local is None:
            self._version = put_remote(
                self._target,
                pieces,
                self._options,
                overwrite=self._overwrite,
                expect=self._version if self._mode == "a" else None,
            )
        else:
            assert self._mode == "w" or self._lock is not None
            self._lock = rewrite_local(
                self._local,
                pieces,
                lock=self._lock,
                slot_bytes=self._slot_bytes,
                name=self._name,
                overwrite=self._overwrite,
                lock_timeout=self._lock_timeout,
            )
        self._overwrite = True  # the file is ours now: later flushes replace it
        self._after_write(Committed(directory, header, slot=0, slots=pieces[0] + pieces[1]))

    def _commit_local_append(self) -> None:
        """Append pending members to a local archive in place, crash-safely (format.md 5)."""
        assert self._lock is not None
        assert self._header is not None
        committed = append_in_place(
            self._lock,
            self._pending,
            current=self._directory,
            current_header=self._header,
            current_slot=self._slot,
            max_generation=self._max_generation,
            slot_bytes=self._slot_bytes,
            name=self._name,
        )
        self._after_write(committed)

    def _after_write(self, committed: Committed) -> None:
        self._directory, self._header = committed.directory, committed.header
        self._slot, self._slot_bytes = committed.slot, committed.slots
        self._max_generation = max(self._max_generation, committed.header.generation)
        self._pending = []
        self._dirty = False
        self._read_only_reason = ""
        self._opened = None
        if self._source is not None:  # reopened (and the first read re-taken) on next read
            self._source.close()
            self._source = None

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
