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
from collections.abc import Callable, Iterator
from pathlib import Path

from autoresearch.gitrepo import MAX_FILE_BYTES, SAFE, Change, Git
from autoresearch.task import Task

__all__ = ["MAX_FILE_BYTES", "GitGuard", "ObjectWatch", "changed_files", "check_changes", "forged_blobs", "hash_files", "set_readonly", "task_blobs"]
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
    return None


def hash_files(root: Path, paths: list[str]) -> dict[str, str]:
    """sha256 of each path under root ('missing' or 'symlink' where it is not a plain file)."""
    out: dict[str, str] = {}
    for rel in paths:
        p = root / rel
        if p.is_symlink():
            out[rel] = "symlink"
            continue
        try:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError:
            out[rel] = "missing"
    return out


def changed_files(expected: dict[str, str], root: Path) -> list[str]:
    """The protected files whose content differs from `expected`."""
    now = hash_files(root, list(expected))
    return [p for p, h in expected.items() if now.get(p) != h]


def _loose_refs(path: str, name: str) -> Iterator[tuple[str, str]]:
    """(file, ref name) of each loose ref at or under `path` (the ref `name`)."""
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
                yield from _loose_refs(entry.path, f"{name}/{entry.name}")
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

    Trial refs (refs/autoresearch/<tag>/trials/<n>) may only be added (the loop adds one per
    trial); one deleted or moved is restored. The tag's branch is not watched here: the loop
    sets it from the ledger when it records a verdict. The user's own branches and tags
    (refs/heads, refs/tags, refs/stash) are watched but never restored nor held against a trial: the user
    may be committing or fetching while the loop runs. The user's own copies of the task's files
    (`checkout_files` under `checkout`) are watched the same way, by their stat. `user_changes`
    says what changed since the last look, and the loop notes it on the trial running then."""

    METADATA = ("config", "config.worktree", "info/attributes", "info/exclude", "info/grafts",
                "info/sparse-checkout", "objects/info/alternates")

    def __init__(self, common_dir: Path, tag: str | None = None, checkout: Path | None = None,
                 checkout_files: list[str] | None = None, extra: tuple[Path, ...] = ()) -> None:
        self.common_dir = common_dir
        self.extra = extra  # more files the harness's git reads (its private global config)
        self.own = f"refs/autoresearch/{tag}/" if tag else None
        self._loose: dict[str, tuple[tuple[int, int, int], str]] = {}  # path -> (stat key, value)
        self._saved = self._read()
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
            try:
                out[f] = f.read_bytes()
            except OSError:
                out[f] = None
        return out

    def _git(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env["GIT_NO_REPLACE_OBJECTS"] = "1"
        return subprocess.run(["git", *SAFE, f"--git-dir={self.common_dir}", *args], env=env,
                              input=input, capture_output=True, text=True, errors="surrogateescape",
                              start_new_session=True)

    def _read_refs(self) -> dict[str, str]:
        """The loop's refs and what they point to."""
        return self._scan((self.own,), ()) if self.own else {}

    USER = ("refs/heads/", "refs/tags/", "refs/stash", "refs/notes/")
    NOT_USER = ("refs/heads/autoresearch/",)  # the loops' branches, moved by the loops

    def _read_user_refs(self) -> dict[str, str]:
        """The user's branches and tags (not the loops' own branches) and what they point to."""
        return self._scan(self.USER, self.NOT_USER) if self.own else {}

    def _scan(self, prefixes: tuple[str, ...], skip: tuple[str, ...]) -> dict[str, str]:
        """Refs under `prefixes` (less those under `skip`). Read from the files backend's loose
        refs and packed-refs directly (this runs several times per trial; a git process each
        time cost more than the rest of the harness); through git for a reftable repository."""
        if (self.common_dir / "reftable").exists():
            out = self._git("for-each-ref", "--format=%(refname) %(objectname)", *prefixes).stdout
            pairs = (line.split(" ", 1) for line in out.splitlines() if " " in line)
            return {name: sha for name, sha in pairs if not name.startswith(skip)}
        refs: dict[str, str] = {}
        try:
            packed = (self.common_dir / "packed-refs").read_text(errors="replace")
        except OSError:
            packed = ""
        for line in packed.splitlines():
            sha, _, name = line.partition(" ")
            if line[:1] not in ("#", "^", "") and name.startswith(prefixes) and not name.startswith(skip):
                refs[name] = sha
        for prefix in prefixes:
            for path, name in _loose_refs(str(self.common_dir / prefix), prefix.rstrip("/")):
                if path.endswith(".lock") or name.startswith(skip):
                    continue
                try:  # a file whose inode, ctime and size are unchanged holds what it held
                    st = os.stat(path)
                    key = (st.st_ino, st.st_ctime_ns, st.st_size)
                    cached = self._loose.get(path)
                    if cached and cached[0] == key:
                        value = cached[1]
                    else:
                        with open(path, errors="replace") as fh:
                            value = fh.read().strip()
                        self._loose[path] = (key, value)
                except OSError:
                    continue
                refs[name] = value
        return refs

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
        try:
            return (self.checkout / ".git" / "HEAD").read_text(errors="replace").strip() if self.checkout else ""
        except OSError:  # (a checkout that is itself a linked worktree: .git is a file)
            return ""

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
        """What changed in the user's refs and checkout since the last look, as a note for the
        trial whose agent or experiment (`phase`) ran meanwhile ('' if nothing). Not held against
        it (the user may have committed meanwhile) and not undone; shown by `status`, `show` and
        the report with the audit's flags. A popped stash is a dangling commit: the note says
        how to put it back."""
        changes = self.user_changes()
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

    def check_and_restore(self) -> str | None:
        problems = []
        files = self._restore_files()
        if files:
            problems.append(f"modified the repository's git metadata ({', '.join(files)}); restored")
        refs = self._restore_refs()
        if refs:
            problems.append(f"deleted or moved the loop's refs ({', '.join(refs[:5])}"
                            f"{' ...' if len(refs) > 5 else ''}); restored")
        replaced = self._restore_replace_refs()
        if replaced:
            problems.append(f"made git replace refs ({', '.join(replaced[:3])}{' ...' if len(replaced) > 3 else ''}), "
                            "which make git show other content than a commit holds; removed")
        return "; ".join(problems) or None

    def refresh(self) -> None:
        """Take in the refs the loop added since the last check (call before each proposal)."""
        self._restore_refs()

    def _restore_files(self) -> list[str]:
        now = self._read()
        if now == self._saved:
            return []
        changed = sorted((str(p.relative_to(self.common_dir)) if p.is_relative_to(self.common_dir) else p.name)
                         for p in set(now) | set(self._saved)
                         if now.get(p) != self._saved.get(p))
        for path in set(now) | set(self._saved):
            old = self._saved.get(path)
            if old is None:
                path.unlink(missing_ok=True)
            elif now.get(path) != old:
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

    def _restore_refs(self) -> list[str]:
        now = self._read_refs()
        lost = sorted(r for r, sha in self._refs.items() if now.get(r) != sha)
        for ref in lost:  # one by one: a ref whose commit was pruned cannot come back
            self._git("update-ref", ref, self._refs[ref])
        if lost:
            now = self._read_refs()
            gone = [r for r in lost if now.get(r) != self._refs[r]]
            lost = [r if r not in gone else f"{r} (its commit is gone)" for r in lost]
        self._refs = now
        return lost


