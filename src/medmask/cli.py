"""The ``medmask`` command line (also ``python -m medmask``).

Exit codes: 0 success, 1 a data or storage error (bad file, failed check, missing object),
2 a usage error (bad arguments), 3 an internal error (a bug). Errors and warnings are one line
on stderr, never a traceback; ``--debug`` shows the traceback (and warnings as Python prints
them). Remote paths take ``--storage-option KEY=VALUE`` (fsspec options; VALUE is JSON
when it parses as JSON, e.g. ``anon=true``, else a string).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ._version import __version__
from .errors import InvalidValueError, MaskFileExistsError, MedmaskError, SpaceMismatchError
from .geometry import orientation_letters
from .interop.registry import (
    CONVERTERS,
    Converter,
    describe_suffixes,
    kind_of,
    kind_of_name,
    titles_taking,
)
from .io import stored_size, write_atomic
from .mapping import mapping_items
from .mask import SegmentationMask
from .values import voxel_volume_ml

__all__ = ["main"]


class UsageError(Exception):
    """Arguments that do not fit together (exit code 2)."""


# --- helpers ----------------------------------------------------------------------------------


def _storage_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


_LO_MAX = 64  # DICOM LO: AlgorithmName, AlgorithmVersion


def _algorithm(text: str) -> tuple[str, str | None]:
    """``--algorithm NAME[:VERSION]`` -> (name, version or None)."""
    name, sep, version = text.partition(":")
    if not name.strip() or (sep and not version.strip()):
        raise argparse.ArgumentTypeError(f"expected NAME or NAME:VERSION, got {text!r}")
    if len(name) > _LO_MAX or len(version) > _LO_MAX:
        raise argparse.ArgumentTypeError(
            f"expected NAME and VERSION of at most {_LO_MAX} characters each (DICOM LO)"
        )
    return name, version if sep else None


def _options(args: argparse.Namespace) -> dict[str, Any] | None:
    pairs = [*getattr(args, "storage_option", []), *getattr(args, "sub_storage_option", [])]
    return dict(pairs) or None


def _converter(source: str, storage_options: dict[str, Any] | None) -> Converter:
    """The converter of an input: by its suffix, else by its first bytes."""
    kind = kind_of(source, storage_options)
    if kind is None:
        raise UsageError(f"{source}: cannot tell the format (expected {describe_suffixes()}).")
    return CONVERTERS[kind]


def _output_converter(target: str) -> Converter:
    """The converter of an output: by its suffix only (there are no bytes to look at yet)."""
    kind = kind_of_name(target)
    if kind is None:
        raise UsageError(f"{target}: name the output {describe_suffixes()}.")
    return CONVERTERS[kind]


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _space_lines(space: Any) -> list[str]:
    if space is None:
        return ["space      none (an empty archive)"]
    shape = " x ".join(str(int(s)) for s in space.shape)
    spacing = " x ".join(f"{float(s):g}" for s in space.spacing)
    origin = ", ".join(f"{float(v):.4g}" for v in space.origin)
    return [
        f"shape      {shape} (z, y, x)",
        f"spacing    {spacing} mm",
        f"origin     ({origin}) mm, LPS",
        f"axes       z, y, x run towards {' '.join(orientation_letters(space))} (LPS letters)",
    ]


def _label_rows(
    labels: Sequence[tuple[str, int, int, Any]], voxel_ml: float
) -> list[dict[str, Any]]:
    rows = []
    for name, value, count, bbox in labels:
        rows.append(
            {
                "structure": name,
                "value": value,
                "voxels": count,
                "volume_ml": round(count * voxel_ml, 3),
                "bbox": None if bbox is None else [list(map(int, b)) for b in bbox],
            }
        )
    return rows


def _print_table(rows: list[dict[str, Any]], indent: str = "  ") -> None:
    if not rows:
        print(f"{indent}(no labels)")
        return
    header = ("structure", "value", "voxels", "volume_ml", "bbox (z0-z1, y0-y1, x0-x1)")
    cells = [
        (
            str(r["structure"]),
            str(r["value"]),
            f"{r['voxels']:,}",
            f"{r['volume_ml']:.2f}",
            "-" if r["bbox"] is None else ", ".join(f"{a}-{b}" for a, b in r["bbox"]),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    right = (False, True, True, True, False)

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return indent + "  ".join(parts).rstrip()

    print(line(header))
    for c in cells:
        print(line(c))


def _voxel_ml(space: Any) -> float:
    return voxel_volume_ml(space.spacing) if space else 0.0


def _mask_labels(mask: SegmentationMask) -> list[tuple[str, int, int, Any]]:
    stats = mask.label_stats()
    out = []
    for name, value in mapping_items(mask.mapping):
        if value == 0:
            continue
        found = stats.get(value)
        out.append((name, value, 0 if found is None else found.count, found and found.bbox))
    return out


def _size_text(size: int | None) -> str:
    return "unknown (remote, larger than the first read)" if size is None else f"{size:,} bytes"


# --- reading and writing any kind -------------------------------------------------------------


def _read_masks(
    converter: Converter, source: str, args: argparse.Namespace
) -> dict[str, SegmentationMask]:
    """Every mask of ``source``: one for .msk/NIfTI/DICOM SEG, all members of an archive."""
    labels = getattr(args, "labels", None)
    if labels is not None and "mapping" not in converter.read_options:
        raise UsageError(
            f"--labels names the values of {titles_taking('mapping')} input only; "
            f"{source} is {converter.kind}."
        )
    given = {} if labels is None else {"mapping": labels}
    return converter.read_masks(source, storage_options=_options(args), **given)


def _one_mask(
    masks: dict[str, SegmentationMask], member: str | None, source: str
) -> SegmentationMask:
    if member is not None:
        if member not in masks:
            raise UsageError(f"{source} has no member {member!r}; it has {sorted(masks)}.")
        return masks[member]
    if len(masks) != 1:
        raise UsageError(
            f"{source} holds {len(masks)} masks ({', '.join(list(masks)[:8])}"
            f"{' ...' if len(masks) > 8 else ''}): pick one with --member NAME, or use "
            "`medmask unpack` for one file per structure."
        )
    return next(iter(masks.values()))


def _dicom_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of a DICOM SEG output given by ``--algorithm`` and ``--codes``."""
    given: dict[str, Any] = {}
    if args.algorithm is not None:
        given["algorithm_name"], version = args.algorithm
        if version is not None:
            given["algorithm_version"] = version
    if args.codes is not None:
        given["segment_codes"] = args.codes
    return given


