"""xarray backend: ``xr.open_dataset(path_or_url, engine="medmask")`` (docs/xarray.md).

Opens a ``.msk`` or ``.mska`` lazily through the read-only zarr view of
:mod:`medmask.zarr_store` (every chunk read checked by :class:`~medmask.ArchiveStore`), with
dims ``("z", "y", "x")``, coordinates in LPS millimetres where the space is axis-aligned, the
geometry and affines in attributes, and CF ``flag_values`` / ``flag_meanings``. zarr is
imported on first open, not with this module: xarray imports every backend to list engines.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
import xarray as xr
from spacetransformer import Space
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from .errors import InvalidTypeError, MemberNotFoundError
from .geometry import ALIGN_TOLERANCE_MM, affine_from_space, voxel_to_world
from .io import name_suffix
from .mapping import close_matches_hint

if TYPE_CHECKING:
    import zarr

__all__ = ["DIMS", "MedmaskBackendEntrypoint", "flag_meaning", "world_coordinates"]

#: Dimension names of every variable: the array axes, as ``load_mask(...).data`` indexes them.
DIMS = ("z", "y", "x")
_STRUCTURES = "structures"  # the zarr store's group of one bool array per structure
_SUFFIXES = (".msk", ".mska")
_NOT_A_FLAG_CHAR = re.compile(r"[^\w.+@-]")


# --- geometry ------------------------------------------------------------------------------------


def world_coordinates(space: Space) -> dict[str, npt.NDArray[np.float64]] | None:
    """The LPS world position (mm) of every voxel centre along each array axis, as
    ``{"z": ..., "y": ..., "x": ...}``, when array axis ``z`` (0), ``y`` (1) and ``x`` (2) run
    along world z, y and x (either sign); else None.

    Axis-aligned means that each coordinate is within ``ALIGN_TOLERANCE_MM`` (1 µm) of the
    voxel's true world position at every voxel of the grid, so float noise in a direction
    passes and any real tilt or axis permutation does not.
    """
    shape = [int(s) for s in space.shape]
    steps = (
        np.stack([np.asarray(d, dtype=np.float64) for d in _directions(space)])
        * np.asarray(space.spacing, dtype=np.float64)[:, None]
    )  # row a: world step of axis a
    extents = np.abs(steps) * np.maximum(np.asarray(shape) - 1, 0)[:, None]
    coords: dict[str, npt.NDArray[np.float64]] = {}
    for axis, dim in enumerate(DIMS):
        world = 2 - axis  # world x, y, z are LPS components 0, 1, 2
        error = float(np.delete(extents[:, world], axis).sum())
        if error > ALIGN_TOLERANCE_MM:
            return None
        along = np.zeros((shape[axis], 3))
        along[:, axis] = np.arange(shape[axis])
        coords[dim] = voxel_to_world(space, along)[:, world]
    return coords


def _directions(space: Space) -> list[list[float]]:
    """Unit LPS direction of array axes z, y, x (0, 1, 2), in that order."""
    axes = (space.x_orientation, space.y_orientation, space.z_orientation)
    return [[float(v) for v in d] for d in axes]


def _geometry_attributes(space: Space) -> dict[str, Any]:
    return {
        "coordinate_system": "LPS",
        "spacing": [float(v) for v in space.spacing],
        "origin": [float(v) for v in space.origin],
        "direction": _directions(space),
        "affine": affine_from_space(space, "RAS").tolist(),
        "affine_lps": affine_from_space(space, "LPS").tolist(),
    }


def _coordinate_variables(space: Space) -> dict[str, xr.Variable]:
    coords = world_coordinates(space)
    if coords is None:
        return {}
    towards = {"z": "superior", "y": "posterior", "x": "left"}
    return {
        dim: xr.Variable(
            (dim,),
            values,
            attrs={
                "units": "mm",
                "axis": dim.upper(),
                "long_name": f"LPS {dim} of voxel centres (+ towards patient {towards[dim]})",
            },
        )
        for dim, values in coords.items()
    }


# --- labels --------------------------------------------------------------------------------------


def flag_meaning(name: str) -> str:
    """``name`` as one word of CF ``flag_meanings``: every character other than a letter, a
    digit or one of ``_ - . + @`` becomes ``_`` (``"left kidney"`` -> ``"left_kidney"``)."""
    return _NOT_A_FLAG_CHAR.sub("_", name) or "_"


def _label_attributes(attrs: Mapping[str, Any], dtype: np.dtype[Any]) -> dict[str, Any]:
    labels = {str(k): int(v) for k, v in attrs.get("labels", {}).items()}
    out: dict[str, Any] = {
        "labels": json.dumps(labels, ensure_ascii=False),
        "label_stats": json.dumps(attrs.get("label_stats", {}), ensure_ascii=False),
    }
    if labels:
        ordered = sorted(labels.items(), key=lambda item: item[1])
        flag_dtype = np.dtype(np.uint8) if dtype == np.bool_ else dtype
        out["flag_values"] = np.array([v for _, v in ordered], dtype=flag_dtype)
        out["flag_meanings"] = " ".join(flag_meaning(n) for n, _ in ordered)
    return out


# --- lazy arrays ---------------------------------------------------------------------------------


class _ZarrArray(BackendArray):
    """A zarr array of the medmask store, indexed lazily by xarray (orthogonal indexing)."""

    def __init__(self, array: zarr.Array[Any]) -> None:
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._read
        )

    def _read(self, key: tuple[Any, ...]) -> npt.NDArray[Any]:
        return np.asarray(self.array.oindex[key])


def _variable(array: zarr.Array[Any], attrs: dict[str, Any]) -> xr.Variable:
    chunks = tuple(int(c) for c in array.chunks)
    data = indexing.LazilyIndexedArray(_ZarrArray(array))
    encoding = {"preferred_chunks": dict(zip(DIMS, chunks, strict=True)), "chunks": chunks}
    return xr.Variable(DIMS, data, attrs=attrs, encoding=encoding)


# --- the file ------------------------------------------------------------------------------------


class _Opened:
    """A file opened through :func:`medmask.open_zarr`: its members and structures by name."""

    def __init__(
        self,
        source: object,
        storage_options: dict[str, Any] | None,
        max_voxels: int | None,
        max_bytes: int | None,
    ) -> None:
        if not isinstance(source, str | os.PathLike):
            raise InvalidTypeError(
                "engine='medmask' opens a .msk or .mska by path or fsspec URL. Got "
                f"{type(source).__name__}."
            )
        import zarr

        from .zarr_store import ArchiveStore

        self.source = os.fspath(source)
        store = ArchiveStore(
            self.source,
            storage_options=storage_options,
            max_voxels=max_voxels,
            max_bytes=max_bytes,
        )
        self.group = zarr.open_group(store=store, mode="r", zarr_format=3)  # reads the directory
        self.info = _mapping(self.group.attrs.get("medmask"))
        nodes: dict[str, str] = self.info.get("members", {})  # node -> member name
        self.members = {name: node for node, name in nodes.items()}
        space = store.directory.space
        self.geometry = _geometry_attributes(space) if space is not None else {}
        self.coords = _coordinate_variables(space) if space is not None else {}

    def attributes(self) -> dict[str, Any]:
        """The Dataset's attributes: the file's and the geometry."""
        keys = ("container", "format_version", "generation", "created_by")
        return {**{k: self.info[k] for k in keys if k in self.info}, **self.geometry}

    def _array(self, path: str) -> zarr.Array[Any]:
        import zarr

        array = self.group[path]
        assert isinstance(array, zarr.Array)  # the layout has arrays at these paths
        return array

    def member(self, name: str) -> xr.Variable:
        array = self._array(self.members[name])
        attrs = _mapping(array.attrs.asdict())
        described = _mapping(attrs.get("medmask"))
        return _variable(
            array,
            {
                "long_name": name,
                "member": name,
                "layer": bool(described.get("layer", False)),
                **_label_attributes(attrs, np.dtype(array.dtype)),
                **copy.deepcopy(self.geometry),
            },
        )

    def structure_nodes(self) -> dict[str, str]:
        """Structure name -> its node in the ``structures`` group."""
        group = self.group[_STRUCTURES]
        names = _mapping(group.attrs.get("names"))
        return {name: node for node, name in names.items()}

    def structure(self, name: str, node: str) -> xr.Variable:
        array = self._array(f"{_STRUCTURES}/{node}")
        attrs = _mapping(array.attrs.asdict())
        described = _mapping(attrs.get("medmask"))
        return _variable(
            array,
            {
                "long_name": name,
                "structure": name,
                "member": described.get("member") or "mask",  # a .msk's member is unnamed
                "value": described.get("value"),
                **_label_attributes(attrs, np.dtype(array.dtype)),
                **copy.deepcopy(self.geometry),
            },
        )

    def dataset(self, variables: Mapping[str, xr.Variable], name: str | None = None) -> xr.Dataset:
        attrs = copy.deepcopy(self.attributes())
        if name is not None:
            attrs["group"] = name
        return xr.Dataset(
            {_variable_name(n): v for n, v in variables.items()},
            coords={dim: coord.copy(deep=False) for dim, coord in self.coords.items()},
            attrs=attrs,
        )

    def unknown(self, group: str) -> MemberNotFoundError:
        choices = [*self.members, _STRUCTURES]
        structures = [f"{_STRUCTURES}/{name}" for name in self.structure_nodes()]
        return MemberNotFoundError(
            f"{self.source}: no group {group!r}. Pass group= a member "
            f"({', '.join(repr(m) for m in self.members) or 'none'}), {_STRUCTURES!r} (one "
            f"bool variable per structure) or '{_STRUCTURES}/<structure>'."
            + close_matches_hint(group, [*choices, *structures])
        )


def _mapping(value: object) -> dict[str, Any]:
    """A JSON attribute that should be an object, as a dict (empty if it is not one)."""
    return dict(value) if isinstance(value, Mapping) else {}


def _variable_name(name: str) -> str:
    """A member or structure named like a dimension gets its first character as ``%XX``, as
    zarr node names are escaped (docs/zarr.md): a variable cannot share a coordinate's name."""
    return f"%{ord(name[0]):02X}{name[1:]}" if name in DIMS else name


