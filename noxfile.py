"""Developer sessions: `nox -s tests lint typecheck examples bench sanitize fuzz mutation`."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "examples"]
PYTHON = "3.11"
_ROOT = Path(__file__).resolve().parent


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Full test suite."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-n", "2", "-q", *session.posargs)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """Ruff (lint and format), mypy strict and the import-linter contracts of pyproject.toml
    (the layering of DEVELOPERS.md, lazy imports included), with the checkout's .venv
    (README's test command makes it: pip install -e ".[dev]")."""
    bin_dir = _ROOT / ".venv" / "bin"
    paths = ("src", "tests", "examples", "benchmarks", "fuzz", "noxfile.py")
    session.run(str(bin_dir / "ruff"), "check", *paths, external=True)
    session.run(str(bin_dir / "ruff"), "format", "--check", *paths, external=True)
    session.run(str(bin_dir / "mypy"), external=True)
    session.run(str(bin_dir / "lint-imports"), external=True)


def _lowest(requirement: str) -> str:
    """The lower bound pyproject.toml gives ``requirement`` (``"zarr"`` -> ``"3.1"``)."""
    with open(_ROOT / "pyproject.toml", "rb") as file:
        extras = tomllib.load(file)["project"]["optional-dependencies"]
    bounds = {
        spec.split(">=")[1]
        for specs in extras.values()
        for spec in specs
        if spec.split(">=")[0].strip() == requirement
    }
    if len(bounds) != 1:
        raise ValueError(f"pyproject.toml gives {requirement} the lower bounds {bounds}")
    return bounds.pop()


@nox.session(venv_backend="none")
def zarr_lowest(session: nox.Session) -> None:
    """The zarr v3 codecs and ArchiveStore (with zarr's own StoreTests) on the lowest zarr
    pyproject.toml allows: ``pip install zarr==<bound>`` into a venv layered over the
    checkout's .venv, which provides every package that zarr version accepts (a fresh
    resolve of the whole test extra takes pip about ten minutes)."""
    lowest = _lowest("zarr")
    env = Path(session.create_tmp()).resolve() / "zarr-lowest"
    python = str(env / "bin" / "python")
    if not Path(python).exists():
        session.run("python3.11", "-m", "venv", str(env), external=True)
    paths = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    own, under = (
        subprocess.run([exe, "-c", paths], check=True, capture_output=True, text=True).stdout
        for exe in (python, _VENV_PYTHON)
    )
    # an "import" line in a .pth file runs at start-up: the .venv's site directory, with its
    # own .pth files (the editable medmask), comes after this venv's (so its zarr wins)
    layer = f"import site; site.addsitedir({under.strip()!r})\n"
    (Path(own.strip()) / "_checkout_venv.pth").write_text(layer)
    session.run(python, "-m", "pip", "install", "-q", f"zarr=={lowest}", external=True)
    check = "import sys, zarr; from packaging.version import Version as V; "
    check += "sys.exit(V(zarr.__version__) != V(sys.argv[1]) and f'got zarr {zarr.__version__}')"
    session.run(python, "-c", check, lowest, external=True)
    session.run(
        python,
        "-m",
        "pytest",
        "-q",
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "tests/codecs/test_codec_zarr3.py",
        "tests/test_zarr_store.py",
        "tests/test_zarr_remote.py",
        external=True,
    )


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Mypy strict on the library."""
    session.install("-e", ".[all]", "mypy>=1.11")
    session.run("mypy")


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    """Run every example script (05 starts a local S3 server: the test extra)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-q", "tests/test_examples.py")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (print tables; pass --quick for a short run)."""
    session.install("-e", ".[dev]")
    for script in ("bench_codecs.py", "bench_archive.py", "bench_zarr.py", "bench_cohort.py"):
        session.run("python", f"benchmarks/{script}", *session.posargs)


_VENV_PYTHON = str(_ROOT / ".venv" / "bin" / "python")
_SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    "MEDMASK_KERNEL": "1",
    "MEDMASK_REQUIRE_KERNEL": "1",
}


def _sanitized_build(session: nox.Session, out: Path, src: str) -> dict[str, str]:
    """Build the kernel with ASan + UBSan (gcc) into a copy of the package at ``out``; the
    environment that runs anything against it."""
    lines = session.run(
        _VENV_PYTHON, "fuzz/build_kernel.py", str(out), "--src", src, silent=True, external=True
    )
    preload = [line for line in str(lines).splitlines() if line.endswith(".so")][-1]
    reports = out / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    env = {
        **_SANITIZER_ENV,
        "PYTHONPATH": str(out),
        "LD_PRELOAD": preload,
        # reports go to files: pytest's output capture would swallow them with the process
        "ASAN_OPTIONS": f"{_SANITIZER_ENV['ASAN_OPTIONS']}:log_path={reports / 'asan'}",
        "UBSAN_OPTIONS": f"{_SANITIZER_ENV['UBSAN_OPTIONS']}:log_path={reports / 'ubsan'}",
    }
    check = (
        "import medmask.codecs._edges_kernel as k, sys; "
        f"sys.exit(0 if k.__file__.startswith({str(out)!r}) else 'not the sanitized kernel')"
    )
    session.run(_VENV_PYTHON, "-c", check, env=env, external=True)
    return env


