"""One free request to an LLM agent's API before the loop starts: its list of models.

A key the server refuses would otherwise be found at the first proposal, after the baseline's
minutes, by a user who has gone to bed. Listing models costs no tokens on any provider, and
every OpenAI-compatible server (vLLM, Ollama, llama.cpp, LiteLLM, OpenRouter) and Anthropic
answer it. What it can tell:

    HTTP 401                  the key is refused: `run` stops before anything is made (exit 2);
                              but a 401 about a missing scope or permission (a restricted key
                              that may chat but not list) is a warning
    no answer (connection)    a warning: each proposal will try again (a local server may be
                              started later)
    a list without the model  a warning naming the closest names (an alias the list leaves out
                              may still work, so the run goes on)
    anything else             nothing: a server without the list, a key without the right to
                              read it (OpenAI's restricted keys: 403) say nothing of the chat
"""

from __future__ import annotations

import difflib
from typing import Any

from autoresearch.agents.providers import Endpoint
from autoresearch.agents.retry import server_message
from autoresearch.agents.secrets import redact
from autoresearch.errors import UsageError

TIMEOUT = 15.0  # seconds the check may take


def listed(name: str, ids: list[str]) -> bool:
    """Whether the model `name` is among the listed `ids`, as an alias too: a name the list
    carries with a date or tag after it (`claude-sonnet-4-5` for claude-sonnet-4-5-20250929,
    `qwen2.5-coder` for qwen2.5-coder:latest), or `-latest` for the newest of them."""
    stem = name.removesuffix("-latest")
    return any(i == name or i.startswith((stem + "-", stem + ":", stem + "@")) for i in ids)


def check_endpoint(chat: Any, endpoint: Endpoint, timeout: float = TIMEOUT) -> list[str]:
    """Warnings about the endpoint (one line each); UsageError when the server refuses the key."""
    client = getattr(chat, "client", None)
    models = getattr(client, "models", None)
    if models is None:
        return []
    url = redact(str(getattr(client, "base_url", "") or endpoint.base_url or "")).rstrip("/")
    try:
        page = models.list(limit=1000, timeout=timeout) if endpoint.sdk == "anthropic" \
            else models.list(timeout=timeout)
        ids = [str(getattr(m, "id", "")) for m in (getattr(page, "data", None) or [])]
    except Exception as e:  # noqa: BLE001 - the SDKs raise many kinds; only two are told
        status = getattr(e, "status_code", None)
        said = redact(server_message(e))[:300]
        if status == 401 and any(w in said.lower() for w in ("scope", "permission")):
            return [f"the key cannot list {url}'s models ({said}): it is not checked before the baseline"]
        if status == 401:  # (OpenAI answers a restricted key's missing scope with a 401 too: above)
            key = endpoint.key_env or "OPENAI_API_KEY"
            raise UsageError(f"--model {endpoint.label}: {url} refuses the API key in {key} "
                             f"(HTTP 401: {said}); nothing was run") from None
        name = type(e).__name__
        if status is None and ("Connection" in name or "Timeout" in name):
            return [f"cannot reach {url} for --model {endpoint.label} ({redact(str(e))[:200]}); "
                    "each proposal will try again"]
        return []
    ids = [i.removeprefix("models/") for i in ids if i]  # (Gemini's ids start with models/)
    if ids and not listed(endpoint.name, ids):
        close = difflib.get_close_matches(endpoint.name, ids, n=3, cutoff=0.5)
        return [f"{url} lists {len(ids)} model{'s' if len(ids) > 1 else ''}, not {endpoint.name!r}"
                + (f" (closest: {', '.join(close)})" if close else "")
                + ": check --model (the run goes on: a name the list leaves out may still work)"]
    return []
