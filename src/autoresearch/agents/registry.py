"""Agents by name. Heavy agents are imported only when asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autoresearch.agents.base import Agent
from autoresearch.errors import UsageError
from autoresearch.task import Task


@dataclass
class AgentOptions:
    name: str = "search"
    command: str | None = None
    timeout: float | None = None
    model: str | None = None
    base_url: str | None = None
    sampler: str = "tpe"
    seed: int = 0
    llm_share: float = 0.3
    extra: dict[str, Any] = field(default_factory=dict)


AGENTS = ("search", "llm", "hybrid", "cli")


def build_agent(opts: AgentOptions, task: Task) -> Agent:
    """The agent named by `opts.name` (see `autoresearch agents`)."""
    name = opts.name
    if name == "cli":
        from autoresearch.agents.cli import DEFAULT_TIMEOUT, CommandAgent

        if not opts.command:
            raise UsageError("--agent cli needs --agent-cmd 'COMMAND {prompt_file}' (or [agent] cmd in autoresearch.toml)")
        from autoresearch.agents.presets import PresetAgent, reader_for

        preset = reader_for(opts.command)  # a preset's command, adjusted: its output is read the same way
        if preset is not None:
            return PresetAgent(preset, opts.command, {}, opts.timeout or DEFAULT_TIMEOUT, opts.model)
        return CommandAgent(opts.command, timeout=opts.timeout or DEFAULT_TIMEOUT)
    from autoresearch.agents import presets

    if name in presets.PRESETS:
        return presets.build(name, opts, task)
    if name == "search":
        try:
            from autoresearch.agents.search import SearchAgent
        except ImportError as e:
            raise UsageError(f"--agent search is not available: {e}") from None
        return SearchAgent(task, sampler=opts.sampler, seed=opts.seed)
    if name in ("llm", "hybrid"):
        from autoresearch.agents import llm

        return llm.build(name, opts, task)
    raise UsageError(f"--agent {name!r} is not an agent (see `autoresearch agents`)")
