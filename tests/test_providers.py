"""The llm agent's API clients (agents/providers.py), through the loop against fake OpenAI and
Anthropic servers (real HTTP on 127.0.0.1): faults (429 with retry-after, 500, a hang, a
malformed or misshapen reply) are retried, then an agent_error with its spend, and the loop goes
on; a 401 is not retried; a 400 or 422 recurs, so three in a row stop the loop; bad
AUTORESEARCH_LLM_* settings are one line and exit 2; a key of spaces is no key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli, make_task
from fakes.llm_server import FakeLLM, Fault, Say
from llm_helpers import KEY, branch_file, good_edit, ledger, run_llm

from autoresearch.records import Status

# ---------------------------------------------------------------------------
# faults: retried, then agent_error, and the loop goes on


@pytest.mark.parametrize("kind,fault", [
    ("openai", Fault("429", retry_after=0.3)), ("openai", Fault("500")),
    pytest.param("openai", Fault("hang", seconds=3), marks=pytest.mark.slow),
    ("openai", Fault("malformed")), pytest.param("openai", Fault("bad-shape"), marks=pytest.mark.slow),
    pytest.param("anthropic", Fault("429", retry_after=0.3), marks=pytest.mark.extended),
    pytest.param("anthropic", Fault("malformed"), marks=pytest.mark.slow),
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


@pytest.mark.parametrize("kind", [pytest.param("openai", marks=pytest.mark.extended), "anthropic"])  # (Anthropic's was a dict repr)
def test_a_server_error_that_outlives_its_retries_is_told_in_the_servers_words(tmp_path: Path, kind: str) -> None:
    """Anthropic's SDK puts the whole error body, a Python dict's repr, in its message: the
    reason quotes the server's message, as it does for a refusal."""
    repo = make_task(tmp_path / "task")
    with FakeLLM(kind, default=Fault("529", message="Overloaded")) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    reason = ledger(repo)[1].reason
    assert "after 3 attempt(s): HTTP 529" in reason and reason.endswith(": Overloaded"), reason
    assert "Error code" not in reason and "{" not in reason, reason
    assert "Overloaded" in (repo / ".autoresearch" / "t" / "agent" / "1.log").read_text()


@pytest.mark.parametrize("kind", ["openai", pytest.param("anthropic", marks=pytest.mark.slow)])
def test_a_reply_that_trickles_in_is_given_up_at_the_request_timeout(tmp_path: Path, kind: str) -> None:
    """A 200 whose body comes a byte at a time (a keep-alive proxy) passed every limit: each
    read was quick, so the SDK's timeout never came, and --agent-timeout was not looked at."""
    repo = make_task(tmp_path / "task")
    with FakeLLM(kind, [Fault("trickle", seconds=40), *good_edit()]) as fake:
        r = run_llm(repo, fake, "--agent-timeout", "20", env={"AUTORESEARCH_LLM_TIMEOUT": "2"})
    assert r.returncode == 0, r.stderr
    (t,) = ledger(repo)[1:]
    assert t.status is Status.KEEP, t.reason  # given up after 2 s (+ grace), retried, and answered
    assert t.ended - t.started < 15
    log = (repo / ".autoresearch" / "t" / "agent" / "1.log").read_text()
    assert "no whole reply in 2 s" in log, log


@pytest.mark.parametrize("kind", ["openai", pytest.param("anthropic", marks=pytest.mark.extended)])
def test_tool_arguments_off_the_spec_are_read_not_thrown_away(tmp_path: Path, kind: str) -> None:
    """OpenAI-compatible servers that send a call's arguments as an object (not a JSON string),
    or an Anthropic input sent as a JSON string: the whole billed reply was thrown away as
    malformed, retried 6 times, and recorded with 0 tokens."""
    repo = make_task(tmp_path / "task")
    script = [Say(s.text, s.calls, odd_args=True) for s in good_edit()]
    with FakeLLM(kind, script) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    (t,) = ledger(repo)[1:]
    assert t.status is Status.KEEP and t.tokens_in == 3000, t.reason
    assert "X = 1.0" in branch_file(repo)


