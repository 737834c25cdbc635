"""`autoresearch trial`: the uncommitted change of the task repository as the next trial.

For an agent that drives itself (program.md style): it edits the editable files in the task
repository, runs `autoresearch trial -m "what I changed"`, and reads the verdict. The change is
laid over the tag's best commit in the harness's own worktree and judged like any trial. The
changed editable files are then set to the best code in the user's working tree (so a discarded
change is rewound and a kept one stays), unless rewind=False; changes outside the editable scope
(which make the trial rejected) are left as they are, and so is the editable change beside them
(it was not measured).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shlex
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from autoresearch import sandbox
from autoresearch.agents.base import AgentError, BaseAgent, Context, Proposal
from autoresearch.errors import UsageError
from autoresearch.events import Events
from autoresearch.gitrepo import Git
from autoresearch.gitstatus import status_entries
from autoresearch.loop import Loop, Options
from autoresearch.pin import check_before
from autoresearch.records import Status, Trial
from autoresearch.session import ahead_of_tag, differing_paths, open_session, refuse_tag_checked_out
from autoresearch.task import Task


def working_changes(git: Git, task: Task) -> list[str]:
    """Paths of the user's working tree that differ from HEAD: tracked ones, and untracked
    ones the task would consider (editable or protected)."""
    out = git.run("status", "--porcelain", "-z", "-uall", "--no-renames", check=False, strip=False)
    paths = []
    for code, path in status_entries(out):
        if path.startswith(".autoresearch/"):
            continue
        if code == "??" and not (task.is_editable(path) or task.is_protected(path)):
            continue
        if code == "??" and ("__pycache__" in path.split("/") or path.endswith((".pyc", ".pyo"))):
            continue  # (python's bytecode of a run of yours, not a change)
        paths.append(path)
    return paths


def touched_editable(task: Task, commit: str, parent: str) -> bool:
    """Whether the commit changed an editable file (a change only outside them leaves none to rewind)."""
    return any(task.is_editable(p) for p in differing_paths(Git(task.root), parent, commit))


def changed_outside(task: Task) -> list[str]:
    """The user's changes outside the editable files (which make every trial rejected)."""
    return [p for p in working_changes(Git(task.root), task) if not task.is_editable(p)]


def shell_word(path: str) -> str:
    """`path` as one word a shell reads back, safe to print: shlex's quoting, or for a name with
    control characters (terminal escapes an agent put in it) bash's $'...' with them spelt out."""
    if all(ch.isprintable() for ch in path):
        return shlex.quote(path)
    spelt = ("\\" + ch if ch in "\\'" else ch if ch.isprintable()
             else f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\U{ord(ch):08x}" for ch in path)
    return "$'" + "".join(spelt) + "'"


def distance(a: str, b: str) -> int:
    """How many lines differ between two texts (replaced, added or removed)."""
    x, y = a.splitlines(), b.splitlines()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2
               in difflib.SequenceMatcher(None, x, y, autojunk=False).get_opcodes() if tag != "equal")


def keeps_none(head: str, best: str, working: str) -> bool:
    """Whether `working` holds none of the lines `best` wrote over `head`: then it is HEAD's
    version edited (`git checkout -- FILE` after a `git reset`), not the best code edited, and
    taking it whole would undo all the tag kept."""
    h, b, w = head.splitlines(), best.splitlines(), working.splitlines()
    new = {j for tag, _, _, j1, j2 in difflib.SequenceMatcher(None, h, b, autojunk=False).get_opcodes()
           if tag != "equal" for j in range(j1, j2)}
    kept = {j for m in difflib.SequenceMatcher(None, b, w, autojunk=False).get_matching_blocks()
            for j in range(m.a, m.a + m.size)}
    return bool(new) and not new & kept