def _sanitizer_reports(session: nox.Session, out: Path) -> None:
    """Print every sanitizer report written under ``out`` and fail the session if there is one."""
    found = sorted((out / "reports").glob("*san.*"))
    for report in found:
        session.log(f"{report.name}:\n{report.read_text(errors='replace')}")
    if found:
        session.error(f"{len(found)} sanitizer report(s): see above")


@nox.session(venv_backend="none")
def sanitize(session: nox.Session) -> None:
    """The edges kernel under AddressSanitizer and UndefinedBehaviorSanitizer: tests/codecs and
    the fuzz corpus (seeds and tests/fixtures/fuzz-regressions) against a gcc
    ``-fsanitize=address,undefined`` build. Reuses the checkout's .venv (no install; needs gcc).
    Any sanitizer report aborts the run. ``-- --src DIR`` tests another source tree.

    The RSS measurements of tests/codecs/test_edges_memory.py are left out: ASan's shadow
    memory and quarantine inflate resident memory by design.
    """
    src = str(_ROOT / "src")
    if "--src" in session.posargs:
        src = session.posargs[session.posargs.index("--src") + 1]
    tmp = Path(session.create_tmp()).resolve() / "sanitized"
    env = _sanitized_build(session, tmp, src)
    try:
        session.run(
            _VENV_PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/codecs",
            "--ignore=tests/codecs/test_edges_memory.py", env=env, external=True,
        )  # fmt: skip
        seeds = Path(session.create_tmp()).resolve() / "seeds"
        session.run(_VENV_PYTHON, "fuzz/fuzz_edges.py", "--seeds", str(seeds), external=True)
        session.run(
            _VENV_PYTHON, "fuzz/fuzz_edges.py", "--replay", str(seeds),
            "tests/fixtures/fuzz-regressions", env=env, external=True,
        )  # fmt: skip
    finally:
        _sanitizer_reports(session, tmp)


