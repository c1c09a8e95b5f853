"""Per-structure NIfTI folders (TotalSegmentator's layout) <-> one ``.mska`` archive.

``unpack`` turns structure names into file names, so it treats them as hostile: every name is
checked before anything is written, nothing is overwritten unless asked, and all files are
written into a staging folder and moved into place only when all of them succeeded.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import shutil
import stat
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard
from spacetransformer import Space

from .._deprecate import renamed_keywords
from .._progress import counter
from .._progress import progress as show
from ..archive import LayeringReport, MaskArchive
from ..config import get as get_config
from ..config import max_bytes_limit
from ..dtypes import dtype_for_bit_depth, smallest_bit_depth
from ..errors import (
    InvalidValueError,
    MaskFileExistsError,
    MaskFileNotFoundError,
    MedmaskError,
    SpaceMismatchError,
    UnsafeNameError,
)
from ..format.sniff import NIFTI_SUFFIXES
from ..geometry import spaces_match
from ..io import (
    Target,
    list_folder,
    local_path,
    name_suffix,
    object_version,
    read_many,
    source_name,
    storage_error,
)
from ..mapping import LabelMapping, mapping_items, parse_label_name
from ..mask import SegmentationMask
from ..values import label_counts
from .labels import to_label_mapping
from .nifti import read_nifti, write_nifti

__all__ = [
    "FILE_ATTRIBUTE",
    "INGEST_ATTRIBUTE",
    "NIFTI_SUFFIX",
    "PackReport",
    "check_file_names",
    "pack_folder",
    "unpack",
]

NIFTI_SUFFIX = ".nii.gz"  # the one of NIFTI_SUFFIXES that unpack writes
_WINDOWS_RESERVED = {
    "CON", "PRN", "AUX", "NUL", "CLOCK$", "CONIN$", "CONOUT$",
    *(f"COM{i}" for i in "123456789¹²³"),
    *(f"LPT{i}" for i in "123456789¹²³"),
}  # fmt: skip
_WINDOWS_INVALID = set('<>:"|?*')
_DEFAULT_NAME_MAX = 255


def _name_max(folder: Path) -> int:
    """Longest file name (bytes) the file system of ``folder`` (or its nearest ancestor) takes."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return _DEFAULT_NAME_MAX


def _name_problem(name: str, suffix: str, name_max: int) -> str | None:
    """Why ``name + suffix`` is not a safe, portable file name, or None."""
    if name in ("", ".", ".."):
        return "is empty, '.' or '..'"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "contains a control character (NUL, newline, ...)"
    if _WINDOWS_INVALID & set(name):
        return f"contains one of {''.join(sorted(_WINDOWS_INVALID))} (invalid on Windows)"
    if name != name.rstrip(". ") or name != name.lstrip(" "):
        return "starts with a space or ends with a dot or space"
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        return "is a reserved device name on Windows"
    size = len((name + suffix).encode("utf-8", "surrogatepass"))
    if size > name_max:
        return f"makes a file name of {size} bytes; the file system allows {name_max}"
    return None


def _file_name_problems(
    names: Iterable[str], folder: str | os.PathLike[str], suffix: str
) -> list[str]:
    """Why each unusable ``name + suffix`` cannot be a file name in ``folder`` (see
    :func:`check_file_names`), at most one line per name."""
    name_max = _name_max(Path(folder))
    problems = []
    seen: dict[str, str] = {}
    for name in names:
        problem = _name_problem(name, suffix, name_max)
        key = unicodedata.normalize("NFC", name).casefold()
        if problem is None and key in seen:
            problem = f"differs from {seen[key]!r} only by case or Unicode form"
        seen.setdefault(key, name)
        if problem is not None:
            problems.append(f"{name!r} {problem}")
    return problems


def _shown(items: list[str], limit: int = 10) -> str:
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def check_file_names(names: Iterable[str], folder: str | os.PathLike[str], suffix: str) -> None:
    """Raise :class:`UnsafeNameError` unless every ``name + suffix`` is a safe file name in
    ``folder``: no separators, ``..``, absolute paths, NUL or control characters, reserved or
    Windows-invalid names, no name too long, no two names equal but for case."""
    problems = _file_name_problems(names, folder, suffix)
    if problems:
        raise UnsafeNameError(
            f"{os.fspath(folder)}: cannot use these structure names as file names: "
            f"{_shown(problems)}. Rename them in the archive first; nothing was written."
        )


