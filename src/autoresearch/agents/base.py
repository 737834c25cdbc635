"""The agent interface: one method that edits a worktree and describes what it did.

An agent gets a `Context` whose `workdir` is a git worktree at the current best commit. It edits
files there (only `task.editable` ones will be accepted) and returns a `Proposal` with a
one-line description. The harness reads what changed from git, so an agent never commits,
never runs the experiment and never decides. `observe` is told every finished trial (the
sealed holdout figure removed), whichever agent made it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from autoresearch.filetree import open_log
from autoresearch.records import Trial
from autoresearch.task import Task


class AgentError(Exception):
    """The agent could not make a proposal (the trial is recorded as agent_error). What it
    spent on the way (an LLM's tokens and cost) is recorded too."""

    def __init__(self, message: str, *, model: str = "", tokens_in: int = 0, tokens_out: int = 0,
                 cost: float = 0.0, fatal: bool = False, done: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal or done  # will fail the same way next time (a bad key, model or command)
        self.done = done  # it has nothing left to propose (a search space tried through)
        self.model = model
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out
        self.cost = cost


@dataclass(frozen=True)
class Context:
    task: Task
    workdir: Path
    number: int
    best: Trial
    history: tuple[Trial, ...]
    log_path: Path
    ledger_dir: Path
    time_limit: float | None = None  # seconds this proposal may take
    cancel: threading.Event | None = None  # set when the loop is stopping: give up at once
    beside: bool = False  # other trials run beside this one (a CLI agent is sealed from their worktrees)
    sealed: tuple[Path, ...] = ()  # hidden from a sealed agent besides the ledgers (Session.sealed)

    def log(self, text: str) -> None:
        with open_log(self.log_path, append=True) as f:  # (a FIFO put in its place is not waited on)
            f.write((text if text.endswith("\n") else text + "\n").encode("utf-8", errors="replace"))


@dataclass(frozen=True)
class Proposal:
    description: str
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Agent(Protocol):
    name: str

    def propose(self, ctx: Context) -> Proposal:
        """Edit ctx.workdir and describe the change; raise AgentError on failure."""
        ...

    def observe(self, trial: Trial) -> None:
        """Learn the outcome of a finished trial."""
        ...


class BaseAgent:
    """Defaults for the optional parts of the protocol."""

    name = "agent"
    # True: propose() may run in several threads at once (each on its own worktree); otherwise
    # the loop serialises calls to one agent (--agent-concurrency then only queues proposals).
    concurrent = False
    # True: the agent runs programs of its own in the worktree, which can run git (a change of
    # git's shared stash while it worked may then be its doing); the built-in agents run none
    runs_commands = False

    def observe(self, trial: Trial) -> None:
        return None

    def preflight(self) -> list[str]:
        """Checked once when `run` starts, before the baseline's minutes: warnings to print
        (one line each); UsageError for what would fail every proposal."""
        return []