def merge3(base: str, ours: str, theirs: str) -> str | None:
    """Both edits of `base` in one text, line by line: `ours` and `theirs` may change lines next
    to each other (the constants at the top of a file), not the same ones differently. None on a
    conflict."""
    b, o, t = base.splitlines(keepends=True), ours.splitlines(keepends=True), theirs.splitlines(keepends=True)

    def edits(new: list[str]) -> list[tuple[int, int, list[str]]]:
        out = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, b, new, autojunk=False).get_opcodes():
            if tag == "replace" and i2 - i1 == j2 - j1:  # line for line: each line its own edit
                out += [(i1 + k, i1 + k + 1, [new[j1 + k]]) for k in range(i2 - i1) if b[i1 + k] != new[j1 + k]]
            elif tag != "equal":
                out.append((i1, i2, new[j1:j2]))
        return out

    changes = sorted(edits(o) + edits(t), key=lambda e: (e[0], e[1]))
    out: list[str] = []
    at = 0
    last: tuple[int, int, list[str]] | None = None
    for i1, i2, lines in changes:
        if last is not None and (i1, i2, lines) == last:
            continue  # the same edit on both sides
        if i1 < at or (last is not None and i1 == last[0] and (i1 == i2 or last[0] == last[1])):
            return None  # overlapping edits, or two insertions at one place
        out += b[at:i1] + lines
        at = i2
        last = (i1, i2, lines)
    return "".join(out + b[at:])


class WorkingTreeAgent(BaseAgent):
    """Copies the user's changed files into the trial's worktree."""

    name = "self"

    def __init__(self, root: Path, paths: list[str], description: str, tag: str,
                 left: dict[str, str] | None = None) -> None:
        self.root = root
        self.tag = tag
        self.paths = paths
        self.description = description
        self.left = left or {}  # path -> the commit whose version of it a trial left in the tree
        self.started: dict[str, str] = {}  # path -> the commit whose version the user edited ('': none)
        self.whole: set[str] = set()  # the paths taken as they are: an edit of the best code

    def propose(self, ctx: Context) -> Proposal:
        git = Git(self.root)
        for rel in self.paths:
            src, dst = self.root / rel, ctx.workdir / rel
            try:
                merged = self._laid_over(git, rel, src, dst, ctx.best.commit or "")
            except AgentError as e:  # (the record still says what you tried: `-m` before the error,
                said = " ".join(self.description.split())  # cut so that the reason, 500 characters,
                said = said if len(said) <= 100 else said[:99].rstrip() + "…"  # keeps the advice)
                raise AgentError(f"{said} ({e})") from None
            folder = src.is_dir() and not src.is_symlink()  # a file made a folder: its files are paths of their own
            if merged is not None:
                dst.write_bytes(merged)
            elif not folder and (src.is_symlink() or src.exists()):
                dst.parent.mkdir(parents=True, exist_ok=True)
                if dst.exists() or dst.is_symlink():
                    dst.unlink()
                shutil.copy2(src, dst, follow_symlinks=False)
            elif dst.is_symlink() or dst.is_file():
                dst.unlink()
        ctx.log(f"working-tree change: {', '.join(self.paths) or '(none)'}")
        return Proposal(description=self.description)

    def _laid_over(self, git: Git, rel: str, src: Path, dst: Path, parent: str) -> bytes | None:
        """The user's edit of `rel` (from what they started from to the working tree) laid over
        the best code (`dst`, `parent`'s) by a three-way merge; None where there is nothing to
        merge (the file is new, deleted, or the best code is what the user started from: then the
        working file is the change). What it started from is kept in `started`."""
        self.started[rel] = ""
        if src.is_symlink() or not src.is_file() or dst.is_symlink() or not dst.is_file():
            return None
        # git's own bytes of each version (the worktrees' may have other line ends: core.autocrlf)
        head_bytes, best_bytes = git.show_bytes("HEAD", rel), git.show_bytes(parent, rel) or dst.read_bytes()
        held = git.show_bytes(self.left[rel], rel) if rel in self.left else None
        working_bytes = src.read_bytes()
        if b"\r\n" in working_bytes and not any(b"\r" in x for x in (head_bytes, best_bytes, held) if x):
            working_bytes = working_bytes.replace(b"\r\n", b"\n")  # CRLF in your checkout only
        if head_bytes is None and held is None:
            return None  # (a file your HEAD lacks and no trial left: new, the change as it is)
        if head_bytes == best_bytes or git.show_bytes("", rel) == best_bytes:  # (staged: `git checkout
            self.started[rel] = parent  # autoresearch/T -- FILE`, then edited)
            self.whole.add(rel)
            return None
        # (texts decoded so that every byte comes back as it was: CRLF, Latin-1, binary)
        head, best, left, working = (None if x is None else x.decode("utf-8", "surrogateescape")
                                     for x in (head_bytes, best_bytes, held, working_bytes))
        # What the user started from: the checkout's HEAD or the best code, whichever is nearer;
        # where an earlier `trial` left a best code in the working tree (it keeps a note), that
        # one too, tried where the nearer conflicts (an edit that also takes out a line the best
        # added looks nearer HEAD; `git checkout -- FILE` after a trial leaves HEAD's version).
        # A file your HEAD lacks (an earlier trial added it) started from what a trial left.
        starts = sorted([x for x in ((best, parent) if left is None else (left, self.left[rel]),
                                     (head, git.rev("HEAD") or "")) if x[0] is not None],
                        key=lambda x: distance(working or "", x[0] or ""))
        if left is None:
            starts = starts[:1]
        for n, (start, commit) in enumerate(starts):
            self.started[rel] = commit
            if start == best:
                if n and keeps_none(head or "", best or "", working or ""):
                    continue  # HEAD's version edited, which conflicts: not the best code edited
                self.whole.add(rel)
                return None  # the working file is the best code edited: as it is
            merged = merge3(start or "", best or "", working or "")
            if merged is not None:
                return merged.encode("utf-8", "surrogateescape")
        take = f"git -C {shlex.quote(str(git.root))} checkout autoresearch/{self.tag} -- {shlex.quote(rel)}"
        raise AgentError(f"your change to {rel} conflicts with the tag's best code (it is left as it is "
                         f"in your working tree); take the best code (`{take}`, which overwrites the "
                         "file: keep a copy of your edit first), then make the change again")


