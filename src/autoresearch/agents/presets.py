"""Presets: coding-agent CLIs run non-interactively once per trial, through the CLI agent contract.

Each preset is a `CommandAgent` with a command line known to work headless: the prompt from the
harness on stdin or from its file, every permission prompt pre-answered (the agent runs in a
throwaway git worktree; the harness guards what it may change), no commits of its own. Where
the tool reports what it spent (Claude Code's JSON result, opencode's and codex's JSON events,
gemini's JSON report, aider's "Tokens:/Cost:" lines) the tokens (and the cost, where the tool
gives one) go into the ledger. `autoresearch agents` prints each command, so that it can be
copied into `--agent cli --agent-cmd '...'` and adjusted.

An error the tool reports about itself is the trial's reason, whatever the exit code; one that says
the key, the login or the model is wrong is fatal (three in a row stop the loop). Only that report
is read for it, never the rest of what the agent printed (a file it read may well say "401").

Running as root: Claude Code refuses --dangerously-skip-permissions (and bypassPermissions) for
uid 0 unless IS_SANDBOX=1 says the machine is a disposable sandbox. As root without IS_SANDBOX
the claude preset falls back to `--permission-mode acceptEdits` with the file tools only (it can
read and edit, not run commands), which is all a proposal needs. Set IS_SANDBOX=1 only in a
container or VM you can throw away, or run autoresearch as a normal user.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoresearch.agents import cli
from autoresearch.agents.base import AgentError, Context, Proposal
from autoresearch.agents.cli import DEFAULT_TIMEOUT, CommandAgent, description_from, own_dir
from autoresearch.agents.prices import Price
from autoresearch.agents.secrets import redact
from autoresearch.agents.toolreports import (  # noqa: F401 - tool_error and the readers, as presets give them
    CODEX_HELPER_HINT,
    CODEX_NO_HELPER,
    aider_result,
    claude_result,
    codex_result,
    gemini_result,
    opencode_result,
    tool_error,
)
from autoresearch.errors import UsageError
from autoresearch.task import Task, list_files

CLAUDE_FILE_TOOLS = "Read,Edit,MultiEdit,Write,Glob,Grep,LS"


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _strip(model: str | None, *prefixes: str) -> str | None:
    if not model:
        return None
    head, sep, rest = model.partition("/")
    return rest if sep and head in prefixes else model


# ---------------------------------------------------------------------------
# each tool's command line


def claude_command(model: str | None, base_url: str | None, task: Task | None) -> tuple[str, dict[str, str], str]:
    env: dict[str, str] = {}
    note = ""
    if is_root() and os.environ.get("IS_SANDBOX") != "1":
        perms = f"--permission-mode acceptEdits --allowedTools {CLAUDE_FILE_TOOLS}"
        note = ("running as root: Claude Code refuses --dangerously-skip-permissions here, so the "
                "claude preset lets it read and edit files only (no shell). Run as a normal user, "
                "or set IS_SANDBOX=1 if this is a disposable container/VM, to give it a shell.")
    else:
        perms = "--dangerously-skip-permissions"
    name = _strip(model, "anthropic", "claude")
    env["DISABLE_AUTOUPDATER"] = "1"
    if base_url:
        from autoresearch.agents.providers import anthropic_root

        env["ANTHROPIC_BASE_URL"] = anthropic_root(base_url) or base_url
    cmd = f"claude -p --output-format json {perms}" + (f" --model {shlex.quote(name)}" if name else "")
    return cmd + " < {prompt_file}", env, note


def codex_command(model: str | None, base_url: str | None, task: Task | None) -> tuple[str, dict[str, str], str]:
    name = _strip(model, "openai")
    cmd = "codex exec --json --skip-git-repo-check --sandbox workspace-write" + (f" -m {shlex.quote(name)}" if name else "")
    if base_url:
        # codex 0.171 ignores OPENAI_BASE_URL: the server becomes a model provider of its own,
        # declared with -c (TOML), spoken to over the Responses API with OPENAI_API_KEY (if set)
        provider = {"name": "autoresearch", "base_url": base_url, "wire_api": "responses"}
        if os.environ.get("OPENAI_API_KEY"):
            provider["env_key"] = "OPENAI_API_KEY"
        table = "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in provider.items()) + "}"
        cmd += f" -c model_provider=autoresearch -c {shlex.quote('model_providers.autoresearch=' + table)}"
    return cmd + " - < {prompt_file}", {}, ""


# the keys by which aider picks a model when none is given (aider/onboarding.py), and the files
# that may give it one (its config, or a .env it loads keys from)
AIDER_DEFAULT_KEYS = ("OPENROUTER_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "OPENAI_API_KEY",
                      "GEMINI_API_KEY", "VERTEXAI_PROJECT", "AIDER_MODEL")
AIDER_FILES = (".aider.conf.yml", ".env")


def aider_command(model: str | None, base_url: str | None, task: Task | None) -> tuple[str, dict[str, str], str]:
    folders = [Path.home(), Path.cwd()] + ([task.root] if task else [])
    if not model and not any(os.environ.get(k) for k in AIDER_DEFAULT_KEYS) and not any(
            (folder / name).exists() for folder in folders for name in AIDER_FILES):
        # (with --yes-always, aider would take its offer of an OpenRouter login in a browser and
        # wait five minutes for it, on every trial)
        raise UsageError("--agent aider without --model finds none of the keys aider picks a model by "
                         f"({', '.join(k for k in AIDER_DEFAULT_KEYS if k.endswith('_KEY'))}): give --model "
                         "PROVIDER/NAME (with its key), or set one of them")
    files = sorted(f for f in list_files(task.root) if task.is_editable(f)) if task else []
    parts = ["aider", "--message-file {prompt_file}", "--yes-always", "--no-auto-commits",
             "--no-dirty-commits", "--no-gitignore", "--no-check-update", "--no-show-release-notes",
             "--no-analytics", "--no-pretty", "--no-stream", "--no-fancy-input", "--no-detect-urls",
             "--no-suggest-shell-commands", "--no-show-model-warnings", "--map-tokens 0",
             "--chat-history-file /dev/null", "--input-history-file /dev/null"]
    if model:
        parts.append(f"--model {shlex.quote(model)}")
    if base_url:
        parts.append(f"--openai-api-base {shlex.quote(base_url)}")
    parts += [shlex.quote(f) for f in files]
    # litellm would fetch a price list from GitHub at start; the packaged copy is enough
    return " ".join(parts), {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}, ""


GEMINI_BASE_URL_SETTINGS = {"security": {"auth": {"selectedType": "gemini-api-key"}}}


def gemini_home() -> Path:
    """The Gemini CLI home (GEMINI_CLI_HOME) the gemini preset uses with --base-url."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "autoresearch" / "gemini-home"


