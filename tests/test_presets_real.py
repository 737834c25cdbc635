"""The presets (agents/presets.py) driving the real coding tools, each skipped where it is not
installed: aider, Claude Code, opencode, Codex and Gemini CLI talk to fake API servers on
127.0.0.1 and make an edit the loop keeps, with their own token counts in the ledger; a failure
is an agent_error with the key redacted; a tool refused for its key stops the loop; every flag
a preset passes is one the installed tool knows. Also: the fake Responses and Gemini servers
behind the codex and gemini tests speak and check their APIs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import cli, git, make_task
from fakes.llm_server import FakeLLM, Fault, Say
from llm_helpers import KEY, branch_file, ledger

from autoresearch.records import Status
from autoresearch.task import load_task

# ---------------------------------------------------------------------------
# the real tools through the presets


def kept_by(repo: Path, agent: str):  # noqa: ANN201
    """The trial the real tool made: kept after the baseline, with the fake model's description,
    and its edit on the tag's branch."""
    t = ledger(repo)
    log = (repo / ".autoresearch/t/agent/1.log").read_text()
    assert [x.status for x in t] == [Status.KEEP, Status.KEEP], (t[1].reason, log[-3000:])
    assert t[1].description == "Set X to 1.0, where the loss is lowest." and t[1].agent == agent
    assert "X = 1.0" in branch_file(repo)
    return t[1]



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
@pytest.mark.extended  # (aider takes seconds to start; the preset's flags are checked by default)
def test_real_aider_through_the_preset(tmp_path: Path) -> None:
    """A real coding agent: aider, driven by the `aider` preset, talks to the fake OpenAI server;
    its whole-file edit is evaluated by the loop and kept."""
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", default=aider_reply(repo)) as fake:
        r = cli("run", str(repo), "--tag", "t", "--agent", "aider", "--model", "openai/fake-model",
                "--base-url", fake.url, "--trials", "1", env={"OPENAI_API_KEY": KEY}, timeout=240)
        requests = list(fake.requests)
    assert r.returncode == 0, r.stderr + r.stdout
    trial = kept_by(repo, "aider")
    assert trial.metric == pytest.approx(2.0) and trial.model == "openai/fake-model"
    assert (trial.tokens_in, trial.tokens_out) == (1200, 80)
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
@pytest.mark.parametrize("suffix", ["", "/v1"], ids=["root", "root-with-v1"])
def test_real_claude_code_through_the_preset(tmp_path: Path, suffix: str) -> None:
    """A real Claude Code, driven by the `claude` preset (as root: acceptEdits and file tools
    only), talks to the fake Anthropic server: it reads exp.py, edits it with its Edit tool, and
    the loop keeps the change; Claude Code's own token count and cost go into the ledger. A
    --base-url ending in /v1, which the llm agent takes, no longer has it ask /v1/v1/messages."""
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
                "--base-url", fake.url + suffix, "--trials", "1",
                env={"ANTHROPIC_API_KEY": KEY, "IS_SANDBOX": "", "HOME": str(tmp_path / "home")}, timeout=240)
        requests = list(fake.requests)
    assert r.returncode == 0, r.stderr + r.stdout
    assert fake.invalid == []
    trial = kept_by(repo, "claude")
    assert trial.tokens_in >= 7100 and trial.tokens_out >= 130 and trial.cost > 0
    assert any("Minimise loss." in json.dumps(q["body"]) for q in requests)
    assert {q["path"].split("?")[0] for q in requests} == {"/v1/messages"}, [q["path"] for q in requests]
    for path in (repo / ".autoresearch").rglob("*"):
        if path.is_file():
            assert KEY not in path.read_bytes().decode("latin-1"), path


@pytest.mark.skipif(shutil.which("opencode") is None, reason="opencode is not installed (npm i -g opencode-ai)")
@pytest.mark.slow  # (CI runs the slow tests too)
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
    trial = kept_by(repo, "opencode")
    assert (trial.tokens_in, trial.tokens_out) == (6300, 220)
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
    trial = kept_by(repo, "codex")
    assert trial.model == "openai/fake-model" and (trial.tokens_in, trial.tokens_out) == (9400, 220)
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
    trial = kept_by(repo, "gemini")
    assert (trial.tokens_in, trial.tokens_out) == (6300, 220)
    assert [urlsplit(q["path"]).path for q in requests] == ["/v1beta/models/fake-model:streamGenerateContent"] * 2
    assert any("Minimise loss." in json.dumps(q["body"]) for q in requests)  # the prompt, read from stdin
    assert all({k.lower(): v for k, v in q["headers"].items()}["x-goog-api-key"] == KEY for q in requests)
    settings = tmp_path / "cache" / "autoresearch" / "gemini-home" / ".gemini" / "settings.json"
    assert json.loads(settings.read_text())["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert git(repo, "status", "--porcelain") == ""
    keys_nowhere(repo)


# ---------------------------------------------------------------------------
# the fakes behind the codex and gemini tests; the presets' flags in the installed tools


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


# ---------------------------------------------------------------------------
# a real tool's own error report: fatal when the key is wrong


@pytest.mark.slow  # (about 20 s: each tool starts several times; CI runs the slow tests too)
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
