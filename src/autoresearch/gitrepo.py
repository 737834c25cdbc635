"""The few git operations the harness needs, as a thin subprocess wrapper.

Every call disables hooks and fsmonitor, so that nothing an agent writes into `.git` can run
code through our own git commands. Worktrees are addressed with explicit GIT_DIR and
GIT_WORK_TREE and a private index, so an agent that rewrites a worktree's `.git` file, index or
HEAD cannot redirect or fool the harness.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autoresearch.errors import AutoresearchError, UsageError
from autoresearch.filetree import (
    clear_for_folder,
    ctimes,
    remove_specials,
    remove_unknown,
    writable,
)
from autoresearch.gitconfig import kept_config, private_file
from autoresearch.gitstatus import Change, packed_refs, status_entries
from autoresearch.process import run_harness
from autoresearch.programs import GIT

if TYPE_CHECKING:
    from autoresearch.objects import BlobReader

SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "gc.auto=0",
        "-c", "core.quotePath=false", "-c", "advice.detachedHead=false",
        "-c", "core.commitGraph=false"]  # (objects/info/commit-graph is a cache an agent can forge)
IDENTITY = {"GIT_AUTHOR_NAME": "autoresearch", "GIT_AUTHOR_EMAIL": "autoresearch@localhost",
            "GIT_COMMITTER_NAME": "autoresearch", "GIT_COMMITTER_EMAIL": "autoresearch@localhost"}

# what may run a filter or diff driver the config names: marked (run_harness), its leftovers swept
FILTERING = {"add", "status", "reset", "checkout-index", "update-index", "diff-files", "worktree",
             "checkout", "read-tree", "stash", "diff"}
MAX_FILE_BYTES = 20 * 1024 * 1024  # a bigger file in a trial is rejected, and never stored
# what `git add` says of a path it will not take (lib/.GIT/x.py, a name past a link)
REFUSED_PATHS = ("invalid path", "unable to index file", "beyond a symbolic link", "does not have a commit checked out")


class GitError(AutoresearchError):
    pass


class Refused(GitError):
    """A change the harness will not commit (the message says why): its trial is rejected."""


@dataclass(frozen=True)
class Workspace:
    """A git worktree the harness owns: its folder, its git dir and a private index."""

    path: Path
    gitdir: Path
    index: Path


class Git:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        self._env.update(IDENTITY)
        self._env["GIT_TERMINAL_PROMPT"] = "0"
        # `git status` on the user's checkout must not rewrite (or, killed, leave a lock on) its index
        self._env["GIT_OPTIONAL_LOCKS"] = "0"
        # what a commit really holds: a refs/replace/ ref (which an agent may make) must not make
        # the harness diff, audit or check out other content than the experiment ran
        self._env["GIT_NO_REPLACE_OBJECTS"] = "1"
        # nor may a filter driver an agent writes into the global or system config (or a global
        # attributes file) run in the harness's `git add`, outside any seal
        self.config_file = private_file(kept_config(self._env), "autoresearch-gitconfig-")  # read now,
        self._env.update(GIT_CONFIG_GLOBAL=str(self.config_file), GIT_CONFIG_NOSYSTEM="1")  # before any agent ran
        # nor the system's attributes file ($(prefix)/etc/gitattributes, which a git installed in a
        # folder the user can write, a conda environment, has there too): an `ident`, `eol` or
        # `working-tree-encoding` in it would have `add` store other bytes than the ones that run
        self._env["GIT_ATTR_NOSYSTEM"] = "1"
        self._known: dict[Path, tuple[str, set[str]]] = {}  # worktree -> (commit, what it held then)
        self._indexes: dict[Path, tuple[str, dict[str, tuple[int, int]]]] = {}  # index -> (sha256, files' c/mtime ns)
        self.ignored: dict[Path, list[str]] = {}  # worktree -> the ignored files its last snapshot found
        self.git_dir = Path(self.run("rev-parse", "--absolute-git-dir"))
        # a ref that must not exist is verified against the null id, as long as the repository's ids
        self.null_id = "0" * (64 if self.run("rev-parse", "--show-object-format", check=False).strip() == "sha256" else 40)
        self.common_dir = Path(self.run("rev-parse", "--git-common-dir", cwd=self.root))
        if not self.common_dir.is_absolute():
            self.common_dir = (self.root / self.common_dir).resolve()

    @classmethod
    def open(cls, root: Path) -> Git:
        root = Path(root).resolve()
        try:
            top = subprocess.run([GIT, "rev-parse", "--show-toplevel"], cwd=root,
                                 capture_output=True, text=True, check=True).stdout.strip()
        except FileNotFoundError:
            raise UsageError("git is not installed (it is needed for every trial)") from None
        except subprocess.CalledProcessError:
            raise UsageError(f"{root} is not a git repository (run `git init` or `autoresearch init`)") from None
        if Path(top).resolve() != root:
            raise UsageError(f"{root} is not the root of its git repository ({top} is)")
        return cls(root)

    # -- plumbing -----------------------------------------------------------------------

    def run(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            input: str | None = None, check: bool = True, strip: bool = True) -> str:
        full_env = self._env if env is None else {**self._env, **env}
        # its own session: a Ctrl-C at the terminal goes to the loop, which stops cleanly, not
        # to the git command it is running (which would fail the run with exit 1)
        spawn = run_harness if args and args[0] in FILTERING else subprocess.run
        proc = spawn([GIT, *SAFE, *args], cwd=cwd or self.root, env=full_env,
                     input=input, capture_output=True, text=True,
                     errors="surrogateescape", start_new_session=True)
        if (proc.returncode != 0 and "smudge filter lfs failed" in proc.stderr
                and "GIT_LFS_SKIP_SMUDGE" not in self._env):  # LFS pointers without their objects
            self._env = {**self._env, "GIT_LFS_SKIP_SMUDGE": "1"}  # (a new dict: other threads read it)
            sys.stderr.write("autoresearch: warning: git-lfs cannot fetch the large files of this repository, so "
                             "trial worktrees hold LFS pointer files, as a checkout without them does\n")
            return self.run(*args, cwd=cwd, env=env, input=input, check=check, strip=strip)
        if check and proc.returncode != 0:
            how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            raise GitError(f"git {' '.join(args[:4])} failed ({how}): {proc.stderr.strip()[:500] or '(no message)'}")
        return proc.stdout.strip() if check and strip else proc.stdout

    def wt_env(self, ws: Workspace) -> dict[str, str]:
        # the common dir named, not read from the worktree's `commondir` file, which an agent
        # can point at a folder of its own (with a config whose filter the harness's git would run)
        return {"GIT_DIR": str(ws.gitdir), "GIT_WORK_TREE": str(ws.path),
                "GIT_INDEX_FILE": str(ws.index), "GIT_COMMON_DIR": str(self.common_dir)}

    # -- the repository -----------------------------------------------------------------

    def head(self) -> str:
        return self.run("rev-parse", "HEAD")

    def has_commits(self) -> bool:
        return self.run("rev-parse", "--verify", "-q", "HEAD", check=False).strip() != ""

    def current_branch(self) -> str | None:
        out = self.run("symbolic-ref", "-q", "--short", "HEAD", check=False).strip()
        return out or None

    def away_hint(self) -> str:
        """How to leave an autoresearch branch for one of the user's: `git checkout main` (or
        master, or the first other local branch), for a message."""
        names = [ref.removeprefix("refs/heads/") for ref in self.refs("refs/heads/")]
        mine = [n for n in names if not n.startswith("autoresearch/")]
        name = next((n for n in ("main", "master") if n in mine), mine[0] if mine else "")
        return f"`git checkout {name}`" if name else "`git checkout -b work`"

    def dirty_paths(self) -> list[str]:
        out = self.run("status", "--porcelain", "-z", "-unormal", strip=False)  # ' M path': keep the space
        return [path for _code, path in status_entries(out)]

    def rev(self, ref: str) -> str | None:
        out = self.run("rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False).strip()
        return out or None

    def refs(self, prefix: str) -> dict[str, str]:
        from autoresearch.gitstatus import listed_refs  # ('' for a name listed twice: forged)
        return listed_refs(self.run("for-each-ref", "--format=%(refname) %(objectname)", prefix))

    def update_refs(self, updates: dict[str, str], verify: dict[str, str | None] | None = None) -> None:
        """Update several refs in one transaction; `verify` maps ref -> expected value
        (None: must not exist). Raises GitError if any expectation fails."""
        verify = verify or {}
        lines = ["start"]
        for ref, old in verify.items():
            if ref not in updates:
                lines.append(f"verify {ref} {old or self.null_id}")
        for ref, new in updates.items():  # (no-deref: a ref an agent made symbolic is itself rewritten)
            lines += ["option no-deref", f"update {ref} {new}" + (f" {verify[ref] or self.null_id}" if ref in verify else "")]
        lines += ["prepare", "commit"]
        self.run("update-ref", "--stdin", input="\n".join(lines) + "\n")

    def read_ref(self, ref: str) -> str | None:
        """A ref's value read from the files backend directly (a loose ref, else packed-refs);
        None when it is not there or cannot be read that way (a reftable repository, a
        symbolic ref): ask git then."""
        if (self.common_dir / "reftable").exists():
            return None
        try:
            value = (self.common_dir / ref).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            with contextlib.suppress(OSError):
                return packed_refs((self.common_dir / "packed-refs").read_text(errors="replace")).get(ref)
            return None
        except OSError:
            return None
        return value if len(value) in (40, 64) and all(c in "0123456789abcdef" for c in value) else None

    def write_new_ref(self, ref: str, value: str) -> bool:
        """Write the harness's own ref `ref` (a trial's, which nothing else writes) the way git
        writes a loose ref: a `.lock` file created exclusively, then renamed over the ref. Saves
        a git process per trial; False (nothing written) where git must do it: a reftable
        repository, a lock held, a path in the way."""
        if (self.common_dir / "reftable").exists() or not ref.startswith("refs/autoresearch/"):
            return False
        path = self.common_dir / ref
        lock = path.with_name(path.name + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
            os.replace(lock, path)
        except OSError:
            lock.unlink(missing_ok=True)
            return False
        return True

    def present(self, shas: set[str]) -> set[str]:
        """The objects among `shas` that the repository has (some may have been pruned)."""
        if not shas:
            return set()
        out = self.run("cat-file", "--batch-check=%(objectname)", input="".join(f"{s}\n" for s in shas))
        return {line for line in out.splitlines() if line in shas}  # a gone one reads '<sha> missing'

    def tree_of(self, commit: str) -> str:
        return self.run("rev-parse", f"{commit}^{{tree}}")

    def show_file(self, commit: str, path: str) -> str | None:
        """`path` at `commit` as text (newlines made \\n, undecodable bytes replaced)."""
        data = self.show_bytes(commit, path)
        return None if data is None else data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")

    def show_bytes(self, commit: str, path: str) -> bytes | None:
        """`path` as `commit` (or, with commit "", the index) holds it, byte for byte: no newline
        translation, no decoding (a Latin-1 byte or a CRLF must come back as it was)."""
        out = subprocess.run([GIT, *SAFE, "cat-file", "blob", f"{commit}:{path}"], cwd=self.root,
                             env=self._env, capture_output=True, start_new_session=True)
        return out.stdout if out.returncode == 0 else None

    def blob_reader(self) -> BlobReader:
        from autoresearch.objects import BlobReader

        return BlobReader(self)

    def diff(self, a: str, b: str, stat: bool = False) -> str:
        args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", a, b]
        if stat:
            args.insert(1, "--stat")
        return self.run(*args, check=False)

    def exclude(self, pattern: str) -> None:
        """Ignore `pattern` through .git/info/exclude (the user's files are not touched)."""
        path = self.common_dir / "info" / "exclude"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text() if path.exists() else ""
        if pattern not in text.splitlines():
            with path.open("a") as f:
                f.write(("" if text.endswith("\n") or not text else "\n") + pattern + "\n")

    def exclude_path(self, rel: str, write: bool = True) -> bool:
        """Ignore the one path `rel` (from the root, '/'-separated) through .git/info/exclude:
        anchored, gitignore's special characters escaped. With `write` False, only whether the
        file says so already."""
        pattern = "/" + "".join("\\" + c if c in "\\*?[]!# " else c for c in rel)
        path = self.common_dir / "info" / "exclude"
        if pattern in (path.read_text().splitlines() if path.is_file() else []):
            return True
        if write:
            self.exclude(pattern)
        return write

    # -- worktrees ----------------------------------------------------------------------

    def add_worktree(self, path: Path, commit: str) -> Workspace:
        """A new worktree at `path` checked out at `commit` (an old one there is replaced)."""
        # Also when the folder is gone: a `git worktree add` killed midway leaves its registration
        # locked ("initializing"), and a locked, missing worktree blocks every later add.
        self.remove_worktree(path)
        self._known.pop(path, None)
        clear_for_folder(self.common_dir / "worktrees")  # (a file an agent put there: no add works)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.run("worktree", "add", "--detach", "--force", str(path), commit)
        pointer = (path / ".git").read_text().strip()
        gitdir = Path(pointer.removeprefix("gitdir:").strip())
        index = path.parent / f".{path.name}.index"
        ws = Workspace(path=path, gitdir=gitdir if gitdir.is_absolute() else (path / gitdir).resolve(),
                       index=index)
        self.reset_worktree(ws, commit)
        return ws

    def remove_worktree(self, path: Path) -> None:
        self.run("worktree", "remove", "--force", "--force", str(path), check=False)
        shutil.rmtree(path, ignore_errors=True)  # (what git left: nothing, or files it could not remove)
        self.run("worktree", "prune", check=False)

    def ensure_worktree(self, ws: Workspace, commit: str) -> None:
        """Bring back a worktree that something (an agent running git) removed or unlinked."""
        if not (ws.gitdir / "HEAD").is_file() or not ws.path.is_dir():
            again = self.add_worktree(ws.path, commit)
            if again.gitdir != ws.gitdir:
                raise GitError(f"cannot recreate the worktree {ws.path} (now {again.gitdir})")
        pointer = ws.path / ".git"
        try:
            held = pointer.read_text().strip() if pointer.is_file() and not pointer.is_symlink() else ""
        except (OSError, UnicodeDecodeError):  # made unreadable: written anew
            held = ""
        if held != f"gitdir: {ws.gitdir}":
            if pointer.is_dir() and not pointer.is_symlink():
                shutil.rmtree(pointer)
            else:
                pointer.unlink(missing_ok=True)
            pointer.write_text(f"gitdir: {ws.gitdir}\n")
        common = ws.gitdir / "commondir"  # git's own value; an agent may have pointed it elsewhere
        with contextlib.suppress(OSError):
            if common.read_text().strip() not in ("../..", str(self.common_dir)):
                common.unlink()
                common.write_text("../..\n")

    def reset_worktree(self, ws: Workspace, commit: str) -> None:
        """Make the worktree exactly `commit`: tracked files restored, everything else removed.
        An experiment may have made it so that git cannot (a folder without write permission, a
        file made immutable): permissions are given back and, failing that, the worktree is set
        aside (a warning names it) and made anew in its place."""
        try:
            self._reset(ws, commit)
            return
        except (GitError, OSError):  # (OSError: a `.git` pointer it cannot read)
            writable(ws.path)
        try:
            self._reset(ws, commit)
        except (GitError, OSError) as e:
            aside = ws.path.with_name(f".{ws.path.name}.unusable-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                os.rename(ws.path, aside)
            except OSError:
                raise e from None
            sys.stderr.write(f"autoresearch: warning: git could not reset the worktree {ws.path} ({e}); it was "
                             f"moved to {aside} (remove it when you can) and made anew\n")
            self.run("worktree", "prune", check=False)
            self._known.pop(ws.path, None)
            self.add_worktree(ws.path, commit)
            self._reset(ws, commit)

    def _reset(self, ws: Workspace, commit: str) -> None:
        self.ensure_worktree(ws, commit)
        env = self.wt_env(ws)
        for stale in (ws.index.with_name(ws.index.name + ".lock"), ws.gitdir / "HEAD.lock"):
            stale.unlink(missing_ok=True)
        head = ws.gitdir / "HEAD"
        try:  # an agent's `git checkout BRANCH` attached the worktree: detach it, or the reset moves BRANCH
            attached = head.read_text().startswith("ref:")
        except OSError:
            attached = False
        if attached:
            self.run("update-ref", "--no-deref", "HEAD", commit, env=env, cwd=ws.path)
        known = self._known.get(ws.path)
        cleaned = known is not None and remove_unknown(ws.path, known[1])  # first: relative to its commit
        if not cleaned:
            remove_specials(ws.path)  # (a FIFO named .gitattributes holds git's read forever)
        trusted = self.index_untouched(ws)
        self.run("reset", "-q", "--hard", commit, env=env, cwd=ws.path)
        if not trusted:  # `reset` trusted the stat of each file in an index the agent or the
            # experiment may have written (a stat forged to match, a flag): rebuilt from the
            # commit, every file is compared by content, and one that differs is written again
            self.run("read-tree", commit, env=env, cwd=ws.path)
            self.run("update-index", "-q", "--refresh", env=env, cwd=ws.path, check=False)
            differ = self.run("diff-files", "--name-only", "-z", env=env, cwd=ws.path, strip=False)
            if differ.strip("\0"):
                self.run("checkout-index", "-f", "-z", "--stdin", env=env, cwd=ws.path, input=differ)
        if not cleaned:
            self.run("clean", "-q", "-ffdx", env=env, cwd=ws.path)
        if known is None or known[0] != commit:  # (back at that commit, the same files: still true)
            self._known.pop(ws.path, None)
        self.index_untouched(ws, left=True)
        publish(ws)


    def remember(self, ws: Workspace, commit: str, entries: dict[str, tuple[bool, int]] | None) -> None:
        """What the worktree holds now that it is `commit` (its files and their folders), so that
        the next reset cleans the rest without a git process; nothing (git cleans) when ignored
        files were there or a repository sits inside it."""
        if entries is None or any(rel.endswith("/.git") or "/.git/" in rel for rel in entries):
            self._known.pop(ws.path, None)
            return
        files = {rel for rel, (is_dir, _) in entries.items() if not is_dir}
        self._known[ws.path] = (commit, files | {rel.rsplit("/", i)[0] for rel in files
                                                 for i in range(1, rel.count("/") + 1)})

    def touched(self, ws: Workspace, stamps: dict[str, tuple[int, int]]) -> list[str]:
        """Of the regular files and their `stamps` (filetree.ctimes, now), those written since
        the harness last left the worktree (a ctime no process can set back): every one, when
        it has not left it yet."""
        seen = self._indexes.get(ws.index, ("", {}))[1]
        return [rel for rel, stamp in stamps.items() if seen.get(rel) != stamp]

    def index_untouched(self, ws: Workspace, left: bool = False, entries: dict[str, tuple[bool, int]] | None = None,
                        stamps: dict[str, tuple[int, int]] | None = None) -> bool:
        """Whether git's stats in the private index can be trusted: it is as the harness's git
        left it (`left`: it is, now), and no file changed in the second git saw it (git compares
        whole seconds; the ctime's nanoseconds, which no process can set, tell)."""
        try:
            sha, written = hashlib.sha256(ws.index.read_bytes()).hexdigest(), int(ws.index.stat().st_mtime)
        except OSError:  # (gone: nothing to trust)
            sha, written = "", 0
        now = ctimes(ws.path, entries) if stamps is None else stamps  # (stamps: the caller just took them)
        if left:
            self._indexes[ws.index] = (sha, now)
        held, seen = self._indexes.get(ws.index, ("", {}))  # (a file with an mtime of the index's second or later,
        unseen = any(rel in now and now[rel] != (c, m) and now[rel][0] // 10**9 == c // 10**9 and m // 10**9 < written
                     for rel, (c, m) in seen.items())  # git reads again itself: "racily clean")
        return bool(sha) and held == sha and not unseen

    def snapshot(self, ws: Workspace, parent: str, message: str,
                 max_file_bytes: int = MAX_FILE_BYTES) -> tuple[str, list[Change], str]:
        """Commit the worktree's content as a child of `parent` (snapshot.take says how)."""
        from autoresearch.snapshot import take
        return take(self, ws, parent, message, max_file_bytes)


def publish(ws: Workspace, commit: str | None = None) -> None:
    """Show git commands run in the worktree (the agent's, the experiment's) what the harness
    made: HEAD at `commit` (detached) and the harness's index, so that `git rev-parse HEAD` names
    the trial's commit and `git status` is clean. One-way: the harness never reads them back."""
    try:
        if commit:
            tmp = ws.gitdir / "HEAD.autoresearch"
            tmp.write_text(commit + "\n")
            os.replace(tmp, ws.gitdir / "HEAD")
        tmp = ws.gitdir / "index.autoresearch"
        shutil.copyfile(ws.index, tmp)
        os.replace(tmp, ws.gitdir / "index")
    except OSError:  # a worktree an agent took apart: the next reset remakes it
        pass