@pytest.mark.parametrize("kind,stop", [("openai", "length"), pytest.param("anthropic", "max_tokens", marks=pytest.mark.slow)])
def test_a_reply_cut_at_the_token_limit_is_named_not_taken_for_a_model_without_tools(
        tmp_path: Path, kind: str, stop: str) -> None:
    repo = make_task(tmp_path / "task")
    cut = Say("Let me think this through step by step. First", stop=stop)
    with FakeLLM(kind, [cut, cut, cut, *good_edit()]) as fake:
        r = run_llm(repo, fake, trials=2)
        told = [m for q in fake.requests for m in q["body"].get("messages", []) if m.get("role") == "user"]
    assert r.returncode == 0, r.stdout + r.stderr  # not "does it support tool calls?": three in a row
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP]
    assert "cut at the reply's token limit" in t[1].reason and "support tool calls" not in t[1].reason, t[1].reason
    assert any("cut" in str(m.get("content")) for m in told)  # the model is told why


def test_a_reply_of_whitespace_is_not_sent_back_to_anthropic_as_a_text_block(tmp_path: Path) -> None:
    """Claude's "\n\n" before a tool call (or a blank reply) went back as a text block of
    whitespace only, which the messages API refuses (400: "text content blocks must contain
    non-whitespace text"): the proposal failed as a fatal refusal, and three stopped the loop."""
    from autoresearch.agents.base import Context
    from autoresearch.agents.llm import LLMAgent
    from autoresearch.agents.providers import make_chat, resolve
    from autoresearch.agents.retry import RetryPolicy
    from autoresearch.records import Trial
    from autoresearch.task import load_task

    repo = make_task(tmp_path / "task")
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    ctx = Context(task=load_task(repo), workdir=repo, number=1, best=best, history=(best,),
                  log_path=tmp_path / "agent.log", ledger_dir=tmp_path)
    script = [Say("\n\n", [("read_file", {"path": "exp.py"})]), Say(" \n"), *good_edit()[1:]]
    with FakeLLM("anthropic", script) as fake:
        endpoint = resolve("anthropic/claude-sonnet-4-5", fake.url, {"ANTHROPIC_API_KEY": KEY})
        proposal = LLMAgent(endpoint, make_chat(endpoint), policy=RetryPolicy(attempts=1)).propose(ctx)
    assert fake.invalid == []
    assert proposal.description == "set X to 1.0 to bring the loss down"
    assert "X = 1.0" in (repo / "exp.py").read_text()


@pytest.mark.parametrize("model", ["mistral/mistral-large-latest", "openai/some-server-model"])
def test_a_server_that_refuses_max_completion_tokens_is_given_max_tokens(tmp_path: Path, model: str) -> None:
    """Mistral's API refuses OpenAI's `max_completion_tokens` (422, "Extra inputs are not
    permitted"): every proposal of --model mistral/... was a fatal refusal, and three stopped the
    loop. Mistral is sent `max_tokens`; another server that refuses the name is asked again with it."""
    from autoresearch.agents.base import Context
    from autoresearch.agents.llm import LLMAgent
    from autoresearch.agents.providers import make_chat, resolve
    from autoresearch.agents.retry import RetryPolicy
    from autoresearch.records import Trial
    from autoresearch.task import load_task

    repo = make_task(tmp_path / "task")
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    ctx = Context(task=load_task(repo), workdir=repo, number=1, best=best, history=(best,),
                  log_path=tmp_path / "agent.log", ledger_dir=tmp_path)
    steps = iter(good_edit())
    refusal = ('[{"type":"extra_forbidden","loc":["body","max_completion_tokens"],'
               '"msg":"Extra inputs are not permitted","input":8192}]')

    def strict(body: dict) -> Say | Fault:
        return Fault("422", message=refusal) if "max_completion_tokens" in body else next(steps)

    with FakeLLM("openai", default=strict) as fake:
        endpoint = resolve(model, fake.url, {"MISTRAL_API_KEY": KEY, "OPENAI_API_KEY": KEY})
        proposal = LLMAgent(endpoint, make_chat(endpoint), policy=RetryPolicy(attempts=1)).propose(ctx)
        sent = [q["body"] for q in fake.requests]
    assert proposal.description == "set X to 1.0 to bring the loss down"
    assert all(b["max_tokens"] == 8192 for b in sent if "max_completion_tokens" not in b)
    assert len(sent) == (3 if model.startswith("mistral") else 4)  # (asked once with the other name)


