"""LLM agents end to end: the built-in llm agent against fake OpenAI and Anthropic servers (real
HTTP on 127.0.0.1), its tools' confinement, retries and faults, cost and --max-cost, keys kept
out of every file, duplicates, the hybrid, the presets (a real aider; a stand-in claude), and
`autoresearch agents`.

The loop runs for real (`python -m autoresearch run ...` in a subprocess); tests look at what a
user would: the ledger, git refs, the files, the exit code and the output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import cli, git, make_task
from fakes.llm_server import FakeLLM, Fault, Say

from autoresearch.agents.base import Context
from autoresearch.agents.llm import condensed_history
from autoresearch.agents.tools import Tools
from autoresearch.ledger import Ledger
from autoresearch.records import Status, Trial
from autoresearch.task import load_task

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


# ---------------------------------------------------------------------------
# a real edit, evaluated and kept, over each API


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_llm_makes_an_edit_that_is_kept(tmp_path: Path, kind: str) -> None:
    repo = make_task(tmp_path / "task")
    with FakeLLM(kind, good_edit()) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr + r.stdout
    assert fake.invalid == []
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.KEEP]
    assert t[1].metric == pytest.approx(2.0) and t[0].metric == pytest.approx(6.0)
    assert t[1].description == "set X to 1.0 to bring the loss down"
    assert t[1].model == ("openai/gpt-4.1" if kind == "openai" else "anthropic/claude-sonnet-4-5")
    assert (t[1].tokens_in, t[1].tokens_out) == (3000, 300)
    assert t[1].cost == pytest.approx(3000 * 2 / 1e6 + 300 * 8 / 1e6 if kind == "openai" else 3000 * 3 / 1e6 + 300 * 15 / 1e6)
    assert "X = 1.0" in branch_file(repo)
    assert git(repo, "rev-parse", "autoresearch/t") == git(repo, "rev-parse", "refs/autoresearch/t/trials/1")
    # the conversation went round-trip: the second request carries the first tool's result
    second = json.dumps(fake.requests[1]["body"])
    assert "X = 3.0" in second and ("tool_result" in second if kind == "anthropic" else '"role": "tool"' in second)
    first = json.dumps(fake.requests[0]["body"])
    assert "Minimise loss." in first  # program.md is in the prompt
    log = (repo / ".autoresearch" / "t" / "agent" / "1.log").read_text()
    assert "edit_file" in log and "edited exp.py" in log


def test_model_sees_history_and_best_code(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", good_edit("2.0") + good_edit("1.5", old="2.0")) as fake:
        r = run_llm(repo, fake, trials=2)
    assert r.returncode == 0, r.stderr
    prompt = fake.requests[3]["body"]["messages"][1]["content"]  # trial 2's first request
    assert "#1 keep" in prompt and "set X to 2.0" in prompt  # the history
    assert "X = 2.0" in prompt  # the best code (trial 1 kept)
    assert [x.status for x in ledger(repo)] == [Status.KEEP, Status.KEEP, Status.KEEP]


# ---------------------------------------------------------------------------
# tools stay inside the worktree and the editable files


def _ctx(tmp_path: Path) -> Context:
    repo = make_task(tmp_path / "task", files={"sub/notes.txt": "hello\n"})
    task = load_task(repo)
    ledger_dir = tmp_path / "ledger"
    (ledger_dir / "logs").mkdir(parents=True)
    (ledger_dir / "logs" / "0.log").write_text("loss: 6.0\ntest_loss: 1.5\n")
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    return Context(task=task, workdir=repo, number=1, best=best, history=(best,),
                   log_path=ledger_dir / "agent.log", ledger_dir=ledger_dir)


def test_tools_are_confined(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    (ctx.workdir / "link.txt").symlink_to(secret)
    (ctx.workdir / "linkdir").symlink_to(tmp_path)
    tools = Tools(ctx)
    for path in ["../secret.txt", str(secret), "link.txt", "linkdir/secret.txt", ".git/config",
                 "sub/../../secret.txt"]:
        out = tools.call("read_file", {"path": path})
        assert out.startswith("error:") and "top secret" not in out, (path, out)
    assert "top secret" not in tools.call("grep", {"pattern": "secret"})
    assert "secret.txt" not in tools.call("list_files", {})
    assert ".git" not in tools.call("list_files", {})
    assert "error" in tools.call("list_files", {"path": ".."})
    # writes: only editable files, never protected ones, never through a link
    for path, content in [("prepare.py", "DATA = 'x'\n"), ("program.md", "x"), ("autoresearch.toml", "x"),
                          ("new.py", "x"), ("../escape.py", "x"), ("link.txt", "x")]:
        assert tools.call("write_file", {"path": path, "content": content}).startswith("error:"), path
    assert tools.call("edit_file", {"path": "prepare.py", "search": "fixed", "replace": "x"}).startswith("error:")
    assert (ctx.workdir / "prepare.py").read_text() == "DATA = 'fixed'\n"
    assert secret.read_text() == "top secret\n" and not (tmp_path / "escape.py").exists()
    # what is allowed works, and the holdout never shows
    assert tools.call("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": "X = 1.0"}) == "edited exp.py"
    assert "not found" in tools.call("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": "X = 1.0"})
    assert tools.call("read_file", {"path": "exp.py", "start": 3, "end": 3}).endswith("\n    3  Y = 2")
    assert "hello" in tools.call("read_file", {"path": "sub/notes.txt"})


def test_holdout_is_sealed_from_logs(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    task = dataclasses.replace(ctx.task, metric=dataclasses.replace(ctx.task.metric, holdout="test_loss"))
    tools = Tools(dataclasses.replace(ctx, task=task))
    out = tools.call("read_log", {"trial": 0})
    assert "loss: 6.0" in out and "test_loss" not in out and "1.5" not in out
    crashed = Trial(number=1, status=Status.CRASH, description="bigger model",
                    reason="the evaluator failed: test_loss: 1.5 then nan")
    tools = Tools(dataclasses.replace(ctx, task=task, history=(ctx.best, crashed)))
    out = tools.call("read_history", {})
    assert "#1 crash" in out and "bigger model" in out and "1.5" not in out


def test_forbidden_tool_calls_do_not_stop_the_trial(tmp_path: Path) -> None:
    """A model that tries to escape gets errors back, and its legitimate edit is still kept."""
    repo = make_task(tmp_path / "task")
    script = [Say("", [("read_file", {"path": "../../ledger.sqlite"}),
                       ("write_file", {"path": "prepare.py", "content": "DATA = 'cheat'\n"}),
                       ("read_file", {"path": ".git/HEAD"})])] + good_edit()[1:]
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    assert [x.status for x in ledger(repo)] == [Status.KEEP, Status.KEEP]
    assert branch_file(repo, "prepare.py") == "DATA = 'fixed'"
    results = [m["content"] for m in fake.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert len(results) == 3 and all(x.startswith("error:") for x in results)


# ---------------------------------------------------------------------------
# faults: retried, then agent_error, and the loop goes on


@pytest.mark.parametrize("kind,fault", [
    ("openai", Fault("429", retry_after=0.3)), ("openai", Fault("500")), ("openai", Fault("hang", seconds=3)),
    ("openai", Fault("malformed")), ("openai", Fault("bad-shape")),
    ("anthropic", Fault("429", retry_after=0.3)), ("anthropic", Fault("malformed")),
])
def test_faults_are_retried_then_recorded(tmp_path: Path, kind: str, fault: Fault) -> None:
    repo = make_task(tmp_path / "task")
    # trial 1: one good step, then the fault on every attempt (3) -> agent_error with its spend;
    # trial 2: the fault once, then a good proposal -> kept.
    script = [Say("", [("read_file", {"path": "exp.py"})]), fault, fault, fault, fault, *good_edit()]
    with FakeLLM(kind, script) as fake:
        r = run_llm(repo, fake, trials=2)
        times = [q["time"] for q in fake.requests]
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP]
    assert "after 3 attempt" in t[1].reason
    assert t[1].tokens_in == 1000 and t[1].cost > 0  # what the failed proposal spent is recorded
    assert not (repo / ".autoresearch" / "t" / "logs" / "1.log").exists()  # not run
    assert "X = 1.0" in branch_file(repo)
    log = (repo / ".autoresearch" / "t" / "agent" / "2.log").read_text()
    assert "retry 1/2" in log
    if fault.retry_after:
        assert times[5] - times[4] >= 0.3  # retry-after respected


def test_permanent_errors_are_not_retried(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", [Fault("401"), *good_edit()]) as fake:
        r = run_llm(repo, fake, trials=2)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP]
    assert "401" in t[1].reason and "check the API key" in t[1].reason
    assert len(fake.requests) == 4


@pytest.mark.parametrize("limit,env,spent", [
    ("step limit (3)", {"AUTORESEARCH_LLM_STEPS": "3"}, 3000),
    ("token limit (3500)", {"AUTORESEARCH_LLM_MAX_TOKENS": "3500"}, 4000),
])
def test_proposal_limits(tmp_path: Path, limit: str, env: dict[str, str], spent: int) -> None:
    repo = make_task(tmp_path / "task")
    reading = Say("", [("list_files", {})], tokens_in=1000, tokens_out=0)
    script = [reading] * (spent // 1000) + good_edit()
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake, trials=2, env=env)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP]
    assert limit in t[1].reason and t[1].tokens_in == spent


def test_wall_time_limit(tmp_path: Path) -> None:
    """--agent-timeout bounds a proposal whatever the server does (here: it hangs, again and again)."""
    repo = make_task(tmp_path / "task")
    hang = Fault("hang", seconds=6)
    with FakeLLM("openai", [Say("", [("list_files", {})]), hang] + good_edit()) as fake:
        r = run_llm(repo, fake, "--agent-timeout", "2.5", trials=2,
                    env={"AUTORESEARCH_LLM_RETRIES": "10", "AUTORESEARCH_LLM_TIMEOUT": "30"})
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP], t[1].reason
    assert "the agent's time limit (--agent-timeout 2.5 s) was reached" in t[1].reason, t[1].reason
    assert "after 1 attempt" in t[1].reason
    assert t[1].ended - t[1].started < 5 and t[1].tokens_in == 1000


def test_a_retry_after_past_the_time_limit_is_said_as_such(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", [Fault("429", retry_after=100)] + good_edit()) as fake:
        r = run_llm(repo, fake, "--agent-timeout", "8", trials=2)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert t[1].status is Status.AGENT_ERROR and t[1].ended - t[1].started < 5
    assert "the server asked to wait 100.0 s, past the agent's time limit (--agent-timeout 8 s)" in t[1].reason


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_model_that_talks_instead_of_editing_is_nudged(tmp_path: Path, kind: str) -> None:
    """A reply with no tool call, and a finish before any edit, get a reminder; the conversation
    stays valid for the API (the fake refuses what the real API would)."""
    repo = make_task(tmp_path / "task")
    script = [Say("I would lower X."), Say("", [("finish", {"description": "nothing yet"})]), *good_edit()]
    with FakeLLM(kind, script) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    assert fake.invalid == []
    assert [x.status for x in ledger(repo)] == [Status.KEEP, Status.KEEP]
    assert "No file has changed yet" in json.dumps(fake.requests[-1]["body"])


def test_model_that_never_edits_is_an_agent_error(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", [Say("Thinking.")] * 3 + good_edit()) as fake:
        r = run_llm(repo, fake, trials=2)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP]
    assert "did not change any file" in t[1].reason


# ---------------------------------------------------------------------------
# cost and --max-cost


def test_max_cost_stops_the_loop(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"fake-model": [1000.0, 1000.0]}))  # $1.1 per 1000+100 tokens
    script = good_edit("2.0") + good_edit("1.5", old="2.0") + good_edit("1.0", old="1.5")
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake, "--max-cost", "5", trials=5, model="openai/fake-model",
                    env={"AUTORESEARCH_PRICES": str(prices)})
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert len(t) == 3  # baseline + 2 trials: $3.3 after one, $6.6 after two >= $5
    assert [x.cost for x in t[1:]] == [pytest.approx(3.3), pytest.approx(3.3)]
    assert "--max-cost" in r.stdout + r.stderr


def test_unknown_price_is_said_and_zero(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", good_edit()) as fake:
        r = run_llm(repo, fake, model="openai/some-new-model")
    assert r.returncode == 0, r.stderr
    assert "no price known for openai/some-new-model" in r.stderr
    t = ledger(repo)
    assert t[1].cost == 0.0 and t[1].tokens_in == 3000 and t[1].extra.get("price") == "unknown"


# ---------------------------------------------------------------------------
# keys appear nowhere


def test_keys_appear_nowhere(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    # the provider's 401 quotes the key back, as real ones do; the model also echoes text
    with FakeLLM("openai", [Fault("401"), *good_edit()]) as fake:
        r = run_llm(repo, fake, trials=2)
        headers = {k.lower(): v for k, v in fake.requests[0]["headers"].items()}
        assert headers["authorization"] == f"Bearer {KEY}"  # the key was used, and sent only there
    assert r.returncode == 0, r.stderr
    shown = [cli("status", str(repo), "--tag", "t"), cli("show", "1", str(repo), "--tag", "t"),
             cli("show", "2", str(repo), "--tag", "t")]
    texts = [r.stdout, r.stderr] + [s.stdout + s.stderr for s in shown]
    texts.append(git(repo, "log", "--all", "-p"))
    for path in (repo / ".autoresearch").rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    assert len(texts) > 8
    for text in texts:
        assert KEY not in text and KEY[:12] not in text
    assert "[redacted]" in (repo / ".autoresearch" / "t" / "agent" / "1.log").read_text()


@pytest.mark.parametrize("args,needle", [
    (["--agent", "llm"], "--model PROVIDER/NAME"),
    (["--agent", "llm", "--model", "openai/gpt-4.1"], "OPENAI_API_KEY"),
    (["--agent", "llm", "--model", "anthropic/claude-sonnet-4-5"], "ANTHROPIC_API_KEY"),
    (["--agent", "llm", "--model", "nosuch/x"], "unknown provider"),
    (["--agent", "hybrid", "--model", "openai/gpt-4.1", "--llm-share", "1.5"], "--llm-share"),
])
def test_bad_llm_usage_is_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    repo = make_task(tmp_path / "task")
    env = {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""}
    if "--llm-share" in args:
        env["OPENAI_API_KEY"] = KEY
    r = cli("run", str(repo), "--tag", "t", "--trials", "1", *args, env=env)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr and KEY not in r.stderr


# ---------------------------------------------------------------------------
# what the audit of --agent llm found: bad tool arguments, lost spend, a key in an edit, a 400
# that recurs, bad settings, the time limit's wording, the log's size


def test_tool_arguments_of_the_wrong_type_are_errors_for_the_model(tmp_path: Path) -> None:
    """A wrongly typed, missing or unknown argument is an error text naming it, never an
    exception; numbers sent as text are taken."""
    tools = Tools(_ctx(tmp_path))
    bad = [("read_file", {"path": "exp.py", "start": "abc"}, "`start` must be a whole number"),
           ("read_file", {"path": ["a"]}, "`path` must be a string, got an array"),
           ("read_file", {"path": None}, "read_file needs `path`"),
           ("read_file", {}, "read_file needs `path`"),
           ("read_file", {"path": "exp.py", "end": True}, "`end` must be a whole number"),
           ("list_files", {"path": 123}, "`path` must be a string, got a number"),
           ("grep", {"pattern": {"x": 1}}, "`pattern` must be a string, got an object"),
           ("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": 1.0}, "`replace` must be a string"),
           ("write_file", {"path": "exp.py"}, "write_file needs `content`"),
           ("read_log", {"trial": "x"}, "`trial` must be a whole number"),
           ("read_log", {"trial": 0, "lines": [1]}, "`lines` must be a whole number"),
           ("read_history", {"last": "all"}, "`last` must be a whole number"),
           ("read_history", {"last": 0}, "`last` must be 1 or more"),
           ("finish", {"description": ["a", "b"]}, "`description` must be a string"),
           ("read_file", {"path": "exp.py", "lines": 3}, "read_file takes no argument named lines"),
           ("read_file", {"path": "exp\x00.py"}, "NUL"),
           ("nosuch", {}, "no tool named 'nosuch'")]
    for name, args, needle in bad:
        out = tools.call(name, args)
        assert out.startswith("error:") and needle in out, (name, args, out)
    assert (tools.ctx.workdir / "exp.py").read_text().count("X = 3.0") == 1 and tools.finished is None
    assert tools.call("read_file", {"path": "exp.py", "start": "3", "end": 3.0}).endswith("\n    3  Y = 2")
    assert "none in 50..60" in tools.call("read_file", {"path": "exp.py", "start": 50, "end": 60})
    assert "#0 keep" in tools.call("read_history", {"last": "1"})
    assert "loss: 6.0" in tools.call("read_log", {"trial": "0", "lines": None})


def test_an_unexpected_failure_in_a_tool_is_an_error_for_the_model(tmp_path: Path) -> None:
    """A tool that fails in a way nobody checked for (here: read_file on a socket, which the
    system refuses to open) answers an error text and logs the traceback."""
    import socket

    ctx = _ctx(tmp_path)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(ctx.workdir / "agent.sock"))
        out = Tools(ctx).call("read_file", {"path": "agent.sock"})
    finally:
        sock.close()
    assert out.startswith("error: read_file failed (OSError") and "try another way" in out, out
    assert "Traceback" in ctx.log_path.read_text()


def test_a_worktrees_git_file_is_never_listed(tmp_path: Path) -> None:
    """In a trial's worktree `.git` is a file (gitdir: ...): list_files and grep skip it too."""
    ctx = _ctx(tmp_path)
    wt = tmp_path / "wt"
    git(ctx.workdir, "worktree", "add", "-q", "--detach", str(wt))
    tools = Tools(dataclasses.replace(ctx, workdir=wt))
    listed = tools.call("list_files", {})
    assert "exp.py" in listed and ".git" not in listed, listed
    assert tools.call("grep", {"pattern": "gitdir"}) == "no matches"
    assert tools.call("read_file", {"path": ".git"}).startswith("error:")


