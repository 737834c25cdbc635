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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoresearch.agents import cli
from autoresearch.agents.base import AgentError, Context, Proposal
from autoresearch.agents.cli import DEFAULT_TIMEOUT, CommandAgent, description_from, own_dir
from autoresearch.agents.secrets import redact
from autoresearch.errors import UsageError
from autoresearch.filetree import read_plain
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
    if base_url:  # Claude Code adds /v1/messages itself (the llm agent takes the URL with /v1 or without)
        env["ANTHROPIC_BASE_URL"] = re.sub(r"/v1/?$", "", base_url.rstrip("/")) or base_url
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
    cmd = "opencode run --format json" + (f" -m {shlex.quote(model)}" if model else "")
    # the prompt on stdin (opencode reads it as the message): an argument is capped at 128 KiB
    return cmd + " < {prompt_file}", env, ""


# ---------------------------------------------------------------------------
# what each tool reports about itself

# a tool's error report that says the key, the login or the model is wrong (HTTP 401/403/404)
UNRECOVERABLE = re.compile(
    r"\b40[134]\b|invalid[ _-]?(?:x-)?api[ _-]?key|incorrect api key|api key not valid|no api key|"
    r"authenticat|unauthori[sz]ed|/login\b|not logged in|permission[ _]?denied|permission_error|"
    r"set an auth method|"
    r"forbidden|not_found_error|notfounderror|model_not_found|unknown model|invalid model|"
    r"\bmodels?\b.{0,120}?\b(?:not found|does not exist|may not exist|is not supported)", re.I)


def tool_error(tool: str, message: object, status: object = None, **spent: Any) -> AgentError:
    """The error `tool` reported about itself (with the HTTP status it gives, if any), as the
    trial's reason `tool: message`; fatal when it says the key, the login or the model is wrong."""
    text = " ".join(str(message or "error").split())[:300]
    if status and str(status) not in text:
        text += f" (HTTP {status})"
    fatal = str(status) in ("401", "403", "404") or bool(UNRECOVERABLE.search(text))
    return AgentError(f"{tool}: {text}", fatal=fatal, **spent)


def claude_result(output: str) -> dict[str, Any]:
    """From `--output-format json`: the final text, tokens and the cost Claude Code reports. An
    `is_error` result (with `api_error_status`, in newer versions) is the agent failing."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and '"result"' in line:
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            u = data.get("usage") or {}
            tin = sum(int(u.get(k) or 0) for k in ("input_tokens", "cache_read_input_tokens",
                                                   "cache_creation_input_tokens"))
            spent = {"tokens_in": tin, "tokens_out": int(u.get("output_tokens") or 0),
                     "cost": float(data.get("total_cost_usd") or data.get("cost_usd") or 0.0)}
            if data.get("is_error"):
                raise tool_error("claude", data.get("result") or data.get("subtype"), data.get("api_error_status"), **spent)
            return {"text": str(data.get("result") or ""), **spent}
    return {}


def json_events(output: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a tool's one-event-per-line output, other lines skipped."""
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            yield event


def opencode_result(output: str) -> dict[str, Any]:
    """From `--format json` (one event per line): the last text part, and the tokens and cost
    of every step (`step_finish`). An `error` event is the agent failing."""
    tin = tout = 0
    cost = 0.0
    text = ""
    for event in json_events(output):
        part: dict[str, Any] = event["part"] if isinstance(event.get("part"), dict) else {}
        kind = event.get("type")
        if kind == "error":
            err = event.get("error") or part or event
            data = err.get("data") if isinstance(err, dict) else None
            data = data if isinstance(data, dict) else {}
            raise tool_error("opencode", data.get("message") or err, data.get("statusCode"))
        if kind == "text" and str(part.get("text") or "").strip():
            text = str(part["text"])
        elif kind == "step_finish":
            tokens = part.get("tokens") or {}
            cache = tokens.get("cache") or {}
            tin += int(tokens.get("input") or 0) + int(cache.get("read") or 0) + int(cache.get("write") or 0)
            tout += int(tokens.get("output") or 0) + int(tokens.get("reasoning") or 0)
            cost += float(part.get("cost") or 0.0)
    return {"text": text, "tokens_in": tin, "tokens_out": tout, "cost": cost}


