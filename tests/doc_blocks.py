"""Fenced code blocks of a markdown page, and how ``tests/test_docs.py`` runs them.

Parsing only (no pytest, no servers): :func:`parse_blocks` finds the fences,
:func:`shell_commands` turns a shell block into ``medmask`` argument lists, :func:`run_python`
executes a python block with tracebacks that point into the markdown file, and
:func:`data_links` reads a page's shared-data directive. The rules are in test_docs.py.
"""

from __future__ import annotations

import re
import shlex
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PYTHON = frozenset({"python"})
# fences that look like python but would not run: refused, so that none is silently skipped
PYTHON_LOOKALIKES = frozenset({"py", "python3", "pycon", "ipython", "pytb"})
SHELL = frozenset({"console", "sh", "bash", "shell"})
# a shell block is *meant* to run (not merely shown) when its fence says sh/bash/shell
STRICT_SHELL = frozenset({"sh", "bash", "shell"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DATA = re.compile(r"<!--\s*docs-test:\s*shared-data\s+(?P<paths>[^>]*?)\s*-->")
_SHELL_OPERATORS = frozenset({"|", "||", ";", ">", ">>", "<", "&", "(", ")"})


class DocBlockError(Exception):
    """A block that the rules do not allow (not a failure of the code it shows)."""


@dataclass(frozen=True)
class Block:
    """One fenced block: ``line`` is the 1-based line of its first code line."""

    language: str
    line: int
    code: str

    @property
    def fence_line(self) -> int:
        """The 1-based line of the opening fence."""
        return self.line - 1

    @property
    def runs_python(self) -> bool:
        return self.language in PYTHON


def parse_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text``, in order (indented fences of list items included;
    their indentation is removed). An unclosed fence, or one such as ```` ```py ```` that looks
    like python but would not run, raises :class:`DocBlockError`."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = (opening["info"].strip().split() or [""])[0].lower()
        if language in PYTHON_LOOKALIKES:
            raise DocBlockError(
                f"line {i + 1}: fence ```{language} does not run: write ```python (run) or "
                "```text (shown)"
            )
        start = i + 1
        end = start
        while end < len(lines) and not _closes(lines[end], fence):
            end += 1
        if end == len(lines):
            raise DocBlockError(f"line {i + 1}: fence {fence}{language} is never closed")
        body = [_dedent(line, len(indent)) for line in lines[start:end]]
        blocks.append(Block(language, start + 1, "\n".join(body) + "\n"))
        i = end + 1
    return blocks


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}


def _dedent(line: str, width: int) -> str:
    return line[width:] if line[:width].strip() == "" else line.lstrip()


def shell_commands(block: Block) -> list[list[str]] | None:
    """The ``medmask`` commands of a shell block as argument lists (without ``medmask``), or
    None when the block is shown, not run (its first command is not ``medmask``).

    Commands are the lines starting with ``$ `` when the block has any (the other lines are
    output), else every line; ``#`` comments, ``\\`` continuations and ``&&`` are understood;
    anything else a shell would interpret is a :class:`DocBlockError`.
    """
    lines = _command_lines(block.code)
    commands: list[list[str]] = []
    for line in lines:
        for words in _split_and(line, block):
            commands.append(words)
    medmask = [words[0] == "medmask" for words in commands]
    if not any(medmask):
        if block.language in STRICT_SHELL and commands:
            raise DocBlockError(
                f"a ```{block.language} block at line {block.line} holds no medmask command: "
                "fence commands that are shown, not run, as ```console or ```text"
            )
        return None
    if not medmask[0]:
        if block.language in STRICT_SHELL:
            raise DocBlockError(
                f"the ```{block.language} block at line {block.line} does not start with a "
                "medmask command: split it, or fence it as ```console or ```text"
            )
        return None
    if not all(medmask):
        raise DocBlockError(
            f"the block at line {block.line} mixes medmask commands with others "
            f"({' '.join(commands[medmask.index(False)])!r}): split it, or fence it as ```text"
        )
    return [words[1:] for words in commands]


def _command_lines(code: str) -> list[str]:
    raw = code.splitlines()
    prompted = any(line.startswith("$ ") for line in raw)
    joined: list[str] = []
    pending = ""
    for line in raw:
        if pending:
            line = pending + line
        elif prompted:
            if not line.startswith("$ "):
                continue  # output shown after a command
            line = line[2:]
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            joined.append(line.strip())
    return joined


def _split_and(line: str, block: Block) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise DocBlockError(f"block at line {block.line}: {line!r}: {exc}") from exc
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token == "&&":
            commands.append([])
        elif token in _SHELL_OPERATORS or token.startswith("$"):
            raise DocBlockError(
                f"block at line {block.line}: {line!r} needs a shell ({token!r}); "
                "fence it as ```console (shown, not run) or ```text"
            )
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def run_python(block: Block, page: Path, namespace: dict[str, Any]) -> str | None:
    """Execute ``block`` of ``page`` in ``namespace``; None, or the traceback of its failure
    with the frames from the markdown file on (which shows the markdown lines). A
    ``DeprecationWarning`` attributed to the page's own lines is a failure."""
    # Leading newlines put every code line at its line number in the markdown file.
    source = "\n" * (block.line - 1) + block.code
    try:
        with warnings.catch_warnings():
            # a deprecated name used by the page itself (its warning points at the page's line)
            warnings.filterwarnings(
                "error", category=DeprecationWarning, module=namespace.get("__name__", "")
            )
            code = compile(source, str(page), "exec")
            exec(code, namespace)
    except Exception as exc:
        report = traceback.TracebackException.from_exception(exc)
        frames = list(report.stack)
        first = next((i for i, f in enumerate(frames) if f.filename == str(page)), len(frames))
        report.stack = traceback.StackSummary.from_list(frames[first:])
        return "".join(report.format())
    return None


def data_links(text: str) -> list[str]:
    """Paths (relative to the shared data folder) named by ``<!-- docs-test: shared-data
    PATH ... -->`` directives of a page."""
    return [path for match in _DATA.finditer(text) for path in match["paths"].split()]
