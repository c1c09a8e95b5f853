"""``medmask demo``: a synthetic torso phantom written the usual ways and as one ``.mska``.

Needs no data: the phantom is generated (:mod:`medmask.phantom`). Writes, into one folder,
one ``.nii.gz`` per structure (TotalSegmentator's layout, written by nibabel), one ``.npz``
(``np.savez_compressed``) and one ``.mska``; prints sizes and times, reads one organ back by
name from each, and the next commands to try. Needs the ``nifti`` extra (nibabel).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._progress import progress as show
from .archive import MaskArchive
from .errors import InvalidValueError, MaskFileExistsError
from .geometry import affine_from_space
from .mask import SegmentationMask
from .phantom import PHANTOM_SHAPE, Phantom, torso_phantom
from .values import voxel_volume_ml

__all__ = ["DemoResult", "run_demo"]

ORGAN = "liver"


@dataclass
class DemoResult:
    """What the demo wrote and measured (sizes in bytes, times in seconds)."""

    folder: Path
    archive: Path
    sizes: dict[str, int] = field(default_factory=dict)
    write_s: dict[str, float] = field(default_factory=dict)
    read_s: dict[str, float] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    organ_voxels: int = 0


@contextmanager
def _timer(into: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    into[key] = time.perf_counter() - start


_MARKER = ".medmask-demo"


def _prepare(folder: Path, overwrite: bool) -> None:
    """Create ``folder``; an earlier demo's folder (it has the marker file) is reused."""
    if folder.exists() and not folder.is_dir():
        raise MaskFileExistsError(f"{folder}: exists and is not a folder.")
    ours = (folder / _MARKER).is_file()
    if folder.is_dir() and any(folder.iterdir()) and not (overwrite or ours):
        raise MaskFileExistsError(
            f"{folder}: not empty; choose another folder or pass overwrite=True."
        )
    (folder / "nifti").mkdir(parents=True, exist_ok=True)
    for stale in (folder / "nifti").glob("*.nii.gz"):
        stale.unlink()
    (folder / _MARKER).write_text("written by `medmask demo`; the demo may replace this folder\n")


def _nibabel() -> Any:
    return importlib.import_module("nibabel")


def _write_nifti_folder(phantom: Phantom, folder: Path, progress: bool) -> dict[str, Path]:
    nib = _nibabel()

    affine = affine_from_space(phantom.space)
    paths = {}
    for name in show(phantom.names(), enabled=progress, desc=".nii.gz", unit="file"):
        xyz = phantom.structure(name).view(np.uint8).transpose(2, 1, 0)
        image = nib.Nifti1Image(xyz, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(image, paths[name])  # as TotalSegmentator does: nibabel's own gzip level
    return paths


def _write_archive(phantom: Phantom, path: Path) -> None:
    organs = SegmentationMask(phantom.labelmap, phantom.labels, phantom.space)
    with MaskArchive(path, "w", space=phantom.space) as archive:
        archive.add_segmask(organs, "organs")  # the mutually exclusive structures: one member
        archive.add_structures(phantom.overlapping)  # the overlapping ones: as few layers


def _table(result: DemoResult) -> list[str]:
    rows = [
        ("per-structure .nii.gz (nibabel)", "nifti"),
        ("np.savez_compressed .npz", "npz"),
        ("medmask .mska", "mska"),
    ]
    mska = result.sizes["mska"]
    header = ("format", "files", "bytes", "x .mska", "write s", f"read {ORGAN!r} ms")
    cells = [
        (
            label,
            str(result.files[key]),
            f"{result.sizes[key]:,}",
            f"{result.sizes[key] / mska:.1f}",
            f"{result.write_s[key]:.2f}",
            f"{result.read_s[key] * 1000:.0f}",
        )
        for label, key in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]

    def line(values: tuple[str, ...]) -> str:
        first = values[0].ljust(widths[0])
        rest = [v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True)]
        return "  " + "  ".join([first, *rest])

    return [line(header), *(line(c) for c in cells)]