def _dropped(drop_variables: str | Iterable[str] | None) -> set[str]:
    if drop_variables is None:
        return set()
    return {drop_variables} if isinstance(drop_variables, str) else set(drop_variables)


def _open_group(opened: _Opened, group: str | None, drop: set[str]) -> xr.Dataset:
    """The Dataset of ``group``: None (every member), a member, ``structures`` or
    ``structures/<name>``."""
    path = (group or "").strip("/")
    if not path:
        members = {n: opened.member(n) for n in opened.members if _variable_name(n) not in drop}
        return opened.dataset(members)
    if path in opened.members:
        kept = {} if _variable_name(path) in drop else {path: opened.member(path)}
        return opened.dataset(kept, path)
    nodes = opened.structure_nodes()
    if path == _STRUCTURES:
        chosen = {n: node for n, node in nodes.items() if _variable_name(n) not in drop}
    else:
        name = path.removeprefix(f"{_STRUCTURES}/")
        if name == path or name not in nodes:
            raise opened.unknown(group or "")
        chosen = {} if _variable_name(name) in drop else {name: nodes[name]}
    return opened.dataset({n: opened.structure(n, node) for n, node in chosen.items()}, path)


def _tree_name(name: str) -> str:
    """A DataTree node name for member ``name`` (no ``/``): escaped as zarr node names are."""
    from .zarr_store import node_name

    return node_name(name) if "/" in name or name in (".", "..") else name


