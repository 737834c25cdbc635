"""Talking to an LLM API: providers and keys, one chat call, the reply in a neutral form.

`Chat.complete(system, messages, tools)` sends one request and returns a `Reply`. Messages use a
small neutral form (user text, assistant text + tool calls, tool results) that each client turns
into its provider's wire format. The official SDKs are imported only when a client is made.
Retrying a call is retry.py's (`call_with_retries`); a client raises `Transient` for a reply
worth another attempt (with the tokens it was billed for).

Guarantees:
- API keys are read from the providers' usual environment variables, handed to the SDK and
  nowhere else; `redact()` scrubs them (and anything shaped like a key) from every text we log
  or raise, including providers' error messages that quote a key.
- What fails for good raises `LLMError` (`OutOfTime` when the caller's deadline, not the
  attempts, ended it).
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

# ---------------------------------------------------------------------------
# providers: --model PROVIDER/NAME


@dataclass(frozen=True)
class Provider:
    sdk: str  # "openai" (any OpenAI-compatible server) or "anthropic"
    base_url: str | None
    key_env: str | None  # None: a local server that needs no key
    local: bool = False  # prices are zero


PROVIDERS: dict[str, Provider] = {
    "openai": Provider("openai", None, "OPENAI_API_KEY"),
    "anthropic": Provider("anthropic", None, "ANTHROPIC_API_KEY"),
    "openrouter": Provider("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "deepseek": Provider("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "gemini": Provider("openai", "https://generativelanguage.googleapis.com/v1beta/openai/", "GEMINI_API_KEY"),
    "groq": Provider("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "mistral": Provider("openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "together": Provider("openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
    "xai": Provider("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
    "vllm": Provider("openai", "http://127.0.0.1:8000/v1", None, local=True),
    "ollama": Provider("openai", "http://127.0.0.1:11434/v1", None, local=True),
    "llamacpp": Provider("openai", "http://127.0.0.1:8080/v1", None, local=True),
}
ALIASES = {"llama.cpp": "llamacpp", "llama-cpp": "llamacpp", "claude": "anthropic", "google": "gemini"}


class ConfigError(Exception):
    """A bad --model / --base-url / missing key: one sentence for the user (exit 2)."""


@dataclass(frozen=True)
class Endpoint:
    provider: str
    name: str  # the model name the API is given
    sdk: str
    base_url: str | None
    key: str = field(repr=False, default="")
    key_env: str | None = None
    local: bool = False

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.name}"


def anthropic_root(base_url: str) -> str:
    """An Anthropic server's URL without a trailing /v1: the Anthropic SDK and Claude Code add
    /v1/messages themselves (a --base-url may be given with /v1 or without)."""
    return re.sub(r"/v1/?$", "", base_url.rstrip("/"))


def resolve(model: str | None, base_url: str | None, env: Mapping[str, str] | None = None) -> Endpoint:
    """`--model PROVIDER/NAME [--base-url URL]` -> an Endpoint with its key from the environment."""
    env = os.environ if env is None else env
    if not model or not model.strip():
        raise ConfigError("an LLM agent needs --model PROVIDER/NAME, e.g. openai/gpt-4.1, "
                          "anthropic/claude-sonnet-4-5, or ollama/qwen2.5-coder with --base-url")
    prefix, sep, name = model.strip().partition("/")
    prefix = ALIASES.get(prefix.lower(), prefix.lower())
    if sep and not name.strip():
        raise ConfigError(f"--model {model!r} names no model after {prefix}/ (e.g. openai/gpt-4.1)")
    if not sep or not name:
        if base_url:  # a bare name on an OpenAI-compatible server
            prefix, name = "openai", model.strip()
        else:
            raise ConfigError(f"--model {model!r} must be PROVIDER/NAME (providers: "
                              f"{', '.join(PROVIDERS)}), or give --base-url for a bare name")
    if prefix not in PROVIDERS:
        if not base_url:
            raise ConfigError(f"--model {model!r}: unknown provider {prefix!r} (known: "
                              f"{', '.join(PROVIDERS)}); any OpenAI-compatible server works with --base-url")
        prefix, name = "openai", model.strip()
    p = PROVIDERS[prefix]
    if base_url:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"--base-url {base_url!r} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)")
        base_url = base_url.strip()
        if p.sdk == "anthropic":
            base_url = anthropic_root(base_url)
    url = base_url or p.base_url
    key = env.get(p.key_env, "").strip() if p.key_env else ""
    if p.key_env and not key:
        if base_url and p.sdk == "openai":
            key = "not-needed"  # a self-hosted OpenAI-compatible server usually takes any key
        else:
            raise ConfigError(f"--model {model}: set {p.key_env} in the environment (the key is "
                              "read from there and never written anywhere)")
    if not p.key_env:
        key = env.get("OPENAI_API_KEY", "") or "not-needed"
    return Endpoint(prefix, name, p.sdk, url, key, p.key_env, local=p.local)


# ---------------------------------------------------------------------------
# one reply, and the neutral message form


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    error: str = ""  # the arguments were not valid JSON


@dataclass
class Reply:
    text: str
    tool_calls: list[ToolCall]
    tokens_in: int = 0
    tokens_out: int = 0
    cache_read: int = 0
    cache_write: int = 0
    stop: str = ""
    # Anthropic: the reply's content blocks as received, when it holds thinking. A model that
    # thinks (adaptive thinking is on by default from Claude's 5 models) must be sent its
    # thinking back, signed and unchanged, with the tool results: the API refuses a rebuilt turn
    blocks: list[dict[str, Any]] = field(default_factory=list)


class LLMError(Exception):
    """The API call failed for good (after retries, or at once for a permanent error). `fatal`:
    it will fail the same way next time (401, 403, 404: the key or the model name)."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class OutOfTime(LLMError):
    """The caller's deadline came before a reply: no time was left for a (further) attempt, or
    the retry it would take (`retry_in` seconds from now) would pass it."""

    def __init__(self, message: str, retry_in: float | None = None) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class Transient(Exception):
    """A failure worth retrying; `wait`: the server's retry-after (s), `spent`: tokens billed."""

    def __init__(self, message: str, wait: float | None = None, spent: tuple[int, int] = (0, 0)) -> None:
        super().__init__(message)
        self.wait = wait
        self.spent = spent


