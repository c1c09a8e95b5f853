"""Every fenced code block of README.md and docs/*.md runs (issue 19).

The rules (DEVELOPERS.md, "Testing", says the same in short):

- One test per page: README.md and every ``docs/*.md`` (found by glob: new pages count).
- ```` ```python ```` blocks run in order, in one namespace per page, in a fresh temporary
  working directory. A block is complete as written: its imports, and the data it uses made in
  it or in an earlier block of the page; no ``...`` placeholders, no deprecated names (a
  ``DeprecationWarning`` pointing at the page fails it). ```` ```py ````,
  ```` ```python3 ```` and ```` ```pycon ```` fences are refused (they would silently not run).
- ```` ```console ````, ```` ```sh ````, ```` ```bash ```` and ```` ```shell ```` blocks whose first
  command is ``medmask ...`` (or ``$ medmask ...``) run too, where they stand between the
  python blocks, in the same directory: each command as ``python -m medmask ...``, which must
  exit 0. In a block with ``$`` prompts only the prompted lines are commands (the others are
  their output, not compared). ``#`` comments, ``\\`` continuations and ``&&`` are understood;
  pipes, redirections and ``$VARIABLES`` are refused.
- Shown, not run: ```` ```console ```` blocks of other commands (``pip install``, ``nox``,
  README's two commands, which ``.ci/run`` runs itself) and ```` ```text ````. A
  ```` ```sh ````/```` ```bash ````/```` ```shell ```` block is always meant to run: it must
  hold medmask commands only. ```` ```json ````, unlabelled and other fences never run.
- ``s3://`` URLs reach a local moto S3 server through ``AWS_ENDPOINT_URL`` (botocore, and so
  s3fs, honour it), with fake credentials in the environment and an empty bucket named
  ``bucket`` whose objects anyone may read (``-S anon=true`` works, as on a public data
  set's bucket); all of it for this test only.
- Real data: a page whose prose says where its files come from may have them linked from
  ``../shared/data`` into the working directory by a directive
  ``<!-- docs-test: shared-data totalseg/ct_dicom totalseg/labels_total.json -->`` (each
  path under its own name). Pages that can make their data (``medmask.phantom``,
  ``medmask.synthetic``, small numpy arrays) do so instead.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import medmask
from doc_blocks import (
    SHELL,
    Block,
    DocBlockError,
    data_links,
    parse_blocks,
    run_python,
    shell_commands,
)
from servers import RecordingMotoServer

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BUCKET = "bucket"
T = TypeVar("T")
# Floors, so that a fence typo or a parser change cannot silently drop the blocks.
MIN_PYTHON_BLOCKS = 10
MIN_SHELL_COMMANDS = 5


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else str(page)


# Filesystems the docs tests made, dropped from fsspec's cache but kept until the session ends:
# an s3fs instance used from zarr's event loop cannot be closed from here, and collecting one
# with its aiohttp session open prints "Unclosed client session".
_RETIRED: list[Any] = []


def _clear_fsspec_instances() -> None:
    """Empty fsspec's instance caches, so that no later test reuses a filesystem that points
    at this test's endpoint."""
    import fsspec

    for cls in [fsspec.AbstractFileSystem, *fsspec.registry.values()]:
        _RETIRED.extend(cls._cache.values())
        cls.clear_instance_cache()


