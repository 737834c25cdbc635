"""An external coding agent run once per trial in the trial's worktree.

The command template may use {prompt_file}, {description_file}, {workdir} and {trial}; they are
quoted for where they stand (plain, in quotes of their own, inside a longer string or a "$(...)");
any other brace is the shell's (`${HOME}`, awk's '{print}'). The environment carries AUTORESEARCH_PROMPT_FILE, AUTORESEARCH_TRIAL
and AUTORESEARCH_DESCRIPTION_FILE. The description is the description file's content if the
agent wrote one, else the last non-empty line of its output (stdout: a warning it wrote on
stderr after is not its description), cut to 200 characters. A command
that fails keeps the description it wrote in its error (the trial's commit message).

When the task has a sealed holdout, the command runs under bubblewrap with every ledger folder
hidden but its worktree, its prompt folder and the agent-visible logs (sandbox.seal_agent);
without a working bwrap it runs as it is (the loop warns that the holdout is not sealed).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from autoresearch.agents.base import AgentError, BaseAgent, Context, Proposal
from autoresearch.agents.secrets import redact
from autoresearch.agents.toolreports import without_ignored_errors
from autoresearch.errors import UsageError
from autoresearch.filetree import fresh_dir, open_regular, read_plain, write_new
from autoresearch.process import exit_words, read_tail, run_command, trim_log
from autoresearch.prompt import build_prompt, history_lines
from autoresearch.records import clean_text
from autoresearch.sandbox import seal_agent

DEFAULT_TIMEOUT = 1800.0


def own_dir(ctx: Context) -> Path:
    """The agent's own folder for trial n, `agent/<n>/`: its prompt.md and the description file
    (the only place a sealed agent may write outside its worktree)."""
    return ctx.log_path.parent / str(ctx.number)


def read_description(path: Path) -> str | None:
    """The description file the agent wrote (None when there is no regular file), with every key
    redacted, in the file too: a key an agent wrote there (its environment has them) is not left
    in the ledger folder."""
    text = read_plain(path)
    if text is not None and (clean := redact(text)) != text:
        with contextlib.suppress(OSError):
            path.unlink()
            write_new(path, clean)
        return clean
    return text


def description_from(desc_file_text: str | None, output: str) -> str:
    if desc_file_text and clean_text(desc_file_text):  # (a file of terminal codes or NULs alone says nothing)
        return " ".join(desc_file_text.split())[:200]
    for line in reversed(without_ignored_errors(output).splitlines()):
        if shown := clean_text(line):  # (a line of terminal codes alone, ESC [?25h at exit, says nothing)
            return shown
    return ""


PLACEHOLDER = re.compile(r"\{(prompt_file|description_file|workdir|trial)\}")
WRAPPED = re.compile(r"""(["'])\{(prompt_file|description_file|workdir|trial)\}\1""")


def in_double_quotes(value: str) -> str:
    return re.sub(r'([\\"$`])', r"\\\1", value)


def in_single_quotes(value: str) -> str:
    return value.replace("'", "'\\''")


def fill(template: str, values: dict[str, str]) -> str:
    """`template` with {prompt_file}, {description_file}, {workdir} and {trial} replaced by their
    values, quoted for where each stands: shell-quoted in plain text and in quotes of its own
    ("{prompt_file}", also inside "$(cat "{prompt_file}")" or backticks), escaped inside a longer
    "..." or '...' string, so a path with a space or a quote stays one word. Every other brace is
    left as written (`${HOME}`, awk's '{print}', JSON). Inside a string that another shell reads
    again (`bash -c 'cat {prompt_file}'`) the value is that shell's plain text: use
    "$AUTORESEARCH_PROMPT_FILE" there."""
    out: list[str] = []
    # what encloses the text read now: "" plain, '"' a "..." string, "(" a $( ... ) with its count
    # of open parentheses, "`" a `...` substitution (whose text the shell reads twice)
    stack: list[list] = [["", 0]]
    i, n = 0, len(template)

    def word(value: str, single: bool = False) -> str:
        text = in_single_quotes(value) if single else in_double_quotes(value) if stack[-1][0] == '"' else shlex.quote(value)
        return re.sub(r"([\\`$])", r"\\\1", text) if any(f[0] == "`" for f in stack) else text

    while i < n:
        kind, ch = stack[-1][0], template[i]
        wrapped, placeholder = WRAPPED.match(template, i), PLACEHOLDER.match(template, i)
        if wrapped and kind != '"':
            out.append(word(values[wrapped[2]]))
            i = wrapped.end()
        elif placeholder:
            out.append(word(values[placeholder[1]]))
            i = placeholder.end()
        elif ch == "\\" or template.startswith("$(", i):
            if ch != "\\":
                stack.append(["(", 0])
            out.append(template[i:i + 2])
            i += 2
        elif ch in '"`':
            if kind == ch:
                stack.pop()
            else:
                stack.append([ch, 0])
            out.append(ch)
            i += 1
        elif ch == "'" and kind != '"':
            close = template.find("'", i + 1)
            close = n if close < 0 else close
            body = PLACEHOLDER.sub(lambda m: word(values[m[1]], single=True), template[i + 1:close])
            out.append("'" + body + template[close:close + 1])
            i = close + 1
        else:
            if kind == "(" and ch in "()":
                stack[-1][1] += 1 if ch == "(" else -1
                if stack[-1][1] < 0:
                    stack.pop()
            out.append(ch)
            i += 1
    return "".join(out)


def described(message: str, desc_file_text: str | None) -> str:
    """An error `message` after the description the agent wrote, if it wrote one: the trial's
    commit message then still says what the agent tried."""
    description = description_from(desc_file_text, "")
    return f"{description} ({message})" if description else message


def exit_error(returncode: int, printed: str, desc_file_text: str | None) -> AgentError:
    """A command that exited non-zero; 126/127 (the shell could not run it: not found, not
    executable) will fail the same way next time."""
    how = f"was {exit_words(returncode)}" if returncode < 0 else f"exited with {exit_words(returncode).removeprefix('exit code ')}"
    message = f"the agent command {how}: {description_from(None, printed)[:300] or '(no output)'}"
    return AgentError(described(message, desc_file_text), fatal=returncode in (126, 127))


def missing_program(command: str, env: dict[str, str]) -> str:
    """The program `command` starts with when bash would not find it ('' when it would, or when
    that cannot be told before it runs: a path relative to the worktree, a template, a $VAR)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return ""
    first = next((w for w in words if not re.fullmatch(r"[A-Za-z_]\w*=.*", w, re.DOTALL)), "")
    if not first or re.search(r"[{}$`()<>|;&*?\[\]~]", first) or ("/" in first and not first.startswith("/")):
        return ""
    try:
        found = subprocess.run(["/bin/bash", "-c", 'type -t -- "$1"', "_", first], env=env,
                               capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return "" if found.stdout.strip() else first


class CommandAgent(BaseAgent):
    """`--agent cli --agent-cmd CMD`: any program that edits files in its working directory."""

    concurrent = True  # one process per proposal, each in its own worktree with its own files
    runs_commands = True

    def __init__(self, command: str, timeout: float = DEFAULT_TIMEOUT, name: str = "cli",
                 env: dict[str, str] | None = None) -> None:
        if not command.strip():
            raise UsageError("the agent command is empty (--agent-cmd, or [agent] cmd in autoresearch.toml)")
        self.command = command
        self.timeout = timeout
        self.name = name
        self.extra_env = env or {}
        lost = missing_program(command, {**os.environ, **self.extra_env})
        if lost:  # said now, not after a baseline of minutes and three failed proposals
            print(f"autoresearch: warning: the agent command's {lost!r} is not found"
                  f"{'' if lost.startswith('/') else ' (PATH has no such program)'}: every proposal will fail",
                  file=sys.stderr, flush=True)

    def propose(self, ctx: Context) -> Proposal:
        printed, stdout, returncode = self.execute(ctx)
        text = read_description(own_dir(ctx) / "description")
        if returncode != 0:
            raise exit_error(returncode, printed, text)
        # (an agent that printed only on stderr is described by its last line there)
        return Proposal(description=redact(description_from(text, stdout) or description_from(None, printed)))

    def execute(self, ctx: Context) -> tuple[str, str, int]:
        """Run the command for trial ctx.number: what it printed (stdout and stderr, as in its
        log), the end of its stdout alone (where its last line is its description: a warning on
        stderr after it is not) and its exit code. Raises AgentError when it was stopped or
        timed out."""
        own = fresh_dir(own_dir(ctx))  # made anew: nothing an earlier agent planted there
        prompt_file, desc_file = own / "prompt.md", own / "description"
        tag = ctx.ledger_dir.name
        every = f" (every trial, a row each in order: {ctx.ledger_dir / 'results.tsv'})"
        history = history_lines(ctx.history, ctx.task.metric.name, more=every)
        write_new(prompt_file, build_prompt(ctx, history) + (
            "\n\n# How to finish\n"
            "- Write one line saying what you changed and why into the file named by "
            "$AUTORESEARCH_DESCRIPTION_FILE (else your last line of output is taken).\n"
            f"- To see what an earlier trial changed: `git show refs/autoresearch/{tag}/trials/N`.\n"
            "- $AUTORESEARCH_TIME_BUDGET holds the experiment's time budget, if you test your change.\n"))
        values = {"prompt_file": str(prompt_file), "description_file": str(desc_file),
                  "workdir": str(ctx.workdir), "trial": str(ctx.number)}
        command = fill(self.command, values)
        env = {**os.environ, **self.extra_env, "AUTORESEARCH_PROMPT_FILE": str(prompt_file),
               "AUTORESEARCH_TRIAL": str(ctx.number),
               "AUTORESEARCH_DESCRIPTION_FILE": str(desc_file),
               "AUTORESEARCH_TIME_BUDGET": ctx.task.budget_env}
        timeout = min(self.timeout, ctx.time_limit or self.timeout)
        start = ctx.log_path.stat().st_size if ctx.log_path.exists() else 0
        ctx.log(f"$ {command}")
        prefix = seal_agent(ctx.task, ctx.workdir, ctx.ledger_dir, own, ctx.beside, also=ctx.sealed)
        argv: str | list[str] = [*prefix, "/bin/bash", "-c", command] if prefix else command
        result = run_command(argv, ctx.workdir, env, timeout, ctx.log_path, append=True, split_stdout=True,
                             owner=f"agent:{ctx.ledger_dir}:{ctx.number}", cancel=ctx.cancel)
        trim_log(ctx.log_path)  # a chatty agent's log keeps its start and its end, as an experiment's does
        # keys the agent printed (its environment has them: `env`, a tool's config dump) go no further
        redact_log(ctx.log_path, min(start, ctx.log_path.stat().st_size if ctx.log_path.exists() else 0))
        printed = read_tail(ctx.log_path).split("$ " + command, 1)[-1]
        if result.cancelled:
            raise AgentError(described("stopped while the agent ran", read_description(desc_file)))
        if result.timed_out:  # what it said it tried, if it wrote it, stays the trial's description; and
            # what it was doing (its last line), as for a command that fails: `show N` says where it hung
            last = description_from(None, printed) or "(no output)"
            raise AgentError(described(f"the agent command timed out after {timeout:g} s: {last}",
                                       read_description(desc_file)))
        if result.escaped:
            raise AgentError("processes the agent started outlived the process that supervises it, which "
                             f"something killed (they were killed): {'; '.join(result.escaped)[:300]}")
        return printed, result.stdout, -1 if result.returncode is None else result.returncode


def redact_log(path: Path, offset: int) -> None:
    """Redact the keys in what the agent wrote to its log from `offset` (a tool may print its key
    in an error message, an agent its environment)."""
    text = read_from(path, offset)
    clean = redact(text)
    if clean != text:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.truncate()
            f.write(clean.encode("utf-8"))


def read_from(path: Path, offset: int) -> str:
    """The agent's log from `offset` ("" when it is not a regular file: the agent may have put a
    FIFO, which would wait for a writer forever, or a link in its place)."""
    try:
        f = open_regular(path)
    except OSError:
        return ""
    with f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")