@nox.session(venv_backend="none")
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing of the edges decoders (atheris, libFuzzer): kernel against numpy
    on mutated streams for a bounded time (``-- SECONDS``, default 60), seeded from the
    committed fixtures and tests/fixtures/fuzz-regressions. Crashing inputs are written to
    tests/fixtures/fuzz-regressions (commit them); then the whole corpus is replayed under the
    ASan + UBSan kernel. Reuses the checkout's .venv (installs atheris there if missing; needs
    gcc).

    Coverage is that of the Python decoder and stream parser (atheris instruments Python; the
    compiled kernel runs uninstrumented in the fuzzing process and sanitized in the replay).
    """
    seconds = session.posargs[0] if session.posargs else "60"
    try:
        session.run(_VENV_PYTHON, "-c", "import atheris", external=True, silent=True)
    except nox.command.CommandFailed:
        session.run(_VENV_PYTHON, "-m", "pip", "install", "-q", "atheris>=3.0", external=True)
    corpus = Path(session.create_tmp()).resolve() / "corpus"
    session.run(_VENV_PYTHON, "fuzz/fuzz_edges.py", "--seeds", str(corpus), external=True)
    for old in (_ROOT / "tests" / "fixtures" / "fuzz-regressions").iterdir():
        if old.suffix != ".md":
            (corpus / old.name).write_bytes(old.read_bytes())
    session.run(
        _VENV_PYTHON, "fuzz/fuzz_edges.py", str(corpus), f"-max_total_time={seconds}",
        "-timeout=30", "-rss_limit_mb=3072", "-print_final_stats=1",
        f"-artifact_prefix={_ROOT / 'tests' / 'fixtures' / 'fuzz-regressions'}/",
        env={"MEDMASK_KERNEL": "1"}, external=True,
    )  # fmt: skip
    out = Path(session.create_tmp()).resolve() / "sanitized"
    env = _sanitized_build(session, out, str(_ROOT / "src"))
    try:
        session.run(
            _VENV_PYTHON, "fuzz/fuzz_edges.py", "--replay", str(corpus), env=env, external=True
        )
    finally:
        _sanitizer_reports(session, out)


# Mutation groups: the modules a group mutates and the tests that may kill its mutants. One
# mutmut run over the whole suite records every call of every test in one process and ran out
# of 24 GB; a group records only its own tests.
MUTATION_GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "codecs": (["src/medmask/codecs/*"], ["tests/codecs", "tests/format/test_stored_chunk.py"]),
    "read": (
        ["src/medmask/reader.py", "src/medmask/engine.py"],
        [
            "tests/test_engine.py",
            "tests/test_reader.py",
            "tests/test_api.py",
            "tests/test_archive.py",
            "tests/test_archive_slots.py",
            "tests/test_archive_rewrite.py",
            "tests/adversarial",
        ],
    ),
    "io": (
        ["src/medmask/io/*"],
        [
            "tests/test_io.py",
            "tests/test_io_exact.py",
            "tests/test_latency.py",
            "tests/test_archive_remote.py",
            # conditional writes on S3, GCS, memory and local files; async sources
            "tests/adversarial/test_concurrency.py",
            "tests/test_zarr_remote.py",
            # the deprecated io names
            "tests/test_deprecate.py",
        ],
    ),
    "zarr": (
        ["src/medmask/zarr_store/*"],
        ["tests/test_zarr_store.py", "tests/test_zarr_remote.py"],
    ),
    "cohort": (
        ["src/medmask/cohort.py"],
        ["tests/test_cohort.py", "tests/test_dask.py", "tests/adversarial/test_cohort_hostile.py"],
    ),
    "interop": (
        ["src/medmask/interop/folders.py", "src/medmask/interop/dicom.py"],
        ["tests/interop", "tests/adversarial/test_unpack.py"],
    ),
}


# mutmut marks its generated lines "# type: ignore"; strict mode would report those as unused
_MYPY_JSON = [
    _VENV_PYTHON,
    "-m",
    "mypy",
    "src/medmask",
    "--output",
    "json",
    "--no-warn-unused-ignores",
]


def _mutmut_table(modules: list[str], tests: list[str]) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(item) for item in items) + "]"

    args = ["-p", "no:cacheprovider", "-q", "-x"]
    return (
        '[tool.mutmut]\nsource_paths = ["src/medmask"]\n'
        f"only_mutate = {toml_list(modules)}\n"
        'also_copy = ["fuzz/"]\n'
        # forked straight from the stats run, children inherit its server and pool threads
        # and hang (false timeouts): fork them from a clean server process instead
        'process_isolation = "forkserver"\n'
        # CI runs mypy --strict: a mutant that does not type-check cannot land, so it counts
        # as caught (status "caught by type check") without running tests
        # (mutmut recognises mypy by a list item equal to "mypy")
        f"type_check_command = {toml_list(_MYPY_JSON)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        f"pytest_add_cli_args = {toml_list(args)}\n"
    )


# statuses that count as a killed mutant ("segfault" includes SIGKILL, i.e. a blown memory
# bound); "survived", "no tests", "suspicious" and "not checked" count against the score
_CAUGHT = ("killed", "timeout", "segfault", "caught by type check")


def _mutant_statuses(mutants: Path) -> dict[str, int]:
    """How many of the group's mutants have each mutmut status (from its ``.meta`` files,
    named with mutmut's own table, in the .venv that ran it)."""
    script = (
        "import collections, json, pathlib, sys\n"
        "from mutmut.stats import status_by_exit_code\n"
        "counts = collections.Counter(\n"
        "    status_by_exit_code[code]\n"
        "    for meta in pathlib.Path(sys.argv[1]).rglob('*.meta')\n"
        "    for code in json.loads(meta.read_text())['exit_code_by_key'].values()\n"
        ")\n"
        "print(json.dumps(counts))\n"
    )
    done = subprocess.run(
        [_VENV_PYTHON, "-c", script, str(mutants)], check=True, capture_output=True, text=True
    )
    counts: dict[str, int] = json.loads(done.stdout)
    return counts


def _unkilled(session: nox.Session, mutmut: str) -> list[str]:
    """Names of the mutants mutmut lists as survived or without tests (in the cwd's run)."""
    listing = session.run(mutmut, "results", external=True, silent=True) or ""
    return [
        line.split(":")[0].strip()
        for line in str(listing).splitlines()
        if line.rstrip().endswith((": survived", ": no tests"))
    ]


def _drop_stale_files(work: Path) -> None:
    """Delete the files an earlier run's copy holds that HEAD no longer has (a module turned
    into a package, a moved test), in the copy and in mutmut's ``mutants/`` tree; unpacking
    HEAD over the old copy leaves them behind, and a stale ``io.py`` beside ``io/`` or an old
    conftest would then be tested instead of the committed code."""
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "HEAD"],
        cwd=_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    tracked = set(listing.splitlines())
    for root in (work, work / "mutants"):
        for top in ("src", "tests", "fuzz"):
            for path in sorted((root / top).rglob("*")) if (root / top).is_dir() else []:
                if not path.is_file() or "__pycache__" in path.parts:
                    continue
                if path.suffix == ".so" and path.name.startswith("_edges_kernel"):
                    continue  # the built kernel, copied in, never tracked
                relative = path.relative_to(root).as_posix()
                # mutmut's own records beside a mutated module: .meta (results), .spans
                source = relative.removesuffix(".meta").removesuffix(".spans")
                if source not in tracked:
                    path.unlink()