def count(usage: Any, name: str) -> int:
    """A token count from a reply's usage block: a number >= 0, else 0 (a server's odd value)."""
    n = getattr(usage, name, 0)
    return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) and 0 <= n < math.inf else 0


def arguments(raw: Any) -> tuple[dict[str, Any], str]:
    """A tool call's arguments as a dict, and what is wrong with them ('' when nothing): a JSON
    object as text (the APIs' spec), or an object already (servers off the spec send one)."""
    if isinstance(raw, dict):
        return raw, ""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}, ""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            return {}, f"arguments are not valid JSON: {e}"
        if isinstance(raw, dict):
            return raw, ""
    return {}, f"arguments must be a JSON object of the tool's parameters, not {type(raw).__name__}"


def malformed(e: Exception, spent: tuple[int, int]) -> Transient:
    """A reply we could not read, retried, with the tokens it was billed for."""
    return Transient(f"malformed reply from the API ({type(e).__name__}: {e})"[:400], spent=spent)


class Chat(Protocol):
    def complete(self, system: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                 max_tokens: int, timeout: float) -> Reply: ...


# ---------------------------------------------------------------------------
# OpenAI and every OpenAI-compatible server


def _openai_messages(system: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for m in messages:
        if m["role"] == "user":
            out.append({"role": "user", "content": m["content"]})
        elif m["role"] == "assistant":
            if not m.get("content") and not m.get("tool_calls"):
                continue  # an empty reply (cut while reasoning): content null with no call, the API refuses
            msg: dict[str, Any] = {"role": "assistant", "content": m.get("content") or None}
            if m.get("tool_calls"):
                msg["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                                     for c in m["tool_calls"]]
            out.append(msg)
        else:  # tool results
            out.extend({"role": "tool", "tool_call_id": r["id"], "content": r["content"]}
                       for r in m["results"])
    return out


class OpenAIChat:
    def __init__(self, endpoint: Endpoint) -> None:
        import openai  # lazily: only an LLM agent needs it

        self.model = endpoint.name
        self.client = openai.OpenAI(api_key=endpoint.key, base_url=endpoint.base_url, max_retries=0)
        # OpenAI's name for the reply's token limit (its reasoning models refuse `max_tokens`);
        # Mistral's API refuses it (422, "extra inputs are not permitted"), as may other
        # servers: they are given `max_tokens`, the older name every compatible server knows
        mistral = endpoint.provider == "mistral" or "api.mistral.ai" in (endpoint.base_url or "")
        self.limit_name = "max_tokens" if mistral else "max_completion_tokens"

    def complete(self, system: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                 max_tokens: int, timeout: float) -> Reply:
        specs = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                   "parameters": t["parameters"]}} for t in tools]
        request: dict[str, Any] = {"model": self.model, "messages": _openai_messages(system, messages),
                                   "tools": specs, "timeout": timeout, self.limit_name: max_tokens}
        try:
            r = self.client.chat.completions.create(**request)
        except Exception as e:
            if not (self.limit_name == "max_completion_tokens" and getattr(e, "status_code", None) in (400, 422)
                    and "max_completion_tokens" in f"{getattr(e, 'message', '')} {getattr(e, 'body', '')}"):
                raise
            self.limit_name = "max_tokens"  # (this server's name for it, from now on)
            request["max_tokens"] = request.pop("max_completion_tokens")
            r = self.client.chat.completions.create(**request)
        if isinstance(r, (str, bytes)) or not getattr(r, "choices", None):
            u = None if isinstance(r, (str, bytes)) else getattr(r, "usage", None)  # (billed all the same)
            raise Transient("malformed reply from the API (no choices)",
                            spent=(count(u, "prompt_tokens"), count(u, "completion_tokens")))
        usage = getattr(r, "usage", None)
        # cached prompt tokens are billed at full price here: an over-estimate, never an under-
        spent = (count(usage, "prompt_tokens"), count(usage, "completion_tokens"))
        try:
            msg = r.choices[0].message
            calls = []
            for c in msg.tool_calls or []:
                fn = getattr(c, "function", None)
                if fn is not None:
                    calls.append(ToolCall(c.id or uuid.uuid4().hex[:12], str(fn.name), *arguments(fn.arguments)))
            return Reply(str(msg.content or ""), calls, *spent, stop=str(r.choices[0].finish_reason or ""))
        except (AttributeError, TypeError, ValueError, KeyError, IndexError) as e:
            raise malformed(e, spent) from None


