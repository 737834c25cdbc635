"""The hybrid agent (agents/hybrid.py): the search agent and the llm agent (against a fake
OpenAI server on 127.0.0.1) share the trials, and each sees the other's in its history.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli, make_task
from fakes.llm_server import FakeLLM, Fault, Say
from llm_helpers import FAST, KEY, ledger

# ---------------------------------------------------------------------------
# the hybrid


def test_hybrid_shares_trials_and_both_see_all(tmp_path: Path) -> None:
    pytest.importorskip("autoresearch.agents.search")
    repo = make_task(tmp_path / "task")
    def structural(old: str, new: str) -> list[Say]:
        return [Say("", [("edit_file", {"path": "exp.py", "search": old, "replace": new})]),
                Say("", [("finish", {"description": f"structural: {new}"})])]

    script = structural('print("training...")', 'print("training!")') + \
        structural("peak_vram_mb: 2048.0", "peak_vram_mb: 1024.0")
    with FakeLLM("openai", script) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "hybrid", "--model", "openai/gpt-4.1",
                "--base-url", fake.url, "--llm-share", "0.5", "--trials", "4",
                env={"OPENAI_API_KEY": KEY, **FAST}, timeout=180)
        requests = list(fake.requests)
    assert r.returncode == 0, r.stderr + r.stdout
    t = ledger(repo)
    assert len(t) == 5
    assert [x.extra.get("proposer") for x in t[1:]] == ["search", "llm", "search", "llm"]
    assert all(x.agent == "hybrid" for x in t[1:])
    assert [x.model for x in t[1:]] == ["optuna-tpe", "openai/gpt-4.1", "optuna-tpe", "openai/gpt-4.1"]
    assert len(requests) == 4  # two LLM proposals of two calls each
    # the LLM's second proposal saw the search's trial 3 in its history
    prompt = requests[2]["body"]["messages"][1]["content"]
    assert f"#3 {t[3].status.value}" in prompt and t[3].description in prompt


def test_the_hybrids_key_is_checked_only_when_its_llm_has_trials(tmp_path: Path) -> None:
    """The key of the hybrid's LLM is checked before the baseline like the llm agent's; with
    --llm-share 0 the LLM is never asked, and its key is not checked."""
    pytest.importorskip("autoresearch.agents.search")
    repo = make_task(tmp_path / "task")
    said = {}
    with FakeLLM("openai", [], key="sk-the-right-one-0123456789") as fake:
        for share, code in (("0.5", 2), ("0", 0)):
            r = cli("run", str(repo), "--tag", "t", "--agent", "hybrid", "--model", "openai/gpt-4.1",
                    "--base-url", fake.url, "--llm-share", share, "--trials", "2",
                    env={"OPENAI_API_KEY": KEY, **FAST}, timeout=180)
            assert r.returncode == code, r.stderr + r.stdout
            said[share] = r.stderr
        assert fake.listings == [KEY] and not fake.requests
    assert "refuses the API key in OPENAI_API_KEY" in said["0.5"] and "refuses" not in said["0"]
    assert [x.extra.get("proposer") for x in ledger(repo)[1:]] == ["search", "search"]


def test_an_llm_error_that_will_recur_stops_the_hybrid_as_it_stops_the_llm_agent(tmp_path: Path) -> None:
    """A wrong model name (a 404 on every chat request): the search's trials between the LLM's
    reset the count of errors in a row, so the hybrid never stopped; 30% of a night's trials
    were agent errors, and the run ended with exit 0."""
    pytest.importorskip("autoresearch.agents.search")
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", [], default=Fault("404", message="model gpt-4.1 not found")) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "hybrid", "--model", "openai/gpt-4.1",
                "--base-url", fake.url, "--llm-share", "0.5", "--trials", "10",
                env={"OPENAI_API_KEY": KEY, **FAST}, timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed 3 times in a row" in r.stderr and "not found" in r.stderr, r.stderr
    t = ledger(repo)
    assert [x.extra.get("proposer") for x in t[1:]] == ["search", None, None, None], [x.extra for x in t]
    assert [x.status.value for x in t[2:]] == ["agent_error"] * 3