def test_bad_tool_arguments_do_not_end_the_proposal(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    script = [Say("", [("read_file", {"path": "exp.py", "start": "abc"}), ("list_files", {"path": 123}),
                       ("read_history", {"last": "all"}), ("read_log", {"trial": "x"}),
                       ("read_file", {"path": None})])] + good_edit()[1:]
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    assert [x.status for x in ledger(repo)] == [Status.KEEP, Status.KEEP]
    results = [m["content"] for m in fake.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert len(results) == 5 and all(x.startswith("error:") for x in results), results


def test_an_unexpected_failure_keeps_the_spend(tmp_path: Path) -> None:
    """A proposal that fails with an exception nobody planned for (here: its agent log cannot be
    written any more, as on a full disk) is an agent_error that still records the model, the
    tokens and the cost spent; the loop goes on."""
    repo = make_task(tmp_path / "task")
    log = repo / ".autoresearch" / "t" / "agent" / "1.log"

    def break_the_log(body: dict) -> Say:
        log.unlink()
        log.mkdir()  # appending to it now fails (IsADirectoryError)
        return Say("", [("list_files", {})])

    script = [Say("", [("read_file", {"path": "exp.py"})]), break_the_log, *good_edit()]
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake, trials=2)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP], t[1].reason
    assert "IsADirectoryError" in t[1].reason
    assert (t[1].model, t[1].tokens_in, t[1].tokens_out) == ("openai/gpt-4.1", 2000, 200)
    assert t[1].cost == pytest.approx(2000 * 2 / 1e6 + 200 * 8 / 1e6)