CODEX_NO_HELPER = "Refusing to create helper binaries under temporary dir"
CODEX_HELPER_HINT = ("codex did not set up its sandbox helper, which it refuses to do when its home "
                     "(CODEX_HOME, else ~/.codex) is under the temporary folder ($TMPDIR, else /tmp): "
                     "set CODEX_HOME or TMPDIR elsewhere")


def codex_result(output: str) -> dict[str, Any]:
    """From `codex exec --json` (one event per line): the last agent message, and the tokens of
    every turn (`turn.completed`; input counts the cached tokens, output the reasoning ones). A
    `turn.failed` event is the agent failing; `error` events before it are retries. Without its
    sandbox helper every command and patch fails while codex exits 0: that is a failure too."""
    tin = tout = 0
    text = ""
    changed = False
    for event in json_events(output):
        kind = event.get("type")
        item: dict[str, Any] = event["item"] if isinstance(event.get("item"), dict) else {}
        if kind == "turn.failed":
            err = event.get("error")
            raise tool_error("codex", err.get("message") if isinstance(err, dict) else err)
        if kind == "item.completed" and item.get("type") == "agent_message" and str(item.get("text") or "").strip():
            text = str(item["text"])
        elif kind == "item.completed" and item.get("type") == "file_change":
            changed = changed or item.get("status") == "completed"
        elif kind == "turn.completed":
            usage = event.get("usage") or {}
            tin += int(usage.get("input_tokens") or 0)
            tout += int(usage.get("output_tokens") or 0)
    if CODEX_NO_HELPER in output and not changed:
        raise AgentError(f"codex: its sandbox could not start (\"{CODEX_NO_HELPER}\"); {CODEX_HELPER_HINT}")
    return {"text": text, "tokens_in": tin, "tokens_out": tout, "cost": 0.0}


def gemini_result(output: str) -> dict[str, Any]:
    """From `--output-format json` (one JSON document, printed at the end among stderr lines): the
    response, and the tokens of every model (prompt counts the cached tokens; out is candidates
    and thoughts). An `error` document is the agent failing."""
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"^\{", output, re.M)]
    for start in reversed(starts):
        try:
            data, _ = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict) or not ({"response", "error", "stats"} & set(data)):
            continue
        if data.get("error"):
            raise gemini_error(data["error"])
        tin = tout = 0
        models = (data.get("stats") or {}).get("models") or {}
        for stats in models.values():
            tokens = (stats or {}).get("tokens") or {}
            tin += int(tokens.get("prompt") or 0)
            tout += int(tokens.get("candidates") or 0) + int(tokens.get("thoughts") or 0)
        return {"text": str(data.get("response") or ""), "tokens_in": tin, "tokens_out": tout, "cost": 0.0}
    return {}


def gemini_error(err: Any) -> AgentError:
    """gemini's error report, whose message may be the API's own error document (JSON)."""
    message, status = (err.get("message"), err.get("code")) if isinstance(err, dict) else (err, None)
    try:
        inner = json.loads(str(message)).get("error")
    except (ValueError, AttributeError):
        inner = None
    if isinstance(inner, dict) and inner.get("message"):
        message, status = inner["message"], inner.get("code") or status
    if not (isinstance(status, int) and 100 <= status < 600):  # (41: its exit code, no HTTP status)
        status = None
    return tool_error("gemini", message, status)


AIDER_NOISE = re.compile(r"^(Aider v|Model:|Main model|Weak model|Editor model|Git repo|Repo-map|Added |"
                         r"Tokens:|Cost:|Applied edit|Commit |Did not apply|Only \d+ reflections|"
                         r"Warning|https?://|HTTPSConnectionPool|litellm|Can't initialize|Use /help|"
                         r"Note:|You can skip|Scanning repo|Initial repo scan|Creating empty file|"
                         r"Summariz|Update git|Dropping|Files in chat|Please answer|The LLM did not)")
