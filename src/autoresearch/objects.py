"""The git object store, checked: git does not check an object's content against its name when
it reads it, so an object file rewritten in .git/objects (or a pack that gives an object other
content: git reads packs first) makes the branch show other code than was measured.

`task_blobs` reads a commit's task files from the store; `forged_blobs` says which of them do not
hash to their names (and removes those loose objects); `ObjectWatch` keeps the best code's
objects with their content and puts back what was rewritten. `BlobReader` reads files of many
commits through one `git cat-file --batch`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from autoresearch.gitrepo import MAX_FILE_BYTES, SAFE, Git
from autoresearch.programs import GIT


def tree_blobs(git: Git, commit: str, check: bool = True) -> list[tuple[str, str, str, int]]:
    """The files of `commit`: (path, mode, object name, size) of each blob (one `ls-tree`)."""
    listing = git.run("ls-tree", "-r", "-z", "-l", "--full-tree", commit, strip=False, check=check)
    out = []
    for item in listing.split("\0"):
        meta, _, path = item.partition("\t")
        fields = meta.split()  # mode, type, name, size
        if len(fields) == 4 and fields[1] == "blob" and fields[3].isdigit():
            out.append((path, fields[0], fields[2], int(fields[3])))
    return out


def read_objects(git: Git, names: list[str]) -> dict[str, tuple[str, bytes]]:
    """Object name -> (type, content) as git reads them (one `cat-file --batch`); a missing one
    is left out."""
    if not names:
        return {}
    out = subprocess.run([GIT, *SAFE, "cat-file", "--batch"], cwd=git.root, env=git._env,
                         input="".join(f"{n}\n" for n in names).encode(), capture_output=True,
                         start_new_session=True).stdout
    read, pos = {}, 0
    for name in names:
        end = out.find(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) != 3:  # missing: nothing to read
            continue
        size = int(header[2])
        read[name] = (header[1].decode(), out[pos:pos + size])
        pos += size + 1
    return read


def task_blobs(git: Git, commit: str, wanted: Callable[[str], bool],
               listing: list[tuple[str, str, str, int]] | None = None) -> list[tuple[str, str, bytes]]:
    """The files of `commit` that are `wanted`, as (path, object name, content) read from the
    object store (one `ls-tree`, unless `listing` is its tree_blobs already, and one `cat-file --batch`)."""
    names = [(path, sha) for path, _, sha, size in (tree_blobs(git, commit) if listing is None else listing)
             if size <= MAX_FILE_BYTES and wanted(path)]  # (a big data file in git is not held in memory for this)
    read = read_objects(git, [sha for _, sha in names])
    return [(path, sha, read[sha][1]) for path, sha in names if sha in read]


def _raw(content: bytes) -> bytes:
    """A blob as git stores it (before compression), the bytes its name is the hash of."""
    return b"blob %d\0" % len(content) + content


def _loose(common_dir: Path, sha: str) -> Path:
    return common_dir / "objects" / sha[:2] / sha[2:]


def object_name(sha: str, content: bytes) -> str:
    """The name git gives `content` as a blob, in the hash of `sha` (sha1, or sha256)."""
    return hashlib.new("sha1" if len(sha) == 40 else "sha256", _raw(content)).hexdigest()


def forged_blobs(common_dir: Path, blobs: list[tuple[str, str, bytes]]) -> list[str]:
    """The paths among `blobs` whose object does not hash to its name: an object file rewritten
    in .git/objects, so that git shows other content than was committed and measured (git does
    not check this when it reads an object; `git fsck` does). Each such loose object is removed:
    a missing object is safer than a lying one (the same content added again is written anew)."""
    bad = []
    for path, sha, content in blobs:
        if object_name(sha, content) != sha:
            bad.append(path)
            _loose(common_dir, sha).unlink(missing_ok=True)
    return bad


class ObjectWatch:
    """The objects of the best code's task files, and its commit and trees (a tree rewritten
    names other files for every path under it), by the identity of their loose files (a rewrite
    changes its ctime), with their content: one rewritten is written back."""

    def __init__(self, git: Git) -> None:
        self.common_dir = git.common_dir
        self.root = git.root  # (the user's checkout: a copy of a file whose content is not held here)
        self._env = git._env  # (the harness's: no replace refs, no user config)
        self._saved: dict[str, tuple[str, bytes | None, tuple[int, int] | None]] = {}  # name -> (path, raw, stat)
        self._packs: dict[str, tuple[int, int]] = {}

    def _stat(self, sha: str) -> tuple[int, int] | None:
        try:  # (a string, not a Path: a look stats every file of the best code)
            st = os.stat(f"{self.common_dir}/objects/{sha[:2]}/{sha[2:]}")
            return st.st_ino, st.st_ctime_ns
        except OSError:
            return None  # packed (or gone)

    def _from_checkout(self, path: str, sha: str) -> bytes | None:
        """The raw object `sha` from the user's copy of `path`, when that copy is it."""
        from autoresearch.filetree import read_regular

        try:
            raw = _raw(read_regular(self.root / path, 1 << 31)[0])
        except OSError:
            return None
        return raw if _names(sha, raw) else None

    def _git_has(self, names: list[str]) -> set[str]:
        """Those of `names` git has (one `cat-file --batch-check` for all: a `git gc` packs every
        watched object at once)."""
        if not names:
            return set()
        out = subprocess.run([GIT, *SAFE, f"--git-dir={self.common_dir}", "cat-file", "--batch-check"],
                             input="".join(f"{n}\n" for n in names), env=self._env, capture_output=True, text=True,
                             start_new_session=True).stdout
        return {line.split()[0] for line in out.splitlines() if line.split()[-1:] != ["missing"]}

    def remember(self, blobs: list[tuple[str, str, bytes]], others: Sequence[tuple[str, str, bytes]] = (),
                 names: Sequence[tuple[str, str]] = ()) -> None:
        """`blobs`: (path, name, content); `others`: (what it is, name, the raw object, its header
        included); `names`: (path, name) of the other files, whose content is not held (a data
        file the evaluator reads, maybe big): one rewritten is found by its hash, not put back."""
        self._saved = {sha: (path, None, self._stat(sha)) for path, sha in names}
        self._saved.update({sha: (path, _raw(content), self._stat(sha)) for path, sha, content in blobs})
        self._saved.update({sha: (what, raw, self._stat(sha)) for what, sha, raw in others})
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
        forged = []
        for name in fresh:
            idx = self.common_dir / "objects" / "pack" / name
            if self._verified(idx):  # every object in it hashes to its name: nothing there lies
                continue
            try:
                with open(idx, "rb") as f:
                    listed = subprocess.run([GIT, "show-index"], stdin=f, capture_output=True, env=self._env,
                                            text=True, start_new_session=True).stdout
            except OSError:
                continue
            held = {line.split()[1] for line in listed.splitlines() if len(line.split()) >= 2}
            for sha in held & set(self._saved):
                path, raw, _ = self._saved[sha]
                kind = raw.split(b" ", 1)[0].decode() if raw is not None else "blob"
                packed = _read_packed(idx.with_suffix(".pack"), sha, self._env, kind)
                given = None if packed is None else b"%s %d\0" % (kind.encode(), len(packed)) + packed
                if given is not None and (given != raw if raw is not None else not _names(sha, given)):
                    forged.append(path)
                    for suffix in (".idx", ".pack", ".rev", ".bitmap", ".keep"):
                        idx.with_suffix(suffix).unlink(missing_ok=True)
                    break
        self._packs = self._pack_files()
        return forged

    def _verified(self, idx: Path) -> bool:
        """Whether git, indexing the pack anew from its content, finds the names its index gives
        (one process over the pack: a `git gc` of yours, which packs every file the loop watches,
        costs that, not a read of each object)."""
        return subprocess.run([GIT, *SAFE, f"--git-dir={self.common_dir}", "verify-pack", str(idx)], env=self._env,
                              capture_output=True, start_new_session=True).returncode == 0

    def check_and_restore(self) -> str | None:
        import zlib

        rewritten, lost = [], []
        moved = {sha: now for sha, (_, _, seen) in self._saved.items() if (now := self._stat(sha)) != seen}
        packed = self._git_has([sha for sha, now in moved.items() if now is None])
        for sha, now in moved.items():
            path, raw, _ = self._saved[sha]
            obj = _loose(self.common_dir, sha)
            if sha in packed:  # packed (`git gc`, by you or your IDE)
                self._saved[sha] = (path, raw, None)
                continue
            try:
                data = zlib.decompress(obj.read_bytes()) if now is not None else None
            except (OSError, zlib.error):
                data = None
            if raw is None:  # (not held: true when it hashes to its name; a lie is put back from your
                if data is None or not _names(sha, data):  # checkout when its copy is that file, else removed)
                    raw = self._from_checkout(path, sha)
                    if raw is None:
                        lost.append(path)
                        obj.unlink(missing_ok=True)
                    else:
                        rewritten.append(path)
                        _write_back(obj, raw)
                        raw = None
            elif data != raw:
                rewritten.append(path)
                _write_back(obj, raw)
            self._saved[sha] = (path, raw, self._stat(sha))
        if forged := self._forged_packs():
            rewritten += [f"{p} (in a pack, removed)" for p in forged]
        said = [f"rewrote the git objects of the best code's {', '.join(rewritten[:3])} in .git/objects; restored"
                ] if rewritten else []
        said += [f"rewrote the git objects of the best code's {', '.join(lost[:3])} in .git/objects (what a reset "
                 "writes for the evaluator); removed, not put back: their content was not held, nor is it in "
                 "your checkout"] if lost else []
        return "; ".join(said) or None