@nox.session(venv_backend="none")
def mutation(session: nox.Session) -> None:
    """One-line mutants of the trust-critical modules (mutmut), group by group
    (:data:`MUTATION_GROUPS`: codecs, read, io, zarr, cohort, interop), each mutant run against
    the group's tests that executed the mutated function. Each group runs in its own copy of
    the committed tree (``.nox/mutation/GROUP``). Prints every survivor and fails when fewer
    than 90% of all mutants are killed. ``-- GROUP ...`` runs only those groups. Reuses the
    checkout's .venv (installs mutmut 3.8.1 there: 3.6 does not run on pytest 9;
    tests/conftest.py makes 3.8's caller tracking tolerate this suite).

    ``-- --resume`` keeps a group's earlier results: the committed tree is unpacked over the
    old copy, mutmut re-tests only mutants of changed functions and those not yet checked,
    and then re-judges every earlier survivor against today's tests. On 2 shared cores a
    fresh run of every group takes several hours (codecs alone: about 4,450 mutants, half of
    them caught by mypy); resumed runs take minutes per group.
    """
    resume = "--resume" in session.posargs
    groups = [g for g in session.posargs if g != "--resume"] or list(MUTATION_GROUPS)
    unknown = sorted(set(groups) - set(MUTATION_GROUPS))
    if unknown:
        session.error(f"unknown mutation groups {unknown}; choose from {list(MUTATION_GROUPS)}")
    session.run(_VENV_PYTHON, "-m", "pip", "install", "-q", "mutmut==3.8.1", external=True)
    mutmut = str(_ROOT / ".venv" / "bin" / "mutmut")
    # the tests run from a copy, not beside shared/: say where shared/data is
    env = {"MEDMASK_SHARED_DATA": str(_ROOT.parent / "shared" / "data")}
    totals = {"killed": 0, "judged": 0}
    for group in groups:
        work = Path(session.create_tmp()).resolve() / group
        resumed = resume and (work / "mutants").is_dir()
        if work.exists() and not resumed:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", "HEAD"], cwd=_ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        if resumed:
            _drop_stale_files(work)
            # mutmut maps functions to the tests that call them only for tests it has not seen:
            # a function renamed or moved since keeps no tests ("no tests") until the map is
            # rebuilt; one clean run of the selection rebuilds it, earlier verdicts stay
            (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        for kernel in (_ROOT / "src" / "medmask" / "codecs").glob("_edges_kernel*.so"):
            shutil.copy(kernel, work / "src" / "medmask" / "codecs")
        pyproject = work / "pyproject.toml"
        text = pyproject.read_text()
        start = text.index("[tool.mutmut]")
        end = text.find("\n[", start + 1)
        table = _mutmut_table(*MUTATION_GROUPS[group])
        pyproject.write_text(text[:start] + table + (text[end:] if end != -1 else ""))
        with session.chdir(work):
            # survivors of earlier runs: results of unchanged functions stand, even where a
            # new test now kills them, so they are judged again below (not those judged now)
            before = set(_unkilled(session, mutmut)) if resumed else set()
            session.run(mutmut, "run", "--max-children", "2", env=env, external=True)
            if resumed:
                earlier = sorted(before.intersection(_unkilled(session, mutmut)))
                if earlier:
                    session.log(f"re-judging {len(earlier)} earlier survivors of group {group}")
                    session.run(
                        mutmut, "run", "--max-children", "2", *earlier, env=env, external=True
                    )
            session.log(f"survivors of group {group}:")
            session.run(mutmut, "results", external=True)
        counts = _mutant_statuses(work / "mutants")
        killed = sum(counts.get(status, 0) for status in _CAUGHT)
        judged = sum(counts.values()) - counts.get("skipped", 0)
        session.log(f"group {group}: {dict(sorted(counts.items()))}; killed {killed} of {judged}")
        totals["killed"] += killed
        totals["judged"] += judged
    share = totals["killed"] / totals["judged"] if totals["judged"] else 0.0
    killed, judged = totals["killed"], totals["judged"]
    session.log(f"all groups {groups}: killed {killed} of {judged} = {share:.1%}")
    if share < 0.9:
        session.error(f"{share:.1%} of the mutants killed; at least 90% required")