def test_an_edit_that_writes_a_key_is_refused(tmp_path: Path) -> None:
    """The model cannot put a key into a committed file: not the agent's own key, not another
    provider's key variable, even one that does not look like a key, nor one split over lines."""
    repo = make_task(tmp_path / "task")
    other = "plainvalue0000with0no0key0shape"
    script = [Say("", [("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": f'X = 3.0\nKEY = "{KEY}"'}),
                       ("write_file", {"path": "exp.py", "content": f"TOKEN = '{other}'\n"}),
                       ("edit_file", {"path": "exp.py", "search": "X = 3.0",
                                      "replace": f'X = 3.0\nK = ("{KEY[:10]}"\n     "{KEY[10:]}")'})]),
              *good_edit()[1:]]
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake, env={"ANTHROPIC_API_KEY": other})
    assert r.returncode == 0, r.stderr
    results = [m["content"] for m in fake.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert len(results) == 3 and all("holds an API key" in x for x in results), results
    assert [x.status for x in ledger(repo)] == [Status.KEEP, Status.KEEP]
    history = git(repo, "log", "--all", "-p")
    assert "X = 1.0" in history and KEY[:10] not in history and other not in history


@pytest.mark.parametrize("kind,status,message", [
    ("openai", "400", "registry.ollama.ai/library/gemma:2b does not support tools"),
    ("openai", "422", "nosuch/model is not a valid model ID"),
    ("anthropic", "400", "prompt is too long: 250000 tokens > 200000 maximum"),
])
def test_a_refused_request_is_fatal_and_quoted(tmp_path: Path, kind: str, status: str, message: str) -> None:
    """A 400 or 422 will recur: not retried, and three in a row stop the loop (exit 1) with
    the server's words, instead of failing every trial and exiting 0."""
    repo = make_task(tmp_path / "task")
    with FakeLLM(kind, default=Fault(status, message=message)) as fake:
        r = run_llm(repo, fake, trials=6)
    assert r.returncode == 1, r.stderr + r.stdout
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP] + [Status.AGENT_ERROR] * 3
    assert all(f"HTTP {status}" in x.reason and message in x.reason for x in t[1:]), t[1].reason
    assert len(fake.requests) == 3  # none retried
    assert "3 times in a row" in r.stderr + r.stdout and message in r.stderr + r.stdout