def _write_back(obj: Path, raw: bytes) -> None:
    import zlib

    obj.parent.mkdir(parents=True, exist_ok=True)
    tmp = obj.with_name(obj.name + ".restore")
    tmp.write_bytes(zlib.compress(raw))
    os.replace(tmp, obj)


def _names(sha: str, raw: bytes) -> bool:
    """Whether the raw object (its header included) is the one named `sha`."""
    return hashlib.new("sha1" if len(sha) == 40 else "sha256", raw).hexdigest() == sha


def _read_packed(pack: Path, sha: str, env: dict[str, str], kind: str = "blob") -> bytes | None:
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
        out = subprocess.run([GIT, f"--git-dir={alone}", "cat-file", kind, sha], capture_output=True, env=env,
                             start_new_session=True)
        return out.stdout if out.returncode == 0 else None


class BlobReader:
    """Files of many commits, or objects, through one `git cat-file --batch` process (a resumed
    search reads the editable files of every earlier trial: one `git show` each took seconds)."""

    def __init__(self, git: Git) -> None:
        self.git = git
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [GIT, *SAFE, "cat-file", "--batch"], cwd=git.root, env=git._env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)

    def read(self, commit: str, path: str) -> bytes | None:
        """The file `path` at `commit`, or None when the commit has no such file."""
        if self.proc is None or "\n" in path:
            return self.git.show_bytes(commit, path)
        got = self.object(f"{commit}:{path}")
        return got[1] if got is not None and got[0] == "blob" else None

    def object(self, name: str) -> tuple[str, bytes] | None:
        """(type, content) of the object `name` (or a `commit:path`) as git reads it; None when
        missing."""
        if self.proc is None:
            return read_objects(self.git, [name]).get(name) if "\n" not in name else None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(f"{name}\n".encode())
            self.proc.stdin.flush()
            header = self.proc.stdout.readline().split()
            if len(header) != 3:  # "<name> missing" (or ambiguous)
                return None
            data = self.proc.stdout.read(int(header[2]))
            self.proc.stdout.read(1)  # the newline after the content
        except (OSError, ValueError):  # the reader died: one `git cat-file` an object from now on
            self.close()
            return self.object(name)
        return header[1].decode(), data

    def close(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
