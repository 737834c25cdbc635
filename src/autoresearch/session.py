"""Opening a tag: the clean-repo check, the branch, the ledger, resume and the trials' refs
(setup: setupstep.py).

On resume, whatever a killed loop left is repaired before anything runs: trials recorded as
running become `interrupted` (with their commit if it was made), experiment processes it left
are killed, stale git lock files of ours are removed, missing trial refs are recreated from the
ledger, and the branch is set to the best kept trial.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from autoresearch.errors import UsageError
from autoresearch.filetree import remove_endless, remove_path
from autoresearch.gitlocks import stale_since
from autoresearch.gitrepo import Git, GitError, Workspace
from autoresearch.ledger import LEDGER_DIR, Ledger, ignore_in_git, tag_dir
from autoresearch.pin import check_measurement
from autoresearch.process import kill_all_owned
from autoresearch.records import Status, Trial
from autoresearch.task import TASK_FILE, Task
from autoresearch.watchdog import start as start_watchdog
from autoresearch.worktreewatch import unlock_under

PACK_EVERY = 100  # trials between packings of the refs (write_refs)


def branch_ref(tag: str) -> str:
    return f"refs/heads/autoresearch/{tag}"


def trial_ref(tag: str, number: int) -> str:
    return f"refs/autoresearch/{tag}/trials/{number}"


@dataclass
class Session:
    task: Task
    git: Git
    ledger: Ledger
    tag: str
    base: str
    resumed: bool
    user_head: str | None
    watchdog: subprocess.Popen[bytes] | None = None
    lifeline: int | None = None  # the watchdog's pipe: closed when the loop ends (or dies)
    restarted: bool = False  # a tag with no trial yet, started again from HEAD
    sealed: tuple[Path, ...] = ()  # what every seal hides besides the ledgers (a local MLflow store: the holdout)

    @property
    def dir(self) -> Path:
        return self.ledger.dir

    @property
    def owner(self) -> str:
        return str(self.dir)

    def workspace(self, slot: int, commit: str) -> Workspace:
        return self.git.add_worktree(self.dir / "worktrees" / f"w{slot}", commit)

    def close(self) -> None:
        """Stop what the loop started and take its worktrees away (every trial is a commit: a
        worktree holds nothing else once the loop is over)."""
        kill_all_owned([self.owner, f"agent:{self.owner}"])
        try:
            shutil.rmtree(self.dir / "worktrees", ignore_errors=True)
            unlock_under(self.git.common_dir, self.dir / "worktrees")  # (one an agent locked would stay listed)
            self.git.run("worktree", "prune", check=False)
        finally:
            self.stop_watchdog()  # before the tag's lock goes: it must not outlast it
            self.ledger.close()

    def stop_watchdog(self) -> None:
        if self.lifeline is not None:
            os.close(self.lifeline)  # the watchdog finds nothing left, and exits
            self.lifeline = None
        if self.watchdog is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.watchdog.wait(timeout=5)


def open_session(task: Task, tag: str, allow_dirty: bool = False) -> Session:
    """Create or resume the tag's branch and ledger and take the tag's lock."""
    if task.setup:  # (a bad AUTORESEARCH_SETUP_TIMEOUT: said before anything is made)
        from autoresearch.setupstep import setup_timeout
        setup_timeout()
    if (task.root / ".git").is_dir():  # a FIFO an agent left in .git (a loop killed before its
        left = remove_endless(task.root / ".git")  # guard looked) would hang every git command
        if left:
            sys.stderr.write(f"autoresearch: warning: removed from .git what git would wait on forever "
                             f"(a FIFO or a device, which git never makes): {', '.join(left[:5])}\n")
    git = Git.open(task.root)
    if not git.has_commits():
        raise UsageError(f"{task.root} has no commits yet: commit the task first")
    git.exclude(f"/{LEDGER_DIR}/")
    shield(git, task.root / LEDGER_DIR)
    exists = (tag_dir(task.root, tag) / "ledger.sqlite").exists()
    check_checkout(git, tag, exists, allow_dirty)
    if not exists:
        _refuse_dirty(git, allow_dirty)
        _refuse_ignored_editable(git, task)
        _check_new_tag(git, task, tag)
    ledger = Ledger.open(task.root, tag, task.metric.name)
    ledger.acquire()
    try:
        restarted = exists and not ledger.trials()  # (a tag with no trial takes the task file as it is)
        if exists and not restarted:
            check_measurement(ledger, task, tag)
        ledger.set_meta("measurement", json.dumps(task.measurement(), sort_keys=True))
        if not exists or ledger.get_meta("base") is None or restarted:
            if restarted:
                _refuse_dirty(git, allow_dirty)  # (a fix not committed would be left out)
                _refuse_ignored_editable(git, task)
            _start_tag(git, ledger, task, tag, exists)
        base = ledger.get_meta("base") or git.head()
        session = Session(task=task, git=git, ledger=ledger, tag=tag, base=base, resumed=exists,
                          user_head=git.rev("HEAD"), restarted=restarted)
        if exists:
            repair(session)  # first: it frees what a stopped loop left (a full run folder, say)
        ledger.set_meta("holdout", task.metric.holdout or "")  # for the views: the sealed figure
        ledger.set_meta("min_delta", str(task.acceptance.min_delta))
        ledger.export_tsv()
        # last: from here on the caller closes the session, which stops the watchdog
        session.watchdog, session.lifeline = start_watchdog([session.owner, f"agent:{session.owner}", f"ray:{session.owner}"])
    except BaseException:
        ledger.close()
        raise
    return session


def refuse_tag_checked_out(git: Git, tag: str, why: str) -> None:
    """A loop (or a trial) moves the tag's branch: refused while it is the checked-out one."""
    if git.run("symbolic-ref", "-q", "HEAD", check=False).strip() == branch_ref(tag):
        raise UsageError(f"you have autoresearch/{tag} checked out, and {why}: check out another branch "
                         f"first (e.g. {git.away_hint()})")


