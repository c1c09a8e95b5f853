"""Read-ahead planning of the zarr store (pure): the box a wave of chunk requests suggests,
zarr's C order within it, and when to read how far ahead."""

from __future__ import annotations

import itertools

from medmask.zarr_store.readahead import Box, ReadAhead, box_after, chunk_coords, chunks_after

GRID = (6, 8, 8)


def _ids(z: range, y: range, x: range) -> list[int]:
    """Chunk ids of a box in zarr's order (C order of grid coordinates)."""
    return [(cz * 8 + cy) * 8 + cx for cz, cy, cx in itertools.product(z, y, x)]


def test_chunk_coords_are_c_order() -> None:
    assert chunk_coords(0, GRID) == (0, 0, 0)
    assert chunk_coords(9, GRID) == (0, 1, 1)
    assert chunk_coords(64 + 8 + 3, GRID) == (1, 1, 3)


def test_a_wave_within_one_row_runs_to_the_end_of_the_grid() -> None:
    assert box_after(GRID, [3, 4, 5]) == Box((0, 5), (0, 7), (3, 7))


def test_a_wave_that_wraps_rows_and_slabs_gives_its_extents() -> None:
    patch = _ids(range(1, 4), range(2, 5), range(3, 6))  # 3x3x3
    assert box_after(GRID, patch[:5]) == Box((1, 5), (2, 7), (3, 5))  # rows wrapped: x known
    assert box_after(GRID, patch[:10]) == Box((1, 5), (2, 4), (3, 5))  # a slab wrapped: y too
    assert chunk_coords(patch[0], GRID) in box_after(GRID, patch[:10])
    assert (0, 2, 3) not in box_after(GRID, patch[:10])


def test_chunks_after_follow_zarrs_order_from_a_chunk() -> None:
    box = Box((1, 2), (2, 3), (3, 4))
    every = _ids(range(1, 3), range(2, 4), range(3, 5))
    assert list(chunks_after(GRID, box, -1)) == every
    assert list(chunks_after(GRID, box, every[2])) == every[3:]
    assert list(chunks_after(GRID, box, every[-1])) == []


def test_the_first_full_wave_reads_twice_as_many_ahead() -> None:
    patch = _ids(range(1, 4), range(2, 5), range(3, 6))  # a 3x3x3 patch: 27 chunks
    planner = ReadAhead(GRID)
    candidates, budget = planner.plan(patch[:10], limit=10)
    assert budget == 20
    first = list(itertools.islice(candidates, 20))
    assert first[:8] == patch[10:18]  # the rest of the wave's rows, as far as the wave tells
    assert planner.restarted


def test_a_partial_wave_reads_nothing_ahead() -> None:
    planner = ReadAhead(GRID)
    candidates, budget = planner.plan([1, 2, 3], limit=10)
    assert (list(candidates), budget) == ([], 0)
    candidates, budget = planner.plan(list(range(10)), limit=None)  # zarr unbounded
    assert (list(candidates), budget) == ([], 0)


def test_a_continued_patch_is_read_ahead_as_deep_as_it_is_wide() -> None:
    patch = _ids(range(1, 5), range(2, 6), range(3, 7))  # 4x4x4: the first wave sees 3 rows
    planner = ReadAhead(GRID)
    candidates, budget = planner.plan(patch[:10], limit=10)
    ahead = [i for i in itertools.islice(candidates, budget)]
    planner.read_to(ahead[-1])
    assert set(patch[10:16]) <= set(ahead)  # the rest of the first slab (and more rows)
    later = [i for i in patch if i > ahead[-1]]
    assert later  # the wave did not tell the depth
    for chunk_id in patch:  # served from what was read ahead
        if chunk_id in ahead:
            planner.ask(chunk_id)
    candidates, budget = planner.plan(later[:3], limit=10)
    assert not planner.restarted
    assert budget is None
    rest = list(candidates)
    assert set(later[3:]) <= set(rest)  # the whole rest of the patch in one read
    assert all(chunk_coords(i, GRID)[0] <= 1 + 3 for i in rest)  # no deeper than wide
    assert all(2 <= chunk_coords(i, GRID)[1] <= 5 for i in rest)  # rows learnt from the slab


def test_a_full_read_continues_to_the_end_of_the_grid() -> None:
    grid = (40, 1, 1)  # whole slices: a member read whole
    planner = ReadAhead(grid)
    candidates, budget = planner.plan(list(range(10)), limit=10)
    assert list(candidates) == []  # the wave's slab is all read
    planner.read_to(9)
    candidates, budget = planner.plan([10], limit=10)
    assert (list(candidates), budget) == (list(range(11, 40)), None)
    planner = ReadAhead((4, 4, 4))  # 16 chunks a slab: the first read stays in the first
    candidates, budget = planner.plan(list(range(10)), limit=10)
    assert (list(candidates), budget) == (list(range(10, 16)), 20)


def test_a_request_outside_the_sequence_starts_afresh() -> None:
    planner = ReadAhead(GRID)
    planner.plan(list(range(10)), limit=10)
    planner.read_to(30)
    candidates, budget = planner.plan([5], limit=10)  # before what was read: a new selection
    assert (list(candidates), budget) == ([], 0)
    assert planner.restarted
    assert planner.box is None