def task_blobs(git: Git, commit: str, wanted: Callable[[str], bool]) -> list[tuple[str, str, bytes]]:
    """The files of `commit` that are `wanted`, as (path, object name, content) read from the
    object store (one `ls-tree` and one `cat-file --batch`)."""
    listing = git.run("ls-tree", "-r", "-z", "-l", "--full-tree", commit, strip=False)
    names = []
    for item in listing.split("\0"):
        meta, _, path = item.partition("\t")
        fields = meta.split()  # mode, type, name, size
        if len(fields) == 4 and fields[1] == "blob" and fields[3].isdigit() and int(fields[3]) <= MAX_FILE_BYTES \
                and wanted(path):  # (a big data file in git is not held in memory for this)
            names.append((path, fields[2]))
    if not names:
        return []
    out = subprocess.run(["git", *SAFE, *git._config, "cat-file", "--batch"], cwd=git.root, env=git._env,
                         input="".join(f"{sha}\n" for _, sha in names).encode(), capture_output=True,
                         start_new_session=True).stdout
    blobs, pos = [], 0
    for path, sha in names:
        end = out.find(b"\n", pos)
        header = out[pos:end].split()
        if len(header) != 3:  # missing: nothing to read
            pos = end + 1
            continue
        size = int(header[2])
        blobs.append((path, sha, out[end + 1:end + 1 + size]))
        pos = end + 1 + size + 1
    return blobs


def _object_name(sha: str, content: bytes) -> str:
    return hashlib.new("sha1" if len(sha) == 40 else "sha256", b"blob %d\0" % len(content) + content).hexdigest()


def forged_blobs(common_dir: Path, blobs: list[tuple[str, str, bytes]]) -> list[str]:
    """The paths among `blobs` whose object does not hash to its name: an object file rewritten
    in .git/objects, so that git shows other content than was committed and measured (git does
    not check this when it reads an object; `git fsck` does). Each such loose object is removed:
    a missing object is safer than a lying one (the same content added again is written anew)."""
    bad = []
    for path, sha, content in blobs:
        if _object_name(sha, content) != sha:
            bad.append(path)
            (common_dir / "objects" / sha[:2] / sha[2:]).unlink(missing_ok=True)
    return bad


