"""An external coding agent run once per trial in the trial's worktree.

The command template may use {prompt_file}, {description_file}, {workdir} and {trial}; they are
shell-quoted. The environment carries AUTORESEARCH_PROMPT_FILE, AUTORESEARCH_TRIAL and
AUTORESEARCH_DESCRIPTION_FILE. The description is the description file's content if the agent
wrote one, else the last non-empty line of its output, cut to 200 characters.
"""

from __future__ import annotations

import os
import shlex

from autoresearch.agents.base import AgentError, BaseAgent, Context, Proposal
from autoresearch.process import last_lines, read_tail, run_command
from autoresearch.prompt import build_prompt

DEFAULT_TIMEOUT = 1800.0


def description_from(desc_file_text: str | None, output: str) -> str:
    if desc_file_text and desc_file_text.strip():
        return " ".join(desc_file_text.split())[:200]
    for line in reversed(output.splitlines()):
        if line.strip():
            return line.strip()[:200]
    return ""


class CommandAgent(BaseAgent):
    """`--agent cli --agent-cmd CMD`: any program that edits files in its working directory."""

    def __init__(self, command: str, timeout: float = DEFAULT_TIMEOUT, name: str = "cli",
                 env: dict[str, str] | None = None) -> None:
        if not command.strip():
            raise AgentError("--agent-cmd is empty")
        self.command = command
        self.timeout = timeout
        self.name = name
        self.extra_env = env or {}

    def propose(self, ctx: Context) -> Proposal:
        prompt_file = ctx.log_path.with_suffix(".prompt.md")
        desc_file = ctx.log_path.with_suffix(".description")
        prompt_file.write_text(build_prompt(ctx))
        desc_file.unlink(missing_ok=True)
        values = {"prompt_file": str(prompt_file), "description_file": str(desc_file),
                  "workdir": str(ctx.workdir), "trial": str(ctx.number)}
        try:
            command = self.command.format_map({k: shlex.quote(v) for k, v in values.items()})
        except (KeyError, IndexError, ValueError) as e:
            raise AgentError(f"--agent-cmd has a bad placeholder ({e}); use {{prompt_file}}, "
                             "{description_file}, {workdir} or {trial}") from None
        env = {**os.environ, **self.extra_env, "AUTORESEARCH_PROMPT_FILE": str(prompt_file),
               "AUTORESEARCH_TRIAL": str(ctx.number),
               "AUTORESEARCH_DESCRIPTION_FILE": str(desc_file)}
        timeout = min(self.timeout, ctx.time_limit or self.timeout)
        ctx.log(f"$ {command}")
        result = run_command(command, ctx.workdir, env, timeout, ctx.log_path, append=True,
                             owner=f"agent:{ctx.ledger_dir}:{ctx.number}")
        output = read_tail(ctx.log_path)
        if result.timed_out:
            raise AgentError(f"the agent command timed out after {timeout:g} s")
        if result.returncode != 0:
            raise AgentError(f"the agent command exited with {result.returncode}: "
                             f"{last_lines(output, 3)[-300:]}")
        text = desc_file.read_text(errors="replace") if desc_file.exists() else None
        return Proposal(description=description_from(text, output.split("$ " + command, 1)[-1]))
