"""Packing binary structures losslessly into as few exclusive layers as possible.

:meth:`MaskArchive.add_structures` stores overlapping structures as layers: each layer is
one multi-label member in which no two structures overlap.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["LayerPlan", "LayeringReport", "assign_layers", "plan_layers"]


@dataclass(frozen=True)
class LayeringReport:
    """How :meth:`MaskArchive.add_structures` split structures into exclusive layers."""

    layers: dict[str, list[str]]  # member name -> structure names

    @property
    def n_layers(self) -> int:
        """Number of layer members written."""
        return len(self.layers)


@dataclass(frozen=True)
class LayerPlan:
    """One layer to write: its member name and ``{structure: label value}`` in label order."""

    member: str
    values: dict[str, int]


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


def plan_layers(
    masks: Mapping[str, npt.NDArray[np.bool_]],
    labels: Mapping[str, int] | None,
    prefix: str,
    taken: Set[str],
) -> Iterator[LayerPlan]:
    """The layers of :func:`assign_layers`, each named ``{prefix}{n}`` with the smallest ``n``
    not in ``taken`` (nor used by an earlier layer).

    Label values come from ``labels``, or are 1, 2, ... within each layer in name order. The
    plan is lazy: a layer is planned when the previous one has been written.
    """
    used = set(taken)
    counter = 0
    for layer in assign_layers(masks):
        while f"{prefix}{counter}" in used:
            counter += 1
        member = f"{prefix}{counter}"
        used.add(member)
        names = sorted(layer, key=lambda n: (labels[n] if labels else 0, n))
        yield LayerPlan(member, {n: (labels[n] if labels else i + 1) for i, n in enumerate(names)})