def check_checkout(git: Git, tag: str, exists: bool, allow_dirty: bool) -> None:
    """The tag's branch is not checked out, and a resumed tag's task file is the committed one."""
    if allow_dirty:
        return
    refuse_tag_checked_out(git, tag, "the loop moves it")
    # the task file is read from your checkout: what a resumed run measures by must be what is
    # committed (an agent that widened `editable` there is noticed)
    if exists and TASK_FILE in git.dirty_paths():
        raise UsageError(f"{TASK_FILE} has uncommitted changes: commit them to resume tag {tag} with them, "
                         f"or undo them (`git -C {shlex.quote(str(git.root))} checkout -- {TASK_FILE}`)")


def _teed() -> set[tuple[int, int]]:
    """(device, inode) of the files written by the programs that read this process's stdout or
    stderr through a pipe, in its process group: `autoresearch run | tee loop.log` (Linux's /proc;
    elsewhere, none)."""
    pipes = set()
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if (target := os.readlink(f"/proc/self/fd/{fd}")).startswith("pipe:"):
                pipes.add(target)
    files: set[tuple[int, int]] = set()
    for pid in os.listdir("/proc") if pipes else []:
        with contextlib.suppress(OSError, ValueError):
            if not pid.isdigit() or int(pid) == os.getpid() or os.getpgid(int(pid)) != os.getpgrp():
                continue
            if os.readlink(f"/proc/{pid}/fd/0") in pipes:  # (tee: what it writes besides its stdout)
                for held in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        st = os.stat(f"/proc/{pid}/fd/{held}")
                        if stat.S_ISREG(st.st_mode):
                            files.add((st.st_dev, st.st_ino))
    return files


def _own_output(git: Git, paths: list[str]) -> list[str]:
    """Of `paths`, the files this process's stdout or stderr write to: `autoresearch run >
    loop.log` (or nohup's nohup.out, or `| tee loop.log`) from the task's folder, made before
    the loop started. They are not the user's uncommitted work: git-ignored through .git/info/exclude as
    the ledger is (not while a loop runs there, which watches that file), so the next run is
    not refused for the last one's log either."""
    mine = _teed()
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                mine.add((st.st_dev, st.st_ino))
    own = []
    for path in paths if mine else []:
        with contextlib.suppress(OSError):
            st = os.lstat(git.root / path)
            if (st.st_dev, st.st_ino) in mine:
                own.append(path)
    ignore_in_git(git, own)
    return own


