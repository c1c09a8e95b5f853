"""Per-structure NIfTI folders (TotalSegmentator's layout) <-> one ``.mska`` archive.

``unpack`` turns structure names into file names, so it treats them as hostile: every name is
checked before anything is written, nothing is overwritten unless asked, and all files are
written into a staging folder and moved into place only when all of them succeeded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from spacetransformer import Space

from .._progress import counter
from .._progress import progress as show
from ..archive import LayeringReport, MaskArchive, spaces_match
from ..errors import (
    InvalidValueError,
    MaskFileExistsError,
    MaskFileNotFoundError,
    SpaceMismatchError,
    UnsafeNameError,
)
from ..files import NIFTI_SUFFIXES
from ..format.encoding import max_bytes_limit
from ..io import Target, list_folder, local_path, object_version, read_many, source_name
from ..mapping import mapping_items
from .labels import to_label_mapping
from .nifti import read_nifti, write_nifti

__all__ = ["NIFTI_SUFFIX", "check_file_names", "pack_folder", "unpack"]

NIFTI_SUFFIX = ".nii.gz"
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


def check_file_names(names: Iterable[str], folder: str | os.PathLike[str], suffix: str) -> None:
    """Raise :class:`UnsafeNameError` unless every ``name + suffix`` is a safe file name in
    ``folder``: no separators, ``..``, absolute paths, NUL or control characters, reserved or
    Windows-invalid names, no name too long, no two names equal but for case."""
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
    if problems:
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        shown = "; ".join(problems[:10]) + more
        raise UnsafeNameError(
            f"{os.fspath(folder)}: cannot use these structure names as file names: {shown}. "
            "Rename them in the archive first; nothing was written."
        )


def _list_nifti(folder: Target, storage_options: dict[str, Any] | None) -> list[str]:
    """The ``.nii``/``.nii.gz`` files of a local folder or an fsspec folder URL, sorted."""
    return [f for f in list_folder(folder, storage_options) if f.endswith(NIFTI_SUFFIXES)]


def pack_folder(
    folder: str | os.PathLike[str],
    out: Target,
    labels: Mapping[str, int] | str | os.PathLike[str] | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    level: int | None = None,
    overwrite: bool = True,
    progress: bool = False,
) -> LayeringReport:
    """Pack a folder of per-structure NIfTI masks (TotalSegmentator layout) into one archive.

    ``folder`` is a local path or an fsspec folder URL (``s3://bucket/case/``). Structure names
    are the file names without ``.nii.gz``/``.nii``. ``labels`` (``{name: value}`` or a label
    table file, e.g. TotalSegmentator's JSON) sets label values; structures are layered
    losslessly (:meth:`MaskArchive.add_structures`). ``overwrite=False`` refuses an existing
    ``out``; ``progress`` shows bars (tqdm, stderr) while fetching (remote files: many at
    once, :func:`medmask.io.read_many`) and reading the files.
    """
    if not overwrite and object_version(out, storage_options).exists:  # before the reading
        raise MaskFileExistsError(f"{source_name(out)}: exists; nothing was written.")
    files = _list_nifti(folder, storage_options)
    if not files:
        raise MaskFileNotFoundError(f"{os.fspath(folder)}: no .nii or .nii.gz files.")
    by_name: dict[str, str] = {}
    for path in files:
        file_name = path.replace("\\", "/").rsplit("/", 1)[-1]
        name = file_name.removesuffix(".gz").removesuffix(".nii")
        if name in by_name:
            first = by_name[name].rsplit("/", 1)[-1]
            raise InvalidValueError(
                f"{os.fspath(folder)}: structure {name!r} is in two files ({first} and "
                f"{file_name}); keep one."
            )
        by_name[name] = path
    table = None if labels is None else to_label_mapping(labels, storage_options).to_dict()
    structures: dict[str, npt.NDArray[np.bool_]] = {}
    space: Space | None = None
    contents: dict[str, bytes | None] = dict.fromkeys(by_name.values())
    if any(local_path(path, storage_options) is None for path in by_name.values()):
        # remote files: fetched together (one round trip for many), parsed one by one
        limit = max_bytes_limit(None)
        with counter(enabled=progress, desc="fetching", total=len(contents)) as advance:
            blobs = read_many(list(contents), storage_options, max_bytes=limit, on_done=advance)
        for path, blob in zip(contents, blobs, strict=True):
            if isinstance(blob, Exception):
                raise blob
            contents[path] = blob
    for name, path in show(by_name.items(), enabled=progress, desc="reading", total=len(by_name)):
        array, file_space = read_nifti(
            path, storage_options=storage_options, content=contents[path]
        )
        if space is None:
            space = file_space
        else:
            problem = spaces_match(file_space, space)
            if problem:
                raise SpaceMismatchError(f"{path}: space differs from {files[0]}: {problem}.")
        structures[name] = array != 0
    use_labels = None
    if table is not None:
        missing = sorted(set(structures) - set(table))
        if missing:
            raise InvalidValueError(
                f"labels has no value for {missing[:5]}{' ...' if len(missing) > 5 else ''}."
            )
        use_labels = {n: int(table[n]) for n in structures}
    with MaskArchive(
        out, "w", space=space, storage_options=storage_options, overwrite=overwrite
    ) as archive:
        return archive.add_structures(structures, labels=use_labels, level=level)


def unpack(
    archive: Target | MaskArchive,
    folder: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Write every structure of an archive as ``<folder>/<name>.nii.gz`` (binary uint8).

    All or nothing: names are checked first (:func:`check_file_names`), existing files are
    kept unless ``overwrite=True`` (:class:`MaskFileExistsError`), and the files are written
    to a staging folder, then moved into place; a failure leaves ``folder`` as it was.
    """
    out = Path(folder)
    own = not isinstance(archive, MaskArchive)
    arc = MaskArchive(archive, "r", storage_options=storage_options) if own else archive
    assert isinstance(arc, MaskArchive)
    try:
        masks = arc.read_all_masks()
    finally:
        if own:
            arc.close()
    plan: dict[str, tuple[str, int]] = {}
    for member, mask in masks.items():
        for name, value in mapping_items(mask.mapping):
            if name in plan:
                raise InvalidValueError(
                    f"structure {name!r} occurs in members {plan[name][0]!r} and {member!r}; "
                    "nothing was written."
                )
            plan[name] = (member, value)
    check_file_names(plan, out, NIFTI_SUFFIX)
    targets = {name: out / f"{name}{NIFTI_SUFFIX}" for name in plan}
    if out.exists() and not out.is_dir():
        raise MaskFileExistsError(f"{out}: exists and is not a folder; nothing was written.")
    existing = [t.name for t in targets.values() if os.path.lexists(t)]
    if existing and not overwrite:
        raise MaskFileExistsError(
            f"{out}: {len(existing)} file(s) exist already ({', '.join(existing[:5])}"
            f"{' ...' if len(existing) > 5 else ''}); pass overwrite=True to replace them. "
            "Nothing was written."
        )

    def write_all(staging: Path) -> None:
        for name, (member, value) in show(
            plan.items(), enabled=progress, desc="writing", total=len(plan)
        ):
            mask = masks[member]
            target = staging / targets[name].name
            write_nifti(mask.data == value, mask.space, target, dtype=np.uint8)

    if not out.exists():
        _publish_new_folder(out, write_all)
    else:
        _publish_into_folder(out, write_all, overwrite)
    return list(targets.values())


def _nearest_existing(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists():
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
