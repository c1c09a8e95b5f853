"""Cohort statistics and model evaluation over many cases, scheduled with Dask.

``cohort_stats`` answers "how big is every structure in every case" from the stored label
statistics: one small ranged read per case, no decoding, the reads of a batch of cases in
flight together. ``compare`` scores predictions
against references per structure (Dice, volumes), decoding only where the two masks'
bounding boxes of a structure intersect. Both run one task per case on Dask's threaded
scheduler by default, or on a ``dask.distributed`` cluster with ``client=`` (docs/dask.md).
Needs the ``dask`` extra (dask, distributed, pandas).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import dask

from .cohort import (
    CENTROID_COLUMNS,
    COMPARE_COLUMNS,
    STATS_COLUMNS,
    case_compare,
    case_stats,
    structure_names,
)
from .config import get as get_config
from .config import max_bytes_limit, max_voxels_limit
from .errors import InvalidValueError, LabelNotFoundError, MaskFileNotFoundError, MedmaskError
from .io import Target, expand_glob, read_heads, source_name
from .mapping import close_matches_hint

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["cohort_stats", "compare", "expand_sources"]

Errors = Literal["coerce", "raise"]
_GLOB = set("*?[")


def expand_sources(
    sources: str | os.PathLike[str] | Iterable[Target],
    storage_options: dict[str, Any] | None = None,
) -> list[Target]:
    """A glob (``"s3://bucket/cases/*.mska"``, ``"cases/**/*.msk"``) expanded to sorted URLs or
    paths; a single path or URL, or a list of them, as given."""
    if isinstance(sources, str | os.PathLike):
        text = os.fspath(sources)
        return list(expand_glob(text, storage_options)) if _GLOB & set(text) else [text]
    return list(sources)


def _check_errors(errors: str) -> None:
    if errors not in ("coerce", "raise"):
        raise InvalidValueError(f"Expected errors='coerce' or 'raise'. Got {errors!r}.")


def _guarded(
    work: Callable[[], list[dict[str, Any]]], failed: dict[str, Any], errors: Errors
) -> list[dict[str, Any]]:
    """Run one case; with ``errors="coerce"`` a failure is one row with an ``error``.

    A case's files are judged by the read engine, which raises :class:`MedmaskError` (or a
    storage ``OSError``) for anything wrong with them; any other exception is a medmask bug,
    reported as an "internal error" row so that it cannot abort the other cases.
    ``MemoryError`` is not caught: the engine's limits bound what a case may allocate.
    """
    try:
        return work()
    except (MedmaskError, OSError) as exc:
        if errors == "raise":
            raise
        return [{**failed, "error": f"{type(exc).__name__}: {exc}"}]
    except MemoryError:
        raise
    except Exception as exc:
        if errors == "raise":
            raise
        problem = f"internal error (a medmask bug, please report it): {type(exc).__name__}: {exc}"
        return [{**failed, "error": problem}]


def _stats_task(
    sources: Sequence[Target],
    structures: Sequence[str] | None,
    measures: Sequence[str],
    storage_options: dict[str, Any] | None,
    errors: Errors,
    max_concurrency: int,
    limits: dict[str, int | None],
) -> list[dict[str, Any]]:
    """A batch of cases: their first reads go out together (one round trip for the batch),
    then each case is answered from its head."""
    heads = read_heads(sources, storage_options, max_concurrency=max_concurrency)
    rows: list[dict[str, Any]] = []
    for source, head in zip(sources, heads, strict=True):

        def work(source: Target = source, head: bytes | MedmaskError = head) -> list[Any]:
            if isinstance(head, MedmaskError):
                raise head
            return case_stats(
                source,
                structures=structures,
                measures=measures,
                storage_options=storage_options,
                head=head,
                max_voxels=limits["max_voxels"],
                max_bytes=limits["max_bytes"],
            )

        rows += _guarded(work, {"source": source}, errors)
    return rows


def _compare_task(
    case: str,
    prediction: Target | None,
    reference: Target | None,
    structures: Sequence[str] | None,
    storage_options: dict[str, Any] | None,
    errors: Errors,
    limits: dict[str, int | None],
) -> list[dict[str, Any]]:
    def work() -> list[dict[str, Any]]:
        if prediction is None or reference is None:
            side = "prediction" if prediction is None else "reference"
            raise MaskFileNotFoundError(f"case {case!r} has no {side} file")
        return case_compare(
            prediction,
            reference,
            case=case,
            structures=structures,
            storage_options=storage_options,
            max_voxels=limits["max_voxels"],
            max_bytes=limits["max_bytes"],
        )

    failed = {"case": case, "prediction": prediction, "reference": reference}
    return _guarded(work, failed, errors)


def _run(tasks: list[Any], client: Any, progress: bool) -> list[list[dict[str, Any]]]:
    """Compute delayed tasks: on ``client`` (dask.distributed) or the threaded scheduler."""
    if client is not None:
        futures = client.compute(tasks)
        if progress:
            from distributed import progress as show_progress

            show_progress(futures)
        results: list[list[dict[str, Any]]] = client.gather(futures)
        return results
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            return list(dask.compute(*tasks, scheduler="threads"))
    return list(dask.compute(*tasks, scheduler="threads"))


def _frame(results: Iterable[list[dict[str, Any]]], columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    rows = [row for case_rows in results for row in case_rows]
    columns = list(columns)
    if any("error" in row for row in rows):
        columns.append("error")
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("value", "voxels", "z0", "z1", "y0", "y1", "x0", "x1", "intersection_voxels"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


def _refuse_unknown(
    absent: Sequence[str], read: Sequence[Target], storage_options: dict[str, Any] | None
) -> None:
    """:class:`LabelNotFoundError` for the names in ``absent`` (asked for, found in no case)
    that the ``read`` cases do not hold at all, with the nearest of their names (small reads,
    on this error path only). Nothing is refused when no case could be read."""
    if not absent or not read:
        return
    names = sorted({n for source in read for n in structure_names(source, storage_options)})
    unknown = [n for n in absent if n not in names]
    if not unknown:
        return
    listed = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
    raise LabelNotFoundError(
        " ".join(
            f"No case has a structure named {n!r}.{close_matches_hint(n, names)}" for n in unknown
        )
        + f" (asked for in structures=; {source_name(read[0])} has {listed or 'none'})."
    )


def _first_read(frame: pd.DataFrame) -> list[Any]:
    """The first case of a stats table read without an error (none: an empty list)."""
    read = frame if "error" not in frame else frame[frame["error"].isna()]
    return list(read["source"].head(1))


def cohort_stats(
    sources: str | os.PathLike[str] | Iterable[Target],
    *,
    structures: Sequence[str] | None = None,
    measures: Sequence[str] = (),
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
    progress: bool = False,
    errors: Errors = "coerce",
    max_concurrency: int | None = None,
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> pd.DataFrame:
    """Per-structure voxel counts, volumes and bounding boxes of every case.

    Parameters
    ----------
    sources
        Paths or URLs (``.msk`` and ``.mska`` mixed), or one glob such as
        ``"s3://bucket/cases/*.mska"``.
    structures
        Only these structure names (a case without one gets a row with 0 voxels). A name that
        no case holds is a typo: :class:`~medmask.errors.LabelNotFoundError` naming the
        nearest names ("Did you mean ...?").
    measures
        ``("centroid_mm",)`` adds the LPS centroid, decoding only the chunks inside each
        structure's bounding box; without measures nothing is decoded.
    client
        A ``dask.distributed.Client``; default: Dask's threaded scheduler.
    errors
        ``"coerce"``: a case that cannot be read is one row with an ``error`` column;
        ``"raise"``: the first failure is raised.
    max_concurrency
        Cases per task: their first reads go out concurrently, so a task pays one round trip
        to the store for all of them, not one each (default: :mod:`medmask.config`'s
        ``max_concurrency``).
    max_voxels, max_bytes
        Limits on one decoded member, as for :func:`medmask.load_mask` (a case above them is
        an error row); only ``measures`` decode. The defaults are this process's
        :mod:`medmask.config` settings, sent to every worker.

    Returns
    -------
    pandas.DataFrame
        One row per (case, member, structure): ``source``, ``member`` (``""`` for ``.msk``),
        ``structure``, ``value``, ``voxels``, ``volume_ml``, inclusive bbox ``z0`` ... ``x1``
        (missing when empty), then the measures' columns.
    """
    _check_errors(errors)
    urls = expand_sources(sources, storage_options)
    measures = tuple(measures)
    if max_concurrency is None:
        max_concurrency = get_config().max_concurrency
    if max_concurrency < 1:
        raise InvalidValueError(f"Expected max_concurrency >= 1. Got {max_concurrency}.")
    limits = {"max_voxels": max_voxels_limit(max_voxels), "max_bytes": max_bytes_limit(max_bytes)}
    task = dask.delayed(_stats_task, pure=True)
    batches = [urls[i : i + max_concurrency] for i in range(0, len(urls), max_concurrency)]
    tasks = [
        task(batch, structures, measures, storage_options, errors, max_concurrency, limits)
        for batch in batches
    ]
    columns = [*STATS_COLUMNS, *(CENTROID_COLUMNS if "centroid_mm" in measures else ())]
    frame = _frame(_run(tasks, client, progress), columns)
    if structures is not None:
        found = set(frame.loc[frame["value"].notna(), "structure"])
        absent = [n for n in dict.fromkeys(structures) if n not in found]
        _refuse_unknown(absent, _first_read(frame), storage_options)
    return frame


def _pairs(
    predictions: Any, references: Any, storage_options: dict[str, Any] | None
) -> list[tuple[str, Target | None, Target | None]]:
    """``(case, prediction, reference)``: explicit pairs, or matched by file name."""
    if references is None:
        pairs = []
        for item in predictions:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise InvalidValueError(
                    "Expected references, or predictions as (prediction, reference) pairs. "
                    f"Got {item!r}."
                )
            pairs.append((_base(item[0]), item[0], item[1]))
        return pairs
    preds = {_base(p): p for p in expand_sources(predictions, storage_options)}
    refs = {_base(r): r for r in expand_sources(references, storage_options)}
    return [(name, preds.get(name), refs.get(name)) for name in sorted({*preds, *refs})]


def _base(target: Target) -> str:
    return source_name(target).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def compare(
    predictions: str | os.PathLike[str] | Iterable[Any],
    references: str | os.PathLike[str] | Iterable[Target] | None = None,
    *,
    structures: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
    progress: bool = False,
    errors: Errors = "coerce",
    max_voxels: int | None = None,
    max_bytes: int | None = None,
) -> pd.DataFrame:
    """Dice and volumes of predictions against references, per case and structure.

    Parameters
    ----------
    predictions, references
        Lists or globs of ``.msk``/``.mska`` files, paired by file name; or ``predictions``
        alone as a list of ``(prediction, reference)`` pairs. A file without its partner is
        an error row (``errors="coerce"``).
    structures
        Only these structures; default: every structure of either side. A name that no case
        holds on either side is :class:`~medmask.errors.LabelNotFoundError` naming the nearest
        names.
    max_voxels, max_bytes
        Limits on one decoded member, as for :func:`medmask.load_mask` (a case above them is
        an error row).

    Returns
    -------
    pandas.DataFrame
        ``case``, ``prediction``, ``reference``, ``structure``, ``dice`` (0 when the structure
        is on one side only, NaN when empty on both), ``volume_pred_ml``, ``volume_ref_ml``,
        ``volume_diff_ml`` (prediction minus reference), ``intersection_voxels``.
    """
    _check_errors(errors)
    limits = {"max_voxels": max_voxels_limit(max_voxels), "max_bytes": max_bytes_limit(max_bytes)}
    task = dask.delayed(_compare_task, pure=True)
    tasks = [
        task(case, pred, ref, structures, storage_options, errors, limits)
        for case, pred, ref in _pairs(predictions, references, storage_options)
    ]
    frame = _frame(_run(tasks, client, progress), COMPARE_COLUMNS)
    if structures is not None:  # NaN Dice everywhere: absent (or empty) on both sides
        found = set(frame.loc[frame["dice"].notna(), "structure"])
        absent = [n for n in dict.fromkeys(structures) if n not in found]
        pairs = frame if "error" not in frame else frame[frame["error"].isna()]
        first = [*pairs[["prediction", "reference"]].head(1).itertuples(index=False, name=None)]
        _refuse_unknown(absent, [s for pair in first for s in pair], storage_options)
    return frame