def _refuse_dirty(git: Git, allow_dirty: bool) -> None:
    dirty = [p for p in git.dirty_paths() if not p.startswith(f"{LEDGER_DIR}/")]
    if dirty and not allow_dirty:
        own = _own_output(git, dirty)
        dirty = [p for p in dirty if p not in own]
    if TASK_FILE in dirty and not allow_dirty:  # (a task file just written: stashed, as the
        others = [p for p in dirty if p != TASK_FILE]  # line below says, it would be gone)
        also = f" (so are {', '.join(others[:5])}{' ...' if len(others) > 5 else ''})" if others else ""
        raise UsageError(f"{TASK_FILE} is not committed as it stands{also}: a new tag starts from your "
                         f"HEAD, its trials run the committed code and task file; commit it first "
                         f"(`git add {TASK_FILE} && git commit -m 'the autoresearch task'`)")
    if dirty and not allow_dirty:
        shown = ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else "")
        raise UsageError(f"the repository has uncommitted changes ({shown}): commit or stash them first "
                         "(`git stash -u` takes untracked files too; trials run the committed code; output "
                         "folders belong in .gitignore)")


def _refuse_ignored_editable(git: Git, task: Task) -> None:
    """An editable file that git ignores and does not hold is in no trial's commit: the agent's
    change to it could never be kept (and `shared`, which the baseline's failure would suggest,
    may not hold an editable file)."""
    from autoresearch.task import glob_match, list_files

    tracked = set(git.run("ls-files", "-z", strip=False).split("\0"))
    files = list_files(task.root)
    for glob in task.editable:
        if any(c in glob for c in "*?[") and len(task.editable) > 1:  # (may name files yet to be made)
            continue
        on_disk = [f for f in files if glob_match(f, glob) and not task.is_protected(f)]
        if not on_disk or any(f in tracked for f in on_disk):
            continue
        said = git.run("check-ignore", "-z", "--stdin", input="\0".join(on_disk) + "\0", check=False,
                       strip=False).split("\0")
        hit = next((f for f in on_disk if f in said), None)
        if hit is not None:
            raise UsageError(f"{TASK_FILE}: 'editable' names {hit!r}, which git ignores and does not hold: trials "
                             f"run the committed code, so an agent's change to it could never be kept; commit it "
                             f"(`git add -f {shlex.quote(hit)}`, or take it out of .gitignore)")


def _check_new_tag(git: Git, task: Task, tag: str) -> None:
    """A new tag's branch name is free (no branch of the user's, no branch it would clash with)."""
    branch = branch_ref(tag)
    if git.rev(branch) and not git.refs(f"refs/autoresearch/{tag}/"):
        raise UsageError(f"a branch autoresearch/{tag} already exists, and the loop works on a branch of "
                         f"that name: choose another --tag, or rename your branch "
                         f"(`git branch -m autoresearch/{tag} NEW-NAME`)")
    if git.rev(branch):
        raise UsageError(f"branch autoresearch/{tag} exists but {tag_dir(task.root, tag)} holds no ledger (deleted, "
                         f"e.g. by `git clean -ffdx`; its trial commits are still under refs/autoresearch/{tag}/): "
                         f"choose another --tag, or free this one with `git branch -D autoresearch/{tag}`")
    clash = ["autoresearch"] if git.rev("refs/heads/autoresearch") else [
        r.removeprefix("refs/heads/") for r in git.refs(f"refs/heads/autoresearch/{tag}/")]
    if clash:
        raise UsageError(f"git cannot make branch autoresearch/{tag} beside the existing branch "
                         f"{clash[0]}: rename that branch, or choose another --tag")