@pytest.mark.parametrize("var,value,needle", [
    ("AUTORESEARCH_LLM_STEPS", "abc", "a whole number >= 1, got 'abc'"),
    ("AUTORESEARCH_LLM_STEPS", "0", "a whole number >= 1"),
    ("AUTORESEARCH_LLM_MAX_TOKENS", "-5", "a whole number >= 1"),
    ("AUTORESEARCH_LLM_REPLY_TOKENS", "0", "a whole number >= 1"),
    ("AUTORESEARCH_LLM_CONTEXT", "10k", "a whole number >= 1000"),
    ("AUTORESEARCH_LLM_RETRIES", "-1", "a whole number >= 0"),
    ("AUTORESEARCH_LLM_TIMEOUT", "nan", "a number > 0"),
    ("AUTORESEARCH_LLM_TIMEOUT", "0", "a number > 0"),
    ("AUTORESEARCH_LLM_BACKOFF", "fast", "a number >= 0"),
    ("AUTORESEARCH_LLM_BACKOFF_MAX", "-1", "a number >= 0"),
])
def test_bad_llm_settings_are_one_line_exit_2(tmp_path: Path, var: str, value: str, needle: str) -> None:
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--tag", "t", "--agent", "llm", "--model", "openai/gpt-4.1", "--trials", "1",
            env={"OPENAI_API_KEY": KEY, var: value})
    assert r.returncode == 2, r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{var} must be {needle}" in lines[0], r.stderr
    assert not (repo / ".autoresearch").exists()


def test_llm_flags_with_another_agent_are_named(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    for agent in (["--agent", "search"], ["--agent", "cli", "--agent-cmd", "true"]):
        r = cli("run", str(repo), "--tag", agent[1], *agent, "--model", "openai/x",
                "--base-url", "http://127.0.0.1:9/v1", "--trials", "0")
        assert r.returncode == 0, r.stderr
        assert f"--model is not used by --agent {agent[1]}" in r.stderr, r.stderr
        assert f"--base-url is not used by --agent {agent[1]}" in r.stderr, r.stderr


def test_a_long_reply_is_cut_in_the_agent_log(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    chatter = "I think " * 20_000  # 160 000 characters
    script = [Say(chatter, [("read_file", {"path": "exp.py"})]), *good_edit()[1:]]
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    log = (repo / ".autoresearch" / "t" / "agent" / "1.log").read_text()
    assert "more characters not logged" in log and len(log) < 60_000, len(log)
    assert [x.status for x in ledger(repo)] == [Status.KEEP, Status.KEEP]


# ---------------------------------------------------------------------------
# duplicates


def test_duplicate_proposal_is_not_run(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", good_edit("5.0") + good_edit("5.0")) as fake:
        r = run_llm(repo, fake, trials=2)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.DISCARD, Status.DUPLICATE]
    assert "trial 1" in t[2].reason
    assert not (repo / ".autoresearch" / "t" / "logs" / "2.log").exists()


# ---------------------------------------------------------------------------
# memory: the history is condensed to fit


def test_history_is_condensed_to_the_budget() -> None:
    trials = [Trial(number=0, status=Status.KEEP, description="baseline", metric=10.0)]
    for n in range(1, 600):
        status = Status.KEEP if n % 50 == 0 else Status.DISCARD
        trials.append(Trial(number=n, status=status, description=f"change number {n} " + "x" * 60,
                            metric=10.0 - n / 1000))
    lines = condensed_history(trials, "loss", 4000)
    text = "\n".join(lines)
    assert len(text) <= 4000
    assert "600 trials so far" in text and "#599" in text and "#550 keep" in text
    small = condensed_history(trials[:5], "loss", 4000)
    assert len(small) == 5


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


# ---------------------------------------------------------------------------
# presets and `autoresearch agents`


def test_agents_lists_everything() -> None:
    r = cli("agents", env={"OPENAI_API_KEY": ""})
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()
            if line and not line.startswith(" ") and len(line.split()) > 1}
    for name in ["search", "llm", "hybrid", "cli", "claude", "codex", "aider", "gemini", "opencode"]:
        assert name in rows, name
    for tool in ["claude", "codex", "aider", "gemini", "opencode"]:
        assert rows[tool] == ("yes" if shutil.which(tool) else "no"), tool
    assert rows["search"] == "yes" and rows["cli"] == "yes"
    assert "OPENAI_API_KEY (not set)" in r.stdout and "ANTHROPIC_API_KEY" in r.stdout
    with_key = cli("agents", env={"OPENAI_API_KEY": KEY})
    assert "OPENAI_API_KEY (set)" in with_key.stdout and KEY not in with_key.stdout
    assert "--dangerously-skip-permissions" in r.stdout or "acceptEdits" in r.stdout


FAKE_CLAUDE = """\
#!{python}
# A stand-in for Claude Code: refuses to skip permissions as root without IS_SANDBOX=1 (as the
# real one does), records its argv, reads the prompt from stdin, edits exp.py, prints a JSON result.
import json, os, sys
argv = sys.argv[1:]
open(os.environ["CLAUDE_ARGV_FILE"], "a").write(json.dumps(argv) + "\\n")
if ("--dangerously-skip-permissions" in argv and os.geteuid() == 0
        and os.environ.get("IS_SANDBOX") != "1"):
    print("--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons")
    sys.exit(1)
prompt = sys.stdin.read()
assert "-p" in argv and "Minimise loss." in prompt
src = open("exp.py").read().replace("X = 3.0", "X = 1.0")
open("exp.py", "w").write(src)
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False,
                  "result": "I looked at exp.py.\\nSet X to 1.0, the minimum of the loss.",
                  "total_cost_usd": 0.0123, "usage": {{"input_tokens": 1500, "output_tokens": 200}}}}))
"""


def fake_claude(tmp_path: Path) -> dict[str, str]:
    """FAKE_CLAUDE as `claude` first on PATH, recording its argv in tmp_path/argv.jsonl."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "claude").write_text(FAKE_CLAUDE.format(python=sys.executable))
    (bindir / "claude").chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "CLAUDE_ARGV_FILE": str(tmp_path / "argv.jsonl")}


@pytest.mark.parametrize("sandbox", [None, "1"])
def test_claude_preset_works_as_root_or_not(tmp_path: Path, sandbox: str | None) -> None:
    repo = make_task(tmp_path / "task")
    argv_file = tmp_path / "argv.jsonl"
    env = fake_claude(tmp_path)
    if sandbox:
        env["IS_SANDBOX"] = sandbox
    else:
        env["IS_SANDBOX"] = ""
    r = cli("run", str(repo), "--tag", "t", "--agent", "claude", "--model", "anthropic/claude-sonnet-4-5",
            "--trials", "1", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    argv = json.loads(argv_file.read_text().splitlines()[0])
    assert argv[:3] == ["-p", "--output-format", "json"] and "claude-sonnet-4-5" in argv
    if os.geteuid() == 0 and not sandbox:
        assert "acceptEdits" in argv and "--dangerously-skip-permissions" not in argv
        assert "running as root" in r.stderr
    else:
        assert "--dangerously-skip-permissions" in argv
    t = ledger(repo)
    assert t[1].status is Status.KEEP and t[1].agent == "claude"
    assert t[1].description == "Set X to 1.0, the minimum of the loss."
    assert (t[1].tokens_in, t[1].tokens_out, t[1].cost) == (1500, 200, pytest.approx(0.0123))


def test_a_presets_command_copied_into_agent_cli_keeps_what_the_preset_reads(tmp_path: Path) -> None:
    """`autoresearch agents` says to copy a preset's command into --agent-cmd to adjust it: the
    tool's JSON report is still read (description, tokens, cost), not taken as the description."""
    repo = make_task(tmp_path / "task")
    env = {**fake_claude(tmp_path), "IS_SANDBOX": "1"}
    r = cli("run", str(repo), "--tag", "t", "--agent-cmd",
            "DISABLE_AUTOUPDATER=1 claude -p --output-format json --permission-mode acceptEdits < {prompt_file}",
            "--trials", "1", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    t = ledger(repo)
    assert t[1].description == "Set X to 1.0, the minimum of the loss."
    assert (t[1].tokens_in, t[1].tokens_out, t[1].cost) == (1500, 200, pytest.approx(0.0123))


def aider_reply(repo: Path):  # noqa: ANN201
    """The fake model's answer to aider: the edit in aider's whole-file or diff format."""

    def reply(body: dict) -> Say:
        system = " ".join(str(m.get("content")) for m in body.get("messages", []) if m.get("role") == "system")
        new = (repo / "exp.py").read_text().replace("X = 3.0", "X = 1.0")
        if "SEARCH/REPLACE" in system:  # aider's diff format
            return Say("exp.py\n```python\n<<<<<<< SEARCH\nX = 3.0\n=======\nX = 1.0\n>>>>>>> REPLACE\n```\n\n"
                       "Set X to 1.0, where the loss is lowest.", tokens_in=1200, tokens_out=80)
        return Say(f"exp.py\n```python\n{new}```\n\nSet X to 1.0, where the loss is lowest.",
                   tokens_in=1200, tokens_out=80)

    return reply


needs_aider = pytest.mark.skipif(shutil.which("aider") is None, reason="aider is not installed (pip install aider-chat)")


@needs_aider
def test_real_aider_through_the_preset(tmp_path: Path) -> None:
    """A real coding agent: aider, driven by the `aider` preset, talks to the fake OpenAI server;
    its whole-file edit is evaluated by the loop and kept."""
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", default=aider_reply(repo)) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "aider", "--model", "openai/fake-model",
                "--base-url", fake.url, "--trials", "1", env={"OPENAI_API_KEY": KEY}, timeout=240)
        requests = list(fake.requests)
    assert r.returncode == 0, r.stderr + r.stdout
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.KEEP], t[1].reason
    assert t[1].metric == pytest.approx(2.0) and t[1].agent == "aider" and t[1].model == "openai/fake-model"
    assert t[1].description == "Set X to 1.0, where the loss is lowest."
    assert (t[1].tokens_in, t[1].tokens_out) == (1200, 80)
    assert "X = 1.0" in branch_file(repo)
    assert any("Minimise loss." in json.dumps(q["body"]) for q in requests)  # our prompt reached it
    assert git(repo, "status", "--porcelain") == ""  # aider left nothing in the user's checkout