def _write(
    converter: Converter,
    target: str,
    masks: dict[str, SegmentationMask],
    args: argparse.Namespace,
    source: str,
) -> int:
    options = _options(args)
    flags = {"level": args.level, "series": args.series, **_dicom_flags(args)}
    given = {k: v for k, v in flags.items() if v is not None and k in converter.write_options}
    if converter.write_all is not None:
        return converter.write_all(
            masks, target, storage_options=options, overwrite=args.overwrite, **given
        )
    mask = _one_mask(masks, args.member, source)
    if "series" in converter.write_options and args.series is None:  # a DICOM SEG's
        raise UsageError(
            f"writing a {converter.title} needs --series DICOM_FOLDER (the source series)."
        )
    assert converter.write is not None  # each converter has write or write_all
    try:
        return converter.write(
            mask, target, storage_options=options, overwrite=args.overwrite, **given
        )
    except SpaceMismatchError as exc:
        differences = getattr(exc, "differences", None)  # set by the DICOM SEG writer
        if differences is None:
            raise
        raise SpaceMismatchError(
            f"{source}: not on the grid of --series {args.series}, nor on a flip or axis "
            f"permutation of it (those are aligned for you): it differs in "
            f"{'; '.join(differences)}. Resample it onto the series grid first."
        ) from None


# --- commands ---------------------------------------------------------------------------------


