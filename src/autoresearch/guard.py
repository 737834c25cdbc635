"""Scope and integrity checks on a trial.

A trial may change only editable paths; protected files (the task file and the program
always among them) must hash the same before and after the experiment; the repository's own
git configuration and hooks must not change. Each check returns the reason a trial is rejected,
or None.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from autoresearch.filetree import (
    BIG,
    NOT_REGULAR,
    NotRegular,
    clear_for_folder,
    hash_regular,
    read_regular,
    remove_endless,
    remove_path,
    slurp,
)
from autoresearch.gitlocks import StaleLocks, lingers
from autoresearch.gitrepo import MAX_FILE_BYTES, SAFE
from autoresearch.gitstatus import Change, packed_refs
from autoresearch.programs import GIT
from autoresearch.shadow import shadowing
from autoresearch.task import Task

__all__ = ["MAX_FILE_BYTES", "GitGuard", "changed_files", "check_changes", "hash_files", "set_readonly"]
SYMLINK, SUBMODULE = "120000", "160000"


def check_changes(task: Task, changes: list[Change], workdir: Path,
                  max_file_bytes: int = MAX_FILE_BYTES) -> str | None:
    """Why this set of changes is out of bounds, or None when it may be run."""
    if not changes:
        return "empty change: the agent changed nothing"
    for ch in changes:
        if task.is_protected(ch.path):
            return f"changed protected file {ch.path}"
        if not task.is_editable(ch.path):
            verb = {"A": "created", "D": "deleted"}.get(ch.status, "changed")
            return f"{verb} {ch.path}, outside the editable scope ({', '.join(task.editable)})"
        if ch.status == "D" and ch.path in task.editable:
            return f"deleted {ch.path}, a file the task names as editable"
        if ch.new_mode == SYMLINK:
            return f"{ch.path} became a symbolic link"
        if ch.new_mode == SUBMODULE:
            return f"{ch.path} became a submodule"
        if ch.status != "D":
            try:
                size = os.lstat(workdir / ch.path).st_size
            except OSError:
                size = 0
            if size > max_file_bytes:
                return f"{ch.path} is {size / 2**20:.1f} MiB (limit {max_file_bytes / 2**20:.0f} MiB)"
    return shadowing(task, changes, workdir)


def ignored_editable(task: Task, ignored: list[str]) -> str:
    """A note naming the editable files git was told to ignore (.gitignore, info/exclude), which
    the commit leaves out and the experiment will not find ('' if none; caches are not named)."""
    left = [p for p in ignored if task.is_editable(p) and "__pycache__/" not in p
            and not p.endswith((".pyc", ".pyo", "/"))]
    return (f"left out of the commit, and so of the run: {', '.join(left[:3])}{' ...' if len(left) > 3 else ''} "
            "(editable, but ignored by .gitignore or info/exclude)") if left else ""


def hash_files(root: Path, paths: list[str]) -> dict[str, str]:
    """sha256 of each path under root ('missing', 'symlink' or 'not a regular file' where it is
    not a plain file: a FIFO put in a protected file's place is not waited on)."""
    out: dict[str, str] = {}
    for rel in paths:
        p = root / rel
        if p.is_symlink():
            out[rel] = "symlink"
            continue
        try:
            out[rel] = hash_regular(p)
        except NotRegular:
            out[rel] = "not a regular file"
        except OSError:
            out[rel] = "missing"
    return out


def changed_files(expected: dict[str, str], root: Path) -> list[str]:
    """The protected files whose content differs from `expected`."""
    now = hash_files(root, list(expected))
    return [p for p, h in expected.items() if now.get(p) != h]


def _loose_refs(path: str, name: str, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(file, ref name) of each loose ref at or under `path` (the ref `name`), not in the folders
    `skip` names (the loops' refs, thousands of them, when all the others are read)."""
    try:
        entries = os.scandir(path)
    except NotADirectoryError:
        yield path, name
        return
    except OSError:
        return
    with entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if f"{name}/{entry.name}/" not in skip:
                    yield from _loose_refs(entry.path, f"{name}/{entry.name}", skip)
            else:
                yield entry.path, f"{name}/{entry.name}"


def set_readonly(root: Path, paths: list[str], readonly: bool) -> None:
    for rel in paths:
        p = root / rel
        try:
            if p.is_symlink() or not p.is_file():
                continue
            mode = p.stat().st_mode
            p.chmod(mode & ~0o222 if readonly else mode | 0o200)
        except OSError:
            pass


class GitGuard:
    """Fingerprints the repository's git metadata (config, hooks, info/exclude, attributes,
    grafts, alternates) and the loop's own trial refs; `check_and_restore` puts back whatever a
    trial changed and says what it was.

    The loop's refs (refs/autoresearch/<tag>/..., and the tag's branch) change only when the loop
    records a verdict, which tells the guard what it wrote (`took`). Any other change is put back:
    one deleted or moved is restored, one made (a trial ref planted ahead of its trial, which
    the loop would then have taken for its own) is removed. The user's own branches and tags
    (every ref outside the loops' namespaces, refs/replace/ and what a fetch writes: refs/heads,
    refs/tags, refs/stash, refs/notes ...) are watched but never restored nor held against a trial: the user
    may be committing or fetching while the loop runs. The user's own copies of the task's files
    (`checkout_files` under `checkout`) are watched the same way, by their stat. `user_changes`
    says what changed since the last look, and the loop notes it on the trial running then."""

    METADATA = ("config", "config.worktree", "info/attributes", "info/exclude", "info/grafts",
                "info/sparse-checkout", "objects/info/alternates", "shallow")

    def __init__(self, common_dir: Path, tag: str | None = None, checkout: Path | None = None,
                 checkout_files: list[str] | None = None, extra: tuple[Path, ...] = ()) -> None:
        self.common_dir = common_dir
        self.extra = extra  # more files the harness's git reads (its private global config)
        self.own = f"refs/autoresearch/{tag}/" if tag else None
        self.branch = f"refs/heads/autoresearch/{tag}" if tag else None
        self._notes: list[str] = []  # what was put back that is not held against a trial
        self._loose: dict[str, tuple[tuple[int, int, int], str]] = {}  # path -> (stat key, value)
        self._packed_cache: tuple[tuple[int, int, int] | None, dict[str, str]] = (None, {})
        self._saved = self._read()
        self._common_head = slurp(common_dir / "HEAD")
        self._locks = StaleLocks(common_dir)
        self._refs = self._read_refs()
        self._user = self._read_user_refs()
        self._replace = self._scan(("refs/replace/",), ())  # the user's own are left alone
        # the user's own copies of the task's files: what an agent lost in the folders writes to
        self.checkout, self.checkout_files = checkout, checkout_files or []
        self._stats = self._checkout_stats()
        self._head = self._checkout_head()

    def _files(self) -> list[Path]:
        files = [self.common_dir / name for name in self.METADATA] + list(self.extra)
        hooks = self.common_dir / "hooks"
        if hooks.is_dir():
            files += sorted(p for p in hooks.iterdir() if not p.name.endswith(".sample"))
        return files

    def _read(self) -> dict[Path, bytes | None]:
        out: dict[Path, bytes | None] = {}
        for f in self._files():
            out[f] = slurp(f)
        return out

    def _git(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env["GIT_NO_REPLACE_OBJECTS"] = "1"
        return subprocess.run([GIT, *SAFE, f"--git-dir={self.common_dir}", *args], env=env,
                              input=input, capture_output=True, text=True, errors="surrogateescape",
                              start_new_session=True)

    def _read_refs(self) -> dict[str, str]:
        """The loop's refs (its trial refs, its branch) and what they point to."""
        if not self.own or not self.branch:
            return {}
        if not (self.common_dir / "reftable").exists():  # a link or a file where the loop's folders
            self._clear_way(self.own + "-")  # of refs go (git, and this scan, would follow a link)
        refs = self._scan((self.own,), ())
        refs.update((k, v) for k, v in self._scan((self.branch,), ()).items() if k == self.branch)
        # a lock there is made only while a git writes (the loop, under the lock this check holds;
        # another loop's `git pack-refs`, for milliseconds, beside a ref that exists): one for no
        # ref, or seconds old, or a folder, was planted (it would stop the loop's next write)
        locks = [(os.path.join(top, n), os.path.join(top, n)[len(str(self.common_dir)) + 1:])
                 for top, dirs, files in os.walk(self.common_dir / self.own) for n in dirs + files if n.endswith(".lock")]
        branch_lock = self.common_dir / f"{self.branch}.lock"
        if branch_lock.exists() or branch_lock.is_symlink():
            locks.append((str(branch_lock), f"{self.branch}.lock"))
        refs.update((name, "lock") for path, name in locks
                    if name[:-5] not in refs or os.path.isdir(path) or lingers(path))
        return refs

    USER = ("refs/",)  # branches, tags, stash, notes, and any other ref but these:
    NOT_USER = ("refs/heads/autoresearch/", "refs/autoresearch/", "refs/replace/",  # the loops' (otherrefs), replace refs,
                "refs/remotes/", "refs/prefetch/")  # and what an IDE's or `git maintenance`'s background fetch moves

    def _read_user_refs(self) -> dict[str, str]:
        """The user's branches and tags (not the loops' own branches) and what they point to; and
        the stash's list (its reflog, which `git stash pop` reads: an entry swapped there moves no ref)."""
        if not self.own:
            return {}
        refs = self._scan(self.USER, self.NOT_USER)
        stash = slurp(self.common_dir / "logs/refs/stash")
        if stash is not None:
            refs["logs/refs/stash"] = hashlib.sha1(stash).hexdigest()
        return refs

    def _scan(self, prefixes: tuple[str, ...], skip: tuple[str, ...]) -> dict[str, str]:
        """Refs under `prefixes` (less those under `skip`). Read from the files backend's loose
        refs and packed-refs directly (this runs several times per trial; a git process each
        time cost more than the rest of the harness); through git for a reftable repository."""
        if (self.common_dir / "reftable").exists():
            out = self._git("for-each-ref", "--format=%(refname) %(objectname)", *prefixes).stdout
            pairs = (line.split(" ", 1) for line in out.splitlines() if " " in line)
            return {name: sha for name, sha in pairs if not name.startswith(skip)}
        # loose refs first, then packed-refs (as git reads them): `git pack-refs` (another loop's,
        # your `git gc`) writes packed-refs before it deletes the loose files, so a ref packed
        # between the two reads is in one of them; the other order could miss it
        loose: dict[str, str] = {}
        for prefix in prefixes:
            for path, name in _loose_refs(str(self.common_dir / prefix), prefix.rstrip("/"), skip):
                if path.endswith(".lock") or name.startswith(skip):
                    continue
                try:  # a file whose inode, ctime and size are unchanged holds what it held
                    st = os.stat(path)
                    key = (st.st_ino, st.st_ctime_ns, st.st_size)
                    cached = self._loose.get(path)
                    if cached and cached[0] == key:
                        value = cached[1]
                    else:  # (a FIFO there is skipped: NotRegular; check_and_restore removes it)
                        value = read_regular(Path(path), 4096, follow=True)[0].decode(errors="replace").strip()
                        self._loose[path] = (key, value)
                except OSError:
                    continue
                loose[name] = value
        refs = {name: sha for name, sha in self._packed().items()
                if name.startswith(prefixes) and not name.startswith(skip)}
        refs.update(loose)
        return refs

    def _packed(self) -> dict[str, str]:
        """packed-refs, read again only when its inode, ctime or size moved (the loop packs
        its trial refs there now and then: see `session.write_refs`)."""
        path = self.common_dir / "packed-refs"
        try:
            st = os.stat(path)
            key = (st.st_ino, st.st_ctime_ns, st.st_size)
            if self._packed_cache[0] != key:
                self._packed_cache = (key, packed_refs(read_regular(path, BIG, follow=True)[0].decode(errors="replace")))
        except OSError:
            self._packed_cache = (None, {})
        return self._packed_cache[1]

    def _checkout_stats(self) -> dict[str, tuple[int, int, int]]:
        out = {}
        for rel in self.checkout_files if self.checkout else []:
            try:
                st = os.stat(self.checkout / rel)  # type: ignore[operator]
                out[rel] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size)
            except OSError:
                out[rel] = (0, 0, -1)
        return out

    def _checkout_head(self) -> str:
        """What the user's checkout has checked out (its HEAD file: a branch, or a commit)."""
        head = slurp(self.checkout / ".git" / "HEAD") if self.checkout else None
        # (None: a checkout that is itself a linked worktree: .git is a file)
        return "" if head is None or head == NOT_REGULAR else head.decode(errors="replace").strip()

    def user_changes(self) -> list[str]:
        """What changed in the user's refs and checkout since the last look, one line each;
        nothing is undone."""
        now = self._checkout_stats()
        changed = sorted(p for p in now if now[p] != self._stats.get(p))
        self._stats = now
        head, self._head = self._head, self._checkout_head()
        moved = [f"your checkout's HEAD went from {head.removeprefix('ref: ')[:40]} to "
                 f"{self._head.removeprefix('ref: ')[:40]}"] if head != self._head else []
        return self.user_ref_changes() + moved + [f"changed {p} in your checkout" for p in changed]

    def note(self, phase: str) -> str:
        """What changed in the user's refs and checkout since the last look, and the tag's branch
        put back, as a note for the trial whose agent or experiment (`phase`) ran meanwhile (''
        if nothing). Not held against it (the user may have committed meanwhile) and, but for the
        branch, not undone; shown by `status`, `show` and the report with the audit's flags. A popped stash is a dangling commit: the note says
        how to put it back."""
        changes, self._notes = self._notes + self.user_changes(), []
        if not changes:
            return ""
        others = " (or by the user, or a trial running beside it)"
        note = f"your repository changed while its {phase} ran{others}: {'; '.join(changes)[:300]}"
        lost = [c.rsplit("(was ", 1)[1].rstrip(")") for c in changes if c.startswith("deleted refs/stash")]
        if lost:
            note += f" (to put the stash back: git stash store -m restored {lost[0]})"
        return note

    def user_ref_changes(self) -> list[str]:
        """What changed in the user's branches and tags since the last look, one line each
        (created, moved, deleted); nothing is undone."""
        if not self.own:
            return []
        now = self._read_user_refs()
        before, self._user = self._user, now
        out = []
        for name in sorted(set(before) | set(now)):
            old, new = before.get(name, ""), now.get(name, "")
            if old == new:
                continue
            if not old:
                out.append(f"created {name} at {new[:7]}")
            elif not new:
                out.append(f"deleted {name} (was {old[:7]})")
            else:
                out.append(f"moved {name} from {old[:7]} to {new[:7]}")
        return out

    def _remove_endless(self) -> list[str]:
        """FIFOs and devices put in .git (see filetree.remove_endless): removed, HEAD put back."""
        found = remove_endless(self.common_dir)
        if clear_for_folder(self.common_dir / "worktrees"):  # (a file there: no `git worktree add` works)
            found.append("worktrees (a file, not a folder)")
        if "HEAD" in found and self._common_head:
            (self.common_dir / "HEAD").write_bytes(self._common_head)
        head = slurp(self.common_dir / "HEAD")
        if head not in (None, NOT_REGULAR):
            self._common_head = head
        return found

    def check_and_restore(self) -> str | None:
        problems = []
        endless_ = self._remove_endless()
        if endless_:
            problems.append(f"put in the repository's .git what is not a regular file, which git would wait on "
                            f"or trip over ({', '.join(sorted(endless_)[:5])}); removed")
        locks = self._locks.take_away()
        if locks:
            problems.append(f"left git lock files in the repository's .git ({', '.join(locks[:5])}), which "
                            "stop git's next write there (your commits, git config); removed")
        files = self._restore_files()
        if files:
            problems.append(f"modified the repository's git metadata ({', '.join(files)}); restored")
        refs, made = self._restore_refs()
        branch = [r for r in refs + made if r.split(" ")[0] == self.branch]
        if branch:  # (the measurement is of the harness's commit: put back and noted, not held against it)
            refs, made = [r for r in refs if r not in branch], [r for r in made if r not in branch]
            self._notes.append(f"moved or deleted the tag's branch {self.branch} (put back)")
        if refs:
            problems.append(f"deleted or moved the loop's refs ({', '.join(refs[:5])}"
                            f"{' ...' if len(refs) > 5 else ''}); restored")
        if made:
            problems.append(f"made refs where only the loop writes ({', '.join(made[:5])}"
                            f"{' ...' if len(made) > 5 else ''}); removed")
        replaced = self._restore_replace_refs()
        if replaced:
            problems.append(f"made git replace refs ({', '.join(replaced[:3])}{' ...' if len(replaced) > 3 else ''}), "
                            "which make git show other content than a commit holds; removed")
        return "; ".join(problems) or None

    def took(self, refs: dict[str, str]) -> None:
        """The loop wrote `refs` (name -> commit; '' deleted): what they hold from now on. Call
        in the same hold of the loop's lock as the write, before any check."""
        for name, sha in refs.items():
            if sha:
                self._refs[name] = sha
            else:
                self._refs.pop(name, None)

    # settings of the repository's config that no git command of the harness reads, which your
    # `git push -u`, `git remote add` or an IDE write while a trial runs: taken as they are
    BENIGN = ("branch.", "remote.", "user.", "pull.", "push.", "init.", "color.", "gui.", "column.",
              "advice.", "i18n.", "help.", "format.", "tag.", "log.")

    @classmethod
    def _benign(cls, old: bytes | None, new: bytes | None) -> bool:
        """Whether two contents of a config file differ only in BENIGN settings."""
        if old is None or new is None:
            return False

        def entries(text: bytes) -> list[str] | None:
            out = subprocess.run([GIT, "config", "--file", "-", "--list", "-z"], input=text, capture_output=True,
                                 start_new_session=True)
            return out.stdout.decode("utf-8", "replace").split("\0") if out.returncode == 0 else None

        before, after = entries(old), entries(new)
        if before is None or after is None:
            return False
        diff = set(before) ^ set(after) or {e for e in before if before.count(e) != after.count(e)}
        keys = {e.partition("\n")[0].lower() for e in diff if e}
        return all(k.startswith(cls.BENIGN) and not k.endswith((".uploadpack", ".receivepack")) for k in keys)

    def _fetched_shallow(self, text: bytes | None) -> bool:
        """Whether a new `shallow` cuts no history of the loop's (a fetch with --depth of yours
        writes one for the commits it fetched; one that names a commit the loop's branch reaches
        would hide its history from git, and is put back)."""
        if text is None or text == NOT_REGULAR or not self.branch:
            return False
        cuts = {line.strip() for line in text.decode(errors="replace").splitlines() if line.strip()}
        reached = self._git("rev-list", self.branch, "--").stdout.split()
        return bool(reached) and not cuts & set(reached)

    def _restore_files(self) -> list[str]:
        now = self._read()
        if now == self._saved:
            return []
        config, shallow = self.common_dir / "config", self.common_dir / "shallow"
        if now.get(config) != self._saved.get(config) and self._benign(self._saved.get(config), now.get(config)):
            self._saved[config] = now[config]  # (yours, most likely; nothing of the harness reads it)
        if now.get(shallow) != self._saved.get(shallow) and self._fetched_shallow(now.get(shallow)):
            self._saved[shallow] = now[shallow]  # (your `git fetch --depth`: kept; putting it back broke the repository)
        if now == self._saved:
            return []
        changed = sorted((str(p.relative_to(self.common_dir)) if p.is_relative_to(self.common_dir) else p.name)
                         for p in set(now) | set(self._saved)
                         if now.get(p) != self._saved.get(p))
        for path in set(now) | set(self._saved):
            old = self._saved.get(path)
            if old is None:
                path.unlink(missing_ok=True)
            elif now.get(path) != old and old != NOT_REGULAR:
                if now.get(path) == NOT_REGULAR or path.is_symlink():  # (not written through: a FIFO
                    remove_path(path)  # would wait, and a link would have the harness write where it points)
                path.write_bytes(old)
        return changed

    def _restore_replace_refs(self) -> list[str]:
        """refs/replace/ made or moved since the start (`git replace`: every git command would
        show the replacement where the object is named, in diffs, merges and checkouts)."""
        now = self._scan(("refs/replace/",), ())
        made = sorted(r for r, sha in now.items() if self._replace.get(r) != sha)
        for ref in made:
            if ref in self._replace:
                self._git("update-ref", ref, self._replace[ref])
            else:
                self._git("update-ref", "-d", ref)
        return made

    def _put(self, ref: str, sha: str | None) -> None:
        """Set the loop's `ref` to `sha` (None: delete it), whatever an agent made of it: a file
        git cannot read as a ref (which git refuses to touch) is removed first."""
        args = ("update-ref", "--no-deref", *((ref, sha) if sha else ("-d", ref)))
        if not (self.common_dir / "reftable").exists():
            self._clear_way(ref)
        if self._git(*args).returncode != 0 and not (self.common_dir / "reftable").exists():
            path = self.common_dir / ref
            if path.is_symlink() or not path.is_dir():  # (a folder there holds refs: left alone)
                path.unlink(missing_ok=True)
            if sha:
                self._git(*args)

    def _clear_way(self, ref: str) -> None:
        """Under the loop's own folders of refs, a file or a link where a folder of `ref` goes
        (git would write through a link, to a folder the scan cannot see) is removed."""
        parts = ref.split("/")
        start = 2 if ref.startswith("refs/autoresearch/") else 3 if ref.startswith("refs/heads/autoresearch/") \
            else len(parts)
        for i in range(start, len(parts)):
            clear_for_folder(self.common_dir.joinpath(*parts[:i]))

    def _restore_refs(self) -> tuple[list[str], list[str]]:
        """(the loop's refs deleted or moved, restored; refs made in its place, removed)."""
        now = self._read_refs()
        lost = sorted(r for r, sha in self._refs.items() if now.get(r) != sha)
        made = sorted(r for r in now if r not in self._refs)
        # one by one (a ref whose commit was pruned cannot come back), each ref itself: one made
        # symbolic would have git write, or delete, the ref it points to (a branch of yours)
        for ref in made:  # first: one may stand where a folder of the others goes
            if ref.endswith(".lock"):  # (no ref: git cannot delete it)
                remove_path(self.common_dir / ref)
            else:
                self._put(ref, None)
        for ref in lost:
            for _ in range(4 if now.get(ref) == "" else 0):  # listed twice in packed-refs (forged):
                self._git("update-ref", "--no-deref", "-d", ref)  # a delete takes one line
            self._put(ref, self._refs[ref])
        if lost or made:
            now = self._read_refs()
            gone = [r for r in lost if now.get(r) != self._refs[r]]
            lost = [r if r not in gone else f"{r} (its commit is gone)" for r in lost]
            made = [r if r not in now else f"{r} (could not be removed)" for r in made]
        self._refs = {r: sha for r, sha in now.items() if r in self._refs}
        return lost, made