@needs_aider
@pytest.mark.slow
def test_real_aider_failure_is_an_agent_error_and_its_key_is_redacted(tmp_path: Path) -> None:
    """The server answers 401 quoting the key; aider prints it and exits 0. The trial is an
    agent_error, the key is redacted from the agent log, and the next trial goes on."""
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", [Fault("401")], default=aider_reply(repo)) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "aider", "--model", "openai/fake-model",
                "--base-url", fake.url, "--trials", "2", env={"OPENAI_API_KEY": KEY}, timeout=240)
    assert r.returncode == 0, r.stderr + r.stdout
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP], t[2].reason
    assert "AuthenticationError" in t[1].reason and "[redacted]" in t[1].reason
    assert "[redacted]" in (repo / ".autoresearch" / "t" / "agent" / "1.log").read_text()
    for path in (repo / ".autoresearch").rglob("*"):
        if path.is_file():
            assert KEY not in path.read_bytes().decode("latin-1"), path
    assert KEY not in r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("claude") is None, reason="Claude Code is not installed (npm i -g @anthropic-ai/claude-code)")
def test_real_claude_code_through_the_preset(tmp_path: Path) -> None:
    """A real Claude Code, driven by the `claude` preset (as root: acceptEdits and file tools
    only), talks to the fake Anthropic server: it reads exp.py, edits it with its Edit tool, and
    the loop keeps the change; Claude Code's own token count and cost go into the ledger."""
    import re

    repo = make_task(tmp_path / "task")

    def reply(body: dict) -> Say:
        system = body.get("system") or ""
        text = system if isinstance(system, str) else " ".join(b.get("text", "") for b in system)
        cwd = re.search(r"Primary working directory: (\S+)", text)
        target = f"{cwd[1] if cwd else '.'}/exp.py"
        said = json.dumps(body.get("messages"))
        if "tool_result" not in said:
            return Say("", [("Read", {"file_path": target})], tokens_in=2000, tokens_out=50)
        if "old_string" not in said:
            return Say("", [("Edit", {"file_path": target, "old_string": "X = 3.0", "new_string": "X = 1.0"})],
                       tokens_in=2500, tokens_out=60)
        return Say("I edited exp.py.\nSet X to 1.0, where the loss is lowest.", tokens_in=2600, tokens_out=20)

    with FakeLLM("anthropic", default=reply) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "claude", "--model", "anthropic/claude-sonnet-4-5",
                "--base-url", fake.url, "--trials", "1",
                env={"ANTHROPIC_API_KEY": KEY, "IS_SANDBOX": "", "HOME": str(tmp_path / "home")}, timeout=240)
        requests = list(fake.requests)
    assert r.returncode == 0, r.stderr + r.stdout
    assert fake.invalid == []
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.KEEP], (t[1].reason, (repo / ".autoresearch/t/agent/1.log").read_text()[-3000:])
    assert t[1].description == "Set X to 1.0, where the loss is lowest." and t[1].agent == "claude"
    assert t[1].tokens_in >= 7100 and t[1].tokens_out >= 130 and t[1].cost > 0
    assert "X = 1.0" in branch_file(repo)
    assert any("Minimise loss." in json.dumps(q["body"]) for q in requests)
    for path in (repo / ".autoresearch").rglob("*"):
        if path.is_file():
            assert KEY not in path.read_bytes().decode("latin-1"), path