def _info_msk(source: str, args: argparse.Namespace) -> dict[str, Any]:
    from .api import load_legacy_mask, open_msk

    options = _options(args)
    opened = open_msk(source, storage_options=options)
    if opened is None:
        mask = load_legacy_mask(source, storage_options=options)
        return _info_of_masks(source, "medmask 0.1 .msk (read-only)", {"": mask})
    with opened as f:
        info, size = f.info(), f.file_size
    return {
        "source": source,
        "format": CONVERTERS["msk"].title,
        "size": size,
        "space": info.space,
        "members": [_member_json("", info)],
    }


def _member_json(name: str, info: Any) -> dict[str, Any]:
    labels = [(e.name, e.value, e.count, e.bbox) for e in info.labels if e.value != 0]
    return {
        "member": name,
        "dtype": str(info.dtype),
        "codec": info.codec,
        "chunks": list(info.chunks),
        "stored_bytes": info.compressed_bytes,
        "raw_bytes": info.raw_bytes,
        "labels": _label_rows(labels, _voxel_ml(info.space)),
    }


def _info_of_masks(source: str, what: str, masks: dict[str, SegmentationMask]) -> dict[str, Any]:
    space = next(iter(masks.values())).space if masks else None
    members = [
        {
            "member": name,
            "dtype": str(mask.dtype),
            "labels": _label_rows(_mask_labels(mask), _voxel_ml(mask.space)),
        }
        for name, mask in masks.items()
    ]
    return {"source": source, "format": what, "size": None, "space": space, "members": members}


def cmd_info(args: argparse.Namespace) -> int:
    source = args.source
    options = _options(args)
    converter = _converter(source, options)
    kind = converter.kind
    if kind == "msk":
        report = _info_msk(source, args)
    elif kind == "mska":
        from .archive import MaskArchive

        with MaskArchive(source, storage_options=options) as archive:
            what = "medmask 0.1 .mska (read-only)" if archive.is_legacy else converter.title
            report = {
                "source": source,
                "format": f"{what}, generation {archive.generation}",
                "size": archive.file_size,
                "space": archive.space,
                "members": [_member_json(i.name, i) for i in archive.info()],
            }
    else:
        masks = _read_masks(converter, source, args)
        report = _info_of_masks(source, converter.title, masks)
        report["size"] = stored_size(source, options)
    if args.json:
        space = report["space"]
        report["space"] = None if space is None else json.loads(space.to_json())
        print(json.dumps(report, indent=1, default=str))
        return 0
    print(f"file       {report['source']}")
    print(f"format     {report['format']}")
    print(f"size       {_size_text(report['size'])}")
    for line in _space_lines(report["space"]):
        print(line)
    for member in report["members"]:
        several = len(report["members"]) > 1 or kind == "mska"
        title = f"member {member['member']!r}: " if several else "mask: "
        details = [member["dtype"]]
        if "codec" in member:
            details.append(f"codec {member['codec'].get('id')}")
            details.append(f"chunks {tuple(member['chunks'])}")
            raw, stored = member["raw_bytes"], member["stored_bytes"]
            ratio = f" ({raw / stored:.0f}x smaller than raw)" if stored else ""
            details.append(f"{stored:,} bytes stored{ratio}")
        count = len(member["labels"])
        print(f"{title}{', '.join(details)}, {count} label{'' if count == 1 else 's'}")
        _print_table(member["labels"])
    return 0


def _member_line(name: str, labels: int, stored: int) -> str:
    return f"{name}\t{labels} label{'' if labels == 1 else 's'}\t{stored:,} bytes"