_K = {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}


def _count(num: str, suffix: str) -> int:
    return int(float(num) * _K.get(suffix, 1))


BARE_FILE = re.compile(r"[\w.\-/]+\.\w{1,10}")  # `train.py`, `configs/base.yaml`: no description


def aider_result(output: str) -> dict[str, Any]:
    """aider prints `Tokens: 1.2k sent, 310 received. Cost: $0.01 message, $0.02 session.` per
    call; the description is the last line of prose outside code blocks and aider's own notes."""
    tin = tout = 0
    cost = 0.0
    for m in re.finditer(r"Tokens: ([\d.]+)([kKmM]?) sent(?:, ([\d.]+)([kKmM]?) cache write)?"
                         r"(?:, ([\d.]+)([kKmM]?) cache hit)?, ([\d.]+)([kKmM]?) received", output):
        tin += _count(m[1], m[2]) + (_count(m[3], m[4]) if m[3] else 0) + (_count(m[5], m[6]) if m[5] else 0)
        tout += _count(m[7], m[8])
    sessions = re.findall(r"\$([\d.]+) session", output)
    if sessions:
        cost = float(sessions[-1])
    lines = [line.strip() for line in output.splitlines()]
    following, nxt = [""] * len(lines), ""  # each line's next non-blank one (aider puts a blank line between)
    for i in range(len(lines) - 1, -1, -1):
        following[i] = nxt
        nxt = lines[i] or nxt
    prose: list[str] = []
    fenced = False
    for s, nxt in zip(lines, following, strict=True):
        if s.startswith("```"):
            fenced = not fenced
            continue
        if (fenced or not s or AIDER_NOISE.match(s) or nxt.startswith("```") or BARE_FILE.fullmatch(s)
                or s.startswith(("<<<<<<<", "=======", ">>>>>>>"))):
            continue  # code, aider's notes, a file's name over its code or in aider's list of files
        prose.append(s)
    return {"text": prose[-1] if prose else "", "tokens_in": tin, "tokens_out": tout, "cost": cost}


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
            printed, returncode = self.execute(ctx)
        except AgentError as e:  # stopped, or timed out
            raise AgentError(redact(self.hinted(str(e), cli.read_from(ctx.log_path, start))), model=self.model) from None
        output = cli.read_from(ctx.log_path, start)  # (execute redacted the keys in it)
        text = read_plain(own_dir(ctx) / "description")
        try:  # the tool's own error report, whatever its exit code: the clearest reason there is
            info = self.report(output)
        except AgentError as e:
            raise AgentError(redact(cli.described(str(e), text)), fatal=e.fatal, model=self.model,
                             tokens_in=e.tokens_in, tokens_out=e.tokens_out, cost=e.cost) from None
        if returncode != 0:
            failed = cli.exit_error(returncode, redact(printed), text)
            raise AgentError(redact(self.hinted(str(failed), output)), fatal=failed.fatal, model=self.model)
        description = description_from(text, info.get("text", "")) or description_from(None, printed)
        tin, tout = info.get("tokens_in", 0), info.get("tokens_out", 0)
        return Proposal(redact(description), model=self.model, tokens_in=tin, tokens_out=tout,
                        cost=info.get("cost") or self.priced(tin, tout))

    def priced(self, tokens_in: int, tokens_out: int) -> float:
        """What the tokens of a tool that reports no cost (codex, gemini, opencode) came to, at
        the price table's price for the --model (0 when it names none, or one not in the table)."""
        from autoresearch.agents.prices import cost

        return cost(self._price(), tokens_in, tokens_out) if tokens_in or tokens_out else 0.0

    def _price(self) -> tuple[float, float] | None:
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
