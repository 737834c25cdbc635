"""The CLI presets (agents/presets.py) and `autoresearch agents`: the listing, the claude preset
with a stand-in claude (as root or not), a preset's command copied into --agent-cmd, the codex
and gemini reports read, and a preset tool's own error report (from stand-in tools): readable,
and fatal when the key or the model is wrong. (The presets with the real tools:
test_presets_real.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import cli, make_task
from llm_helpers import KEY, ledger

from autoresearch.records import Status

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
# real one does), records its argv, reads the prompt from stdin, edits exp.py, prints a JSON result
# (with the fields of $CLAUDE_REPORTS in it, a JSON object).
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
                  "total_cost_usd": 0.0123, "usage": {{"input_tokens": 1500, "output_tokens": 200}},
                  **json.loads(os.environ.get("CLAUDE_REPORTS") or "{{}}")}}))
sys.exit(int(os.environ.get("CLAUDE_EXIT") or 0))
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


def test_claude_tokens_are_those_of_every_model_its_cost_covers(tmp_path: Path) -> None:
    """Claude Code's `usage` counts its main model's tokens; `modelUsage` has every model it
    asked (a small one for a title too), as `total_cost_usd` does: the ledger has their sum."""
    repo = make_task(tmp_path / "task")
    cached = {"inputTokens": 3000, "outputTokens": 300, "cacheReadInputTokens": 20000,
              "cacheCreationInputTokens": 1000, "webSearchRequests": 0, "costUSD": 0.0441}
    small = {"inputTokens": 1000, "outputTokens": 100, "cacheReadInputTokens": 0,
             "cacheCreationInputTokens": 0, "webSearchRequests": 0, "costUSD": 0.0012}
    reports = {"total_cost_usd": 0.0453,
               "usage": {"input_tokens": 3000, "output_tokens": 300, "cache_read_input_tokens": 20000,
                         "cache_creation_input_tokens": 1000, "service_tier": "standard"},
               "modelUsage": {"claude-sonnet-4-5": cached, "claude-haiku-4-5": small}}
    env = {**fake_claude(tmp_path), "IS_SANDBOX": "1", "CLAUDE_REPORTS": json.dumps(reports)}
    r = cli("run", str(repo), "--tag", "t", "--agent", "claude", "--trials", "1", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    t = ledger(repo)
    assert (t[1].tokens_in, t[1].tokens_out, t[1].cost) == (25000, 400, pytest.approx(0.0453))


def test_a_tool_that_exits_non_zero_after_reporting_its_spend_has_it_recorded(tmp_path: Path) -> None:
    """Claude Code's report said what it spent, then the tool exited 3: the trial is an
    agent_error, and its tokens and cost are in the ledger (they were 0), so --max-cost counts them."""
    repo = make_task(tmp_path / "task")
    env = {**fake_claude(tmp_path), "IS_SANDBOX": "1", "CLAUDE_EXIT": "3"}
    r = cli("run", str(repo), "--tag", "t", "--agent", "claude", "--trials", "1", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    t = ledger(repo)
    assert t[1].status is Status.AGENT_ERROR and "exited with 3" in t[1].reason, t[1].reason
    assert (t[1].tokens_in, t[1].tokens_out, t[1].cost) == (1500, 200, pytest.approx(0.0123))


def test_aider_description_is_the_prose_not_a_file_name() -> None:
    """aider prints the file's name, a blank line, then its code: the name was taken as the
    description, as were the names in aider's list of the repository's files."""
    from autoresearch.agents.presets import aider_result

    out = ("Added exp.py to the chat.\n\n\nprepare.py\n\nprogram.md\nRaise X to 1.0, the minimum.\n\n\n\n"
           "exp.py\n\n```diff\n-X = 3.0\n+X = 1.0\n```\n\n\nTokens: 1.0k sent, 100 received.\nApplied edit to exp.py\n")
    assert aider_result(out)["text"] == "Raise X to 1.0, the minimum."
    assert aider_result(out.replace("Raise X to 1.0, the minimum.\n", ""))["text"] == ""


IGNORED_AT_EXIT = """Exception ignored in: <function BaseEventLoop.__del__ at 0x7fc21fd11f80>
Traceback (most recent call last):
  File "/usr/lib/python3.11/asyncio/base_events.py", line 694, in __del__
    self.close()
  File "/usr/lib/python3.11/selectors.py", line 42, in _fileobj_to_fd
    raise ValueError("Invalid file descriptor: {}".format(fd))