@pytest.mark.skipif(shutil.which("opencode") is None, reason="opencode is not installed (npm i -g opencode-ai)")
def test_real_opencode_through_the_preset(tmp_path: Path) -> None:
    """A real opencode, driven by the `opencode` preset with `--base-url`, talks to the fake
    OpenAI server (streamed chat completions with tool calls): it writes exp.py with its write
    tool, the loop keeps the change, and opencode's own token counts go into the ledger."""
    import re

    repo = make_task(tmp_path / "task")

    def reply(body: dict) -> Say:
        messages = body.get("messages") or []
        if not body.get("tools"):  # opencode first asks for a title for its session
            return Say("a title", tokens_in=10, tokens_out=3)
        system = json.dumps(messages[0].get("content")) if messages else ""
        cwd = re.search(r"Working directory: (\S+?)(?:\\n|\s)", system)
        if messages[-1].get("role") != "tool":
            source = (repo / "exp.py").read_text().replace("X = 3.0", "X = 1.0")
            return Say("", [("write", {"filePath": f"{cwd[1] if cwd else '.'}/exp.py", "content": source})],
                       tokens_in=3000, tokens_out=200)
        return Say("I rewrote exp.py.\nSet X to 1.0, where the loss is lowest.", tokens_in=3300, tokens_out=20)

    with FakeLLM("openai", default=reply) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "opencode", "--model", "openai/fake-model",
                "--base-url", fake.url, "--trials", "1",
                env={"OPENAI_API_KEY": KEY, "HOME": str(tmp_path / "home")}, timeout=300)
        requests = list(fake.requests)
    assert r.returncode == 0, r.stderr + r.stdout
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.KEEP], (t[1].reason, (repo / ".autoresearch/t/agent/1.log").read_text()[-3000:])
    assert t[1].description == "Set X to 1.0, where the loss is lowest." and t[1].agent == "opencode"
    assert (t[1].tokens_in, t[1].tokens_out) == (6300, 220)
    assert "X = 1.0" in branch_file(repo)
    assert any("Minimise loss." in json.dumps(q["body"]) for q in requests)  # the prompt, read from stdin
    assert all(q["headers"].get("Authorization") == f"Bearer {KEY}" for q in requests)
    for path in (repo / ".autoresearch").rglob("*"):
        if path.is_file():
            assert KEY not in path.read_bytes().decode("latin-1"), path


def keys_nowhere(repo: Path) -> None:
    for path in (repo / ".autoresearch").rglob("*"):
        if path.is_file():
            assert KEY not in path.read_bytes().decode("latin-1"), path


needs_codex = pytest.mark.skipif(shutil.which("codex") is None, reason="Codex CLI is not installed (npm i -g @openai/codex)")
CODEX_PATCH = "*** Begin Patch\n*** Update File: exp.py\n@@\n-X = 3.0\n+X = 1.0\n*** End Patch\n"


def codex_env(tmp_path: Path, tmpdir: Path) -> dict[str, str]:
    """An environment for a real codex with its home in tmp_path and `tmpdir` as its temporary
    folder; skips the test where codex's sandbox cannot start at all (no user namespaces...)."""
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = {"HOME": str(home), "CODEX_HOME": str(home / ".codex"), "TMPDIR": str(tmpdir), "OPENAI_API_KEY": KEY}
    ok = {**env, "TMPDIR": str(tmp_path / "probe-tmp")}  # a home outside the temporary folder
    (tmp_path / "probe-tmp").mkdir(exist_ok=True)
    probe = subprocess.run(["codex", "sandbox", "--", "true"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60, env={**os.environ, **ok})
    if probe.returncode != 0:
        pytest.skip(f"codex's sandbox cannot start here: {(probe.stderr or probe.stdout).strip()[-300:]}")
    return env


def codex_reply(body: dict) -> Say:
    """The fake model behind codex: a probe command (is / writable? only outside the sandbox, to
    root), then apply_patch through codex's shell tool (codex applies it itself), then the answer."""
    items = body.get("input") or []
    tools = [t.get("name") for t in body.get("tools") or []]
    assert "exec_command" in tools, tools
    done = [i for i in items if i.get("type") == "function_call_output"]
    if not done:
        return Say("", [("exec_command", {"cmd": "test -w / && echo unconfined || echo confined"})],
                   tokens_in=3000, tokens_out=50)
    if len(done) == 1:
        return Say("", [("exec_command", {"cmd": f"apply_patch <<'EOF'\n{CODEX_PATCH}EOF\n"})],
                   tokens_in=3100, tokens_out=150)
    return Say("I patched exp.py.\nSet X to 1.0, where the loss is lowest.", tokens_in=3300, tokens_out=20)


@needs_codex
def test_real_codex_through_the_preset(tmp_path: Path) -> None:
    """A real Codex CLI, driven by the `codex` preset with `--base-url`, talks to the fake
    Responses API server (streamed typed events, function calls): inside its workspace-write
    sandbox it runs a probe command (which finds / read-only), edits exp.py with apply_patch,
    the loop keeps the change, and codex's own token counts (`--json`) go into the ledger."""
    repo = make_task(tmp_path / "task")
    # codex sets up its sandbox helper only when its home is not under the temporary folder
    # (here both are under /tmp): a TMPDIR of its own, as on a machine whose home is not in /tmp
    env = codex_env(tmp_path, tmp_path / "tmp")
    with FakeLLM("responses", default=codex_reply) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "codex", "--model", "openai/fake-model",
                "--base-url", fake.url, "--trials", "1", env=env, timeout=120)
        requests = list(fake.requests)
    assert r.returncode == 0, r.stderr + r.stdout
    assert fake.invalid == []
    log = (repo / ".autoresearch/t/agent/1.log").read_text()
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.KEEP], (t[1].reason, log[-3000:])
    assert t[1].description == "Set X to 1.0, where the loss is lowest." and t[1].agent == "codex"
    assert t[1].model == "openai/fake-model"
    assert (t[1].tokens_in, t[1].tokens_out) == (9400, 220)
    assert "X = 1.0" in branch_file(repo)
    assert [q["path"] for q in requests] == ["/v1/responses"] * 3  # HTTP to --base-url, nothing else
    assert all(q["body"].get("model") == "fake-model" and q["body"].get("stream") for q in requests)
    assert any("Minimise loss." in json.dumps(q["body"]) for q in requests)  # the prompt, read from stdin
    assert all({k.lower(): v for k, v in q["headers"].items()}["authorization"] == f"Bearer {KEY}"
               for q in requests)
    outputs = [i["output"] for i in requests[-1]["body"]["input"] if i.get("type") == "function_call_output"]
    assert "confined" in outputs[0] and "unconfined" not in outputs[0], outputs[0]
    assert "Success. Updated the following files" in outputs[1] and "exp.py" in outputs[1], outputs[1]
    assert git(repo, "status", "--porcelain") == ""
    keys_nowhere(repo)


@needs_codex
def test_real_codex_without_its_sandbox_helper_is_an_agent_error(tmp_path: Path) -> None:
    """With its home under the temporary folder codex does not set up its sandbox helper: every
    command and patch fails, and codex still exits 0. The trial is an agent_error that says why."""
    repo = make_task(tmp_path / "task")
    env = codex_env(tmp_path, tmp_path)  # the home, tmp_path/home, is under TMPDIR
    with FakeLLM("responses", default=codex_reply) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "codex", "--model", "openai/fake-model",
                "--base-url", fake.url, "--trials", "1", env=env, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR], t[1].reason
    assert "sandbox could not start" in t[1].reason and "set CODEX_HOME or TMPDIR elsewhere" in t[1].reason
    assert "X = 3.0" in branch_file(repo)
    keys_nowhere(repo)


