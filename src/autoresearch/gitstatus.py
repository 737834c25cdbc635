"""What git prints, read: `status --porcelain` (v1 and v2) and `diff-tree --raw`, as the changes
of a trial; and the files backend's packed-refs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Change:
    """One path changed by a trial, from `git diff-tree --raw`."""

    status: str  # A, M, D, T
    path: str
    old_mode: str
    new_mode: str
    new_blob: str


def parse_status_v2(out: str, big: set[str]) -> tuple[list[Change], list[str], list[str]]:
    """`git status --porcelain=v2 -z --no-renames -uall --ignored` after `add -A`: the staged
    changes against HEAD, the big files left out of `add` that differ from HEAD (to be stored as
    stand-ins), and what is ignored."""
    changes: list[Change] = []
    left_out: list[str] = []
    ignored: list[str] = []
    for entry in out.split("\0"):
        if entry.startswith("1 "):
            fields = entry.split(" ", 8)
            if len(fields) < 9:
                continue
            xy, mode_head, mode_index, blob_index, path = fields[1], fields[3], fields[4], fields[7], fields[8]
            if xy[0] != ".":
                changes.append(Change(status=xy[0], path=path, old_mode=mode_head, new_mode=mode_index,
                                      new_blob=blob_index))
            if xy[1] != "." and path in big:
                left_out.append(path)
        elif entry.startswith("? "):
            if entry[2:] in big:
                left_out.append(entry[2:])
        elif entry.startswith("! "):
            ignored.append(entry[2:])
        elif entry.startswith("u "):  # an unmerged entry after `add -A`: let diff-tree say it
            changes.append(Change(status="U", path=entry.split(" ", 10)[-1], old_mode="", new_mode="",
                                  new_blob=""))
    return changes, left_out, ignored


def status_entries(out: str) -> list[tuple[str, str]]:
    """(XY code, path) of each entry of `git status --porcelain -z` (renames off: one path each)."""
    return [(entry[:2], entry[3:]) for entry in out.split("\0") if len(entry) > 3]


def parse_raw(raw: str) -> list[Change]:
    """Parse `git diff-tree -r -z --raw` output."""
    parts = raw.split("\0")
    changes: list[Change] = []
    i = 0
    while i < len(parts) - 1:
        meta = parts[i]
        if not meta.startswith(":"):
            i += 1
            continue
        old_mode, new_mode, _old_blob, new_blob, status = meta[1:].split(" ")
        changes.append(Change(status=status[0], path=parts[i + 1], old_mode=old_mode,
                              new_mode=new_mode, new_blob=new_blob))
        i += 2
    return changes


def packed_refs(text: str) -> dict[str, str]:
    """packed-refs: ref name -> object id (its header and peeled `^` lines left out)."""
    return _once((name, oid) for oid, _, name in (line.partition(" ") for line in text.splitlines()
                                                 if line[:1] not in ("#", "^", "")))


def listed_refs(text: str) -> dict[str, str]:
    """`for-each-ref` lines `name sha` -> {name: sha}."""
    return _once((name, sha) for name, _, sha in (line.partition(" ") for line in text.splitlines() if line))


def _once(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """{name: object id}; '' for a name listed twice with two values (git never writes that: a
    forged packed-refs line, which git's binary search may resolve either way)."""
    refs: dict[str, str] = {}
    for name, sha in pairs:
        refs[name] = "" if refs.get(name, sha) != sha else sha
    return refs