def test_an_empty_reply_is_not_sent_back_as_an_assistant_message_of_null(tmp_path: Path) -> None:
    """A reasoning model cut at the reply's limit answers nothing (no text, no call); it went back
    as {"role": "assistant", "content": null}, which OpenAI refuses (400: "expected a string, got
    null"): the nudge the docs promise became a fatal refusal, and three stopped the loop."""
    from autoresearch.agents.base import Context
    from autoresearch.agents.llm import LLMAgent
    from autoresearch.agents.providers import make_chat, resolve
    from autoresearch.agents.retry import RetryPolicy
    from autoresearch.records import Trial
    from autoresearch.task import load_task

    repo = make_task(tmp_path / "task")
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    ctx = Context(task=load_task(repo), workdir=repo, number=1, best=best, history=(best,),
                  log_path=tmp_path / "agent.log", ledger_dir=tmp_path)
    with FakeLLM("openai", [Say("", stop="length"), *good_edit()]) as fake:
        endpoint = resolve("openai/o3", fake.url, {"OPENAI_API_KEY": KEY})
        proposal = LLMAgent(endpoint, make_chat(endpoint), policy=RetryPolicy(attempts=1)).propose(ctx)
        told = fake.requests[1]["body"]["messages"][-1]["content"]
    assert fake.invalid == [] and proposal.description == "set X to 1.0 to bring the loss down"
    assert "cut at the token limit" in told  # the model is told why


def test_a_reply_with_no_choices_is_retried_and_its_tokens_counted(tmp_path: Path) -> None:
    """A router's reply with no choices but a usage block (an upstream failure, billed all the
    same) is retried, and the tokens it reports count toward the trial's spend and --max-cost."""
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", [Fault("no-choices"), *good_edit()]) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert t[1].status == Status.KEEP
    assert (t[1].tokens_in, t[1].tokens_out) == (500 + 3 * 1000, 7 + 3 * 100)
    # counts that are not numbers are no counts (0), and the reply is retried all the same
    odd = make_task(tmp_path / "odd")
    with FakeLLM("openai", [Fault("no-choices-odd"), *good_edit()]) as fake:
        r = run_llm(odd, fake)
    assert r.returncode == 0, r.stderr
    t = ledger(odd)
    assert t[1].status == Status.KEEP and (t[1].tokens_in, t[1].tokens_out) == (3 * 1000, 3 * 100)


def test_permanent_errors_are_not_retried(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", [Fault("401"), *good_edit()]) as fake:
        r = run_llm(repo, fake, trials=2)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP]
    assert "401" in t[1].reason and "check the API key" in t[1].reason
    assert len(fake.requests) == 4


# ---------------------------------------------------------------------------
# what the audit of --agent llm found: a 400 that recurs, bad settings; a key of spaces