def cmd_ls(args: argparse.Namespace) -> int:
    options = _options(args)
    converter = _converter(args.source, options)
    if converter.kind == "mska":
        from .archive import MaskArchive

        with MaskArchive(args.source, storage_options=options) as archive:
            if not args.long:  # from the directory alone: nothing is decoded (0.1 archives too)
                for name, mapping, stored in archive.listing():
                    n = sum(1 for _, value in mapping.items() if value != 0)
                    print(_member_line(name, n, stored))
                return 0
            for info in archive.info():
                labels = [e for e in info.labels if e.value != 0]
                print(_member_line(info.name, len(labels), info.compressed_bytes))
                for e in labels:
                    print(f"  {e.name}\t{e.value}\t{e.count:,} voxels")
        return 0
    masks = _read_masks(converter, args.source, args)
    for mask in masks.values():
        for name, value, voxels, _ in _mask_labels(mask):
            print(f"{name}\t{value}\t{voxels:,} voxels" if args.long else name)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    output = _output_converter(args.output)  # a bad output name fails before any reading
    dicom_only = [flag for flag in ("algorithm", "codes") if getattr(args, flag) is not None]
    if dicom_only and "series" not in output.write_options:
        raise UsageError(
            f"{' and '.join('--' + f for f in dicom_only)} apply to a DICOM SEG output (.dcm) "
            f"only; {args.output} is {output.title}."
        )
    if args.codes is not None:  # a bad table fails before any reading too
        from .interop.segment_codes import read_segment_codes

        read_segment_codes(args.codes, _options(args))
    converter = _converter(args.input, _options(args))
    masks = _read_masks(converter, args.input, args)
    if not masks:
        raise InvalidValueError(f"{args.input}: holds no mask.")
    if converter.read_all is None and args.member is not None:  # names the one mask
        masks = {args.member: next(iter(masks.values()))}
    size = _write(output, args.output, masks, args, args.input)
    seconds = time.perf_counter() - started
    written = len(masks) if output.write_all is not None else 1
    print(f"{args.input} -> {args.output}: {written} mask(s), {size:,} bytes, {seconds:.2f} s")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from .interop.folders import pack_folder

    started = time.perf_counter()
    report = pack_folder(
        args.folder,
        args.output,
        args.labels,
        storage_options=_options(args),
        level=args.level,
        overwrite=args.overwrite,
        progress=_show_progress(args),
        exclude=args.exclude,
        skip_mismatched=args.skip_mismatched,
    )
    for file_name, why in report.left_out.items():
        print(f"medmask pack: left out {file_name}: {why}", file=sys.stderr)
    structures = sum(len(v) for v in (*report.layers.values(), *report.whole.values()))
    size = stored_size(args.output, _options(args))
    seconds = time.perf_counter() - started
    whole = f" and {len(report.whole)} file(s) kept whole" if report.whole else ""
    print(
        f"{args.folder} -> {args.output}: {structures} structures in {report.n_layers} "
        f"layer(s){whole}, {_size_text(size)}, {seconds:.2f} s"
    )
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from .interop.folders import unpack

    files = unpack(
        args.archive,
        args.folder,
        storage_options=_options(args),
        overwrite=args.overwrite,
        progress=_show_progress(args),
    )
    print(f"{args.archive} -> {args.folder}: {len(files)} .nii.gz files")
    return 0


def _verify_one(source: str, args: argparse.Namespace) -> list[str]:
    options = _options(args)
    kind = _converter(source, options).kind
    if kind == "mska":
        from .archive import MaskArchive

        with MaskArchive(source, storage_options=options) as archive:
            return archive.verify()
    if kind == "msk":
        from .api import load_legacy_mask, open_msk

        opened = open_msk(source, storage_options=options)
        if opened is None:
            load_legacy_mask(source, storage_options=options)  # no checksums in 0.1: decode
            return []
        with opened as f:
            return f.verify()
    raise UsageError(f"{source}: verify checks .msk and .mska files (their checksums).")


