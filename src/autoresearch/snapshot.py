"""A trial's commit: what the agent left in its worktree, committed as a child of its parent.

Nothing in the worktree is trusted: a .gitattributes the parent does not hold (it would store
other bytes than the ones that run), a FIFO or a device, a file too big for .git, a repository
made inside it and an index the agent wrote are each refused, left out or rebuilt before git
reads them. Afterwards the worktree is exactly the commit.
"""

from __future__ import annotations

import os
import stat

from autoresearch.agents.secrets import key_values, keys_in
from autoresearch.filetree import SPECIAL, ctimes, read_regular, walk
from autoresearch.gitrepo import (
    MAX_FILE_BYTES,
    REFUSED_PATHS,
    Git,
    GitError,
    Refused,
    Workspace,
    publish,
)
from autoresearch.gitstatus import Change, parse_raw, parse_status_v2
from autoresearch.treecheck import untrue


def take(git: Git, ws: Workspace, parent: str, message: str,
         max_file_bytes: int = MAX_FILE_BYTES) -> tuple[str, list[Change], str]:
    """Commit the worktree's content as a child of `parent` (no hooks, HEAD untouched) and
    return the commit, what changed against the parent, and the tree.

    A file over `max_file_bytes` is committed as a short stand-in (the guard rejects the trial
    from the size on disk), so an agent cannot fill .git. Afterwards the worktree is exactly the
    commit: files git was told to ignore (a self-ignoring .gitignore, an entry in info/exclude)
    are removed, so the experiment runs only what the commit holds.

    Four git processes: `add`, one `status` (what changed against HEAD, what is ignored, which
    big files were left out), `write-tree`, `commit-tree`. The status is taken as the change
    against `parent` only when the worktree's HEAD is `parent` and its file was not rewritten
    meanwhile; otherwise (an agent moved HEAD) `diff-tree` says it."""
    git.ensure_worktree(ws, parent)
    env = git.wt_env(ws)
    entries = _entries(git, ws, parent)
    stamps = ctimes(ws.path, entries)  # (what the agent wrote: read once for the keys and the index)
    _no_keys(git, ws, parent, entries, stamps, max_file_bytes)
    big, skip, nested = _left_out(git, ws, entries, max_file_bytes)
    head_before = _head_state(ws)
    _stage(git, ws, env, parent, entries, stamps, skip)
    out = _status(git, ws, env)
    changes, left_out, ignored = parse_status_v2(out or "", set(big))
    _stand_ins(git, ws, env, [(path, big[path]) for path in left_out], max_file_bytes)
    tree = git.run("write-tree", env=env, cwd=ws.path)
    commit = _commit_tree(git, ws, env, tree, parent, message)
    if ignored or out is None:  # the tree was reset and cleaned before the agent: only it made these
        git.run("clean", "-q", "-ffdX", env=env, cwd=ws.path)
    git.remember(ws, commit, None if ignored or out is None else entries)
    git.ignored[ws.path] = ignored  # (removed: the agent's files git was told to ignore)
    exact = out is not None and not left_out and all(c.status != "U" for c in changes)
    if not exact or head_before[0] != parent or _head_state(ws) != head_before:
        changes = parse_raw(git.run("diff-tree", "-r", "-z", "--raw", "--no-renames", parent, commit))
    changes += [Change(status="A", path=p, old_mode="000000", new_mode="160000", new_blob="") for p in nested]
    git.index_untouched(ws, left=True)
    publish(ws, commit)
    return commit, changes, tree


def _entries(git: Git, ws: Workspace, parent: str) -> dict[str, tuple[bool, int]]:
    """What the worktree holds (path -> (is a link, size)), refused when git cannot commit it
    as it would run: a .gitattributes the parent does not hold, a FIFO, a socket, a device."""
    entries = walk(ws.path)
    _same_attributes(git, parent, ws, entries)
    special = sorted(rel for rel, (_, size) in entries.items() if size == SPECIAL)
    if special:
        raise Refused(f"{special[0]}: not a file, a folder or a link (a FIFO, a socket, a device): git cannot commit it")
    return entries


def _stage(git: Git, ws: Workspace, env: dict[str, str], parent: str, entries: dict[str, tuple[bool, int]],
           stamps: dict[str, tuple[int, int]], skip: list[str]) -> None:
    """`git add` every change but the paths in `skip`, into an index the agent did not touch."""
    if not git.index_untouched(ws, entries=entries, stamps=stamps):  # the agent wrote it (a flag like assume-unchanged, a stat
        # forged to match): `add` would keep old content for a file that changed; rebuilt
        # from the parent with no stat, every file is read again
        git.run("read-tree", parent, env=env, cwd=ws.path)
    try:
        git.run("add", "-A", "--", ".", *[f":(exclude,literal){p}" for p in skip], env=env, cwd=ws.path)
    except GitError as e:
        if any(m in str(e) for m in REFUSED_PATHS):  # the change's own doing, not the disk's
            raise Refused(f"git could not commit the change, so it was not run: {str(e)[:300]}") from None
        raise