def _start_tag(git: Git, ledger: Ledger, task: Task, tag: str, exists: bool) -> None:
    """Record the tag's start in the ledger, then make its branch at your HEAD.

    The ledger first, the branch last: a first run stopped in between (killed, disk full) left a
    branch without a base, and every later run refused the tag. A tag with no trial yet (its
    setup failed) starts again from your HEAD, with your fix."""
    branch = branch_ref(tag)
    old, at = ledger.get_meta("base"), git.rev(branch)
    base = git.head()
    ledger.set_meta("metric_name", task.metric.name)
    ledger.set_meta("goal", task.metric.goal)
    ledger.set_meta("created", str(time.time()))
    ledger.set_meta("user_branch", git.current_branch() or "")
    ledger.set_meta("base", base)
    verify: dict[str, str | None] | None = ({branch: None} if not exists or at is None
                                            else {branch: old} if old else None)
    try:
        git.update_refs({branch: base}, verify=verify)
    except GitError:
        if not (exists and at):
            raise
        raise UsageError(f"branch autoresearch/{tag} has commits the tag did not make (it is at {at[:7]}, "
                         f"not at {(old or '')[:7]} where the tag started): the tag has no trial yet and "
                         "would start again from your HEAD; merge that branch into yours, or delete it "
                         f"(`git branch -D autoresearch/{tag}`), then run again") from None


def write_refs(s: Session, t: Trial, best: str | None) -> dict[str, str]:
    """Make the refs say a recorded verdict: the trial's ref always, the tag's branch on keep
    (checked against `best`, where it should still point). A discarded trial's ref alone, with
    the branch where it was, is written without a git process. Every PACK_EVERY trials the
    refs are packed. Returns the refs written (name -> commit, '' for one deleted)."""
    if not t.commit:
        return {}
    kept = t.status is Status.KEEP
    branch = branch_ref(s.tag)
    quick = (not kept and best is not None and s.git.read_ref(branch) == best
             and s.git.write_new_ref(trial_ref(s.tag, t.number), t.commit))
    refs = {trial_ref(s.tag, t.number): t.commit, **({branch: t.commit} if kept else {})}
    if not quick:
        try:
            s.git.update_refs(refs, verify={branch: best} if best else None)
        except GitError:  # something moved the branch (an experiment running git): the ledger is the truth
            refs = {**refs, branch: (t.commit if kept else best) or ""}
            s.git.update_refs(refs)
    if t.number % PACK_EVERY == 0:
        # one file per trial ref made every look at the refs (the guard's, several a trial)
        # grow with the run; packed, they are one file read again only when it changes. (`--all`:
        # git before 2.42 cannot name the refs to pack; your branches are packed as git gc would.)
        mark = s.dir / "packing"  # a kill while git packs leaves its packed-refs.lock: `repair` knows it
        with contextlib.suppress(OSError):
            mark.write_text(f"{time.time()}\n")
        s.git.run("pack-refs", "--all", check=False)
        mark.unlink(missing_ok=True)
    return refs


def trial_message(s: Session, t: Trial, note: str = "") -> str:
    """A trial commit's message: the description, a note, and a trailer naming the trial (two
    trials of the same code from the same parent in one second are two commits, not one)."""
    return f"{t.description or f'trial {t.number}'}\n\n{note + chr(10) * 2 if note else ''}Autoresearch-Trial: {s.tag}/{t.number}\n"


def stand_in(s: Session, t: Trial, parent: str, note: str) -> str | None:
    """A commit of `parent`'s code for trial `t`, whose own change could not be committed (a path
    git refuses, a loop stopped first): every trial is a commit whatever its fate."""
    try:
        return s.git.run("commit-tree", s.git.tree_of(parent), "-p", parent, "-F", "-", input=trial_message(s, t, note))
    except GitError:
        return None


