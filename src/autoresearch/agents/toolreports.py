"""What each coding-agent CLI reports about itself, read from its output: the final text, the
tokens and (where the tool gives one) the cost, and its own error report. An error report that
says the key, the login or the model is wrong is fatal (three in a row stop the loop); only
that report is read for it, never the rest of what the agent printed (a file it read may well
say "401").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from autoresearch.agents.base import AgentError

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
            tin, tout = claude_tokens(data)
            spent = {"tokens_in": tin, "tokens_out": tout,
                     "cost": float(data.get("total_cost_usd") or data.get("cost_usd") or 0.0)}
            if data.get("is_error"):
                raise tool_error("claude", data.get("result") or data.get("subtype"), data.get("api_error_status"), **spent)
            return {"text": str(data.get("result") or ""), **spent}
    return {}


def claude_tokens(data: dict[str, Any]) -> tuple[int, int]:
    """The tokens in (cache reads and writes among them) and out of a Claude Code result: the
    sum over `modelUsage`, every model it asked, where there is one. `usage` counts the main
    model's alone, while the cost (`total_cost_usd`) covers every model, a small one asked for a
    title too."""
    per_model = data.get("modelUsage")
    models = [m for m in per_model.values() if isinstance(m, dict)] if isinstance(per_model, dict) else []
    if models:
        keys = ("inputTokens", "cacheReadInputTokens", "cacheCreationInputTokens")
        return (sum(int(m.get(k) or 0) for m in models for k in keys),
                sum(int(m.get("outputTokens") or 0) for m in models))
    u = data.get("usage") or {}
    return (sum(int(u.get(k) or 0) for k in ("input_tokens", "cache_read_input_tokens",
                                             "cache_creation_input_tokens")),
            int(u.get("output_tokens") or 0))


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


def without_ignored_errors(output: str) -> str:
    """`output` without the errors Python reports at the end as ignored (`Exception ignored in:
    ...`, with its traceback): noise of a tool's teardown (an asyncio loop closed late, a pipe
    gone at exit), printed after what the tool had to say, which must not be taken for it."""
    lines = output.splitlines()
    while True:
        at = max((i for i, line in enumerate(lines) if line.startswith("Exception ignored in")), default=None)
        if at is None:
            return "\n".join(lines)
        # after it only a traceback: its header, indented frames, and the exception's one line
        tail = [line for line in lines[at + 1:] if line.strip() and not line.startswith((" ", "\t"))]
        if len([line for line in tail if not line.startswith("Traceback (most recent call last)")]) > 1:
            return "\n".join(lines)  # something was printed after it
        lines = lines[:at]


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
    lines = [line.strip() for line in without_ignored_errors(output).splitlines()]
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
