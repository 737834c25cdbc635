"""API keys kept out of every log, error, ledger row and file the agents write.

`redact()` scrubs the keys in the environment (every provider's key variable, every *_API_KEY,
*_TOKEN and *SECRET value of 8+ characters, the key an agent was given), anything shaped like
a key, a long value given to a key-like name inline (`HF_TOKEN=...`, `--api-key ...`) and the
credentials in a URL (http://user:password@host, ?key=... in its query); `keys_in()` counts the
keys in a text an agent is about to write, also wrapped over lines, cut short or pieced together
from quoted parts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

KEY_SHAPES = re.compile(
    r"(sk-ant-[A-Za-z0-9_\-*.]{6,}|sk-(?:proj-|or-v1-)?[A-Za-z0-9_\-*.]{6,}|AIza[0-9A-Za-z_\-]{20,}"
    r"|gsk_[A-Za-z0-9]{10,}|xai-[A-Za-z0-9]{10,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}|(?i:bearer)\s+[A-Za-z0-9_\-.=]{8,})")
KEY_ENV = re.compile(r"(API_KEY|_TOKEN|SECRET)$")
# a key given inline, in a command or a line of output: `HF_TOKEN=hf_...`, `export X_API_KEY="..."`,
# `--anthropic-api-key ...`; the value is taken for a key when it is long and holds letters and
# digits both (`BOS_TOKEN = 50256` in an experiment's code is not one)
INLINE_KEY = re.compile(
    r"""(?P<name>(?:API_?KEY|(?:ACCESS|SECRET|PRIVATE|AUTH)_?KEY|_TOKEN|SECRET|PASSWORD|PASSWD)\s*[=:]\s*"""
    r"""|--[A-Za-z0-9-]*(?:api-key|token|secret|password)(?:\s+|=)(?:[A-Za-z0-9_-]+=)?)"""
    r"""(?P<q>["']?)(?P<value>(?=[^\s"']*[0-9])(?=[^\s"']*[A-Za-z])[A-Za-z0-9_\-.+/=]{16,})(?P=q)""",
    re.IGNORECASE)
# http://user:password@host, https://<token>@host (not ssh://git@host: a user name alone)
URL_CREDENTIALS = re.compile(r"(?<=://)(?:[^\s/@?#:]+:[^\s/@?#]+|[^\s/@?#:]{16,})(?=@)")
# a key in a URL's query, as some proxies and gateways take it: ?key=..., &access_token=...,
# ?subscription-key=..., ?sig=... (the value, 6+ characters, whatever it looks like)
URL_QUERY_KEY = re.compile(r"(?i)(?<=[?&;])(?P<name>[a-z0-9_.-]*(?:key|token|secret|password|passwd|auth|sig|"
                           r"signature|credential))=(?P<value>[^&#\s\"'<>]{6,})")


def secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """Every value of a key-like environment variable (long enough to be a secret)."""
    env = os.environ if env is None else env
    return sorted({v for k, v in env.items() if KEY_ENV.search(k) and len(v) >= 8}, key=len, reverse=True)


_PATTERNS: dict[tuple[str, ...], re.Pattern[str]] = {}  # also ('pieces', key)


def _secret_pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex for every secret, tolerant of line breaks and spaces inside it (a tool that
    wraps its output at 80 columns may split a quoted key), and of a leading fragment of 12+
    characters (providers quote keys cut short: 'sk-proj-abcd1234****')."""
    if not values:
        return None
    if values not in _PATTERNS:
        alts = []
        for v in values:
            alts.append(r"\s*".join(map(re.escape, v)))
            if len(v) > 20:
                alts.append(r"\s*".join(map(re.escape, v[:12])) + r"[A-Za-z0-9_\-*.]*")
        _PATTERNS[values] = re.compile("|".join(alts))
    return _PATTERNS[values]


def key_values(extra: tuple[str, ...] = (), env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The secret values to keep out of files and logs: `extra` (the keys an agent was given),
    every provider's key variable and every key-like environment variable (8+ characters)."""
    env = os.environ if env is None else env
    from autoresearch.agents.providers import PROVIDERS

    named = [env.get(p.key_env, "") for p in PROVIDERS.values() if p.key_env]
    values = {v for v in (*extra, *named, *secrets(env)) if v and len(v) >= 8 and v != "not-needed"}
    return tuple(sorted(values, key=len, reverse=True))


def keys_in(text: str, keys: tuple[str, ...]) -> int:
    """How many times `text` holds one of `keys`: as it is, wrapped over lines, its first 12+
    characters, or (a key of 16+ letters and digits) pieced together from quoted parts, the
    letters and digits alone compared."""
    pattern = _secret_pattern(tuple(sorted(set(keys), key=len, reverse=True)))
    plain = pattern.findall(text) if pattern is not None else []
    bare = re.sub(r"[^A-Za-z0-9]", "", text)
    pieced = sum(bare.count(k) for k in {re.sub(r"[^A-Za-z0-9]", "", v) for v in keys} if len(k) >= 16)
    return max(len(plain), pieced)


PIECE = 8  # a run this long of a key's characters, in order, is a piece of it


def _pieces_pattern(value: str) -> re.Pattern[str]:
    key = ("pieces", value)
    if key not in _PATTERNS:  # (the cache is keyed by tuples of strings: this one cannot collide)
        grams = sorted({value[i:i + PIECE] for i in range(len(value) - PIECE + 1)})
        _PATTERNS[key] = re.compile("|".join(map(re.escape, grams)))
    return _PATTERNS[key]


def _without_pieces(text: str, value: str) -> str:
    """`text` with every run of PIECE+ characters that stands in `value` in the same order
    replaced: a key written in quoted parts ('sk-AUDITKEY' + '1234...') leaves no part behind."""
    pattern, out, pos = _pieces_pattern(value), [], 0
    while (m := pattern.search(text, pos)) is not None:
        start, end = m.start(), m.end()
        at = value.find(m[0])
        while at >= 0 and value.find(text[start:end + 1], at) == at and end < len(text):
            end += 1  # the run goes on as the key does
        at = value.find(text[start:end])
        while start > pos and at > 0 and text[start - 1] == value[at - 1]:
            start, at = start - 1, at - 1
        out += [text[pos:start], "[redacted]"]
        pos = end
    return "".join(out) + text[pos:]


def redact(text: str, extra: tuple[str, ...] = ()) -> str:
    """`text` with every key from the environment (and anything shaped like a key) replaced
    by [redacted], and every piece of 8+ characters of a key of 16+."""
    values = tuple(sorted({v for v in (*extra, *secrets()) if v and len(v) >= 8}, key=len, reverse=True))
    pattern = _secret_pattern(values)
    if pattern is not None:
        text = pattern.sub("[redacted]", text)
    for value in values:
        if len(value) >= 2 * PIECE:
            text = _without_pieces(text, value)
    text = INLINE_KEY.sub(lambda m: f"{m['name']}{m['q']}[redacted]{m['q']}", text)
    text = URL_QUERY_KEY.sub(lambda m: f"{m['name']}=[redacted]", text)
    return URL_CREDENTIALS.sub("[redacted]", KEY_SHAPES.sub("[redacted]", text))
