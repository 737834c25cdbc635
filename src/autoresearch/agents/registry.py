"""Agents by name. Heavy agents are imported only when asked for."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from autoresearch.agents.base import Agent
from autoresearch.errors import AutoresearchError, LoopBusy, UsageError
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
    from_file: tuple[str, ...] = ()  # of model and base_url, those the task's [agent] table gave

    def named(self, message: str) -> str:
        """`message` (one naming --model or --base-url) naming the task file's key instead,
        when the value came from there."""
        for key in self.from_file:
            flag = "--" + key.replace("_", "-") + " "
            if message.startswith(flag):
                return f"autoresearch.toml: 'agent.{key}' = " + message[len(flag):]
        return message


AGENTS = ("search", "llm", "hybrid", "cli")
SAVED = ("name", "command", "timeout", "model", "base_url", "sampler", "llm_share")  # in the ledger's meta
FLAGS = ("agent", "agent_cmd", "agent_timeout", "model", "base_url", "sampler", "llm_share")
# the flags each agent takes beyond --agent-timeout (a preset: a model and a server)
USED = {"search": {"sampler"}, "llm": {"model", "base_url"}, "hybrid": {"model", "base_url", "sampler", "llm_share"},
        "cli": set()}


def agent_options(args: Any, task: Task, tag: str | None = None) -> AgentOptions:
    """The agent that run's flags and the task file's [agent] table name. With neither, a tag
    that exists goes on with the agent it last ran with (so a resumed overnight run does not
    fall back to the search agent); else the search agent."""
    cfg = task.agent
    if args.agent_cmd is not None and not args.agent_cmd.strip():
        raise UsageError("--agent-cmd is empty")
    if tag is not None and not cfg and args.agent is None and args.agent_cmd is None:
        from autoresearch.ledger import Ledger, tag_dir

        if Ledger.loop_running(tag_dir(task.root, tag)):  # said first, as the only line
            raise LoopBusy(tag)
        try:
            saved = saved_options(task, tag)
        except UsageError:  # its agent's flags held a key: given again (--model, --base-url) they choose
            if getattr(args, "model", None) is None and getattr(args, "base_url", None) is None:
                raise
            saved = None
        if saved is not None and _resumable(saved, args, tag):
            return saved
    # --agent-cmd alone means the cli agent, and --model alone the llm agent (so in [agent])
    name = args.agent or ("cli" if args.agent_cmd else None) or cfg.get("kind") or \
        ("llm" if getattr(args, "model", None) else None) or ("cli" if cfg.get("cmd") else None) or \
        ("llm" if cfg.get("model") else "search")
    if args.agent_cmd and name != "cli":
        raise UsageError(f"--agent-cmd is the command of --agent cli, not of --agent {name} "
                         "(drop --agent, or copy the preset's command from `autoresearch agents` into --agent-cmd)")
    used = USED.get(name, {"model", "base_url"})  # (a preset takes a model and a server)
    for flag in ("model", "base_url", "sampler", "llm_share"):
        if getattr(args, flag, None) is not None and flag not in used:
            print(f"autoresearch: warning: --{flag.replace('_', '-')} is not used by --agent {name}", file=sys.stderr)
    return AgentOptions(
        name=name, command=args.agent_cmd or cfg.get("cmd"),
        timeout=args.agent_timeout or cfg.get("timeout"), model=args.model or cfg.get("model"),
        base_url=args.base_url or cfg.get("base_url"), sampler=args.sampler or cfg.get("sampler", "tpe"),
        seed=getattr(args, "seed", 0),
        llm_share=args.llm_share if args.llm_share is not None else cfg.get("llm_share", 0.3),
        from_file=tuple(k for k in ("model", "base_url") if getattr(args, k, None) is None and cfg.get(k)),
    )


def _resumable(saved: AgentOptions, args: Any, tag: str) -> bool:
    """Whether a resumed tag goes on with `saved`, the agent it ran with, when run names no
    agent: its flags that the saved agent takes (--agent-timeout, a new --model, ...) change
    it; --model for an agent without one chooses the llm agent, as it does for a new tag; a flag
    the saved agent does not take is an error (it would have switched to the search agent)."""
    given = [f for f in FLAGS[2:] if getattr(args, f, None) is not None]
    takes = USED.get(saved.name, {"model", "base_url"}) | {"agent_timeout"}
    if "model" in given and "model" not in takes:
        return False
    odd = [f for f in given if f not in takes]
    if odd:
        flags = ", ".join(f"--{f.replace('_', '-')}" for f in odd)
        raise UsageError(f"{flags}: not taken by --agent {saved.name}, the agent tag {tag} ran with; to change "
                         "the agent, name it with --agent")
    changed = []
    for flag, attr in (("agent_timeout", "timeout"), ("model", "model"), ("base_url", "base_url"),
                       ("sampler", "sampler"), ("llm_share", "llm_share")):
        if flag in given:
            setattr(saved, attr, getattr(args, flag))
            changed.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}")
    what = saved.name + (f" ({saved.model})" if saved.model else "") + (
        f": {saved.command}" if saved.command else "")
    print(f"autoresearch: tag {tag} goes on with the agent it ran with: {what}"
          + (f" (now with {', '.join(changed)})" if changed else ""), file=sys.stderr)
    saved.seed = getattr(args, "seed", 0)
    return True


def saved_options(task: Task, tag: str) -> AgentOptions | None:
    """The agent options a tag's last run recorded (None for a new tag, or an old ledger)."""
    from autoresearch.ledger import Ledger, tag_dir

    if not (tag_dir(task.root, tag) / "ledger.sqlite").exists():
        return None
    try:
        led = Ledger.read(task.root, tag)
        try:
            data = json.loads(led.get_meta("agent_options") or "null")
        finally:
            led.close()
    except (AutoresearchError, ValueError):
        return None
    from autoresearch.agents.presets import PRESETS

    if not isinstance(data, dict) or data.get("name") not in (*AGENTS, *PRESETS):
        return None
    if data.get("withheld"):
        raise UsageError(f"tag {tag} ran with --agent {data['name']} and a command or server that holds a key, "
                         "which is never recorded: give the agent's flags again to resume it")
    return AgentOptions(**{k: data[k] for k in SAVED if k in data})