class MedmaskBackendEntrypoint(BackendEntrypoint):
    """Open ``.msk`` and ``.mska`` files with xarray: ``engine="medmask"``.

    ``xr.open_dataset(path_or_url, engine="medmask", storage_options=..., group=...,
    chunks={})``: one variable per member (``group=None``), one member (``group="<member>"``),
    one bool variable per structure (``group="structures"``) or one structure
    (``group="structures/<name>"``). ``xr.open_datatree``: a root node with the file's
    attributes and coordinates, and one child node per member. See docs/xarray.md.
    """

    open_dataset_parameters: ClassVar[tuple[str, ...]] = (
        "filename_or_obj",
        "drop_variables",
        "group",
        "storage_options",
        "max_voxels",
        "max_bytes",
    )
    description: ClassVar[str] = "Open medmask .msk / .mska segmentation masks (lazy, LPS mm)"
    url: ClassVar[str] = "https://github.com/medmask/medmask/blob/main/docs/xarray.md"
    supports_groups: ClassVar[bool] = True

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        storage_options: dict[str, Any] | None = None,
        max_voxels: int | None = None,
        max_bytes: int | None = None,
    ) -> xr.Dataset:
        """The file's members as variables (lazy: nothing but the directory is read)."""
        opened = _Opened(filename_or_obj, storage_options, max_voxels, max_bytes)
        return _open_group(opened, group, _dropped(drop_variables))

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True for a path or URL ending in ``.msk`` or ``.mska``."""
        return name_suffix(filename_or_obj) in _SUFFIXES

    def open_groups_as_dict(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        storage_options: dict[str, Any] | None = None,
        max_voxels: int | None = None,
        max_bytes: int | None = None,
    ) -> dict[str, xr.Dataset]:
        """``{"/": file attributes and coordinates, "/<member>": that member, ...}``; with
        ``group=``, that group as the root (as :meth:`open_dataset` opens it)."""
        opened = _Opened(filename_or_obj, storage_options, max_voxels, max_bytes)
        drop = _dropped(drop_variables)
        if (group or "").strip("/"):
            return {"/": _open_group(opened, group, drop)}
        out = {"/": opened.dataset({})}
        for name in opened.members:
            if _variable_name(name) not in drop:
                node = _tree_name(name)  # a DataTree's nodes and variables have no "/"
                out[f"/{node}"] = opened.dataset({node: opened.member(name)}, name)
        return out

    def open_datatree(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        storage_options: dict[str, Any] | None = None,
        max_voxels: int | None = None,
        max_bytes: int | None = None,
    ) -> xr.DataTree:
        """One node per member under a root holding the file's attributes and coordinates."""
        groups = self.open_groups_as_dict(
            filename_or_obj,
            drop_variables=drop_variables,
            group=group,
            storage_options=storage_options,
            max_voxels=max_voxels,
            max_bytes=max_bytes,
        )
        return xr.DataTree.from_dict(groups)