def refuse_conflicts(agent: WorkingTreeAgent, best: str) -> None:
    """Lay each of the agent's files over `best` as `propose` will (in a scratch folder holding
    the best's versions), and refuse a change that conflicts with it: it would be judged as
    nothing, an agent_error row in the ledger (a crash in results.tsv) that never ran."""
    import tempfile

    git = Git(agent.root)
    with tempfile.TemporaryDirectory(prefix="autoresearch-merge-") as scratch:
        for rel in agent.paths:
            content = git.show_bytes(best, rel)
            if content is None:
                continue
            dst = Path(scratch) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(content)
            try:
                agent._laid_over(git, rel, agent.root / rel, dst, best)
            except AgentError as e:
                raise UsageError(f"nothing was run or recorded: {e}") from None


def changed_paths(git: Git, task: Task, tag: str) -> list[str]:
    """The paths of the user's change that `trial` judges; refused when there is none, or when
    it adds a protected file that no commit holds."""
    changed = working_changes(git, task)
    # a file the last `trial` left (a kept trial's new file, staged) that you have since taken
    # away (`git rm`) is as HEAD has it, so `git status` does not show it: still a change
    left_there = read_left(task.root / ".autoresearch" / tag / LEFT_NOTE, git.rev("HEAD"))
    changed += sorted(p for p, commit in left_there.items() if p not in changed and task.is_editable(p)
                      and not (task.root / p).exists() and not (task.root / p).is_symlink()
                      and not as_left(git, task.root, p, commit))
    if not changed:  # judged, it would be an empty change in the ledger: say it, record nothing
        raise UsageError("nothing to judge: your working tree has no uncommitted change (a change you "
                         "committed can be uncommitted with `git reset --soft HEAD~1`)")
    new = [p for p in changed if task.is_protected(p) and git.show_file("HEAD", p) is None]
    if new:
        shown = " ".join(shlex.quote(p) for p in new)
        raise UsageError(f"{', '.join(new)} {'is' if len(new) == 1 else 'are'} protected and not committed, and "
                         f"a tag's trials run its own commits: commit {'it' if len(new) == 1 else 'them'} alone "
                         f"(`git add {shown} && git commit -m 'add {' '.join(new)}' -- {shown}`)"
                         + (", then start a new --tag, whose baseline is your HEAD"
                            if (task.root / ".autoresearch" / tag / "ledger.sqlite").exists() else ""))
    return changed