def gemini_command(model: str | None, base_url: str | None, task: Task | None) -> tuple[str, dict[str, str], str]:
    name = _strip(model, "gemini", "google")
    cmd = "gemini --approval-mode yolo --output-format json" + (f" -m {shlex.quote(name)}" if name else "")
    # headless gemini refuses yolo in a folder it was never told to trust (each trial's
    # worktree is new): this variable trusts the working folder for the run
    env = {"GEMINI_CLI_TRUST_WORKSPACE": "true"}
    if base_url:
        # GOOGLE_GEMINI_BASE_URL alone makes gemini 0.61 pick its "gateway" auth, which headless
        # mode refuses ("Invalid auth method selected"); a settings file that selects the API-key
        # auth makes it send GEMINI_API_KEY to that URL. A system settings file is skipped under a
        # world-writable folder (/tmp), so the settings live in a Gemini home of their own.
        home = gemini_home()
        settings = home / ".gemini" / "settings.json"
        text = json.dumps(GEMINI_BASE_URL_SETTINGS, indent=2) + "\n"
        try:
            if not settings.is_file() or settings.read_text() != text:
                settings.parent.mkdir(parents=True, exist_ok=True)
                settings.write_text(text)
        except OSError as e:
            raise UsageError(f"--agent gemini --base-url: cannot write {settings}: {e}") from None
        root = base_url.rstrip("/")
        env.update({"GOOGLE_GEMINI_BASE_URL": root.removesuffix("/v1beta"), "GEMINI_CLI_HOME": str(home)})
    return cmd + " -p 'Carry out the task described above.' < {prompt_file}", env, ""