def _status(git: Git, ws: Workspace, env: dict[str, str]) -> str | None:
    """`git status` of the staged worktree (changed, ignored, left out), or None if it failed."""
    try:
        return git.run("status", "--porcelain=v2", "-z", "-uall", "--ignored=matching", "--no-renames",
                       env=env, cwd=ws.path, strip=False)
    except GitError:
        return None


def _stand_ins(git: Git, ws: Workspace, env: dict[str, str], left_out: list[tuple[str, int]],
               max_file_bytes: int) -> None:
    """Stage a short note in place of each file too big to store (path, its size)."""
    for path, size in left_out:
        note = f"autoresearch: {path} was {size} bytes, over the {max_file_bytes}-byte limit; not stored\n"
        blob = git.run("hash-object", "-w", "--stdin", input=note)
        git.run("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env, cwd=ws.path)


def _commit_tree(git: Git, ws: Workspace, env: dict[str, str], tree: str, parent: str, message: str) -> str:
    """The commit of `tree` on `parent`, refused if the object store lies about it."""
    commit = git.run("commit-tree", tree, "-p", parent, "-F", "-", env=env, cwd=ws.path, input=message)
    if lies := untrue(git, commit, parent):  # (objects planted under the names git was to write)
        raise Refused(f"the git object store was altered: {', '.join(lies[:5])} of the trial's commit held "
                      "other content than its object name says (planted in .git/objects before git wrote it; "
                      "removed), so the record would not show the code that runs")
    return commit


def _no_keys(git: Git, ws: Workspace, parent: str, entries: dict[str, tuple[bool, int]],
             stamps: dict[str, tuple[int, int]], limit: int) -> None:
    """Refuse, before git stores anything, a file written since the last reset that holds more
    API keys from the environment than the parent's (a key an agent copied from its own
    environment into the code): the trial's commit, kept under its ref, would hold it."""
    keys = key_values()
    if not keys:
        return
    for rel in git.touched(ws, stamps):
        if entries[rel][1] > limit:  # (stored as a stand-in, not as it is)
            continue
        try:
            text = read_regular(ws.path / rel, limit)[0].decode("utf-8", errors="replace")
        except OSError:
            continue
        if keys_in(text, keys) > keys_in((git.show_bytes(parent, rel) or b"").decode("utf-8", errors="replace"), keys):
            raise Refused(f"{rel} holds an API key from the environment; a key must never be committed (the "
                          "code should read it from the environment), so the change was not")


def _left_out(git: Git, ws: Workspace, entries: dict[str, tuple[bool, int]],
              limit: int) -> tuple[dict[str, int], list[str], list[str]]:
    """What `add` must leave out: the files over `limit` bytes (stored as stand-ins) and the
    repositories made inside the worktree (`add` fails on one with no commit and records another
    as a gitlink; left out, each is reported as a submodule, which the guard rejects). Returns
    the big files with their sizes, the pathspecs to exclude, and the new repositories."""
    big = {rel: size for rel, (is_dir, size) in entries.items() if not is_dir and size > limit}
    nested = sorted({rel[:-5] for rel in entries if rel.endswith("/.git")})
    skip = [*big, *nested]
    if skip:  # `add` refuses a pathspec, even an excluding one, that names an ignored file
        said = git.run("check-ignore", "-z", "--stdin", env=git.wt_env(ws), cwd=ws.path,
                       input="\0".join(skip) + "\0", check=False, strip=False).split("\0")
        skip = [p for p in skip if p not in said]
        nested = [p for p in nested if p in skip and not _is_gitlink(git, ws, p)]
    return big, skip, nested


def _is_gitlink(git: Git, ws: Workspace, path: str) -> bool:
    """Whether `path` is a submodule the commit already holds (checked out by the agent)."""
    out = git.run("ls-files", "-s", "--", path, env=git.wt_env(ws), cwd=ws.path, check=False)
    return out.startswith("160000 ")


def _same_attributes(git: Git, parent: str, ws: Workspace, entries: dict[str, tuple[bool, int]]) -> None:
    """Refuse a .gitattributes the parent does not hold, ignored or not: `add` reads it, and an
    `ident`, `eol` or `working-tree-encoding` in it stores other bytes than the ones that run
    (the commit and the diff would not be the code that was measured)."""
    for rel in entries:
        if rel.rsplit("/", 1)[-1] != ".gitattributes":
            continue
        path = ws.path / rel
        held = git.show_bytes(parent, rel)
        try:  # (a regular file only: a FIFO would hold the read, and git's own, forever)
            same = (held is not None and stat.S_ISREG(path.lstat().st_mode)  # (line ends as checked out)
                    and path.read_bytes().replace(b"\r\n", b"\n") == held.replace(b"\r\n", b"\n"))
        except OSError:
            same = False
        if not same:
            raise Refused(f"{rel}: a .gitattributes the best code does not hold, which changes what git "
                          "stores (the commit would not be the code that runs)")


def _head_state(ws: Workspace) -> tuple[str, int, int]:
    """The worktree's HEAD (a commit when detached) and its file's identity: git rewrites HEAD by
    renaming a new file over it, so an unchanged inode and ctime mean an untouched HEAD."""
    head = ws.gitdir / "HEAD"
    try:
        st = os.stat(head)
        return head.read_text(errors="replace").strip(), st.st_ino, st.st_ctime_ns
    except OSError:
        return "", 0, 0