def refuse_best_as_is(git: Git, task: Task, tag: str, paths: list[str], left: dict[str, str],
                      best_now: str | None) -> None:
    """Refuse a working tree whose editable files are the tag's best code, as it is or as the
    last `trial` left it: nothing in it to judge."""
    if best_now and all(task.is_editable(p) and as_left(git, task.root, p, best_now) for p in paths):
        raise UsageError(f"nothing to judge: your editable files are the tag's best code (autoresearch/{tag}); "
                         "trial judges an uncommitted change to them")
    if all(task.is_editable(p) and p in left and as_left(git, task.root, p, left[p]) for p in paths):
        stale = [p for p in paths if best_now and not as_left(git, task.root, p, best_now)]
        raise UsageError("nothing to judge: your editable files are the best code, as the last `trial` left "
                         + ("them; trial judges an uncommitted change to them" if not stale else
                            "them, and the tag's best has moved on since: `git checkout autoresearch/"
                            f"{tag} -- {' '.join(shlex.quote(p) for p in stale)}` takes it; then make a change"))


def leave_working_tree(git: Git, task: Task, agent: WorkingTreeAgent, trial: Trial, best: Trial,
                       rewind: bool, note: Path, head: str | None) -> None:
    """After the verdict: the judged change rewound to the best code in the user's files (unless
    `rewind` is off), and the note of what they now go on from written for the next `trial`."""
    left = agent.left
    # a change that was never judged (it conflicted, or the trial was stopped) stays as it is:
    # no commit holds it; a judged one is in the trial's commit, and is rewound to the best
    judged = trial.status not in (Status.AGENT_ERROR, Status.INTERRUPTED)
    # rejected for your change outside the editable files: the editable part was never
    # measured, so it stays for the next `trial`, once the change outside is undone
    if trial.status is Status.REJECTED and any(not task.is_editable(p) for p in agent.paths):
        rewind = False
    if rewind and best.commit and judged:
        done = rewind_to(git, task, best.commit, agent.paths)
        write_left(note, head, {**left, **{rel: best.commit for rel in done}})
    elif not rewind and trial.commit and judged:
        # the next trial's merge needs what your files go on from: what they started from (a
        # discarded change is yours to go on with); a file kept as it was, or new, is the trial's
        kept = trial.status is Status.KEEP  # (a new file not kept: taken whole next time too)
        started = {rel: trial.commit if kept and (not c or rel in agent.whole) else c
                   for rel, c in agent.started.items() if task.is_editable(rel) and (c or kept)}
        write_left(note, head, {**left, **started})


def run_working_tree_trial(task: Task, tag: str, description: str, rewind: bool = True,
                           events: Events | None = None, seed: int = 0,
                           runner: Callable[[Loop], Trial] = Loop.run) -> tuple[Trial, Trial]:
    """Judge the working tree's change; returns (the trial, the best after it). `runner` runs
    the loop (the command line's stops it cleanly on Ctrl-C, recording the trial as interrupted)."""
    git = Git.open(task.root)
    refuse_tag_checked_out(git, tag, "a kept trial moves it under your working tree")
    paths = changed_paths(git, task, tag)
    check_before(task, tag)  # (refused before the line on the tag's sandbox)
    sandboxed = sandbox.for_tag(task.root, tag, None, trial=True)  # (as `run` of the tag last ran)
    session = open_session(task, tag, allow_dirty=True)
    try:
        note = session.dir / LEFT_NOTE
        head = session.git.rev("HEAD")
        left = read_left(note, head)
        best_now = session.git.rev(f"refs/heads/autoresearch/{tag}")
        refuse_best_as_is(session.git, task, tag, paths, left, best_now)
        if best_now:  # a conflict with the best is refused now, before a number or a row is spent on it
            refuse_conflicts(WorkingTreeAgent(task.root, paths, description, tag, left), best_now)
        agent = WorkingTreeAgent(task.root, paths, description, tag, left)
        loop = Loop(session, agent, Options(trials=1, seed=seed, sandbox=sandboxed), events)
        if not session.resumed or session.restarted:  # (the tag was taken by default: today's date, say)
            loop.events.message(f"autoresearch: new tag {tag} on branch autoresearch/{tag}, ledger {session.dir}: "
                                "its baseline (trial 0: your HEAD's code) is measured first, then your change")
        if ahead := ahead_of_tag(session):  # (a commit of yours since the tag began: not in its trials)
            loop.events.message(ahead)
        number = session.ledger.next_number()
        best = runner(loop)
        trial = session.ledger.get(session.ledger.next_number() - 1)
        if trial is None or trial.number < number or trial.agent != agent.name:  # (a baseline, at most)
            raise KeyboardInterrupt  # stopped before the trial was opened: nothing judged, nothing rewound
        if not loop.cancel.is_set():  # (for `status`: not "--trials 1 done")
            loop.record_end("an `autoresearch trial` call")
        leave_working_tree(session.git, task, agent, trial, best, rewind, note, head)
        return trial, best
    finally:
        session.close()