def opencode_command(model: str | None, base_url: str | None, task: Task | None) -> tuple[str, dict[str, str], str]:
    env = {"OPENCODE_PERMISSION": '{"*": "allow"}', "OPENCODE_DISABLE_AUTOUPDATE": "1"}
    if base_url:  # an OpenAI-compatible server: a provider of its own, declared through the environment
        name = _strip(model, "openai")
        if not name:
            raise UsageError("--agent opencode with --base-url needs --model openai/NAME (the model the server serves)")
        env["OPENCODE_CONFIG_CONTENT"] = json.dumps({"provider": {"autoresearch": {
            "npm": "@ai-sdk/openai-compatible", "name": "autoresearch --base-url",
            "options": {"baseURL": base_url, "apiKey": "{env:OPENAI_API_KEY}"}, "models": {name: {}}}}})
        model = f"autoresearch/{name}"
    elif model and "/" not in model:  # (opencode reads `gpt-4.1` as a provider with no model, and says
        # only "Unexpected server error" about it, every trial)
        raise UsageError(f"--agent opencode takes --model PROVIDER/MODEL (e.g. openai/{model}), not {model!r}")
    cmd = "opencode run --format json" + (f" -m {shlex.quote(model)}" if model else "")
    # the prompt on stdin (opencode reads it as the message): an argument is capped at 128 KiB
    return cmd + " < {prompt_file}", env, ""


# ---------------------------------------------------------------------------
# the presets


@dataclass(frozen=True)
class Preset:
    name: str
    binary: str
    what: str
    keys: tuple[str, ...]  # any of these environment variables, or the tool's own saved login
    login: str  # how to log in instead of a key
    command: Callable[[str | None, str | None, Task | None], tuple[str, dict[str, str], str]]
    result: Callable[[str], dict[str, Any]] | None = None
    hints: tuple[tuple[str, str], ...] = ()  # (text in the output, what to tell the user)
    fatal: tuple[str, ...] = ()  # the start of the tool's error report: failure, even with exit code 0


ROOT_HINT = ("Claude Code refuses to skip permissions as root: run autoresearch as a normal user, "
             "or set IS_SANDBOX=1 if this machine is a disposable container/VM")

CODEX_SANDBOX_HINT = ("codex's sandbox cannot start here; use --agent cli with "
                      "'codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox - < {prompt_file}' "
                      "inside a disposable container")

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("claude", "claude", "Claude Code (claude -p)", ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"),
           "claude login (or claude setup-token)", claude_command, claude_result,
           (("root/sudo privileges", ROOT_HINT),)),
    Preset("codex", "codex", "OpenAI Codex CLI (codex exec)", ("OPENAI_API_KEY", "CODEX_API_KEY"), "codex login",
           codex_command, codex_result,
           ((CODEX_NO_HELPER, CODEX_HELPER_HINT), ("landlock", CODEX_SANDBOX_HINT),
            ("bwrap:", CODEX_SANDBOX_HINT))),
    Preset("aider", "aider", "aider (--message-file, whole/diff edits)",
           ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "GEMINI_API_KEY", "DEEPSEEK_API_KEY"),
           "a key for the --model you give", aider_command, aider_result,
           fatal=("litellm.AuthenticationError", "litellm.NotFoundError", "litellm.BadRequestError",
                  "litellm.PermissionDeniedError", "not able to authenticate you",
                  "OpenRouter authentication did not complete")),
    Preset("gemini", "gemini", "Gemini CLI (gemini -p)", ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
           "gemini (Google login, once, interactively)", gemini_command, gemini_result),
    Preset("opencode", "opencode", "opencode (opencode run)",
           ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"), "opencode auth login", opencode_command,
           opencode_result),
]}