# ---------------------------------------------------------------------------
# Anthropic


def _anthropic_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(role: str, content: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:  # tool results then a note: one user turn
            out[-1]["content"].extend(content)
        else:
            out.append({"role": role, "content": content})

    for i, m in enumerate(messages):
        if m["role"] == "user":
            block: dict[str, Any] = {"type": "text", "text": m["content"]}
            if i == 0:  # the big first message (program, history, code) is cached between steps
                block["cache_control"] = {"type": "ephemeral"}
            add("user", [block])
        elif m.get("blocks"):  # a turn with thinking: as it came (see Reply.blocks)
            add("assistant", [dict(b) for b in m["blocks"]])
        elif m["role"] == "assistant":  # (a text of only whitespace, "\n\n" before a tool call, the API refuses)
            text = m.get("content") or ""
            content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text.strip() else []
            content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                        for c in m.get("tool_calls") or []]
            add("assistant", content or [{"type": "text", "text": "."}])
        else:
            add("user", [{"type": "tool_result", "tool_use_id": r["id"], "content": r["content"]}
                         for r in m["results"]])
    return out


class AnthropicChat:
    def __init__(self, endpoint: Endpoint) -> None:
        import anthropic  # lazily

        self.model = endpoint.name
        self.client = anthropic.Anthropic(api_key=endpoint.key, base_url=endpoint.base_url, max_retries=0)

    def complete(self, system: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                 max_tokens: int, timeout: float) -> Reply:
        specs = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
                 for t in tools]
        r = self.client.messages.create(
            model=self.model, max_tokens=max_tokens, messages=_anthropic_messages(messages),  # type: ignore[arg-type]
            system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],  # type: ignore[list-item]
            tools=specs, timeout=timeout)  # type: ignore[arg-type]
        u = None if isinstance(r, (str, bytes)) else getattr(r, "usage", None)
        read, write = count(u, "cache_read_input_tokens"), count(u, "cache_creation_input_tokens")
        spent = (count(u, "input_tokens") + read + write, count(u, "output_tokens"))
        if isinstance(r, (str, bytes)) or getattr(r, "content", None) is None:
            raise Transient("malformed reply from the API (no content)", spent=spent)
        try:
            text = "".join(str(getattr(b, "text", "")) for b in r.content if getattr(b, "type", "") == "text")
            calls = [ToolCall(str(getattr(b, "id", "")), str(getattr(b, "name", "")), *arguments(getattr(b, "input", None)))
                     for b in r.content if getattr(b, "type", "") == "tool_use"]
            thinks = any(getattr(b, "type", "") in ("thinking", "redacted_thinking") for b in r.content)
            blocks = [b.model_dump(mode="json", exclude_none=True) for b in r.content] if thinks else []
        except (AttributeError, TypeError, ValueError) as e:
            raise malformed(e, spent) from None
        return Reply(text, calls, *spent, cache_read=read, cache_write=write, stop=str(r.stop_reason or ""),
                     blocks=blocks)


def make_chat(endpoint: Endpoint) -> Chat:
    try:
        return AnthropicChat(endpoint) if endpoint.sdk == "anthropic" else OpenAIChat(endpoint)
    except ImportError:
        raise ConfigError(f"--model {endpoint.label} needs the `{endpoint.sdk}` package: "
                          "pip install -e '.[llm]' (in the autoresearch checkout)") from None
