"""What a handle says about damaged header slots: why it is read-only, what verify() reports.

The rules are ``docs/format.md`` section 5; the reading side (which generation opens, what a
damaged slot's directory holds) is :mod:`medmask.reader`.
"""

from __future__ import annotations

from ..format.mska import ArchiveDirectory
from ..io import ByteSource
from ..reader import Directory, RecoveryReport, newer_directories

__all__ = ["read_only_reason", "slot_problems"]


def read_only_reason(
    recovered: RecoveryReport | None, opened: Directory | None, generation: int
) -> str:
    """Why an archive opened for appending at ``generation`` must not be committed to (empty
    when it may): a commit would lose a damaged newer generation, or make a restored one
    current, unless the caller allowed the rollback."""
    damaged = [d for d in opened.damaged if d.bit is not None] if opened else []
    if recovered is not None and recovered.restored:
        return (
            f"generation {recovered.generation} was restored from a damaged header "
            "slot (readers without recover=True do not open it); a commit on it makes "
            "it current (pass allow_rollback=True to do so)"
        )
    if recovered is not None:
        return (
            f"opened at generation {recovered.generation} because generation "
            f"{recovered.damaged_generation} is damaged; appending would discard it "
            "(pass allow_rollback=True to do so)"
        )
    if damaged:  # an append would overwrite that slot, or a rewrite drop its directory
        return (
            f"{damaged[0].describe()}, newer than generation {generation} opened, and "
            "a commit would lose it; open with recover=True to restore it, with "
            "recover=True, allow_rollback=True to commit on top (of it, or of generation "
            f"{generation} if it cannot be restored)"
        )
    return ""


def slot_problems(
    name: str,
    source: ByteSource,
    opened: Directory,
    current: ArchiveDirectory,
    generation: int,
) -> list[str]:
    """Each damaged header slot of ``opened`` naming a newer generation than ``generation``
    (the one in use, whose directory is ``current``): what its directory holds and what to do.
    """
    problems = []
    for found in newer_directories(source, opened):
        slot = found.damaged
        text = f"{name}: {slot.describe()}, newer than generation {generation} in use"
        if found.archive is None:
            if slot.bit is None:
                continue  # a torn slot whose fields lead nowhere (slot rule 1)
            problems.append(
                f"{text}; the directory it points to does not verify ({found.problem}), so "
                f"generation {slot.header.generation} cannot be restored. Readers use "
                f"generation {generation}; the next commit overwrites that slot."
            )
            continue
        names = [m.name for m in found.archive.members]
        hidden = [n for n in names if current.member(n) is None]
        text += f"; it points to a complete directory of {len(names)} member(s) whose "
        text += f"chunks verify (not visible now: {hidden[:10]})" if hidden else "chunks verify"
        if slot.bit is not None:
            fix = (
                f"MaskArchive(path, recover=True) restores generation "
                f"{slot.header.generation} (read-only); with mode='a' and "
                "allow_rollback=True a commit on top makes it current"
            )
        else:
            fix = (
                "its generation cannot be confirmed, so recover=True does not restore it; "
                "copy the file before the next commit, which overwrites that slot"
            )
        problems.append(f"{text}. Readers use generation {generation}. {fix}.")
    return problems
