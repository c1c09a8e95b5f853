"""Developer sessions: `nox -s tests lint typecheck examples bench`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "examples"]
PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Full test suite."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-n", "2", "-q", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "examples", "benchmarks", "noxfile.py")


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
