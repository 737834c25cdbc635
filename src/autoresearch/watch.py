"""Everything an agent or an experiment must not change, looked at after each of them runs.

One `Watch` per loop holds the guards: git's metadata and the loop's refs (guard.GitGuard), the
record (Ledger.check_and_restore), the python experiments run (envguard.EnvGuard) and the
other programs the task's commands name (pathwatch.PathWatch), the best
code's git objects (objects.ObjectWatch), what setup made (envguard.TreeWatch) and
autoresearch's own code (selfwatch.OwnCode). `tampering`
asks every one of them, puts back what can be put back and says why the trial is rejected;
what may be the user's own doing (a commit, a `pip install`) is kept for `note`, which puts it
on the trial as a flag for a human. The loop calls both under its decision lock.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from autoresearch import guard, objects, shadow
from autoresearch.envguard import EnvGuard, TreeWatch, shared_environments
from autoresearch.events import Events
from autoresearch.execute import experiment_env
from autoresearch.filetree import open_log
from autoresearch.gitlinks import FolderLinks
from autoresearch.gitrepo import Workspace
from autoresearch.otherrefs import OtherTags
from autoresearch.pathwatch import PathWatch
from autoresearch.placewatch import PlaceWatch
from autoresearch.records import Trial
from autoresearch.selfwatch import OwnCode
from autoresearch.session import Session
from autoresearch.setupstep import SetupOutput
from autoresearch.toolwatch import ToolWatch
from autoresearch.treecheck import structure, untrue
from autoresearch.worktreewatch import WorktreeWatch

OTHER_FILES = 100_000  # of the best code, watched by name beyond its task files (a stat each, per look)


class Watch:
    def __init__(self, session: Session, events: Events, root_files: list[str], bin_dir: Path, shim: bool,
                 site: list[Path], several: bool) -> None:
        self.s = session
        shadow.anchor_paths(session.task.root, lambda rel: bool(session.git.run(  # (`../lib` from a worktree: a
            "ls-files", "--", rel, cwd=session.task.root, check=False)))  # folder of ours; /abs/task/src: yours)
        self.task = session.task
        self.events = events
        self.several = several  # trials run side by side: a finding may be a neighbour's doing
        self.git = guard.GitGuard(  # the user's refs and copies of the task's files are watched too
            session.git.common_dir, session.tag, checkout=self.task.root,
            checkout_files=[p for p in root_files if self.task.is_editable(p) or self.task.is_protected(p)],
            extra=(session.git.config_file,))
        session.ledger.watch()  # the record: the loop is its only writer
        self.objects = objects.ObjectWatch(session.git)  # the best code's git objects
        if site:  # (none on a remote backend: the environments a node runs are its own)
            site += [p for p in shared_environments(self.task.root, self.task.shared) if p not in site]
            if mine := shadow.checkout_imports(self.task.root, root_files, bin_dir / "python",
                                               experiment_env(dict(os.environ), {}, bin_dir), self.task.shared):
                events.message(f"autoresearch: warning: the experiments' python imports {', '.join(mine[:3])} from your "
                               "checkout, not from the trial's worktree, so every trial would run your checkout's code, "
                               "never its own (a `pip install -e .` or a PYTHONPATH entry names it): install it without "
                               "-e, or put its folder on PYTHONPATH relative (`PYTHONPATH=src`), which comes first")
        self.env = EnvGuard(bin_dir, shim, site, keep=session.dir / "quarantine",
                            pythonpath=shadow.through_shared(self.task, os.environ.get("PYTHONPATH", "")))
        path = shadow.through_shared(self.task, os.environ.get("PATH", ""))
        self.path = PathWatch(  # the other programs the task's commands run (python is envguard's)
            [c for c in (self.task.command, self.task.evaluate) if c], f"{bin_dir}{os.pathsep}{path}",
            keep=session.dir / "quarantine" / "path",
            skip=(lambda n: n in ("python", "python3")) if shim else (lambda n: n.startswith("python")))
        self.setup = TreeWatch(None)  # what setup made, once it ran
        self.pending: list[str] = []  # notes for the next trial noted
        self.put_back: dict[int, str] = {}  # trial -> a branch of the user's its agent committed on, put back
        self.tools = ToolWatch()  # the git and bwrap the harness runs
        self.links = FolderLinks(session.git.common_dir)  # .git's folders made links elsewhere
        self.place = PlaceWatch([session.git.common_dir, session.dir.parent, session.dir])  # .git, .autoresearch/, the tag's
        self.worktrees = WorktreeWatch(session.git.common_dir, session.dir.parent)  # `git worktree add` an agent ran
        self.others = OtherTags(self.task.root, session.dir.parent, session.tag, self.git._scan, self.git._git)  # other tags' refs
        self.own = OwnCode(keep=session.dir / "quarantine")  # autoresearch's own code (every module imported now)

    def after_setup(self, setup: SetupOutput) -> None:
        self.setup = TreeWatch(setup.store if setup.entries else None)
        self.env.refresh()  # (setup may have installed the task's package)
        self.path.refresh()

    def forged(self, commit: str, best: bool = True, parent: str | None = None) -> str:
        """Why `commit`'s task files cannot be trusted ('' when they can): an object of theirs in
        .git/objects does not hold what its name says (see objects.forged_blobs). When they can
        and `commit` is the new `best`, they are the objects watched from now on. Every trial whose
        code ran is checked, not only a kept one: an object planted before `git add` (which then
        keeps it, the name being taken) would have the diff, `show` and the audit read other code
        than ran, and a discarded trial's audit is how code that probed the holdout is seen."""
        if lies := untrue(self.s.git, commit, parent):  # (trees and the commit too: rewritten after the snapshot)
            return (f"the git object store was altered: {', '.join(lies[:5])} of commit {commit[:7]} do not hold "
                    f"what their object names say (an object file in .git/objects was rewritten; removed)")
        listing = objects.tree_blobs(self.s.git, commit)
        blobs = objects.task_blobs(self.s.git, commit, lambda p: self.task.is_editable(p) or self.task.is_protected(p),
                                   listing)
        forged = objects.forged_blobs(self.s.git.common_dir, blobs)
        if forged:
            return (f"the git object store was altered: {', '.join(forged[:5])} in commit {commit[:7]} do not hold "
                    f"what their object names say (an object file in .git/objects was rewritten; removed)")
        if best:
            held = {path for path, _, _ in blobs}  # (the other files too, by their names: a data file
            rest = [(path, sha) for path, mode, sha, _ in listing  # the evaluator
                    if path not in held and mode != "160000"][:OTHER_FILES]  # reads, which a reset writes)
            self.objects.remember(blobs, structure(self.s.git, commit), rest)
        return ""

    def tampering(self, number: int, phase: str, ws: Workspace | None = None) -> str | None:
        """What trial `number`'s agent or experiment (`phase`) changed that it must not (git's
        metadata and the loop's refs, the record, the python experiments run, the best code's
        git objects), put back where it can be; None when nothing was. Every guard looks,
        whatever the others found. What may be the user's doing is kept for `note`; but a branch
        of the user's that the agent left its worktree `ws` on and committed on is put back."""
        if ws is not None and (branch := self.attached_branch(ws)):  # (the guard's last look: before the agent ran)
            if said := self.committed_on(branch, self.git._user.get(branch, "")):
                self.put_back[number] = said
        if ws is not None and not ws.path.is_dir():  # (`rm -rf "$PWD"`, `git worktree remove` or `move`: the
            # snapshot makes it anew, and would read as "the agent changed nothing" and no more)
            self.pending.append(f"its worktree {ws.path} was removed or moved away, and is made anew from "
                                "the best code: what the agent changed there is not in the trial")
        tools = self.tools.check_and_restore()  # (first: the guards below run git)
        links = "; ".join(w for w in (self.links.check_and_restore(), self.place.check_and_restore()) if w) or None
        env_problem, env_note = self.env.check_and_restore()
        found = [why for why in (tools, links, self.git.check_and_restore(), self.own.check_and_restore(), env_problem,
                                 self.path.check_and_restore(), self.objects.check_and_restore(),
                                 "; ".join(self.s.ledger.check_and_restore()) or None) if why]
        self.pending += [n for n in (env_note, self.setup.check()) if n]
        self._strays(number, phase)
        if not found:
            return None
        why = "; ".join(found)
        if self.several:  # the guards cannot tell which of the trials in flight did it
            why += " (by this trial, or one running beside it)"
        self.events.message(f"autoresearch: warning: while trial {number}'s {phase} ran, something {why}")
        return why

    def _strays(self, number: int, phase: str) -> None:
        """Worktrees registered in the repository meanwhile and refs made or moved in another tag's
        namespace, not a loop's doing (see worktreewatch, otherrefs): taken away where that is safe,
        noted on the trial, said on the loop's output and, after an agent, in its log."""
        said = self.worktrees.check() + self.others.check()
        if not said:
            return
        self.pending += said
        line = f"while trial {number}'s {phase} ran: {'; '.join(said)}"
        self.events.message(f"autoresearch: warning: {line}")
        if phase == "agent":
            with contextlib.suppress(OSError), open_log(self.s.dir / "agent" / f"{number}.log", append=True) as f:
                f.write(f"autoresearch: {line}\n".encode(errors="replace"))

    def note(self, t: Trial, phase: str) -> Trial:
        """Note on the trial what changed in the user's refs and checkout while its `phase` ran
        (see GitGuard.note), and what changed in the Python packages or in what setup made: not
        undone, and not held against it (the loop holds a change of the stash against an agent that
        runs programs of its own), and a branch of the user's that `tampering` put back."""
        notes = [n for n in (self.git.note(phase), self.put_back.pop(t.number, "")) if n] + \
            [f"while its {phase} ran (or beside it): {n}" for n in self.pending]
        self.pending = []
        return t.with_(flags=[*t.flags, *notes]) if notes else t

    def attached_branch(self, ws: Workspace) -> str | None:
        """The user's branch the agent checked out in its worktree (`git checkout main`), if any:
        not a loop's (the tag's own is put back by the guard; the reset detaches the worktree)."""
        head = guard.slurp(ws.gitdir / "HEAD")
        name = head.decode(errors="replace").strip().removeprefix("ref: ") if isinstance(head, bytes) else ""
        return name if name.startswith("refs/heads/") and not name.startswith(guard.GitGuard.NOT_USER) else None

    def committed_on(self, branch: str, before: str) -> str:
        """Put `branch` back to `before` when what the agent did in its worktree, attached to it,
        only added commits on top (the user's branch is never moved by a trial); say so."""
        git = self.s.git
        now = git.run("rev-parse", "-q", "--verify", branch, check=False).strip()
        if not before or not now or now == before or git.run("rev-list", "--count", f"{now}..{before}", check=False).strip() != "0":
            return ""
        git.run("update-ref", "-m", "autoresearch: put back (an agent committed on it)", branch, before, now, check=False)
        if git.run("rev-parse", "-q", "--verify", branch, check=False).strip() != before:
            return ""
        name = branch.removeprefix("refs/heads/")
        return (f"the agent committed on your branch {name} in its worktree: put back to {before[:7]} "
                f"(its commits: {before[:7]}..{now[:7]}; `git branch -f {name} {now[:12]}` takes them)")

    def at_end(self) -> None:
        """The best code's objects, once more as the loop ends."""
        rewritten = self.objects.check_and_restore()
        if rewritten:
            self.events.message(f"autoresearch: warning: something {rewritten}")