LEFT_NOTE = "working-tree.json"  # in the tag's folder: what `trial` left in the user's files


def as_left(git: Git, root: Path, rel: str, commit: str) -> bool:
    """Whether the user's `rel` is byte for byte what `commit` holds (absent where it has none)."""
    try:
        mine: bytes | None = (root / rel).read_bytes()
    except FileNotFoundError:
        mine = None
    except OSError:
        return False
    return mine == git.show_bytes(commit, rel)


def read_left(note: Path, head: str | None) -> dict[str, str]:
    """The note of which commit's version of each editable file `trial` last left in the user's
    working tree (so that the next change is known to be an edit of that, not of HEAD); none
    once the checkout's HEAD has moved."""
    try:
        data = json.loads(note.read_text())
        files = data["files"] if data["head"] == head else {}
    except (OSError, ValueError, TypeError, KeyError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)
            and re.fullmatch(r"[0-9a-f]{40,64}", v)}


def write_left(note: Path, head: str | None, left: dict[str, str]) -> None:
    tmp = note.with_name(note.name + ".tmp")
    try:
        tmp.write_text(json.dumps({"head": head, "files": left}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, note)
    except OSError:
        pass  # only a hint for the next trial: without it the nearer of HEAD and the best is taken


def put_file(target: Path, content: bytes) -> None:
    """`content` at `target`, a file of its own: a link there (symbolic, or a hard link that other
    names share) is replaced, never written through (it may point at anything of yours)."""
    try:
        st = target.lstat()
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
        target.write_bytes(content)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.autoresearch-{os.getpid()}")
    tmp.write_bytes(content)
    if st is not None and stat.S_ISREG(st.st_mode):
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
    os.replace(tmp, target)


def rewind_to(git: Git, task: Task, commit: str, paths: list[str]) -> list[str]:
    """Set the user's editable files among `paths` to `commit`'s (deleting those it lacks), and
    stage that: the index holds the best code, never a discarded change. `git diff` then shows
    only the next edit, `git checkout -- FILE` brings the best back, and an edit that reverts a
    line of the best is read as an edit of the best (a staged best is taken as the start)."""
    done, gone = [], []
    for rel in sorted(paths, reverse=True):  # a folder's files before it: one made of a file may then be empty
        if not task.is_editable(rel):  # the user's own work outside the scope stays as it is
            continue
        content = git.show_bytes(commit, rel)
        target = task.root / rel
        if target.is_dir() and not target.is_symlink():  # a folder where the file was: taken away
            for cache in target.rglob("__pycache__"):  # when empty but for python's bytecode (its
                shutil.rmtree(cache, ignore_errors=True)  # files rewound), else left as it is
            with contextlib.suppress(OSError):
                for folder in sorted((d for d in target.rglob("*") if d.is_dir()), reverse=True):
                    folder.rmdir()
                target.rmdir()
            if target.is_dir():
                continue
        if content is None:
            if target.exists() or target.is_symlink():
                target.unlink()
            gone.append(rel)
        else:
            put_file(target, content)
        done.append(rel)
    literal = {"GIT_LITERAL_PATHSPECS": "1"}  # `lib[1].py` names that file, not a glob over lib1.py
    if gone:
        git.run("rm", "-q", "--cached", "--ignore-unmatch", "--", *gone, env=literal, check=False)
    if len(gone) < len(done):
        git.run("add", "--", *[rel for rel in done if rel not in gone], env=literal, check=False)
    return done