@pytest.mark.skipif(shutil.which("gemini") is None, reason="Gemini CLI is not installed (npm i -g @google/gemini-cli)")
def test_real_gemini_through_the_preset(tmp_path: Path) -> None:
    """A real Gemini CLI, driven by the `gemini` preset with `--base-url`, talks to the fake
    Generative Language API server (streamGenerateContent as server-sent events, function
    calls): it edits exp.py with its replace tool, the loop keeps the change, and gemini's own
    token counts (`--output-format json`) go into the ledger."""
    import re

    repo = make_task(tmp_path / "task")
    (tmp_path / "home").mkdir()

    def reply(body: dict) -> Say:
        contents = body.get("contents") or []
        if not body.get("tools"):  # a helper call of gemini's own (none is expected; answer it anyway)
            return Say('{"reasoning": "the task is done", "next_speaker": "user"}', tokens_in=10, tokens_out=5)
        first = " ".join(str(p.get("text", "")) for p in contents[0].get("parts", []))
        cwd = re.search(r"Workspace Directories:\**\s*- (\S+)", first)
        if "functionResponse" not in json.dumps(contents):
            return Say("", [("replace", {"file_path": f"{cwd[1] if cwd else '.'}/exp.py", "old_string": "X = 3.0",
                                         "new_string": "X = 1.0", "instruction": "Set X to 1.0."})],
                       tokens_in=3000, tokens_out=200)
        return Say("I edited exp.py.\nSet X to 1.0, where the loss is lowest.", tokens_in=3300, tokens_out=20)

    with FakeLLM("gemini", default=reply) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "gemini", "--model", "gemini/fake-model",
                "--base-url", fake.url, "--trials", "1",
                env={"GEMINI_API_KEY": KEY, "GOOGLE_API_KEY": "", "HOME": str(tmp_path / "home"),
                     "XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=120)
        requests = list(fake.requests)
    assert r.returncode == 0, r.stderr + r.stdout
    assert fake.invalid == []
    log = (repo / ".autoresearch/t/agent/1.log").read_text()
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.KEEP], (t[1].reason, log[-3000:])
    assert t[1].description == "Set X to 1.0, where the loss is lowest." and t[1].agent == "gemini"
    assert (t[1].tokens_in, t[1].tokens_out) == (6300, 220)
    assert "X = 1.0" in branch_file(repo)
    assert [urlsplit(q["path"]).path for q in requests] == ["/v1beta/models/fake-model:streamGenerateContent"] * 2
    assert any("Minimise loss." in json.dumps(q["body"]) for q in requests)  # the prompt, read from stdin
    assert all({k.lower(): v for k, v in q["headers"].items()}["x-goog-api-key"] == KEY for q in requests)
    settings = tmp_path / "cache" / "autoresearch" / "gemini-home" / ".gemini" / "settings.json"
    assert json.loads(settings.read_text())["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert git(repo, "status", "--porcelain") == ""
    keys_nowhere(repo)


def test_codex_and_gemini_reports_are_read() -> None:
    """What `codex exec --json` and `gemini --output-format json` print (as codex 0.171 and
    gemini 0.61 print it, stderr lines mixed in): the last message, the tokens, and failures."""
    from autoresearch.agents.base import AgentError
    from autoresearch.agents.presets import codex_result, gemini_result

    codex = "\n".join([
        "WARNING: something on stderr",
        json.dumps({"type": "thread.started", "thread_id": "t"}),
        json.dumps({"type": "item.completed", "item": {"type": "error", "message": "Model metadata not found"}}),
        json.dumps({"type": "item.completed", "item": {"type": "agent_message", "text": "Looking.\nFirst."}}),
        json.dumps({"type": "item.completed", "item": {"type": "file_change", "status": "completed"}}),
        json.dumps({"type": "item.completed", "item": {"type": "agent_message", "text": "Done.\nSet X to 1."}}),
        json.dumps({"type": "turn.completed", "usage": {"input_tokens": 4300, "cached_input_tokens": 300,
                                                         "output_tokens": 120, "reasoning_output_tokens": 20}}),
    ])
    assert codex_result(codex) == {"text": "Done.\nSet X to 1.", "tokens_in": 4300, "tokens_out": 120, "cost": 0.0}
    failed = codex + "\n" + json.dumps({"type": "error", "message": "Reconnecting... 1/5"}) + "\n" + \
        json.dumps({"type": "turn.failed", "error": {"message": "unexpected status 401 Unauthorized"}})
    with pytest.raises(AgentError, match="codex: unexpected status 401"):
        codex_result(failed)
    report = {"session_id": "s", "response": "Edited.\nSet X to 1.",
              "stats": {"models": {"m1": {"tokens": {"prompt": 6300, "candidates": 200, "thoughts": 20, "cached": 100}},
                                   "m2": {"tokens": {"prompt": 10, "candidates": 5}}}}}
    gemini = "YOLO mode is enabled.\n{not json\n" + json.dumps(report, indent=2) + "\nRipgrep is not available.\n"
    assert gemini_result(gemini) == {"text": "Edited.\nSet X to 1.", "tokens_in": 6310, "tokens_out": 225, "cost": 0.0}
    with pytest.raises(AgentError, match="gemini: quota"):
        gemini_result(json.dumps({"session_id": "s", "error": {"type": "Error", "message": "quota", "code": 429}}, indent=2))
    assert gemini_result("no json at all") == {}


def test_fake_responses_and_gemini_servers_speak_and_check_their_apis() -> None:
    """The fakes behind the codex and gemini tests: a stream adds up to the scripted reply (typed
    Responses events; Gemini's SSE chunks), and a conversation the real API refuses gets a 400."""
    import urllib.error
    import urllib.request

    def post(url: str, body: dict) -> tuple[int, str]:
        req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    say = Say("Hello there", [("exec_command", {"cmd": "ls"})], tokens_in=7, tokens_out=3)
    with FakeLLM("responses", [say], default=Say("ok")) as fake:
        status, text = post(fake.url + "/responses", {"model": "m", "stream": True, "input": "hi"})
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        assert status == 200 and [line[7:] for line in text.splitlines() if line.startswith("event: ")] == \
            [e["type"] for e in events]
        assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
        assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello there"
        args = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
        final = events[-1]["response"]
        assert json.loads(args) == {"cmd": "ls"} and final["usage"]["input_tokens"] == 7
        call = final["output"][1]
        asked = [{"type": "message", "role": "user", "content": "hi"}, call]
        status, text = post(fake.url + "/responses", {"model": "m", "input": asked})
        assert status == 400 and "No tool output found" in text and len(fake.invalid) == 1
        answer = {"type": "function_call_output", "call_id": call["call_id"], "output": "a"}
        status, text = post(fake.url + "/responses", {"model": "m", "input": [*asked, answer]})
        assert status == 200 and json.loads(text)["output"][0]["content"][0]["text"] == "ok"
    say = Say("Hello there", [("replace", {"file_path": "x"})], tokens_in=7, tokens_out=3)
    with FakeLLM("gemini", [say], default=Say("ok")) as fake:
        models = fake.url + "/v1beta/models/m"
        user = {"role": "user", "parts": [{"text": "hi"}]}
        status, text = post(models + ":streamGenerateContent?alt=sse", {"contents": [user]})
        chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
        assert status == 200 and "".join(p.get("text", "") for p in parts) == "Hello there"
        assert [p["functionCall"]["name"] for p in parts if "functionCall" in p] == ["replace"]
        assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
        assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 3
        model = {"role": "model", "parts": [p for p in parts if "functionCall" in p]}
        status, text = post(models + ":generateContent", {"contents": [user, model, user]})
        assert status == 400 and "function response parts" in text and len(fake.invalid) == 1
        answer = {"role": "user", "parts": [{"functionResponse": {"name": "replace", "response": {"output": "done"}}}]}
        status, text = post(models + ":generateContent", {"contents": [user, model, answer]})
        assert status == 200 and json.loads(text)["candidates"][0]["content"]["parts"] == [{"text": "ok"}]


HELP = {"claude": ["claude", "--help"], "codex": ["codex", "exec", "--help"], "aider": ["aider", "--help"],
        "gemini": ["gemini", "--help"], "opencode": ["opencode", "run", "--help"]}


@pytest.mark.parametrize("name", sorted(HELP))
def test_preset_flags_exist_in_the_installed_tool(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every flag a preset passes is one the installed tool knows (skipped where it is absent)."""
    import re

    from autoresearch.agents.presets import PRESETS

    if shutil.which(HELP[name][0]) is None:
        pytest.skip(f"{HELP[name][0]} is not installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # gemini --base-url writes its settings there
    out = subprocess.run(HELP[name], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "NO_COLOR": "1"})
    help_text = out.stdout + out.stderr
    task = load_task(make_task(tmp_path / "task"))
    for root in (False, True):
        os.environ["IS_SANDBOX"] = "" if root else "1"
        try:
            command, _, _ = PRESETS[name].command("provider/model", "http://127.0.0.1:1/v1", task)
        finally:
            os.environ.pop("IS_SANDBOX", None)
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]+|-[a-zA-Z])(?=[\s=]|$)", command):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), f"{name}: {flag} not in its --help"


def test_a_key_of_spaces_is_no_key() -> None:
    from autoresearch.agents.providers import ConfigError, resolve

    with pytest.raises(ConfigError, match="set ANTHROPIC_API_KEY in the environment"):
        resolve("anthropic/claude-sonnet-4-5", None, {"ANTHROPIC_API_KEY": "  "})
    assert resolve("openai/gpt-4.1", None, {"OPENAI_API_KEY": " sk-abc\n"}).key == "sk-abc"


# ---------------------------------------------------------------------------
# a preset tool's own error report: readable, and fatal when the key or the model is wrong


def fake_tool(tmp_path: Path, name: str, output: str, code: int) -> dict[str, str]:
    """A stand-in for the tool `name`, first on PATH: prints `output`, exits with `code`."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({output!r})\nsys.exit({code})\n")
    (bindir / name).chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "IS_SANDBOX": "1"}