@pytest.mark.parametrize("kind,status,message", [
    ("openai", "400", "registry.ollama.ai/library/gemma:2b does not support tools"),
    ("openai", "422", "nosuch/model is not a valid model ID"),
    pytest.param("anthropic", "400", "prompt is too long: 250000 tokens > 200000 maximum", marks=pytest.mark.extended),
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


@pytest.mark.parametrize("kind,fault", [
    ("openai", Fault("429", code="insufficient_quota", message="You exceeded your current quota")),
    pytest.param("openai", Fault("402", message="Insufficient Balance"), marks=pytest.mark.extended),
    pytest.param("anthropic", Fault("400", message="Your credit balance is too low to access the Anthropic API"),
                 marks=pytest.mark.extended),
])
def test_an_account_out_of_credit_stops_the_loop(tmp_path: Path, kind: str, fault: Fault) -> None:
    """OpenAI's 429 insufficient_quota, a 402 and Anthropic's 400 about the credit balance will
    not pass with a retry: three in a row stop the loop and say so, instead of a night of agent
    errors (a plain 429 is retried: above)."""
    needle = "out of credit or quota"
    repo = make_task(tmp_path / "task")
    with FakeLLM(kind, default=fault) as fake:
        r = run_llm(repo, fake, trials=6)
    assert r.returncode == 1, r.stderr + r.stdout
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP] + [Status.AGENT_ERROR] * 3
    assert needle in t[1].reason and fault.message in t[1].reason
    assert len(fake.requests) == 3  # none retried


def test_a_refusal_names_the_key_variable_and_the_url(tmp_path: Path) -> None:
    """A 401 names the variable the key came from, a 404 the URL asked (a base URL without /v1
    is the usual cause) and the server's own words, not the SDK's dump of the body."""
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", [Fault("401"), Fault("404", message="no route")]) as fake:
        base = fake.url.removesuffix("/v1")
        r = cli("run", str(repo), "--tag", "t", "--agent", "llm", "--model", "my-model", "--base-url", base,
                "--trials", "2", env={"OPENAI_API_KEY": KEY, "AUTORESEARCH_LLM_BACKOFF": "0.01"}, timeout=120)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert "check the API key in OPENAI_API_KEY" in t[1].reason and "Error code" not in t[1].reason
    assert f"at {base}/chat/completions" in t[2].reason and "usually ends in /v1" in t[2].reason
    assert t[2].reason.endswith(": no route"), t[2].reason


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


def test_a_key_of_spaces_is_no_key() -> None:
    from autoresearch.agents.providers import ConfigError, resolve

    with pytest.raises(ConfigError, match="set ANTHROPIC_API_KEY in the environment"):
        resolve("anthropic/claude-sonnet-4-5", None, {"ANTHROPIC_API_KEY": "  "})
    assert resolve("openai/gpt-4.1", None, {"OPENAI_API_KEY": " sk-abc\n"}).key == "sk-abc"


# ---------------------------------------------------------------------------
# before the loop: one free request, the list of models


@pytest.mark.parametrize("kind", ["openai", pytest.param("anthropic", marks=pytest.mark.slow)])
def test_a_refused_key_stops_run_before_the_baseline(tmp_path: Path, kind: str) -> None:
    """A key the server refuses is said when `run` starts (exit 2), not at the first proposal
    after the baseline's minutes; nothing is made and no model turn is paid for."""
    repo = make_task(tmp_path / "task")
    with FakeLLM(kind, good_edit(), key="sk-the-right-one-0123456789") as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 2, r.stderr + r.stdout
    keyvar = "OPENAI_API_KEY" if kind == "openai" else "ANTHROPIC_API_KEY"
    assert f"refuses the API key in {keyvar} (HTTP 401: Incorrect API key provided: [redacted])" in r.stderr
    assert "nothing was run" in r.stderr and KEY not in r.stderr + r.stdout
    assert fake.listings == [KEY] and not fake.requests
    assert not (repo / ".autoresearch").exists()
    with FakeLLM(kind, good_edit(), key=KEY) as fake:  # the right key: one listing, then the loop
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    assert fake.listings == [KEY] and "warning" not in r.stderr
    assert [t.status for t in ledger(repo)] == [Status.KEEP, Status.KEEP]


def test_a_model_the_server_does_not_list_and_a_server_not_up_are_warnings(tmp_path: Path) -> None:
    import socket

    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", good_edit(), listed=["qwen2.5-coder:7b", "llama3.1:8b"]) as fake:
        r = run_llm(repo, fake, model="openai/qwen2.5-coda")
    assert r.returncode == 0, r.stderr
    assert (f"warning: {fake.url} lists 2 models, not 'qwen2.5-coda' (closest: qwen2.5-coder:7b): "
            "check --model (the run goes on") in r.stderr
    assert ledger(repo)[1].status is Status.KEEP
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    other = make_task(tmp_path / "other")
    r = cli("run", str(other), "--tag", "t", "--agent", "llm", "--model", "some-model", "--base-url",
            f"http://127.0.0.1:{port}/v1", "--trials", "1",
            env={"AUTORESEARCH_LLM_RETRIES": "0", "AUTORESEARCH_LLM_TIMEOUT": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"warning: cannot reach http://127.0.0.1:{port}/v1 for --model openai/some-model" in r.stderr
    assert "each proposal will try again" in r.stderr
    assert [t.status for t in ledger(other)] == [Status.KEEP, Status.AGENT_ERROR]


def test_a_key_that_may_chat_but_not_list_models_is_not_refused(tmp_path: Path) -> None:
    """OpenAI answers a restricted key's missing scope with a 401 too: that is a warning, and
    the run goes on (the key may chat)."""
    repo = make_task(tmp_path / "task")
    scope = "You have insufficient permissions for this operation. Missing scopes: api.model.read."
    with FakeLLM("openai", good_edit(), list_fault=Fault("401", message=scope)) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    assert f"warning: the key cannot list {fake.url}'s models ({scope}): it is not checked" in r.stderr
    assert [t.status for t in ledger(repo)] == [Status.KEEP, Status.KEEP]


def test_a_listed_model_is_found_under_its_aliases() -> None:
    from autoresearch.agents.preflight import listed

    assert listed("gpt-4.1", ["gpt-4o", "gpt-4.1"])
    assert listed("claude-sonnet-4-5", ["claude-sonnet-4-5-20250929"])  # Anthropic lists dated ids
    assert listed("claude-3-5-sonnet-latest", ["claude-3-5-sonnet-20241022"])
    assert listed("qwen2.5-coder", ["qwen2.5-coder:latest"])  # Ollama's tags
    assert not listed("gpt-4.1-mnii", ["gpt-4.1-mini", "gpt-4.1"])
    assert not listed("llama3", ["llama3.1:8b"])


def _propose(tmp_path: Path, fake: FakeLLM, limits=None):  # noqa: ANN001, ANN202
    """One proposal of the built-in agent against `fake` (claude-sonnet-5-5), and its task."""
    from autoresearch.agents.base import Context
    from autoresearch.agents.llm import LLMAgent
    from autoresearch.agents.providers import make_chat, resolve
    from autoresearch.agents.retry import RetryPolicy
    from autoresearch.records import Trial
    from autoresearch.task import load_task

    repo = make_task(tmp_path / "task", files={"notes.txt": "a long note to read. " * 40})
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    ctx = Context(task=load_task(repo), workdir=repo, number=1, best=best, history=(best,),
                  log_path=tmp_path / "agent.log", ledger_dir=tmp_path)
    endpoint = resolve("anthropic/claude-sonnet-5-5", fake.url, {"ANTHROPIC_API_KEY": KEY})
    return LLMAgent(endpoint, make_chat(endpoint), limits, policy=RetryPolicy(attempts=1)).propose(ctx), repo


def test_a_model_that_thinks_is_sent_its_thinking_back_with_the_tool_results(tmp_path: Path) -> None:
    """Claude's 5 models think by default, and the messages API wants a turn's thinking blocks
    back, signed and unchanged, with its tool results; the agent rebuilt each turn from its
    text and tool calls, so every later step went without the reasoning that chose its call."""
    from fakes.llm_server import thinking_signature

    with FakeLLM("anthropic", good_edit(), thinking=True) as fake:
        proposal, repo = _propose(tmp_path, fake)
    assert fake.invalid == [] and proposal.description == "set X to 1.0 to bring the loss down"
    first, second = fake.requests[0]["body"], fake.requests[1]["body"]
    turn = second["messages"][1]
    assert turn["role"] == "assistant" and turn["content"][0] == {
        "type": "thinking", "thinking": "step 1", "signature": thinking_signature(first, 1)}
    assert [b["type"] for b in turn["content"]] == ["thinking", "text", "tool_use"]


def test_thinking_is_let_go_when_old_tool_outputs_are_elided(tmp_path: Path) -> None:
    """Thinking is signed for the conversation before it: once old tool outputs are elided to
    save context, a block sent back would be refused ('bound to a different conversation'), so
    the conversation goes on without any."""
    from autoresearch.agents.llm import Limits

    reads = [Say("", [("read_file", {"path": "notes.txt"})]) for _ in range(4)]
    with FakeLLM("anthropic", reads + good_edit()[1:], thinking=True) as fake:
        proposal, repo = _propose(tmp_path, fake, Limits(context_chars=4000))
    assert fake.invalid == [], fake.invalid
    assert "X = 1.0" in (repo / "exp.py").read_text()
    last = fake.requests[-1]["body"]["messages"]
    assert "elided" in json.dumps(last)
    assert [b["type"] for b in last[1]["content"]] == ["tool_use"]  # its thinking let go; later turns' kept
    assert any(b.get("type") == "thinking" for b in last[-2]["content"])