ValueError: Invalid file descriptor: -1
"""


def test_an_error_python_ignored_at_exit_is_not_the_description() -> None:
    """aider (0.86, in CI) sometimes ends on a traceback Python prints at exit for an error it
    ignored (an asyncio loop closed late): its last line, 'ValueError: Invalid file descriptor:
    -1', became the kept trial's description. A last line printed after it still counts."""
    from autoresearch.agents.cli import description_from
    from autoresearch.agents.presets import aider_result

    out = "Added exp.py to the chat.\nSet X to 1.0, where the loss is lowest.\n\nTokens: 1.2k sent, 80 received.\n"
    assert aider_result(out + IGNORED_AT_EXIT)["text"] == "Set X to 1.0, where the loss is lowest."
    assert description_from(None, "lowered X\n" + IGNORED_AT_EXIT + IGNORED_AT_EXIT) == "lowered X"
    assert description_from(None, "lowered X\n" + IGNORED_AT_EXIT + "then raised Y\n") == "then raised Y"
    assert description_from(None, "Exception ignored in: <_io.TextIOWrapper name='<stdout>'>\n"
                                  "BrokenPipeError: [Errno 32] Broken pipe\n") == ""


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


GEMINI_NO_AUTH = "YOLO mode is enabled.\n" + json.dumps({"session_id": "s", "error": {
    "type": "Error", "code": 41, "message": "Please set an Auth method in your /h/.gemini/settings.json or specify one "
    "of the following environment variables before running: GEMINI_API_KEY, GOOGLE_GENAI_USE_VERTEXAI"}}, indent=2) + "\n"


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
    ("gemini", GEMINI_NO_AUTH, 41, "gemini: Please set an Auth method in your /h/.gemini/settings.json or specify one "
                                   "of the following environment variables before running: GEMINI_API_KEY, "
                                   "GOOGLE_GENAI_USE_VERTEXAI"),
    ("opencode", OPENCODE_404, 1, "opencode: The model `nope` does not exist (HTTP 404)"),
    ("aider", AIDER_401, 0, "aider: litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect "
                            "API key provided: [redacted] The API provider is not able to authenticate you. Check your API key."),
], ids=["claude-exit-1", "claude-exit-0", "codex", "gemini", "gemini-no-auth", "opencode", "aider"])
def test_a_bad_key_or_model_reported_by_a_preset_tool_stops_the_loop(tmp_path: Path, tool: str, output: str,
                                                                      code: int, reason: str) -> None:
    """Whatever its exit code, the tool's own error report is the trial's reason (not its raw
    JSON); one that says the key, the login or the model is wrong stops the loop after three."""
    repo = make_task(tmp_path / "task")
    model = ["--model", "openai/fake"] if tool == "aider" else []  # (aider refuses to start with neither model nor key)
    r = cli("run", str(repo), "--tag", "t", "--agent", tool, *model, "--hours", "1",
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


def test_opencode_with_a_model_without_its_provider_is_refused_at_start(tmp_path: Path) -> None:
    """opencode 1.18 reads `-m gpt-4.1` as provider `gpt-4.1` with no model; its JSON error says
    only "Unexpected server error. Check server logs for details.", every trial, and that is no
    error that stops the loop. Now the run is refused at once (exit 2, one line)."""
    repo = make_task(tmp_path / "task")
    env = fake_tool(tmp_path, "opencode", "", 0)
    r = cli("run", str(repo), "--tag", "t", "--agent", "opencode", "--model", "gpt-4.1", "--trials", "1", env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--agent opencode takes --model PROVIDER/MODEL (e.g. openai/gpt-4.1), not 'gpt-4.1'" in r.stderr, r.stderr
    assert not (repo / ".autoresearch").exists()


def test_aider_with_no_model_and_no_key_is_refused_before_it_waits_on_a_browser_login(tmp_path: Path) -> None:
    """aider, given no model and finding no key, offers an OpenRouter login in a browser; the
    preset's --yes-always took the offer, and each trial waited five minutes for it to fail.
    Now the run is refused at once (exit 2, one line); a --model, a key or a config is enough."""
    repo = make_task(tmp_path / "task")
    (tmp_path / "home").mkdir()
    env = {**fake_tool(tmp_path, "aider", "Applied edit to exp.py\n", 0), "HOME": str(tmp_path / "home"),
           **{k: "" for k in ("OPENROUTER_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "OPENAI_API_KEY",
                              "GEMINI_API_KEY", "VERTEXAI_PROJECT", "AIDER_MODEL")}}
    r = cli("run", str(repo), "--tag", "t", "--agent", "aider", "--trials", "1", env=env, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--agent aider without --model finds none of the keys" in r.stderr and not (repo / ".autoresearch").exists()
    for given in ({"ANTHROPIC_API_KEY": "sk-ant-test-0123456789"}, {"AIDER_MODEL": "openai/x"}):
        r = cli("run", str(repo), "--tag", "t", "--agent", "aider", "--trials", "1", env={**env, **given}, cwd=tmp_path)
        assert "finds none of the keys" not in r.stderr, r.stderr
    (tmp_path / "home" / ".aider.conf.yml").write_text("model: openai/x\n")
    r = cli("run", str(repo), "--tag", "t", "--agent", "aider", "--trials", "1", env=env, cwd=tmp_path)
    assert "finds none of the keys" not in r.stderr, r.stderr


CODEX_SPENT = "\n".join(json.dumps(e) for e in [
    {"type": "thread.started", "thread_id": "t"}, {"type": "turn.started"},
    {"type": "item.completed", "item": {"type": "agent_message", "text": "Looked, changed nothing."}},
    {"type": "turn.completed", "usage": {"input_tokens": 200_000, "output_tokens": 20_000}}]) + "\n"


def test_max_cost_counts_a_tool_that_reports_tokens_but_no_cost(tmp_path: Path) -> None:
    """codex (and gemini, opencode) report tokens, not dollars: each trial was recorded at $0, and
    --max-cost never stopped the loop. The tokens are priced at the --model's price now; an agent
    whose spending cannot be seen is said to be at start."""
    repo = make_task(tmp_path / "task")
    env = fake_tool(tmp_path, "codex", CODEX_SPENT, 0)
    r = cli("run", str(repo), "--tag", "t", "--agent", "codex", "--model", "openai/gpt-4.1", "--max-cost", "1",
            "--trials", "5", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert len(t) == 3 and t[1].cost == pytest.approx(0.56), t  # 0.2 M x $2 + 0.02 M x $8
    assert "--max-cost $1 reached ($1.12 spent)" in r.stdout + r.stderr
    r = cli("run", str(repo), "--tag", "u", "--agent", "codex", "--model", "openai/no-such-price", "--max-cost", "1",
            "--trials", "1", env=env, timeout=120)
    assert "--agent codex reports no cost and --model openai/no-such-price has no price in the table" in r.stderr
    r = cli("run", str(repo), "--tag", "v", "--agent-cmd", "true", "--max-cost", "1", "--trials", "1")
    assert "--agent cli reports no spending: it counts as $0 against --max-cost" in r.stderr


def test_a_tool_stopped_at_its_time_limit_has_the_spend_it_reported_recorded(tmp_path: Path) -> None:
    """codex reports each turn's tokens as it goes: one killed at --agent-timeout had spent them
    all the same (they were recorded as 0)."""
    repo = make_task(tmp_path / "task")
    env = fake_tool(tmp_path, "codex", CODEX_SPENT, 0)
    tool = tmp_path / "bin" / "codex"
    tool.write_text(tool.read_text().replace("sys.exit(0)", "sys.stdout.flush()\nimport time\ntime.sleep(60)"))
    r = cli("run", str(repo), "--tag", "t", "--agent", "codex", "--model", "openai/gpt-4.1", "--agent-timeout", "3",
            "--trials", "1", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert t[1].status is Status.AGENT_ERROR and "timed out" in t[1].reason, t[1].reason
    assert (t[1].tokens_in, t[1].tokens_out, t[1].cost) == (200_000, 20_000, pytest.approx(0.56))


def test_proposals_prepared_ahead_do_not_run_past_a_cap_the_trials_before_them_reached(tmp_path: Path) -> None:
    """Three proposals made at once (--agent-concurrency 3) spent $1.50 against --max-cost 1, and
    all three ran. The third ready, once the two measured before it had spent the $1, is not run (as
    a proposal prepared ahead is not run past --hours), whichever of the three it is."""
    repo = make_task(tmp_path / "task")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    said = json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "X moved",
                       "total_cost_usd": 0.5, "usage": {"input_tokens": 10, "output_tokens": 10}})
    (bindir / "claude").write_text(f"""#!{sys.executable}
import os, re, sys, time
time.sleep(3.0 if os.environ["AUTORESEARCH_TRIAL"] == "2" else 1.0)  # the third is ready before the second
text = open("exp.py").read()
open("exp.py", "w").write(re.sub(r"(?m)^X = .*$", "X = 2." + os.environ["AUTORESEARCH_TRIAL"], text))
print({said!r})
""")
    (bindir / "claude").chmod(0o755)
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "IS_SANDBOX": "1"}
    r = cli("run", str(repo), "--tag", "t", "--agent", "claude", "--agent-concurrency", "3", "--max-cost", "1",
            "--trials", "6", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert len(t) >= 4 and all(x.cost == 0.5 for x in t[1:]), t  # (a fourth may be opened before the third's spend is in)
    # the first two ready are measured (in the order they came, whatever their numbers); by then $1 is spent
    measured = [x for x in t[1:] if x.status in (Status.KEEP, Status.DISCARD)]
    assert len(measured) == 2, t
    for x in t[1:]:
        if x not in measured:
            assert x.status is Status.INTERRUPTED and x.reason == "not run: --max-cost $1 was reached before its experiment", x
