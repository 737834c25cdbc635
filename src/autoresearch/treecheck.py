"""Whether a trial's commit holds what its object names say, trees and the commit included.

Git does not rewrite an object it already has: `add`, `write-tree` and `commit-tree` keep a file
already in .git/objects under the name the new content hashes to. So an agent that computes
those names first (its own `git write-tree` of the worktree, a commit of the next seconds) and
plants a file under each with other content has the trial's commit name the code that ran while
every git command reads other code: the diff, `show`, the audit, the branch of a kept trial and
the worktree of the next trial, reset to it. Nor does git check when it reads (a root tree is
checked where it is parsed, a subtree or a blob never; a mismatch then fails the command, and a
loop with it). So the objects a commit adds to its parent's are read here and hashed: the commit,
every tree and blob it does not share with its parent. A lying loose object is removed (the same
content, added again, is written anew).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable

from autoresearch.gitrepo import SAFE, Git
from autoresearch.objects import BlobReader, _loose, _names, read_objects
from autoresearch.programs import GIT


def _listing(git: Git, tree: str) -> dict[str, tuple[str, str]] | None:
    """Object name -> (type, path) of every tree and blob under `tree` (None: git cannot list it)."""
    out = subprocess.run([GIT, *SAFE, "ls-tree", "-r", "-t", "-z", "--full-tree", tree], cwd=git.root,
                         env=git._env, capture_output=True, start_new_session=True)
    if out.returncode != 0:
        return None
    found: dict[str, tuple[str, str]] = {}
    for item in out.stdout.split(b"\0"):
        meta, _, path = item.partition(b"\t")
        fields = meta.split()
        if len(fields) == 3 and fields[1] in (b"tree", b"blob"):
            found[fields[2].decode()] = (fields[1].decode(), path.decode("utf-8", "surrogateescape"))
    return found


def _added(git: Git, parent: str, tree: str) -> dict[str, tuple[str, str]] | None:
    """Object name -> (type, path) of the trees and blobs of `tree` where `parent`'s tree has
    other ones (`git diff-tree`: a subtree of the same name is not gone into, so a trial's check
    costs what it changed, not the size of the repository). None: git cannot compare them."""
    out = subprocess.run([GIT, *SAFE, "diff-tree", "-r", "-t", "-z", "--no-renames", f"{parent}^{{tree}}", tree],
                         cwd=git.root, env=git._env, capture_output=True, start_new_session=True)
    if out.returncode != 0:
        return None
    found: dict[str, tuple[str, str]] = {}
    items = out.stdout.split(b"\0")
    for meta, path in zip(items[::2], items[1::2], strict=False):  # `:old-mode new-mode old new X`, path
        fields = meta.split()
        if len(fields) == 5 and fields[1] != b"160000" and fields[3].strip(b"0"):  # (not a submodule, not gone)
            found[fields[3].decode()] = ("tree" if fields[1] == b"040000" else "blob",
                                         path.decode("utf-8", "surrogateescape"))
    return found


def _true(name: str, kind: str, content: bytes) -> bool:
    return _names(name, b"%s %d\0" % (kind.encode(), len(content)) + content)


def untrue(git: Git, commit: str, parent: str | None, remove: bool = True) -> list[str]:
    """What in `commit` does not hold what its object name says (the commit itself, its root
    tree, or the paths of trees and blobs it does not share with `parent`; with no parent, of
    every tree); each such loose object is removed (with `remove`). [] when all is true."""
    with contextlib.closing(BlobReader(git)) as reader:  # (one `cat-file` for all: this runs twice a trial)
        return _untrue(git, reader, commit, parent,
                       (lambda name: _loose(git.common_dir, name).unlink(missing_ok=True)) if remove else (lambda name: None))


def _untrue(git: Git, reader: BlobReader, commit: str, parent: str | None, drop: Callable[[str], None]) -> list[str]:
    head = reader.object(commit)
    if head is None or head[0] != "commit" or not _true(commit, "commit", head[1]):
        drop(commit)
        return ["the commit"]
    tree = head[1].split(b"\n", 1)[0].removeprefix(b"tree ").decode()
    root = reader.object(tree)
    if root is None or not _true(tree, "tree", root[1]):
        drop(tree)
        return ["the root tree"]
    listed = _added(git, parent, tree) if parent else _listing(git, tree)
    if listed is None:
        return ["the tree"]
    # (with no parent, the code a loop starts from: its trees only, a big file in git is not read
    # for this; its task files are checked by their content as the best code's are)
    bad = []
    for name, (kind, path) in listed.items():
        if parent or kind == "tree":
            got = reader.object(name)
            if got is not None and not (got[0] == kind and _true(name, kind, got[1])):
                bad.append(path or "/")
                drop(name)
    return sorted(bad)


def structure(git: Git, commit: str) -> list[tuple[str, str, bytes]]:
    """The commit's own object and its trees, as ObjectWatch keeps them: (what it is, name, the
    raw object). Read after `untrue` found them true."""
    head = read_objects(git, [commit]).get(commit)
    if head is None:
        return []
    tree = head[1].split(b"\n", 1)[0].removeprefix(b"tree ").decode()
    trees = {tree: "/", **{name: path for name, (kind, path) in (_listing(git, tree) or {}).items() if kind == "tree"}}
    read = {commit: head, **read_objects(git, list(trees))}
    return [(f"commit {commit[:7]}" if name == commit else f"tree {trees[name]}", name,
             b"%s %d\0" % (kind.encode(), len(content)) + content) for name, (kind, content) in read.items()]