def claude_says(message: str, is_error: bool = True) -> str:
    return json.dumps({"type": "result", "subtype": "success", "is_error": is_error, "result": message,
                       "total_cost_usd": 0, "usage": {"input_tokens": 0, "output_tokens": 0}}) + "\n"


def codex_says(message: str) -> str:
    return "\n".join([json.dumps({"type": "thread.started", "thread_id": "t"}), json.dumps({"type": "turn.started"}),
                      json.dumps({"type": "error", "message": f"Reconnecting... 1/5 ({message})"}),
                      json.dumps({"type": "turn.failed", "error": {"message": message}})]) + "\n"


GEMINI_401 = "YOLO mode is enabled.\nError when talking to Gemini API\n" + json.dumps({
    "session_id": "s", "error": {"type": "Error", "code": 401, "message": json.dumps(
        {"error": {"code": 401, "message": "Request had invalid credentials.", "status": "UNAUTHENTICATED"}})}},
    indent=2) + "\n"
OPENCODE_404 = json.dumps({"type": "error", "error": {"name": "APIError", "data": {
    "message": "The model `nope` does not exist", "statusCode": 404, "isRetryable": False}}}) + "\n"
AIDER_401 = ("Aider v0.86.2\nModel: openai/fake with whole edit format\n\n"
             f"litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect \nAPI key provided: {KEY}\n"
             "The API provider is not able to authenticate you. Check your API key.\n")


@pytest.mark.parametrize(("tool", "output", "code", "reason"), [
    ("claude", claude_says("Invalid API key · Please run /login"), 1, "claude: Invalid API key · Please run /login"),
    ("claude", claude_says("Invalid API key · Please run /login"), 0, "claude: Invalid API key · Please run /login"),
    ("codex", codex_says(f"unexpected status 401 Unauthorized: Incorrect API key provided: {KEY}"), 1,
     "codex: unexpected status 401 Unauthorized: Incorrect API key provided: [redacted]"),
    ("gemini", GEMINI_401, 1, "gemini: Request had invalid credentials. (HTTP 401)"),
    ("opencode", OPENCODE_404, 1, "opencode: The model `nope` does not exist (HTTP 404)"),
    ("aider", AIDER_401, 0, "aider: litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect "
                            "API key provided: [redacted] The API provider is not able to authenticate you. Check your API key."),
], ids=["claude-exit-1", "claude-exit-0", "codex", "gemini", "opencode", "aider"])
def test_a_bad_key_or_model_reported_by_a_preset_tool_stops_the_loop(tmp_path: Path, tool: str, output: str,
                                                                      code: int, reason: str) -> None:
    """Whatever its exit code, the tool's own error report is the trial's reason (not its raw
    JSON); one that says the key, the login or the model is wrong stops the loop after three."""
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--tag", "t", "--agent", tool, "--hours", "1",
            env=fake_tool(tmp_path, tool, output, code), timeout=120)
    assert r.returncode == 1, r.stderr + r.stdout
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP] + [Status.AGENT_ERROR] * 3
    assert [x.reason for x in t[1:]] == [reason] * 3
    assert f"the agent failed 3 times in a row with an error that will not go away by itself: {reason}" in r.stderr
    assert KEY not in r.stdout + r.stderr


@pytest.mark.parametrize(("tool", "output", "reason"), [
    ("claude", claude_says('API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'),
     'claude: API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'),
    ("codex", codex_says("unexpected status 500 Internal Server Error: try again"),
     "codex: unexpected status 500 Internal Server Error: try again"),
    # what the agent read is not the tool's error report: 401 in its answer is not a bad key
    ("claude", claude_says("notes.txt says: HTTP 401 Unauthorized, invalid api key", is_error=False),
     "the agent command exited with 1: "),
], ids=["claude-overloaded", "codex-500", "claude-401-in-its-answer"])
def test_a_passing_failure_reported_by_a_preset_tool_does_not_stop_the_loop(tmp_path: Path, tool: str, output: str,
                                                                          reason: str) -> None:
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--tag", "t", "--agent", tool, "--trials", "3",
            env=fake_tool(tmp_path, tool, output, 1), timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP] + [Status.AGENT_ERROR] * 3
    assert all(x.reason.startswith(reason) for x in t[1:]), t[1].reason
    assert "will not go away by itself" not in r.stderr


@pytest.mark.parametrize(("tool", "kind", "model", "key"), [
    ("opencode", "openai", "openai/fake-model", "OPENAI_API_KEY"),
    ("gemini", "gemini", "gemini/fake-model", "GEMINI_API_KEY"),
])
def test_a_real_tool_refused_for_its_key_stops_the_loop(tmp_path: Path, tool: str, kind: str, model: str, key: str) -> None:
    """The real tool against a server that answers 401 quoting the key: the reason is the tool's
    own message (key redacted), and three in a row stop the loop (skipped where it is absent)."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    repo = make_task(tmp_path / "task")
    (tmp_path / "home").mkdir()
    with FakeLLM(kind, [], default=Fault("401")) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", tool, "--model", model, "--base-url", fake.url,
                "--hours", "1", env={key: KEY, "GOOGLE_API_KEY": "", "HOME": str(tmp_path / "home"),
                                     "XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=240)
    assert r.returncode == 1, r.stderr + r.stdout
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP] + [Status.AGENT_ERROR] * 3
    assert t[1].reason == f"{tool}: Incorrect API key provided: [redacted] (HTTP 401)", t[1].reason
    assert "3 times in a row" in r.stderr and KEY not in r.stderr + r.stdout
    keys_nowhere(repo)