def options_record(opts: AgentOptions) -> str:
    """What the ledger keeps of the agent options; only the agent's name when its command or
    server holds a key (keys are never written anywhere: such flags must be given again)."""
    from autoresearch.agents.secrets import redact

    if any(v and redact(v) != v for v in (opts.command, opts.base_url, opts.model)):
        return json.dumps({"name": opts.name, "withheld": True})
    return json.dumps({k: v for k, v in asdict(opts).items() if k in SAVED}, sort_keys=True)


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
    import difflib

    known = [*AGENTS, *presets.PRESETS]
    close = difflib.get_close_matches(name, known, n=1)
    raise UsageError(f"--agent {name!r} is not an agent{f' (did you mean {close[0]!r}?)' if close else ''}: "
                     f"{', '.join(known)} (see `autoresearch agents`)")


def unpriced(agent: Agent) -> str:
    """Why --max-cost cannot see what `agent` spends ('' when it can, or it spends nothing it
    could count: the llm agents price their own calls, and say so of a model with no price)."""
    from autoresearch.agents.cli import CommandAgent
    from autoresearch.agents.presets import PresetAgent

    if isinstance(agent, PresetAgent):
        return agent.unpriced()
    if isinstance(agent, CommandAgent):
        return ("--agent cli reports no spending: it counts as $0 against --max-cost, which is then never reached "
                "(a preset's command, which autoresearch reads, does report it)")
    if getattr(agent, "name", "") == "search":
        return "--agent search spends nothing: --max-cost has nothing to count"
    return ""
