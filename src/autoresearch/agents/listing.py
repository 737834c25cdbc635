"""`autoresearch agents`: every agent and preset, what it needs (a key, a binary, an SDK) and
whether it is here; the LLM providers; the preset commands, to copy into --agent-cmd."""

from __future__ import annotations

import os
import shlex
import shutil
from typing import Any

from autoresearch.agents.presets import PRESETS


def _have_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _keys(names: tuple[str, ...]) -> str:
    found = [k for k in names if os.environ.get(k)]
    return ("set: " + ", ".join(found)) if found else "none set"


def agents_text() -> str:
    """What `autoresearch agents` prints: every agent and preset, what it needs, whether it is here."""
    from autoresearch.agents.providers import PROVIDERS

    search_ok = _have_module("optuna") and _have_module("autoresearch.agents.search")
    sdks = [m for m in ("openai", "anthropic") if _have_module(m)]
    keys = [p.key_env for p in PROVIDERS.values() if p.key_env and os.environ.get(p.key_env)]
    rows: list[tuple[str, bool, str, str]] = [
        ("search", search_ok, "built-in: Optuna over the UPPER_CASE numeric constants, no LLM",
         "optuna" + ("" if search_ok else " and the search agent (missing here)")),
        ("llm", bool(sdks), "built-in tool-using agent over an LLM API",
         f"--model PROVIDER/NAME and that provider's key (keys set: {', '.join(keys) or 'none'}); "
         + (f"SDKs here: {', '.join(sdks)}" if sdks else "pip install -e '.[llm]' (in the autoresearch checkout)")),
        ("hybrid", search_ok and bool(sdks), "search on the constants + llm on structure (--llm-share)",
         "as search and llm"),
        ("cli", True, "any coding-agent command, once per trial", "--agent-cmd '... {prompt_file} ...'"),
    ]
    for p in PRESETS.values():
        here = shutil.which(p.binary) is not None
        rows.append((p.name, here, p.what, f"`{p.binary}` on PATH{'' if here else ' (not found)'}; "
                     f"{' or '.join(p.keys)} ({_keys(p.keys)}) or {p.login}"))
    w = max(len(r[0]) for r in rows)
    out = [f"{'agent':<{w}}  installed  what (and what it needs)"]
    for name, ok, what, needs in rows:
        out += [f"{name:<{w}}  {'yes' if ok else 'no':<9}  {what}", f"{'':<{w}}             needs: {needs}"]
    out += ["", "LLM providers for --model PROVIDER/NAME (llm, hybrid):"]
    for name, prov in PROVIDERS.items():
        key = (f"{prov.key_env} ({'set' if os.environ.get(prov.key_env) else 'not set'})" if prov.key_env
               else "no key (a local server)")
        default = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}.get(name, "")
        out.append(f"  {name:<10} {key:<28} {prov.base_url or default}")
    out += ["", "Preset commands (copy one into --agent-cmd '...' to adjust it; the tool's report is still read):"]
    for p in PRESETS.values():
        cmd, env, note = p.command("PROVIDER/MODEL" if p.name in ("aider", "opencode") else "MODEL", None, None)
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        out.append(f"  {p.name}: {(prefix + ' ') if prefix else ''}{cmd}")
        if note:
            out.append(f"    note: {note}")
    out += ["", "Keys are read from the environment only, and never written to the ledger, logs or reports."]
    return "\n".join(out)


def cmd_agents(args: Any) -> int:
    print(agents_text())
    return 0