INGEST_ATTRIBUTE = "medmask.ingest"
"""Member attribute that :func:`medmask.dask.ingest` writes: where the input came from and
its voxel count of each structure (``"counts"``)."""
FILE_ATTRIBUTE = "medmask.file"
"""Member attribute of a member that holds one NIfTI file whole: ``{"dtype": "int16"}``."""
_FILE_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32")
_log = logging.getLogger(__name__)
_LAYER_PREFIX = "layer_"  # as MaskArchive.add_structures names its layers


@dataclass(frozen=True)
class PackReport(LayeringReport):
    """What :func:`pack_folder` wrote and what it left out.

    ``layers``: layer member -> the 0/1 files' structures in it (as :class:`LayeringReport`);
    ``whole``: member holding one file whole (several values, or one value other than 1) ->
    its structures; ``left_out``: file name -> why it was not packed; ``voxels``: structure ->
    its voxel count in the file it came from.
    """

    whole: dict[str, list[str]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    voxels: dict[str, int] = field(default_factory=dict)  # structure -> voxels in its file


def _list_nifti(folder: Target, storage_options: dict[str, Any] | None) -> list[str]:
    """The ``.nii``/``.nii.gz`` files of a local folder or an fsspec folder URL, sorted."""
    return [f for f in list_folder(folder, storage_options) if f.endswith(NIFTI_SUFFIXES)]


def _file_name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _select(
    folder: str | os.PathLike[str], files: list[str], exclude: Sequence[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """``({structure name: path}, {excluded file name: why})``; refuses two files for one name
    and names that ``unpack`` could not write back."""
    by_name: dict[str, str] = {}
    left_out: dict[str, str] = {}
    for path in files:
        file_name = _file_name(path)
        pattern = next((p for p in exclude if fnmatch.fnmatchcase(file_name, p)), None)
        if pattern is not None:
            left_out[file_name] = f"matches the exclude pattern {pattern!r}"
            continue
        name = file_name.removesuffix(".gz").removesuffix(".nii")
        if name in by_name:
            first = _file_name(by_name[name])
            raise InvalidValueError(
                f"{os.fspath(folder)}: structure {name!r} is in two files ({first} and "
                f"{file_name}); keep one."
            )
        by_name[name] = path
    if not by_name:
        raise MaskFileNotFoundError(
            f"{os.fspath(folder)}: every .nii/.nii.gz file matches an exclude pattern "
            f"({', '.join(map(repr, exclude))}); nothing was written."
        )
    problems = _file_name_problems(by_name, folder, NIFTI_SUFFIX)
    if problems:
        raise UnsafeNameError(
            f"{os.fspath(folder)}: these file names cannot be structure names that unpack "
            f"writes back: {_shown(problems)}. Rename the files or leave them out (exclude=); "
            "nothing was written."
        )
    return by_name, left_out


def _grid_problems(spaces: Mapping[str, Space]) -> tuple[str, dict[str, str]]:
    """The file whose grid most files share (the first one on a tie) and, for every file on
    another grid, how its grid differs from that one."""
    groups: list[list[str]] = []
    for name, space in spaces.items():
        group = next((g for g in groups if spaces_match(space, spaces[g[0]]) is None), None)
        if group is None:
            groups.append([name])
        else:
            group.append(name)
    reference = max(groups, key=len)[0]
    problems = {}
    for name, space in spaces.items():
        problem = spaces_match(space, spaces[reference])
        if problem is not None:
            problems[name] = problem
    return reference, problems


def _value_names(
    whole: Mapping[str, list[int]], binary: Iterable[str], table: Mapping[str, int] | None
) -> dict[str, dict[str, int]]:
    """``{stem: {structure name: value}}`` of the files kept whole (rule: pack_folder)."""
    by_value = {int(value): name for name, value in (table or {}).items()}  # values unique
    candidates: dict[str, dict[str, int] | None] = {}
    for stem, values in whole.items():
        if len(values) == 1:
            candidates[stem] = {stem: values[0]}  # one structure: the file's name
        elif table is not None and all(v in by_value for v in values):
            candidates[stem] = {by_value[v]: v for v in values}
        else:
            candidates[stem] = None
    used = Counter([*binary, *(n for c in candidates.values() if c for n in c)])
    out = {}
    for stem, values in whole.items():
        names = candidates[stem]
        if names is None or (len(values) > 1 and any(used[n] > 1 for n in names)):
            names = {f"{stem}_{v}": v for v in values}
        out[stem] = names
    return out


@renamed_keywords(out="target", labels="mapping")
def pack_folder(
    folder: str | os.PathLike[str],
    target: Target,
    mapping: Mapping[str, int] | str | os.PathLike[str] | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    level: int | None = None,
    overwrite: bool = True,
    progress: bool = False,
    exclude: str | Iterable[str] = (),
    skip_mismatched: bool = False,
    record: Mapping[str, Any] | None = None,
) -> PackReport:
    """Pack a folder of NIfTI masks (TotalSegmentator's layout) into one archive, every voxel
    and every value kept.

    ``folder`` is a local path or an fsspec folder URL (``s3://bucket/case/``). Each file is
    named by its *stem* (the name without ``.nii.gz``/``.nii``):

    - a file of 0s and 1s (or only 0s) is the structure *stem*; such files are layered
      losslessly (:meth:`MaskArchive.add_structures`) with label values from ``mapping``
      (``{name: value}`` or a label table file, e.g. TotalSegmentator's JSON; it must then
      name every such file) or 1, 2, ... per layer;
    - any other file (values such as 26-34, or one value other than 1) is kept whole as the
      member *stem*, its values unchanged. One value other than 1 is the structure *stem*;
      several values are named from ``mapping`` when it names all of them and no other file
      in the folder uses these names, else ``<stem>_<value>``.

    :func:`unpack` writes the same voxels back (0/1 files as ``uint8``; files kept whole with
    their values, in their integer type). All files must share one grid: otherwise
    :class:`SpaceMismatchError` names every file off the grid most files share and how it
    differs, unless ``skip_mismatched=True`` leaves those files out. ``exclude``: glob
    pattern(s) (``fnmatch``, case-sensitive) of file names to leave out. What was left out, and
    why, is in the returned :class:`PackReport` (``left_out``) and logged (INFO).
    ``record`` (JSON values) is stored in every member's attributes as
    :data:`INGEST_ATTRIBUTE`, with ``"counts"`` added: the voxel count in the input of each
    of the member's structures (:func:`medmask.dask.ingest` checks an output against them).
    ``target`` must be named ``*.mska`` (:class:`InvalidValueError` otherwise, before anything
    is read). ``overwrite=False`` refuses an existing ``target``; ``progress`` shows bars
    (tqdm, stderr) while fetching (remote files: many at once, :func:`medmask.io.read_many`)
    and reading.
    (``out=`` and ``labels=``, the old names of ``target=`` and ``mapping=``, still work until
    medmask 0.4, with a DeprecationWarning.)
    """
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    suffix = name_suffix(target)
    if isinstance(target, str | os.PathLike) and suffix != ".mska":
        # readers tell the two containers apart by name: an archive named .msk is unreadable
        raise InvalidValueError(
            f"{source_name(target)}: an archive's name must end in .mska. Got "
            f"{repr(suffix) if suffix else 'no suffix'}; nothing was written."
        )
    if not overwrite and object_version(target, storage_options).exists:  # before the reading
        raise MaskFileExistsError(f"{source_name(target)}: exists; nothing was written.")
    files = _list_nifti(folder, storage_options)
    if not files:
        raise MaskFileNotFoundError(f"{os.fspath(folder)}: no .nii or .nii.gz files.")
    by_name, left_out = _select(folder, files, patterns)
    given = None if mapping is None else to_label_mapping(mapping, storage_options)
    table = None if given is None else dict(mapping_items(given))
    binary: dict[str, _Held] = {}
    whole: dict[str, tuple[_Held, dict[int, int]]] = {}
    spaces: dict[str, Space] = {}
    for name, array, spaces[name] in _read_all(by_name, storage_options, progress):
        counts = {v: n for v, n in label_counts(array).items() if v}  # range checked on read
        if list(counts) in ([], [1]):
            binary[name] = _Held.of(array, binary=True, voxels=counts.get(1, 0))
        else:
            whole[name] = (_Held.of(array, binary=False, voxels=sum(counts.values())), counts)
        del array  # one file's voxels at a time
    reference, off_grid = _grid_problems(spaces)
    if off_grid and not skip_mismatched:
        shown = "; ".join(f"{_file_name(by_name[n])}: {p}" for n, p in off_grid.items())
        raise SpaceMismatchError(
            f"{os.fspath(folder)}: {len(off_grid)} of {len(by_name)} files are not on the grid "
            f"of {_file_name(by_name[reference])} and the other files ({shown}). Leave them "
            "out (exclude=, skip_mismatched=True); "
            "nothing was written."
        )
    for name, problem in off_grid.items():
        left_out[_file_name(by_name[name])] = (
            f"not on the grid of {_file_name(by_name[reference])}: {problem}"
        )
        binary.pop(name, None)
        whole.pop(name, None)
    use_labels = None
    if table is not None and binary:
        missing = sorted(set(binary) - set(table))
        if missing:
            raise InvalidValueError(
                f"mapping has no value for {missing[:5]}{' ...' if len(missing) > 5 else ''}."
            )
        use_labels = {n: int(table[n]) for n in binary}
    names = _value_names({n: sorted(counts) for n, (_, counts) in whole.items()}, binary, table)
    taken = Counter([*binary, *(n for mapping in names.values() for n in mapping)])
    twice = sorted(n for n, k in taken.items() if k > 1)
    if twice:
        raise InvalidValueError(
            f"{os.fspath(folder)}: structure name(s) {twice[:5]} come from two files "
            "(a file's name and <stem>_<value> of a file with several values); rename or "
            "leave out one of them. Nothing was written."
        )
    for name in binary:
        parse_label_name(name)
    for file_name, why in left_out.items():
        _log.info("pack_folder %s: left out %s: %s", os.fspath(folder), file_name, why)
    space = spaces[reference]
    voxels: dict[str, int] = {}
    with MaskArchive(
        target, "w", space=space, storage_options=storage_options, overwrite=overwrite
    ) as archive:
        for name, (held, counts) in whole.items():
            array = held.full()
            dtype = array.dtype.name if array.dtype.name in _FILE_DTYPES else None
            voxels.update({n: counts[v] for n, v in names[name].items()})
            archive.add_segmask(
                SegmentationMask(array, names[name], space),
                name,
                level=level,
                attributes={
                    FILE_ATTRIBUTE: {"dtype": dtype},
                    **_recorded(record, names[name], voxels),
                },
            )
            del array
        layers = _write_layers(archive, binary, use_labels, space, level, record)
    voxels.update({n: held.voxels for n, held in binary.items()})
    return PackReport(
        layers=layers,
        whole={name: list(mapping) for name, mapping in names.items()},
        left_out=left_out,
        voxels=voxels,
    )


def _recorded(
    record: Mapping[str, Any] | None, structures: Iterable[str], voxels: Mapping[str, int]
) -> dict[str, Any]:
    """A member's :data:`INGEST_ATTRIBUTE` (none without a ``record``)."""
    if record is None:
        return {}
    return {INGEST_ATTRIBUTE: {**record, "counts": {n: voxels[n] for n in structures}}}


def _read_all(
    by_name: Mapping[str, str], storage_options: dict[str, Any] | None, progress: bool
) -> Iterator[tuple[str, npt.NDArray[Any], Space]]:
    """``(structure name, array, space)`` of every file, one at a time. Remote files are
    fetched a group at a time (one round trip for many, :func:`medmask.io.read_many`), so
    only one group of compressed files is held."""
    paths = list(by_name.values())
    remote = any(local_path(path, storage_options) is None for path in paths)
    group = max(1, get_config().max_concurrency) if remote else len(paths)
    limit = max_bytes_limit(None)
    items = list(by_name.items())
    with (
        counter(enabled=progress and remote, desc="fetching", total=len(paths)) as advance,
        counter(enabled=progress, desc="reading", total=len(paths)) as read,
    ):
        for first in range(0, len(items), group):
            batch = items[first : first + group]
            blobs: list[bytes | MedmaskError | None] = [None] * len(batch)
            if remote:
                blobs = list(
                    read_many(
                        [path for _, path in batch],
                        storage_options,
                        max_bytes=limit,
                        on_done=advance,
                    )
                )
            for i, (name, path) in enumerate(batch):
                blob, blobs[i] = blobs[i], None  # the compressed file is let go once parsed
                if isinstance(blob, Exception):
                    raise blob
                array, space = read_nifti(path, storage_options=storage_options, content=blob)
                read(1)
                yield name, array, space


def _write_layers(
    archive: MaskArchive,
    structures: Mapping[str, _Held],
    labels: Mapping[str, int] | None,
    space: Space,
    level: int | None,
    record: Mapping[str, Any] | None,
) -> dict[str, list[str]]:
    """Write the 0/1 structures as exclusive layers, one layer in memory at a time; the same
    layers, in the same order, as :meth:`MaskArchive.add_structures` makes.

    Its greedy colouring puts each structure, largest first, into the first layer where it
    overlaps nothing. Filling one layer at a time, each from the structures the earlier
    layers left (largest first), gives exactly the same layers: whether a structure fits a
    layer depends only on the larger structures already in that layer.
    """
    left = sorted(structures, key=lambda n: (-structures[n].voxels, n))
    used = set(archive.all_names())
    number = 0
    written: dict[str, list[str]] = {}
    while left:
        members, left = _fill_layer(structures, left, space)
        while f"{_LAYER_PREFIX}{number}" in used:
            number += 1
        member = f"{_LAYER_PREFIX}{number}"
        used.add(member)
        ordered = sorted(members, key=lambda n: (labels[n] if labels else 0, n))
        values = {n: (labels[n] if labels else i + 1) for i, n in enumerate(ordered)}
        depth = smallest_bit_depth(max(values.values()))
        data = np.zeros(space.shape, dtype=dtype_for_bit_depth(depth))
        for name, value in values.items():
            held = structures[name]
            data[held.box][held.crop()] = value
        layer = SegmentationMask._trusted(data, LabelMapping(list(values.items())), space, depth)
        del data
        voxels = {n: structures[n].voxels for n in values}
        archive._add_member(  # add_structures' own call: layer=True marks an exclusive layer
            layer,
            member,
            level=level,
            chunks=None,
            codec=None,
            attributes=_recorded(record, values, voxels) or None,
            layer=True,
        )
        written[member] = list(values)
    return written


def _fill_layer(
    structures: Mapping[str, _Held], candidates: list[str], space: Space
) -> tuple[list[str], list[str]]:
    """``(the structures that go into one layer, the rest)``: each candidate, in order, that
    overlaps none taken before it (an empty one always fits)."""
    occupied = np.zeros(space.shape, dtype=np.bool_)
    taken: list[str] = []
    rest: list[str] = []
    for name in candidates:
        held = structures[name]
        if held.voxels:
            crop = held.crop()
            region = occupied[held.box]
            if region[crop].any():
                rest.append(name)
                continue
            region |= crop
        taken.append(name)
    return taken, rest


@dataclass(frozen=True)
class _Held:
    """One file's voxels between reading and writing, held small: the bounding box of its
    non-zero voxels and the zstd-compressed voxels inside it (as bits for a 0/1 file).

    Holding these instead of the arrays is what keeps :func:`pack_folder`'s memory at one
    full-size array plus the file being read, whatever the number of files."""

    shape: tuple[int, int, int]
    dtype: np.dtype[Any]  # bool for a 0/1 file, else the file's integer type
    box: tuple[slice, slice, slice]  # empty slices for an empty file
    data: bytes
    voxels: int  # non-zero voxels

    @classmethod
    def of(cls, array: npt.NDArray[Any], *, binary: bool, voxels: int) -> _Held:
        shape = (int(array.shape[0]), int(array.shape[1]), int(array.shape[2]))
        box = _bounding_box(array)
        crop = array[box] != 0 if binary else array[box]
        raw = np.packbits(crop).tobytes() if binary else np.ascontiguousarray(crop).tobytes()
        data = zstandard.ZstdCompressor(level=1).compress(raw)
        dtype = np.dtype(np.bool_) if binary else array.dtype
        return cls(shape, dtype, box, data, voxels)

    def crop(self) -> npt.NDArray[Any]:
        """The voxels inside the bounding box."""
        shape = tuple(s.stop - s.start for s in self.box)
        raw = zstandard.ZstdDecompressor().decompress(self.data) if self.data else b""
        if self.dtype == np.bool_:
            bits = np.unpackbits(np.frombuffer(raw, np.uint8), count=int(np.prod(shape)))
            return bits.view(np.bool_).reshape(shape)
        return np.frombuffer(raw, self.dtype).reshape(shape)

    def full(self) -> npt.NDArray[Any]:
        """The whole array, as read."""
        array = np.zeros(self.shape, dtype=self.dtype)
        array[self.box] = self.crop()
        return array


def _bounding_box(array: npt.NDArray[Any]) -> tuple[slice, slice, slice]:
    """Slices around the non-zero voxels of a 3-D array (empty slices when there are none)."""
    zs = np.flatnonzero(array.any(axis=(1, 2)))
    if not zs.size:
        return slice(0, 0), slice(0, 0), slice(0, 0)
    slab = array[zs[0] : zs[-1] + 1]
    ys = np.flatnonzero(slab.any(axis=(0, 2)))
    xs = np.flatnonzero(slab[:, ys[0] : ys[-1] + 1].any(axis=(0, 1)))
    return (
        slice(int(zs[0]), int(zs[-1]) + 1),
        slice(int(ys[0]), int(ys[-1]) + 1),
        slice(int(xs[0]), int(xs[-1]) + 1),
    )


def _file_dtype(attribute: object, data: npt.NDArray[Any]) -> np.dtype[Any]:
    """The integer type a file kept whole had (as recorded at packing), if it holds ``data``;
    else the member's own type."""
    name = attribute.get("dtype") if isinstance(attribute, dict) else None
    if name not in _FILE_DTYPES:
        return data.dtype
    dtype = np.dtype(str(name))
    top = int(data.max()) if data.size else 0
    return dtype if top <= np.iinfo(dtype).max else data.dtype


def unpack(
    archive: Target | MaskArchive,
    folder: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Write every structure of an archive as ``<folder>/<name>.nii.gz`` (binary uint8), and
    every member that :func:`pack_folder` kept whole as ``<folder>/<member>.nii.gz`` with its
    values: the inverse of :func:`pack_folder`, voxel for voxel.

    All or nothing: names are checked first (:func:`check_file_names`), existing files are
    kept unless ``overwrite=True`` (:class:`MaskFileExistsError`), which replaces regular files
    only (a folder, a symlink or anything else in the way is refused, nothing changed), and
    the files are written to a staging folder, then moved into place; a failure leaves
    ``folder`` as it was (a folder that cannot be written: :class:`StorageError` naming it).
    """
    out = Path(folder)
    if isinstance(archive, MaskArchive):
        arc, own = archive, False
    else:
        arc, own = MaskArchive(archive, "r", storage_options=storage_options), True
    try:
        masks = arc.read_all_masks()
        kept_whole = {
            name: arc[name].descriptor.attributes.get(FILE_ATTRIBUTE)
            for name in masks
            if FILE_ATTRIBUTE in arc[name].descriptor.attributes
        }
    finally:
        if own:
            arc.close()
    plan: dict[str, tuple[str, int | None]] = {}  # file stem -> (member, value; None: all)
    outputs: list[tuple[str, str, int | None]] = [(m, m, None) for m in kept_whole]
    outputs += [
        (name, member, value)
        for member, mask in masks.items()
        if member not in kept_whole
        for name, value in mapping_items(mask.mapping)
    ]
    for name, member, value in outputs:
        if name in plan:
            raise InvalidValueError(
                f"structure {name!r} occurs in members {plan[name][0]!r} and {member!r}; "
                "nothing was written."
            )
        plan[name] = (member, value)
    check_file_names(plan, out, NIFTI_SUFFIX)
    targets = {name: out / f"{name}{NIFTI_SUFFIX}" for name in plan}
    anchor = _nearest_existing(out)
    if not anchor.is_dir():
        raise MaskFileExistsError(f"{anchor}: exists and is not a folder; nothing was written.")
    existing = [t.name for t in targets.values() if os.path.lexists(t)]
    if existing and not overwrite:
        raise MaskFileExistsError(
            f"{out}: {len(existing)} file(s) exist already ({', '.join(existing[:5])}"
            f"{' ...' if len(existing) > 5 else ''}); pass overwrite=True to replace them. "
            "Nothing was written."
        )
    in_the_way = [t.name for t in targets.values() if os.path.lexists(t) and not _is_file(t)]
    if in_the_way:
        raise MaskFileExistsError(
            f"{out}: {', '.join(in_the_way[:5])}{' ...' if len(in_the_way) > 5 else ''} "
            "exist but are not regular files (a folder, a symlink, ...); overwrite replaces "
            "regular files only. Nothing was written."
        )

    def write_all(staging: Path) -> None:
        for name, (member, value) in show(
            plan.items(), enabled=progress, desc="writing", total=len(plan)
        ):
            mask = masks[member]
            target = staging / targets[name].name
            if value is None:
                dtype = _file_dtype(kept_whole[member], mask.data)
                write_nifti(mask.data, mask.space, target, dtype=dtype)
            else:
                write_nifti(mask.data == value, mask.space, target, dtype=np.uint8)

    try:
        if not out.exists():
            _publish_new_folder(out, write_all)
        else:
            _publish_into_folder(out, write_all, overwrite)
    except MedmaskError:
        raise
    except OSError as exc:  # the folder cannot be written (access, space...): name it
        raise storage_error(exc, os.fspath(out), "writing into it") from exc
    return list(targets.values())


def _is_file(path: Path) -> bool:
    """Whether ``path`` itself (not what a symlink points to) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _nearest_existing(path: Path) -> Path:
    probe = path.absolute()
    while not os.path.lexists(probe):
        probe = probe.parent
    return probe


def _publish_new_folder(out: Path, write_all: Any) -> None:
    """Write into a hidden sibling folder, then rename it to ``out`` (one atomic step)."""
    anchor = _nearest_existing(out.parent)
    staging = Path(tempfile.mkdtemp(prefix=".medmask-unpack-", dir=anchor))
    created: list[Path] = []
    try:
        write_all(staging)
        for parent in reversed(out.absolute().parents):
            if not parent.exists():
                parent.mkdir()
                created.append(parent)
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def _publish_into_folder(out: Path, write_all: Any, overwrite: bool) -> None:
    """Write into a hidden folder inside ``out``, then move each file into place, undoing the
    moves (and restoring replaced files) if one fails."""
    staging = Path(tempfile.mkdtemp(prefix=".medmask-unpack-", dir=out))
    backup = staging / ".replaced"
    undo: list[tuple[Path, bool, Path | None]] = []  # (target, placed by us, replaced file)
    try:
        write_all(staging)
        backup.mkdir()
        for source in sorted(p for p in staging.iterdir() if p.is_file()):
            target = out / source.name
            saved = None
            if overwrite and os.path.lexists(target):
                if not _is_file(target):  # appeared since the check: never move a folder
                    raise MaskFileExistsError(
                        f"{target}: is not a regular file (a folder, a symlink, ...); "
                        "overwrite replaces regular files only. Nothing was written."
                    )
                saved = backup / source.name
                os.rename(target, saved)
            undo.append((target, False, saved))
            try:
                os.link(source, target)  # fails if a file appeared there meanwhile
            except FileExistsError:
                raise MaskFileExistsError(
                    f"{target}: was created by someone else while unpacking; nothing was written."
                ) from None
            except OSError:  # no hard links here: rename (the existence check above stands)
                os.rename(source, target)
            undo[-1] = (target, True, saved)
    except BaseException:
        for target, placed, saved in reversed(undo):
            if placed:
                with contextlib.suppress(OSError):
                    os.unlink(target)
            if saved is not None:
                with contextlib.suppress(OSError):
                    os.rename(saved, target)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
