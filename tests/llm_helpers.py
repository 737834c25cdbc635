"""Helpers shared by the tests of the LLM agents (test_llm.py, test_providers.py, test_tools.py,
test_hybrid.py, test_presets.py, test_presets_real.py): a fake API key that must appear nowhere,
fast retry settings, a scripted model that makes one good edit, `run_llm` (the loop with
--agent llm against a fake server), and the ledger and the branch as a user reads them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import cli, git
from fakes.llm_server import FakeLLM, Say

from autoresearch.ledger import Ledger
from autoresearch.records import Trial

KEY = "sk-test-Z9q8W7e6R5t4Y3u2I1o0"  # a fake key; it must appear nowhere


FAST = {"AUTORESEARCH_LLM_BACKOFF": "0.01", "AUTORESEARCH_LLM_BACKOFF_MAX": "0.05",
        "AUTORESEARCH_LLM_RETRIES": "2", "AUTORESEARCH_LLM_TIMEOUT": "1"}


def good_edit(value: str = "1.0", old: str = "3.0") -> list[Say]:
    """A model that reads exp.py, edits X, and finishes."""
    return [
        Say("Let me look at the code.", [("read_file", {"path": "exp.py"})]),
        Say("", [("edit_file", {"path": "exp.py", "search": f"X = {old}", "replace": f"X = {value}"})]),
        Say("", [("finish", {"description": f"set X to {value} to bring the loss down"})]),
    ]


def run_llm(repo: Path, fake: FakeLLM, *extra: str, trials: int = 1, env: dict[str, str] | None = None,
            model: str | None = None) -> subprocess.CompletedProcess[str]:
    if model is None:
        model = "openai/gpt-4.1" if fake.kind == "openai" else "anthropic/claude-sonnet-4-5"
    keyvar = "OPENAI_API_KEY" if fake.kind == "openai" else "ANTHROPIC_API_KEY"
    return cli("run", str(repo), "--tag", "t", "--agent", "llm", "--model", model, "--base-url", fake.url,
               "--trials", str(trials), *extra, env={keyvar: KEY, **FAST, **(env or {})}, timeout=120)


def ledger(repo: Path, tag: str = "t") -> list[Trial]:
    lg = Ledger.read(repo, tag)
    try:
        return lg.trials()
    finally:
        lg.close()


def branch_file(repo: Path, name: str = "exp.py", tag: str = "t") -> str:
    return git(repo, "show", f"autoresearch/{tag}:{name}")