def cmd_verify(args: argparse.Namespace) -> int:
    failed = 0
    for source in args.sources:
        try:
            problems = _verify_one(source, args)
        except MedmaskError as exc:
            problems = [_one_line(exc)]
        if problems:
            failed += 1
            print(f"FAILED {source}")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"ok     {source}")
    if failed:
        print(f"medmask: error: {failed} of {len(args.sources)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_stats(args: argparse.Namespace) -> int:
    try:
        import dask

        from .dask import cohort_stats, expand_sources
    except ImportError as exc:
        raise ImportError(
            f"medmask stats needs the dask extra: pip install 'medmask[dask]' ({exc})"
        ) from None
    options = _options(args)
    sources = [s for pattern in args.sources for s in expand_sources(pattern, options)]
    if not sources:
        raise InvalidValueError(f"no files match {' '.join(args.sources)}.")
    structures = args.structures.split(",") if args.structures else None
    measures = ("centroid_mm",) if args.centroids else ()
    with dask.config.set(num_workers=args.workers):
        table = cohort_stats(
            sources,
            structures=structures,
            measures=measures,
            storage_options=options,
            progress=_show_progress(args),
        )
    if args.csv:
        write_atomic(args.csv, [table.to_csv(index=False).encode()], options)
        print(f"{len(sources)} case(s), {len(table)} rows -> {args.csv}")
    else:
        print(table.to_string(index=False))
    errors = table["error"].dropna() if "error" in table else []
    for error in errors:
        print(f"medmask: error: {_cli_words(str(error))}", file=sys.stderr)
    return 1 if len(errors) else 0


def cmd_ingest(args: argparse.Namespace) -> int:
    try:
        from .dask import ingest
    except ImportError as exc:
        raise ImportError(
            f"medmask ingest needs the dask extra: pip install 'medmask[dask]' ({exc})"
        ) from None
    options = _options(args)
    with contextlib.ExitStack() as stack:
        client = None
        if args.scheduler:
            from distributed import Client

            client = stack.enter_context(Client(args.scheduler))
        table = ingest(
            args.sources,
            args.dest,
            overwrite=args.overwrite,
            client=client,
            max_in_flight=args.workers,
            labels=args.labels,
            storage_options=options,
            progress=_show_progress(args),
        )
    if args.report:
        write_atomic(args.report, [table.to_csv(index=False).encode()], options)
    counts = table["status"].value_counts()
    for _, row in table.iterrows():
        if row["status"] == "error":
            print(f"medmask ingest: error: {row['case']}: {_cli_words(str(row['error']))}",
                  file=sys.stderr)  # fmt: skip
        else:
            print(f"{row['status']:8} {row['source']} -> {row['output']}")
    report = f"; report: {args.report}" if args.report else ""
    print(
        f"{len(table)} case(s): {counts.get('done', 0)} done, {counts.get('skipped', 0)} "
        f"skipped, {counts.get('error', 0)} failed{report}"
    )
    return 1 if counts.get("error", 0) else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    shape = tuple(args.shape) if args.shape else None
    run_demo(args.folder, shape=shape, overwrite=args.overwrite, progress=_show_progress(args))
    return 0


# --- parser and entry point -------------------------------------------------------------------


def _add_storage_option(parser: argparse.ArgumentParser, dest: str) -> None:
    parser.add_argument(
        "-S",
        "--storage-option",
        dest=dest,
        action="append",
        type=_storage_option,
        default=[],
        metavar="KEY=VALUE",
        help="fsspec storage option for remote URLs (repeatable), e.g. endpoint_url=http://...",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``medmask``."""
    parser = argparse.ArgumentParser(
        prog="medmask",
        description="Self-describing, compact, cloud-readable medical segmentation masks.",
        epilog="Run `medmask demo` first; `medmask COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"medmask {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_storage_option(parser, "storage_option")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], text: str) -> Any:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        _add_storage_option(sub, "sub_storage_option")
        # also accepted after the command; SUPPRESS keeps the value given before it
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
        sub.add_argument("--no-progress", action="store_true", default=argparse.SUPPRESS)
        return sub

    sub = command("info", cmd_info, "Header, space, labels with voxel counts and volumes, sizes.")
    sub.add_argument("source", help=".msk, .mska, .nii(.gz) or DICOM SEG: a path or URL")
    sub.add_argument("--json", action="store_true", help="print JSON")
    sub.add_argument("--labels", help="label table naming a NIfTI file's values")

    sub = command("ls", cmd_ls, "List an archive's members (or a mask's labels).")
    sub.add_argument("source", help="a path or URL")
    sub.add_argument("-l", "--long", action="store_true", help="also each structure")

    sub = command("convert", cmd_convert, "Convert between .nii/.nii.gz/.msk/.mska/DICOM SEG.")
    sub.add_argument("input", help="path or URL (.msk and .mska of medmask 0.1 are upgraded)")
    sub.add_argument("output", help="path or URL; the format follows the name")
    sub.add_argument("--labels", help="label table naming a NIfTI input's values")
    sub.add_argument("--member", help="the archive member to convert (or the member name)")
    sub.add_argument("--series", help="the DICOM series folder a .dcm output refers to")
    sub.add_argument(
        "--algorithm",
        type=_algorithm,
        metavar="NAME[:VERSION]",
        help="the algorithm that made the mask, e.g. TotalSegmentator:2.4 (.dcm: AUTOMATIC "
        "segments; without it MANUAL)",
    )
    sub.add_argument(
        "--codes",
        metavar="TABLE",
        help="CSV, TSV or JSON table of segment codes over the shipped SNOMED CT table (.dcm)",
    )
    sub.add_argument("--level", type=int, help="compression level (.msk/.mska)")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing output")

    sub = command("pack", cmd_pack, "Pack a folder of per-structure NIfTI files into one .mska.")
    sub.add_argument("folder", help="local folder or folder URL (TotalSegmentator layout)")
    sub.add_argument("output", help=".mska path or URL")
    sub.add_argument("--labels", help="label table (JSON, TSV, ITK-SNAP, Slicer) of the values")
    sub.add_argument("--level", type=int, help="compression level")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing output")
    sub.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out files whose name matches GLOB (repeatable), e.g. 'lung_*.nii.gz'",
    )
    sub.add_argument(
        "--skip-mismatched",
        action="store_true",
        help="leave out files not on the grid most files share (listed on stderr)",
    )

    sub = command("unpack", cmd_unpack, "Write every structure of an archive as NAME.nii.gz.")
    sub.add_argument("archive", help=".mska path or URL")
    sub.add_argument("folder", help="local output folder")
    sub.add_argument(
        "--overwrite", action="store_true", help="replace existing files (regular files only)"
    )

    sub = command("verify", cmd_verify, "Check every checksum and the stored statistics.")
    sub.add_argument("sources", nargs="+", help=".msk or .mska paths or URLs")

    sub = command("stats", cmd_stats, "Per-structure voxel counts and volumes of a cohort.")
    sub.add_argument("sources", nargs="+", help="paths, URLs or quoted globs (s3://b/*.mska)")
    sub.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads")
    sub.add_argument("--csv", help="write the table to this CSV path or URL")
    sub.add_argument("--structures", help="comma-separated structure names")
    sub.add_argument("--centroids", action="store_true", help="add LPS centroids (decodes)")

    sub = command(
        "ingest",
        cmd_ingest,
        "Convert NIfTI folders, label maps and DICOM SEGs into DEST/<case>.mska or .msk.",
    )
    sub.add_argument(
        "sources", nargs="+", metavar="SRC", help="paths, URLs or quoted globs (s3://b/cases/*)"
    )
    sub.add_argument("dest", metavar="DEST", help="output folder path or URL")
    sub.add_argument("--overwrite", action="store_true", help="convert cases already done again")
    sub.add_argument("--labels", metavar="TABLE", help="label table naming label maps' values")
    sub.add_argument(
        "--workers", type=int, default=None, help="cases converted at once (default: CPUs)"
    )
    sub.add_argument(
        "--scheduler", metavar="ADDRESS", help="a dask.distributed scheduler (tcp://host:8786)"
    )
    sub.add_argument("--report", metavar="CSV", help="write the report to this CSV path or URL")

    sub = command("demo", cmd_demo, "Build a synthetic torso phantom and compare formats.")
    sub.add_argument("folder", nargs="?", default="medmask-demo", help="output folder")
    sub.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="phantom shape")
    sub.add_argument("--overwrite", action="store_true", help="reuse a non-empty folder")
    return parser


#: How the library's messages name a Python keyword, and how this command line says the same
#: (applied in order: longer phrases first). Messages are written for Python callers; every
#: line the command line prints goes through :func:`_cli_words`.
_CLI_WORDS: tuple[tuple[str, str], ...] = (
    ("overwrite=True", "--overwrite"),
    ("overwrite=False", "--overwrite not given"),
    ("skip_mismatched=True", "--skip-mismatched"),
    ("exclude=", "--exclude GLOB"),
    ("mapping=", "--labels"),
    ("structures=", "--structures"),
    ("storage_options=", "--storage-option KEY=VALUE"),
    ("(and 'token' for temporary ones)", "(and -S token=TOKEN for temporary ones)"),
    ("(or 'google_default')", "(or -S token=google_default)"),
    ("max_voxels= or MEDMASK_MAX_VOXELS", "the environment variable MEDMASK_MAX_VOXELS"),
    ("max_bytes= or MEDMASK_MAX_BYTES", "the environment variable MEDMASK_MAX_BYTES"),
    ("max_voxels=", "MEDMASK_MAX_VOXELS"),
    ("max_bytes=", "MEDMASK_MAX_BYTES"),
    ("open it with recover=True", "open it in Python with MaskArchive(path, recover=True)"),
    ("Open it with recover=True", "Open it in Python with MaskArchive(path, recover=True)"),
    ("pass a longer lock_timeout", "try again once it is done"),
)
_CLI_PATTERN = re.compile("|".join(rf"(?<![\w.-]){re.escape(python)}" for python, _ in _CLI_WORDS))
_CLI_FLAG = dict(_CLI_WORDS)
#: ``storage_options={'key': KEY, 'token': 'x.json'}`` in a hint: one -S per item.
_OPTIONS_DICT = re.compile(r"(?<![\w.-])storage_options=\{([^{}]*)\}")
_OPTION_ITEM = re.compile(r"'(\w+)': '?([^,']+)'?")


def _cli_words(text: str) -> str:
    """``text`` with the Python keywords of :data:`_CLI_WORDS` said as this CLI's flags."""

    def options(match: re.Match[str]) -> str:
        items = _OPTION_ITEM.findall(match.group(1))
        return " ".join(f"-S {key}={value}" for key, value in items) or match.group(0)

    text = _OPTIONS_DICT.sub(options, text)
    return _CLI_PATTERN.sub(lambda match: _CLI_FLAG[match.group(0)], text)


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError) and not isinstance(exc, MedmaskError) and exc.args:
        text = str(exc.args[0])
    return " ".join(_cli_words(text).split())


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Show a warning as one line (``medmask: warning: ...``), not Python's two with source."""
    with contextlib.suppress(OSError, ValueError):  # stderr closed: as Python's own
        print(f"medmask: warning: {' '.join(_cli_words(str(message)).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    workers = getattr(args, "workers", None)  # None: ingest's default
    if workers is not None and workers < 1:
        parser.error("--workers must be at least 1")
    with warnings.catch_warnings():
        if not args.debug:
            warnings.showwarning = _show_warning
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the command of ``args``: every error becomes one line on stderr and an exit code."""
    try:
        code: int = args.run(args)
        return code
    except UsageError as exc:
        if args.debug:
            raise
        print(f"medmask {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medmask: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()  # the reader of our output went away (| head)
        return 1
    except (MedmaskError, ValueError, KeyError, OSError, ImportError) as exc:
        if args.debug:
            raise
        text = _one_line(exc)
        asked = getattr(args, "overwrite", False)
        if isinstance(exc, MaskFileExistsError) and not asked and "--overwrite" not in text:
            text += " Pass --overwrite to replace it."
        print(f"medmask {args.command}: error: {text}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug (ours or a library's): one line, the traceback on --debug
        if args.debug:
            raise
        print(
            f"medmask {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
            "(a bug: please report it with the output of --debug)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