def hold_ref(s: Session, t: Trial) -> dict[str, str]:
    """The trial's ref, made as soon as its commit is: a `git prune` while it runs must not take
    a commit that no ref holds yet. Returns the refs written, for the guard."""
    ref = trial_ref(s.tag, t.number)
    if t.commit and not s.git.write_new_ref(ref, t.commit):
        try:
            s.git.update_refs({ref: t.commit})
        except GitError:  # a lock planted for this ref (the guard finds one seconds old): not a
            time.sleep(0.5)  # git's at work, so taken away, and the ref written
            remove_path(s.git.common_dir / f"{ref}.lock")
            try:
                s.git.update_refs({ref: t.commit})
            except GitError:  # (something else in the way, which the guard clears: the verdict writes it)
                return {}
    return {ref: t.commit} if t.commit else {}


def differing_paths(git: Git, a: str, b: str) -> list[str]:
    """The paths whose content differs between commits `a` and `b` (none when either is unknown)."""
    names = git.run("diff", "--name-only", "-z", "--no-renames", a, b, check=False, strip=False)
    return [p for p in names.split("\0") if p]


def ahead_of_tag(s: Session) -> str:
    """A note for a resumed tag when the user's HEAD holds commits that change the task's files
    from what the tag holds (a fix committed after the tag started): trials go on from the tag's
    best code, without them. A merge or squash of the tag itself, or a README edit, says nothing."""
    if not s.resumed or not s.user_head:
        return ""
    branch = branch_ref(s.tag)
    n = s.git.run("rev-list", "--count", "--no-merges", f"{branch}..{s.user_head}", check=False).strip()
    if not n.isdigit() or int(n) == 0:
        return ""
    fork = s.git.run("merge-base", branch, s.user_head, check=False).strip()  # (a file only the trials
    yours = set(differing_paths(s.git, fork, s.user_head)) if fork else None  # changed is not yours)
    files = [p for p in differing_paths(s.git, branch, s.user_head) if (yours is None or p in yours)
             and (s.task.is_editable(p) or s.task.is_protected(p))]
    if not files:
        return ""
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return (f"autoresearch: note: your HEAD has {n} commit{'s' * (n != '1')} that tag {s.tag} does not hold "
            f"({shown} differ{'s' * (len(files) == 1)}): its trials go on from its own best code, without them (a new --tag "
            "starts from your HEAD)")


def trees_of(git: Git, trials: list[Trial]) -> dict[str, int]:
    """The tree of each trial's commit -> the first of `trials` with it (a commit gone is skipped)."""
    commits = list(dict.fromkeys(t.commit for t in trials if t.commit))  # once each, in order
    if not commits:
        return {}
    # one line per commit, in order, '<name> missing' for one gone (pruned); on git's stdin, not
    # its command line, which a tag of some 38,000 trials outgrew (E2BIG: no resume at all)
    out = git.run("cat-file", "--batch-check=%(objectname)", input="".join(f"{c}^{{tree}}\n" for c in commits),
                  check=False, strip=False).splitlines()
    if len(out) != len(commits):  # (git failed): look them up one by one
        out = [git.run("rev-parse", "-q", "--verify", f"{c}^{{tree}}", check=False).strip() for c in commits]
    tree_of = dict(zip(commits, ("" if " " in line else line for line in out), strict=True))
    found: dict[str, int] = {}
    for t in trials:
        if tree_of.get(t.commit or ""):
            found.setdefault(tree_of[t.commit or ""], t.number)
    return found


def shield(git: Git, folder: Path) -> None:
    """Make the ledger folder an (empty) git repository of its own: `git clean -fdx`, a common
    `make clean`, skips a nested repository (only `-ffdx` removes one), so the record survives."""
    if not (folder / ".git").exists():
        folder.mkdir(parents=True, exist_ok=True)
        git.run("init", "-q", "--template=", str(folder), check=False)


def missing_refs(tag: str, trials: list[Trial], existing: dict[str, str]) -> dict[str, str]:
    """The trial refs of `tag` not holding their trial's commit in `existing`: ref -> commit."""
    return {trial_ref(tag, t.number): t.commit for t in trials
            if t.commit and existing.get(trial_ref(tag, t.number)) != t.commit}