def _allow_public_reads(server: RecordingMotoServer, bucket: str) -> None:
    """A bucket policy that lets anyone GET the bucket's objects, as a public data set's
    bucket does (so ``anon=true`` reads work, as they would there)."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    request = urllib.request.Request(
        f"{server.endpoint_url}/{bucket}?policy",
        data=json.dumps(policy).encode(),
        headers={"Content-Type": "application/json"},  # not a form: the server keeps the body
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture
def docs_s3(s3_server: RecordingMotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The local S3 server as the default endpoint, with an empty bucket ``bucket``."""
    s3_server.reset()
    s3_server.create_bucket(BUCKET)
    _allow_public_reads(s3_server, BUCKET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    _clear_fsspec_instances()
    try:
        yield s3_server.endpoint_url
    finally:
        _clear_fsspec_instances()
        s3_server.reset()


def _link_shared_data(page: Path, text: str, workdir: Path, request: pytest.FixtureRequest) -> None:
    paths = data_links(text)
    if not paths:
        return
    shared: Path = request.getfixturevalue("shared_data")
    for relative in paths:
        source = shared / relative
        assert source.exists(), f"{_name(page)}: shared-data directive names missing {source}"
        (workdir / source.name).symlink_to(source, target_is_directory=source.is_dir())


def _cli_env() -> dict[str, str]:
    """The environment of the CLI runs: this process's, with the medmask under test first."""
    package_root = str(Path(medmask.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}


def _checked(page: Path, parse: Callable[[Any], T], argument: Any) -> T:
    """``parse(argument)``, a :class:`DocBlockError` failing the test with the page named."""
    try:
        return parse(argument)
    except DocBlockError as exc:
        problem = str(exc)
    pytest.fail(f"{_name(page)}: {problem}", pytrace=False)


def _run_shell(block: Block, page: Path, workdir: Path) -> None:
    commands = _checked(page, shell_commands, block)
    for args in commands or []:
        result = subprocess.run(
            [sys.executable, "-m", "medmask", *args],
            cwd=workdir,
            env=_cli_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"{_name(page)}:{block.fence_line}: `medmask {shlex.join(args)}` exited with "
                f"{result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}",
                pytrace=False,
            )


def run_page(page: Path, workdir: Path) -> tuple[int, int]:
    """Run every runnable block of ``page`` in ``workdir`` (the current directory); the
    numbers of python blocks and shell commands run."""
    blocks = _checked(page, parse_blocks, page.read_text(encoding="utf-8"))
    namespace: dict[str, Any] = {"__name__": "__main__"}
    python_run = commands_run = 0
    for number, block in enumerate(blocks, 1):
        if block.runs_python:
            failure = run_python(block, page, namespace)
            if failure is not None:
                pytest.fail(
                    f"{_name(page)}:{block.fence_line}: the ```python block at line "
                    f"{block.fence_line} (block {number} of the page) failed:\n{failure}",
                    pytrace=False,
                )
            python_run += 1
        elif block.language in SHELL:
            _run_shell(block, page, workdir)
            commands_run += len(shell_commands(block) or [])
    return python_run, commands_run


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_page_runs(
    page: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docs_s3: str,
    request: pytest.FixtureRequest,
) -> None:
    _link_shared_data(page, page.read_text(encoding="utf-8"), tmp_path, request)
    monkeypatch.chdir(tmp_path)
    run_page(page, tmp_path)


def test_pages_hold_enough_runnable_blocks() -> None:
    blocks = [block for page in PAGES for block in parse_blocks(page.read_text(encoding="utf-8"))]
    python = [block for block in blocks if block.runs_python]
    commands = [
        command
        for block in blocks
        if block.language in SHELL
        for command in shell_commands(block) or []
    ]
    assert len(python) >= MIN_PYTHON_BLOCKS, [(b.language, b.line) for b in blocks]
    assert len(commands) >= MIN_SHELL_COMMANDS, commands
    assert {"README.md", "docs/interop.md", "docs/zarr.md"} <= {_name(p) for p in PAGES}


# --- the collector's own rules ------------------------------------------------------------------

PAGE = """# A page

```python
x = 1
```

- a list item:

  ```console
  $ medmask info case.msk   # one GET
  format: msk
  ```

~~~text
not run
~~~

```
unlabelled
```
"""


def test_blocks_carry_language_line_and_dedented_code() -> None:
    blocks = parse_blocks(PAGE)
    assert [(b.language, b.line, b.fence_line) for b in blocks] == [
        ("python", 4, 3),
        ("console", 10, 9),
        ("text", 15, 14),
        ("", 19, 18),
    ]
    assert blocks[0].code == "x = 1\n"
    assert blocks[1].code.startswith("$ medmask info")
    assert [b.runs_python for b in blocks] == [True, False, False, False]


def test_unclosed_fence_is_refused() -> None:
    with pytest.raises(DocBlockError, match="line 1: fence ```python is never closed"):
        parse_blocks("```python\nx = 1\n")


@pytest.mark.parametrize("language", ["py", "Python3", "pycon"])
def test_python_lookalike_fence_is_refused(language: str) -> None:
    with pytest.raises(DocBlockError, match=f"line 2: fence ```{language.lower()} does not run"):
        parse_blocks(f"text\n```{language}\nx = 1\n```\n")


@pytest.mark.parametrize(
    ("language", "code", "expected"),
    [
        ("console", "$ medmask info a.msk  # comment\noutput line\n", [["info", "a.msk"]]),
        (
            "bash",
            'medmask verify a.mska && medmask stats "s3://b/*.mska" \\\n  --csv v.csv\n',
            [["verify", "a.mska"], ["stats", "s3://b/*.mska", "--csv", "v.csv"]],
        ),
        ("console", "pip install medmask\n", None),
        ("console", "python -m venv .venv && .venv/bin/medmask demo\n", None),
        ("text", "medmask info a.msk\n", None),
    ],
    ids=["prompted", "and-continuation", "other-command", "medmask-later", "text"],
)
def test_shell_blocks_run_medmask_commands(
    language: str, code: str, expected: list[list[str]] | None
) -> None:
    block = Block(language, 2, code)
    assert (shell_commands(block) if language in SHELL else None) == expected


@pytest.mark.parametrize(
    ("language", "code", "problem"),
    [
        ("bash", "pip install medmask\n", "holds no medmask command"),
        ("sh", "nox -s lint\nmedmask info a.msk\n", "does not start with a medmask command"),
        ("console", "medmask info a.msk\npip install x\n", "mixes medmask commands"),
        ("bash", "medmask info a.msk | head\n", "needs a shell ('|')"),
        ("bash", "medmask info $FILE\n", "needs a shell ('$FILE')"),
    ],
    ids=["bash-not-medmask", "sh-starts-otherwise", "mixed", "pipe", "variable"],
)
def test_shell_blocks_that_cannot_run_are_refused(language: str, code: str, problem: str) -> None:
    with pytest.raises(DocBlockError, match=re.escape(problem)):
        shell_commands(Block(language, 2, code))


def test_failure_names_page_line_and_traceback(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n```python\nvalue = 1\n```\n\n```python\nvalue / 0\n```\n")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_page(page, tmp_path)
    message = str(failed.value)
    assert message.startswith(f"{page}:7: the ```python block at line 7 (block 2 of the page)")
    assert f'File "{page}", line 8, in <module>' in message
    assert "    value / 0\n" in message  # the markdown line itself
    assert message.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "test_docs.py" not in message
    assert "doc_blocks.py" not in message


def test_blocks_of_a_page_share_one_namespace(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nvalue = 41\n```\n\n```python\nassert value + 1 == 42\n```\n")
    assert run_page(page, tmp_path) == (2, 0)
    with_typo = tmp_path / "typo.md"
    with_typo.write_text("```python\nvalue = 41\n```\n\n```python\nassert value == 42\n```\n")
    with pytest.raises(pytest.fail.Exception, match="AssertionError"):
        run_page(with_typo, tmp_path)


def test_failing_command_names_page_line_and_output(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```bash\nmedmask info missing.msk\n```\n")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_page(page, tmp_path)
    message = str(failed.value)
    assert message.startswith(f"{page}:1: `medmask info missing.msk` exited with 1")
    assert "medmask info: error: " in message
    assert "missing.msk" in message


def test_shared_data_directive_lists_paths() -> None:
    text = "x\n<!-- docs-test: shared-data totalseg/ct_dicom  totalseg/a.nii.gz -->\ny\n"
    assert data_links(text) == ["totalseg/ct_dicom", "totalseg/a.nii.gz"]
    assert data_links("<!-- another comment -->") == []


def test_deprecated_name_in_a_page_fails_it(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nimport medmask\n\n"
        'medmask.pack_folder("case/", "case.mska", labels={"liver": 1})\n```\n'
    )
    with pytest.raises(pytest.fail.Exception) as failed:
        run_page(page, tmp_path)
    message = str(failed.value)
    assert f'File "{page}", line 4, in <module>' in message
    assert "DeprecationWarning: pack_folder(labels=...) is deprecated: use mapping=..." in message