class ObjectWatch:
    """The objects of the best code's task files, by the identity of their loose files (a
    rewrite changes its ctime), with their content: one rewritten is written back."""

    def __init__(self, common_dir: Path) -> None:
        self.common_dir = common_dir
        self._saved: dict[str, tuple[str, bytes, tuple[int, int] | None]] = {}
        self._packs: dict[str, tuple[int, int]] = {}

    def _stat(self, sha: str) -> tuple[int, int] | None:
        try:
            st = os.stat(self.common_dir / "objects" / sha[:2] / sha[2:])
            return st.st_ino, st.st_ctime_ns
        except OSError:
            return None  # packed (or gone)

    def _git_has(self, sha: str) -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        return subprocess.run(["git", *SAFE, f"--git-dir={self.common_dir}", "cat-file", "-e", sha], env=env,
                              capture_output=True, start_new_session=True).returncode == 0

    def remember(self, blobs: list[tuple[str, str, bytes]]) -> None:
        self._saved = {sha: (path, content, self._stat(sha)) for path, sha, content in blobs}
        self._packs = self._pack_files()

    def _pack_files(self) -> dict[str, tuple[int, int]]:
        try:
            return {e.name: (e.stat().st_ino, e.stat().st_ctime_ns)
                    for e in os.scandir(self.common_dir / "objects" / "pack") if e.name.endswith(".idx")}
        except OSError:
            return {}

    def _forged_packs(self) -> list[str]:
        """Packs made or changed since the last look that give one of the watched objects other
        content (git reads packs before loose objects); each is removed. A `git gc` of yours
        makes packs too, with the same content: those stay."""
        now = self._pack_files()
        fresh = [name for name, ident in now.items() if self._packs.get(name) != ident]
        self._packs = now
        if not fresh or not self._saved:
            return []
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env["GIT_NO_REPLACE_OBJECTS"] = "1"
        forged = []
        for name in fresh:
            idx = self.common_dir / "objects" / "pack" / name
            try:
                with open(idx, "rb") as f:
                    listed = subprocess.run(["git", "show-index"], stdin=f, capture_output=True, env=env,
                                            text=True, start_new_session=True).stdout
            except OSError:
                continue
            held = {line.split()[1] for line in listed.splitlines() if len(line.split()) >= 2}
            for sha in held & set(self._saved):
                path, content, _ = self._saved[sha]
                packed = _read_packed(idx.with_suffix(".pack"), sha, env)
                if packed is not None and packed != content:
                    forged.append(path)
                    for suffix in (".idx", ".pack", ".rev", ".bitmap", ".keep"):
                        idx.with_suffix(suffix).unlink(missing_ok=True)
                    break
        self._packs = self._pack_files()
        return forged

    def check_and_restore(self) -> str | None:
        import zlib

        rewritten = []
        for sha, (path, content, seen) in self._saved.items():
            now = self._stat(sha)
            if now == seen:
                continue
            obj = self.common_dir / "objects" / sha[:2] / sha[2:]
            if now is None and self._git_has(sha):  # packed (`git gc`, by you or your IDE)
                self._saved[sha] = (path, content, None)
                continue
            try:
                data = zlib.decompress(obj.read_bytes()) if now is not None else None
            except (OSError, zlib.error):
                data = None
            if data != b"blob %d\0" % len(content) + content:
                rewritten.append(path)
                obj.parent.mkdir(parents=True, exist_ok=True)
                tmp = obj.with_name(obj.name + ".restore")
                tmp.write_bytes(zlib.compress(b"blob %d\0" % len(content) + content))
                os.replace(tmp, obj)
            self._saved[sha] = (path, content, self._stat(sha))
        packed = self._forged_packs()
        if packed:
            rewritten += [f"{p} (in a pack, removed)" for p in packed]
        return (f"rewrote the git objects of the best code's {', '.join(rewritten[:3])} in .git/objects; "
                "restored") if rewritten else None


def _read_packed(pack: Path, sha: str, env: dict[str, str]) -> bytes | None:
    """The content a pack file gives object `sha`, read from that pack alone (a repository of
    its own pointing at it), None when it cannot be read."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="autoresearch-pack-") as tmp:
        alone = Path(tmp) / "git"
        (alone / "objects" / "pack").mkdir(parents=True)
        (alone / "refs").mkdir()
        (alone / "HEAD").write_text("ref: refs/heads/x\n")
        for suffix in (".pack", ".idx"):
            try:
                os.symlink(pack.with_suffix(suffix), alone / "objects" / "pack" / pack.with_suffix(suffix).name)
            except OSError:
                return None
        out = subprocess.run(["git", f"--git-dir={alone}", "cat-file", "blob", sha], capture_output=True, env=env,
                             start_new_session=True)
        return out.stdout if out.returncode == 0 else None