def repair(s: Session) -> list[Trial]:
    """Make a killed loop's leftovers consistent; returns the trials marked interrupted."""
    kill_all_owned([s.owner, f"agent:{s.owner}"])  # the agents' processes carry agent:<ledger dir>:<n>
    _remove_stale_locks(s)
    existing = s.git.refs(f"refs/autoresearch/{s.tag}/")
    running = s.ledger.running()
    if began := [t.started for t in running if t.started > 0]:  # git locks made since the first
        # trial in flight began (an agent's, left as the loop was killed) would pass for yours
        # once the loop starts again: taken away now
        left = stale_since(s.git.common_dir, min(began) - 1)
        if left:
            sys.stderr.write(f"autoresearch: warning: removed git lock files left in .git while the loop was "
                             f"killed (by a trial in flight): {', '.join(left[:5])}\n")
    interrupted = _mark_interrupted(s, running)
    _restore_refs(s, existing)
    shutil.rmtree(s.dir / "worktrees", ignore_errors=True)
    unlock_under(s.git.common_dir, s.dir / "worktrees")
    s.git.run("worktree", "prune", check=False)
    return interrupted


def _remove_stale_locks(s: Session) -> None:
    """The lock files of the tag's refs, and packed-refs' of a pack the loop was killed in."""
    refs_dir = s.git.common_dir / "refs" / "autoresearch" / s.tag
    for stale in [*refs_dir.rglob("*.lock"), s.git.common_dir / "refs" / "heads" / "autoresearch" / f"{s.tag}.lock"]:
        remove_path(stale)
    mark = s.dir / "packing"
    if mark.exists():  # stopped while git packed the refs. A SIGKILL of the loop spares git (its own
        # session), which ends and takes its lock away; a machine that went down leaves the lock.
        # Taken away: a lock made with the mark, seconds old (git holds one for milliseconds);
        # one made later, or just now, may be another git's
        lock = s.git.common_dir / "packed-refs.lock"
        with contextlib.suppress(OSError):
            made, packing = lock.stat().st_mtime, mark.stat().st_mtime
            if packing - 1 <= made <= packing + 2 and time.time() - made > 5:
                lock.unlink()
        mark.unlink(missing_ok=True)


def _mark_interrupted(s: Session, running: list[Trial]) -> list[Trial]:
    """The trials in flight when the loop was killed, recorded as interrupted (each with a
    commit: a stand-in of its parent's where its change was never committed)."""
    runs = s.dir / "runs"
    for t in running:  # first, as they may be what filled the disk: the in-flight run folders
        for path in [*runs.glob(str(t.number)), *runs.glob(f"{t.number}.*")]:
            shutil.rmtree(path, ignore_errors=True)
    interrupted = []
    for t in running:
        commit = t.commit  # (not its ref: the loop writes one only once the ledger has the commit)
        t = t.with_(description=t.description or "(stopped before the agent described its change)")
        if not commit and t.parent:  # stopped before its change was committed: a commit of the parent's
            commit = stand_in(s, t, t.parent, "(stopped before the agent's change was committed)")
        t = t.with_(status=Status.INTERRUPTED, commit=commit, ended=time.time(),
                    reason=t.reason or "the loop stopped while this trial was in flight")
        s.ledger.finish(t)
        interrupted.append(t)
    return interrupted


def _restore_refs(s: Session, existing: dict[str, str]) -> None:
    """Every trial's ref written back where it is missing (`existing`: the refs as they were
    found), and the tag's branch on its best commit."""
    missing = missing_refs(s.tag, s.ledger.trials(), existing)
    if missing:  # (a commit pruned by someone running git gc cannot come back; it stays listed)
        for ref in [r for r in missing if existing.get(r) == ""] * 4:  # listed twice (forged): a
            s.git.run("update-ref", "-d", ref, check=False)  # delete takes one packed line
        present = s.git.present({c for c in missing.values() if c})
        s.git.update_refs({r: c for r, c in missing.items() if c in present})
    best = s.ledger.best()
    target = best.commit if best and best.commit else s.base
    if s.git.rev(branch_ref(s.tag)) != target:
        s.git.update_refs({branch_ref(s.tag): target})