def run_demo(
    folder: str | os.PathLike[str] = "medmask-demo",
    *,
    shape: tuple[int, ...] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    echo: Callable[[str], Any] = print,
) -> DemoResult:
    """Run the demo into ``folder`` (created; must be empty unless ``overwrite``)."""
    nib = _nibabel()

    size = PHANTOM_SHAPE if shape is None else tuple(int(s) for s in shape)
    if len(size) != 3 or min(size) < 16:
        raise InvalidValueError(f"Expected a phantom shape of 3 sizes >= 16. Got {shape!r}.")
    out = Path(folder)
    _prepare(out, overwrite)
    started = time.perf_counter()
    phantom = torso_phantom((size[0], size[1], size[2]))
    space = phantom.space
    spacing = " x ".join(f"{float(s):g}" for s in space.spacing)
    echo(
        f"medmask demo: a synthetic torso, {' x '.join(map(str, size))} voxels (z, y, x) of "
        f"{spacing} mm, generated in {time.perf_counter() - started:.1f} s"
    )
    names = phantom.names()
    echo(
        f"  {len(phantom.labels)} mutually exclusive structures (organs, 5 lung lobes, "
        f"vertebrae) and {len(phantom.overlapping)} overlapping ones "
        f"({', '.join(phantom.overlapping)})"
    )
    result = DemoResult(folder=out, archive=out / "phantom.mska")
    npz_path = out / "phantom.npz"

    echo(f"Writing the same {len(names)} structures three ways...")
    with _timer(result.write_s, "nifti"):
        nifti = _write_nifti_folder(phantom, out / "nifti", progress)
    with _timer(result.write_s, "npz"):
        arrays: dict[str, Any] = {"labelmap": phantom.labelmap, **phantom.overlapping}
        np.savez_compressed(npz_path, **arrays)
    with _timer(result.write_s, "mska"):
        _write_archive(phantom, result.archive)
    result.files = {"nifti": len(nifti), "npz": 1, "mska": 1}
    result.sizes = {
        "nifti": sum(p.stat().st_size for p in nifti.values()),
        "npz": npz_path.stat().st_size,
        "mska": result.archive.stat().st_size,
    }

    reads: dict[str, npt.NDArray[np.bool_]] = {}
    with _timer(result.read_s, "nifti"):
        reads["nifti"] = np.asarray(nib.load(nifti[ORGAN]).dataobj).transpose(2, 1, 0) != 0
    with _timer(result.read_s, "npz"), np.load(npz_path) as stored:
        reads["npz"] = stored["labelmap"] == phantom.labels[ORGAN]
    with _timer(result.read_s, "mska"), MaskArchive(result.archive) as archive:
        reads["mska"] = archive.load_structure(ORGAN)
    expected = phantom.structure(ORGAN)
    for key, array in reads.items():
        if not np.array_equal(array, expected):  # pragma: no cover - a bug, not a user error
            raise AssertionError(f"demo: {ORGAN!r} read back from {key} differs")
    result.organ_voxels = int(expected.sum())
    volume_ml = result.organ_voxels * voxel_volume_ml(space.spacing)

    for line in _table(result):
        echo(line)
    echo(
        f"{ORGAN!r} read back by name from each: identical ({result.organ_voxels:,} voxels, "
        f"{volume_ml:,.0f} ml). The .mska holds names, LPS geometry and every structure, "
        "overlaps included; it decodes only the chunks around the organ."
    )
    echo(f"Files: {out / 'nifti'}/ ({len(nifti)} .nii.gz), {npz_path}, {result.archive}")
    echo(f"Done in {time.perf_counter() - started:.1f} s. Next, try:")
    arc = result.archive
    medmask, python = _commands()
    stats = f"{medmask} stats {arc}"
    if importlib.util.find_spec("dask") is None:
        stats += "   (after: pip install 'medmask[dask]')"
    for command in (
        f"{medmask} info {arc}",
        f"{medmask} ls -l {arc}",
        f"{medmask} convert {arc} {out / 'organs.nii.gz'} --member organs",
        f"{medmask} unpack {arc} {out / 'unpacked'}",
        f"{medmask} pack {out / 'nifti'} {out / 'packed.mska'}",
        stats,
        f"{python} -c \"import medmask; print(medmask.MaskArchive('{arc}').structures())\"",
    ):
        echo(f"  {command}")
    return result


def _commands() -> tuple[str, str]:
    """How to call medmask and this Python again: as invoked (``.venv/bin/medmask``)."""
    python = sys.executable or "python"
    if Path(python).is_absolute():
        relative = os.path.relpath(python)
        python = relative if len(relative) < len(python) else python
    invoked = Path(sys.argv[0]).name if sys.argv else ""
    if invoked == "medmask":
        return sys.argv[0], python
    return (f"{python} -m medmask" if invoked == "__main__.py" else "medmask"), python
