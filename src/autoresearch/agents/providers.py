"""Talking to an LLM API: providers, keys, one chat call, retries, redaction.

`Chat.complete(system, messages, tools)` sends one request and returns a `Reply`. Messages use a
small neutral form (user text, assistant text + tool calls, tool results) that each client turns
into its provider's wire format. The official SDKs are imported only when a client is made.

Guarantees:
- API keys are read from the providers' usual environment variables, handed to the SDK and
  nowhere else; `redact()` scrubs them (and anything shaped like a key) from every text we log
  or raise, including providers' error messages that quote a key.
- Transient failures (429, 408/409, 5xx, timeouts, connection errors, a malformed body) are
  retried with exponential backoff and full jitter, honouring retry-after, within the caller's
  deadline; other failures (401, 400, 404 ...) are not. What still fails raises `LLMError`
  (`OutOfTime` when the caller's deadline, not the attempts, ended it). A refusal that will recur
  (400, 401, 402, 403, 404, 422, and a 429 that says the account is out of quota) is `fatal`, and
  quotes the server's message.
- The number settings (AUTORESEARCH_LLM_*) are checked: a bad one is a ValueError naming it.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from autoresearch.agents.secrets import redact

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
        if p.sdk == "anthropic":  # the Anthropic SDK adds /v1/messages itself
            base_url = re.sub(r"/v1/?$", "", base_url.rstrip("/"))
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


class Chat(Protocol):
    def complete(self, system: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                 max_tokens: int, timeout: float) -> Reply: ...


def retry_after(headers: Any) -> float | None:
    """Seconds from retry-after-ms / retry-after (a number or an HTTP date)."""
    if headers is None:
        return None
    try:
        if ms := headers.get("retry-after-ms"):
            return max(0.0, float(ms) / 1000)
        if not (raw := headers.get("retry-after")):
            return None
        try:
            return max(0.0, float(raw))
        except ValueError:
            when = email.utils.parsedate_to_datetime(raw)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def classify(e: Exception, endpoint: Endpoint | None = None) -> Exception:
    """An SDK exception -> Transient (retry) or LLMError (give up), message redacted; with the
    `endpoint`, a refusal names what to check (the key's variable, the URL asked)."""
    status = getattr(e, "status_code", None)
    response = getattr(e, "response", None)
    name = type(e).__name__
    body = getattr(e, "message", None) or str(e)
    text = redact(f"{name}: {body}")[:400]
    url = redact(request_url(e))
    if isinstance(e, (json.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError)) and status is None:
        return Transient(f"malformed reply from the API ({text})")
    if status is None:
        if "Timeout" in name or "Connection" in name or "ResponseValidation" in name:
            return Transient(text + (f" ({url})" if url and url not in text else ""))
        return LLMError(text)
    said = redact(server_message(e))[:400]
    if (status == 402 or (status == 429 and "insufficient_quota" in f"{getattr(e, 'body', '')} {body}")
            or (status == 400 and "credit balance" in said.lower())):  # (Anthropic's is a 400)
        return LLMError(f"HTTP {status}: the account is out of credit or quota: {said!r} (it will fail the "
                        "same way until the account is topped up)", fatal=True)
    if status in (408, 409, 425, 429) or status >= 500:
        return Transient(f"HTTP {status}: {text}", retry_after(getattr(response, "headers", None)))
    if status in (400, 422):  # the request itself is refused: the next one will be too
        return LLMError(f"HTTP {status}: the server refused the request: {said!r} (it would refuse it "
                        "again: check the model name, that the model supports tool calls, and its context "
                        "length)", fatal=True)
    key = (endpoint.key_env or "OPENAI_API_KEY") if endpoint else ""
    hint = {401: f" (check the API key{f' in {key}' if key else ' variable'})",
            403: " (the key lacks access to this model?)",
            404: f"{f' at {url}' if url else ''} (is the model name right?"
                 f"{' an OpenAI-compatible base URL usually ends in /v1' if endpoint and endpoint.sdk == 'openai' and endpoint.base_url and '/v1' not in endpoint.base_url else ''})"
            }.get(status, "")
    return LLMError(f"HTTP {status}{hint}: {said}", fatal=status in (401, 403, 404))


def request_url(e: Exception) -> str:
    """The URL of the request an SDK error is about ('' when it does not say)."""
    for holder in (getattr(e, "response", None), e):
        try:  # httpx raises (not returns None) when a response has no request
            request = getattr(holder, "request", None)
            if request is not None and getattr(request, "url", None) is not None:
                return str(request.url)
        except Exception:  # noqa: BLE001,S112 - no URL to name
            continue
    return ""


def server_message(e: Exception) -> str:
    """The server's own words in an SDK's HTTP error: body.error.message (OpenAI-compatible
    servers, Anthropic), body.message or body.error (a bare string), else the SDK's message."""
    body = getattr(e, "body", None)
    for _ in range(3):
        if isinstance(body, dict):
            inner = body.get("error", body.get("message"))
            if isinstance(inner, str):
                return inner
            if inner is None or inner is body:
                break
            body = inner
        else:
            break
    if isinstance(body, str) and body.strip():
        return body.strip()
    return str(getattr(e, "message", None) or e)


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter. Environment overrides (for tests and slow links):
    AUTORESEARCH_LLM_RETRIES, AUTORESEARCH_LLM_BACKOFF (base seconds), AUTORESEARCH_LLM_BACKOFF_MAX,
    AUTORESEARCH_LLM_TIMEOUT (seconds one request may take)."""

    attempts: int = 6
    base: float = 1.0
    cap: float = 60.0
    request_timeout: float = 180.0
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetryPolicy:
        """The policy with the environment's overrides; ValueError names a bad variable."""
        env = os.environ if env is None else env
        p = cls()
        p.attempts = int(setting(env, "AUTORESEARCH_LLM_RETRIES", p.attempts - 1, 0, whole=True)) + 1
        p.base = setting(env, "AUTORESEARCH_LLM_BACKOFF", p.base, 0)
        p.cap = setting(env, "AUTORESEARCH_LLM_BACKOFF_MAX", p.cap, 0)
        p.request_timeout = setting(env, "AUTORESEARCH_LLM_TIMEOUT", p.request_timeout, 0, above=True)
        return p

    def delay(self, attempt: int, server_wait: float | None) -> float:
        """Full jitter on base x 2^attempt (capped), and never less than the server's retry-after."""
        backoff = random.uniform(0, min(self.cap, self.base * 2 ** attempt))
        return max(backoff, server_wait) if server_wait is not None else backoff


def setting(env: Mapping[str, str], name: str, default: float, least: float, *, whole: bool = False,
            above: bool = False) -> float:
    """The number in environment variable `name` (`default` when unset or blank): a whole number
    if `whole`, and >= `least` (> `least` if `above`); ValueError naming the variable if not."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    bound = f"{'>' if above else '>='} {least:g}"
    what = f"a whole number {bound}" if whole else f"a number {bound}"
    try:
        value = float(int(raw)) if whole else float(raw)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None
    if not math.isfinite(value) or value < least or (above and value == least):
        raise ValueError(f"{name} must be {what}, got {raw!r}")
    return value


def _call(fn: Callable[[float], Reply], timeout: float, cancel: threading.Event | None) -> Reply:
    """fn(timeout), given up at once when `cancel` is set (the request is left to finish in a
    daemon thread; nothing it returns is used)."""
    if cancel is None:
        return fn(timeout)
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["reply"] = fn(timeout)
        except BaseException as e:  # noqa: BLE001 - handed to the caller as it is
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, daemon=True, name="autoresearch-llm-call").start()
    while not done.wait(0.1):
        if cancel.is_set():
            raise LLMError("stopped while waiting for the model")
    if "error" in box:
        raise box["error"]
    return box["reply"]  # type: ignore[no-any-return]


def call_with_retries(fn: Callable[[float], Reply], policy: RetryPolicy, deadline: float,
                      log: Callable[[str], None], cancel: threading.Event | None = None,
                      endpoint: Endpoint | None = None,
                      spent: Callable[[int, int], None] | None = None) -> Reply:
    """Call fn(timeout) until it succeeds, a permanent error, the attempts or the deadline run out
    (OutOfTime), or `cancel` is set; `endpoint` names what to check in a refusal, `spent` hears
    of the tokens a failed reply was billed for."""
    last = ""
    tried = 0
    for attempt in range(policy.attempts):
        left = deadline - time.monotonic()
        if left <= 0.5:
            raise OutOfTime(f"after {tried} attempt(s){'; the last: ' + last if last else ''}")
        if cancel is not None and cancel.is_set():
            raise LLMError("stopped before calling the model")
        tried += 1
        try:
            return _call(fn, min(policy.request_timeout, left), cancel)
        except Exception as e:  # noqa: BLE001 - the SDKs raise many kinds; classify sorts them
            err = e if isinstance(e, (Transient, LLMError)) else classify(e, endpoint)
            if isinstance(err, LLMError):
                raise err from None
            last = str(err)
            assert isinstance(err, Transient)
            if spent is not None and any(err.spent):
                spent(*err.spent)
            wait = policy.delay(attempt, err.wait)
            if attempt + 1 >= policy.attempts:
                break
            if time.monotonic() + wait >= deadline:
                log(f"[api] {last}; the retry (in {wait:.1f} s) would pass the agent's time limit")
                raise OutOfTime(f"after {tried} attempt(s); the last: {last}",
                                retry_in=wait if err.wait is not None else None) from None  # the server's wait
            log(f"[api] {last}; retry {attempt + 1}/{policy.attempts - 1} in {wait:.2f} s")
            if cancel is not None and policy.sleep is time.sleep:
                if cancel.wait(wait):
                    raise LLMError("stopped while waiting to retry") from None
            else:
                policy.sleep(wait)
    raise LLMError(f"the API call failed after {tried} attempt(s): {last}")


# ---------------------------------------------------------------------------
# OpenAI and every OpenAI-compatible server


def _openai_messages(system: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for m in messages:
        if m["role"] == "user":
            out.append({"role": "user", "content": m["content"]})
        elif m["role"] == "assistant":
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

    def complete(self, system: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                 max_tokens: int, timeout: float) -> Reply:
        specs = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                   "parameters": t["parameters"]}} for t in tools]
        r = self.client.chat.completions.create(
            model=self.model, messages=_openai_messages(system, messages), tools=specs,  # type: ignore[arg-type]
            max_completion_tokens=max_tokens, timeout=timeout)
        if isinstance(r, (str, bytes)) or not getattr(r, "choices", None):
            u = None if isinstance(r, (str, bytes)) else getattr(r, "usage", None)  # (billed all the same)
            raise Transient("malformed reply from the API (no choices)", spent=(
                getattr(u, "prompt_tokens", 0) or 0, getattr(u, "completion_tokens", 0) or 0))
        msg = r.choices[0].message
        calls = []
        for c in msg.tool_calls or []:
            fn = getattr(c, "function", None)
            if fn is None:
                continue
            try:
                args = json.loads(fn.arguments or "{}")
                calls.append(ToolCall(c.id or uuid.uuid4().hex[:12], fn.name, args if isinstance(args, dict) else {}))
            except json.JSONDecodeError as e:
                calls.append(ToolCall(c.id or uuid.uuid4().hex[:12], fn.name, {}, f"arguments are not valid JSON: {e}"))
        usage = getattr(r, "usage", None)
        # cached prompt tokens are billed at full price here: an over-estimate, never an under-
        return Reply(msg.content or "", calls, getattr(usage, "prompt_tokens", 0) or 0,
                     getattr(usage, "completion_tokens", 0) or 0, stop=r.choices[0].finish_reason or "")


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
        elif m["role"] == "assistant":
            content: list[dict[str, Any]] = [{"type": "text", "text": m["content"]}] if m.get("content") else []
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
        if isinstance(r, (str, bytes)) or getattr(r, "content", None) is None:
            raise Transient("malformed reply from the API (no content)")
        text = "".join(getattr(b, "text", "") for b in r.content if getattr(b, "type", "") == "text")
        calls = [ToolCall(getattr(b, "id", ""), getattr(b, "name", ""), dict(getattr(b, "input", None) or {}))
                 for b in r.content if getattr(b, "type", "") == "tool_use"]
        u = r.usage
        read = getattr(u, "cache_read_input_tokens", 0) or 0
        write = getattr(u, "cache_creation_input_tokens", 0) or 0
        return Reply(text, calls, (u.input_tokens or 0) + read + write, u.output_tokens or 0,
                     cache_read=read, cache_write=write, stop=r.stop_reason or "")


def make_chat(endpoint: Endpoint) -> Chat:
    try:
        return AnthropicChat(endpoint) if endpoint.sdk == "anthropic" else OpenAIChat(endpoint)
    except ImportError:
        raise ConfigError(f"--model {endpoint.label} needs the `{endpoint.sdk}` package: "
                          "pip install -e '.[llm]' (in the autoresearch checkout)") from None
