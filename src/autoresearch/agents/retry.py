"""Retrying an LLM API call: which failures are worth another attempt (`classify`), how long
to wait (exponential backoff with full jitter, or the server's retry-after), within the caller's
deadline, given up at once when the loop is stopped; and the AUTORESEARCH_LLM_* settings.

A transient failure (429, 408/409, 5xx, timeouts, connection errors, a malformed body) is
retried; a refusal that will recur (400, 401, 402, 403, 404, 422, and a 429 that says the
account is out of quota) is a `fatal` LLMError quoting the server's message.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autoresearch.agents.providers import Endpoint, LLMError, OutOfTime, Reply, Transient
from autoresearch.agents.secrets import redact


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
        # (the server's words: Anthropic's SDK message is the whole body, a dict's repr)
        return Transient(f"HTTP {status}: {name}: {said}", retry_after(getattr(response, "headers", None)))
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


GRACE = 2.0  # seconds past a request's timeout before its thread is left behind


def _call(fn: Callable[[float], Reply], timeout: float, cancel: threading.Event | None) -> Reply:
    """fn(timeout) in a daemon thread, given up at once when `cancel` is set, and as Transient
    when no whole reply came in `timeout` (+ GRACE) seconds: the SDKs' timeout bounds each read,
    so a server (a proxy's keep-alive) that sends a byte now and then would hold a request past
    every limit. A request given up is left to end in its thread; nothing it returns is used."""
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
    until = time.monotonic() + timeout + GRACE
    while not done.wait(0.1):
        if cancel is not None and cancel.is_set():
            raise LLMError("stopped while waiting for the model")
        if time.monotonic() >= until:
            raise Transient(f"no whole reply in {timeout:g} s (the server kept the request open)")
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
