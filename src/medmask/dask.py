"""Cohort statistics and model evaluation over many cases, scheduled with Dask.

``cohort_stats`` answers "how big is every structure in every case" from the stored label
statistics: one small ranged read per case, no decoding, the reads of a batch of cases in
flight together. ``compare`` scores predictions
against references per structure (Dice, volumes), decoding only where the two masks'
bounding boxes of a structure intersect. ``ingest`` converts a bucket of NIfTI folders,
label maps and DICOM SEGs into ``.mska``/``.msk`` files (:mod:`medmask.ingest`, one case per
task). All run one task per case on Dask's threaded
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
from .ingest import REPORT_COLUMNS, case_name, ingest_case
from .io import Target, expand_glob, list_folder, local_path, read_heads, source_name
from .io._paths import url_to_fs
from .mapping import close_matches_hint, mapping_items

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["cohort_stats", "compare", "expand_sources", "ingest"]

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


#: Label table suffixes looked for beside a NIfTI label map: ``<case>.json`` and so on.
SIDECAR_SUFFIXES = (".json", ".tsv", ".csv", ".txt", ".ctbl")


def _sidecars(sources: Sequence[str], storage_options: dict[str, Any] | None) -> dict[str, str]:
    """``{source: its label table}`` for the NIfTI files that have a ``<case>.json`` (or
    ``.tsv``, ``.csv``, ``.txt``, ``.ctbl``) beside them: one listing per folder."""
    from .format.sniff import NIFTI_SUFFIXES

    by_parent: dict[str, list[str]] = {}
    for source in sources:
        if source.lower().endswith(NIFTI_SUFFIXES) and "/" in source.replace("\\", "/"):
            parent = source.replace("\\", "/").rsplit("/", 1)[0]
            by_parent.setdefault(parent, []).append(source)
    found: dict[str, str] = {}
    for parent, members in by_parent.items():
        try:
            present = {
                f.replace("\\", "/").rsplit("/", 1)[-1]: f
                for f in list_folder(parent, storage_options)
            }
        except (MedmaskError, OSError):
            continue  # the cases themselves will say what is wrong
        for source in members:
            case = case_name(source)
            table = next((present[case + s] for s in SIDECAR_SUFFIXES if case + s in present), None)
            if table is not None:
                found[source] = table
    return found


def _expand_all(
    sources: str | os.PathLike[str] | Iterable[Target], storage_options: dict[str, Any] | None
) -> list[str]:
    """Every source, its globs expanded (each glob sorted), as strings."""
    given = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    out: list[str] = []
    for item in given:
        text = os.fspath(item) if isinstance(item, str | os.PathLike) else source_name(item)
        if "://" in text and _GLOB & set(text):  # a rerun must see what changed since
            url_to_fs(text, storage_options)[0].invalidate_cache()
        out += [str(s) for s in expand_sources(text, storage_options)]
    return [s.rstrip("/") if "://" in s else s for s in out]


def _collisions(sources: Sequence[str]) -> dict[str, str]:
    """``{source: why it cannot be ingested}`` for sources whose case another one shares."""
    by_case: dict[str, list[str]] = {}
    for source in sources:
        by_case.setdefault(case_name(source), []).append(source)
    problems = {}
    for case, named in by_case.items():
        if len(named) > 1:
            for source in named:
                problems[source] = (
                    f"InvalidValueError: case {case!r} comes from {len(named)} sources "
                    f"({', '.join(named[:4])}{' ...' if len(named) > 4 else ''}); each would "
                    f"write {case}.msk(a): rename them or ingest them into separate "
                    "destinations. Nothing was written for them."
                )
    return problems


def _run_ingest(
    calls: list[tuple[str, str, Any]],
    job: Callable[..., dict[str, Any]],
    client: Any,
    max_in_flight: int,
    show: bool,
) -> list[dict[str, Any]]:
    """Run ``job(case, source, labels)`` for every call, at most ``max_in_flight`` at once."""
    from ._progress import counter

    rows: list[dict[str, Any]] = []
    with counter(enabled=show, desc="ingest", total=len(calls), unit="case") as advance:
        if client is None:
            from dask.callbacks import Callback

            task = dask.delayed(job, pure=False)
            tasks = [task(case, source, labels) for case, source, labels in calls]
            with Callback(posttask=lambda *args: advance(1)):
                rows = list(dask.compute(*tasks, scheduler="threads", num_workers=max_in_flight))
            return rows
        from distributed import as_completed

        pending = iter(calls)
        window = as_completed()
        for case, source, labels in pending:
            window.add(client.submit(job, case, source, labels, pure=False))
            if window.count() >= max_in_flight:
                break
        for future in window:
            rows.append(future.result())
            advance(1)
            call = next(pending, None)
            if call is not None:
                window.add(client.submit(job, *call, pure=False))
    return rows


def ingest(
    sources: str | os.PathLike[str] | Iterable[Target],
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    client: Any = None,
    max_in_flight: int | None = None,
    labels: Any = None,
    storage_options: dict[str, Any] | None = None,
    dest_storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Convert every case of ``sources`` into one file under ``dest``, verified, resumable.

    Parameters
    ----------
    sources
        Paths or URLs, or globs (``"s3://bucket/totalseg/*"``), or a list of them. Each is a
        case: a folder of per-structure NIfTI files (TotalSegmentator's layout) becomes
        ``<dest>/<case>.mska`` (:func:`medmask.pack_folder`); a NIfTI label map or a DICOM
        SEG becomes ``<dest>/<case>.msk``. The case is the folder's name, or the file's name
        without ``.nii.gz``, ``.nii``, ``.dcm``; two sources of one case are both error rows.
    dest
        A folder path or URL (created when local).
    overwrite
        False: an output that exists, names the same input and verifies is skipped; one that
        does not is an error row. True: every case is converted again.
    client
        A ``dask.distributed.Client``; default: Dask's threaded scheduler.
    max_in_flight
        Cases converted at once (each holds one case in memory). Default: the CPUs of this
        process, or twice the client's worker threads.
    labels
        Names of label maps' values: ``{name: value}`` or a label table path or URL (read
        once). Without it, a label map takes ``<case>.json`` (``.tsv``, ``.csv``, ``.txt``,
        ``.ctbl``) beside it if there is one, else ``label_<value>``. Folders and DICOM SEGs
        name their structures themselves.
    storage_options, dest_storage_options
        fsspec options for the sources and for ``dest`` (default: ``storage_options``).
    progress
        A tqdm bar on stderr (default: when stderr is a terminal); with ``client=``, the Dask
        dashboard shows the tasks too.

    Returns
    -------
    pandas.DataFrame
        One row per case: ``case``, ``source``, ``output``, ``input_bytes``,
        ``output_bytes``, ``seconds``, ``structures``, ``status`` (``done``, ``skipped`` or
        ``error``) and ``error`` (``"<ErrorType>: message"``). A failed case never stops the
        others.
    """
    import sys

    import pandas as pd

    from .interop.labels import to_label_mapping

    if dest_storage_options is None:
        dest_storage_options = storage_options
    out = os.fspath(dest)
    if max_in_flight is None:
        if client is None:
            max_in_flight = (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1)
            )
        else:
            max_in_flight = 2 * max(1, sum(client.nthreads().values()))
    if max_in_flight < 1:
        raise InvalidValueError(f"Expected max_in_flight >= 1. Got {max_in_flight}.")
    table = (
        None if labels is None else dict(mapping_items(to_label_mapping(labels, storage_options)))
    )
    urls = _expand_all(sources, storage_options)
    if not urls:
        shown = sources if isinstance(sources, str | os.PathLike) else list(sources)
        raise MaskFileNotFoundError(f"no sources match {shown}; nothing was written.")
    sidecars = _sidecars(urls, storage_options)
    used = set(sidecars.values())  # a glob over a bucket matches the label tables too
    urls = [u for u in urls if u not in used]
    if table is not None:
        sidecars = {}
    collided = _collisions(urls)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    local_dest = local_path(out, dest_storage_options)
    if local_dest is not None:
        os.makedirs(local_dest, exist_ok=True)
    job = _IngestJob(out, overwrite, storage_options, dest_storage_options)
    calls = [(case_name(u), u, table or sidecars.get(u)) for u in urls if u not in collided]
    if show and client is not None:
        print(f"medmask ingest: Dask dashboard at {client.dashboard_link}", file=sys.stderr)
    done = {row["source"]: row for row in _run_ingest(calls, job, client, max_in_flight, show)}
    rows = []
    for url in urls:
        if url in collided:
            row = dict.fromkeys(REPORT_COLUMNS)
            row.update(case=case_name(url), source=url, status="error", error=collided[url])
            rows.append(row)
        else:
            rows.append(done[url])
    frame = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    for column in ("input_bytes", "output_bytes", "structures"):
        frame[column] = frame[column].astype("Int64")
    return frame


class _IngestJob:
    """``ingest_case`` with the options every case shares (plain data: it pickles)."""

    def __init__(
        self,
        dest: str,
        overwrite: bool,
        storage_options: dict[str, Any] | None,
        dest_storage_options: dict[str, Any] | None,
    ) -> None:
        self.dest = dest
        self.overwrite = overwrite
        self.storage_options = storage_options
        self.dest_storage_options = dest_storage_options

    def __call__(self, case: str, source: str, labels: Any) -> dict[str, Any]:
        return ingest_case(
            case,
            source,
            self.dest,
            labels=labels,
            overwrite=self.overwrite,
            storage_options=self.storage_options,
            dest_storage_options=self.dest_storage_options,
        )