class PresetAgent(CommandAgent):
    """A CommandAgent that also reads what the tool reports (description, tokens, cost)."""

    def __init__(self, preset: Preset, command: str, env: dict[str, str], timeout: float, model: str | None) -> None:
        super().__init__(command, timeout=timeout, name=preset.name, env=env)
        self.preset = preset
        self.model = model or ""

    def propose(self, ctx: Context) -> Proposal:
        start = ctx.log_path.stat().st_size if ctx.log_path.exists() else 0
        try:
            printed, stdout, returncode = self.execute(ctx)
        except AgentError as e:  # stopped, or timed out: what it reported spending so far still counts
            output = cli.read_from(ctx.log_path, start)
            raise AgentError(redact(self.hinted(str(e), output)), model=self.model, **self.spent(output)) from None
        output = cli.read_from(ctx.log_path, start)  # (execute redacted the keys in it)
        text = cli.read_description(own_dir(ctx) / "description")
        try:  # the tool's own error report, whatever its exit code: the clearest reason there is
            info = self.report(output)
        except AgentError as e:
            raise AgentError(redact(cli.described(str(e), text)), fatal=e.fatal, model=self.model,
                             tokens_in=e.tokens_in, tokens_out=e.tokens_out, cost=e.cost) from None
        if returncode != 0:
            failed = cli.exit_error(returncode, redact(printed), text)
            raise AgentError(redact(self.hinted(str(failed), output)), fatal=failed.fatal, model=self.model,
                             **self.spent(output))  # (what it reported it spent)
        description = (description_from(text, info.get("text", "")) or description_from(None, stdout)
                       or description_from(None, printed))
        tin, tout = info.get("tokens_in", 0), info.get("tokens_out", 0)
        return Proposal(redact(description), model=self.model, tokens_in=tin, tokens_out=tout,
                        cost=info.get("cost") or self.priced(tin, tout))

    def spent(self, output: str) -> dict[str, Any]:
        """The tokens and cost in the report of a tool that did not finish (its events so far)."""
        try:
            info = self.report(output)
        except AgentError as e:
            return {"tokens_in": e.tokens_in, "tokens_out": e.tokens_out, "cost": e.cost}
        except Exception:  # noqa: BLE001 - a report cut short is no spend to read
            return {}
        tin, tout = info.get("tokens_in", 0), info.get("tokens_out", 0)
        return {"tokens_in": tin, "tokens_out": tout, "cost": info.get("cost") or self.priced(tin, tout)}

    def priced(self, tokens_in: int, tokens_out: int) -> float:
        """What the tokens of a tool that reports no cost (codex, gemini, opencode) came to, at
        the price table's price for the --model (0 when it names none, or one not in the table)."""
        from autoresearch.agents.prices import cost

        return cost(self._price(), tokens_in, tokens_out, one_call=False) if tokens_in or tokens_out else 0.0

    def _price(self) -> Price | None:
        from autoresearch.agents.prices import PRICES, load_overrides, price_of

        if not self.model:
            return None
        try:
            table = {**PRICES, **load_overrides()}
        except ValueError:  # (a bad AUTORESEARCH_PRICES file: said where the llm agent reads it)
            table = dict(PRICES)
        return price_of(self.model, table)

    def unpriced(self) -> str:
        """Why --max-cost cannot see this agent's spending ('' when it can: the tool reports its
        cost, as claude does, or the --model has a price in the table)."""
        if self.preset.name == "claude" or self._price() is not None:
            return ""
        named = f"--model {self.model} has no price in the table" if self.model else "no --model names its price"
        return (f"--agent {self.preset.name} reports no cost and {named} (AUTORESEARCH_PRICES adds one): "
                "its spending counts as $0 against --max-cost, which is then never reached")

    def report(self, output: str) -> dict[str, Any]:
        """What the tool reported: its text, tokens and cost; AgentError for an error it reported
        (fatal when its message says the key, the login or the model is wrong)."""
        failed = next((f for f in self.preset.fatal if f in output), None)
        if failed:
            lines = output.splitlines()
            i = next(i for i, x in enumerate(lines) if failed in x)
            raise tool_error(self.preset.name, " ".join(x.strip() for x in lines[i:i + 3]))
        return self.preset.result(output) if self.preset.result else {}

    def hinted(self, message: str, output: str) -> str:
        """`message` with what to do, when the output shows a problem the preset knows."""
        hint = next((h for needle, h in self.preset.hints if needle in output), "")
        return f"{message}; {hint}" if hint else message


def reader_for(command: str) -> Preset | None:
    """The preset whose tool an `--agent cli` command runs (its program, after any VAR=value
    and `env`), so that a preset's command copied and adjusted keeps what the preset reads from
    the tool's output: the description, tokens and cost."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    words = [w for w in words if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w)]
    while words and (words[0] in ("env", "exec", "nice", "nohup") or words[0].startswith("-")):
        words = words[1:]
    program = Path(words[0]).name if words else ""
    return next((p for p in PRESETS.values() if p.binary == program and p.result is not None), None)


def build(name: str, opts: Any, task: Task) -> PresetAgent:
    """The registry's entry point: --agent claude|codex|aider|gemini|opencode."""
    preset = PRESETS[name]
    if shutil.which(preset.binary) is None:
        raise UsageError(f"--agent {name} needs the `{preset.binary}` command on PATH "
                         "(see `autoresearch agents`)")
    command, env, note = preset.command(opts.model, opts.base_url, task)
    if note:
        print(f"autoresearch: {note}", file=sys.stderr)
    return PresetAgent(preset, command, env, opts.timeout or DEFAULT_TIMEOUT, opts.model)
