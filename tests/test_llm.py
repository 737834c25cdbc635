"""The built-in llm agent end to end (agents/llm.py), against fake OpenAI and Anthropic servers
(real HTTP on 127.0.0.1): an edit that is kept over each API, the history and the best code in
the prompt, the step, token and time limits, a model that talks instead of editing, cost and
--max-cost, keys kept out of every file, bad usage, lost spend, the log's size, duplicates and
the condensed history. (Its tools: test_tools.py; the API clients and their retries:
test_providers.py; the hybrid: test_hybrid.py; the presets: test_presets.py.)

The loop runs for real (`python -m autoresearch run ...` in a subprocess); tests look at what a
user would: the ledger, git refs, the files, the exit code and the output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import EXPERIMENT, cli, git, make_task
from fakes.llm_server import FakeLLM, Fault, Say
from llm_helpers import KEY, branch_file, good_edit, ledger, run_llm

from autoresearch.agents.llm import condensed_history
from autoresearch.records import Status, Trial

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


def test_the_prompt_shows_no_file_through_a_link_out_of_the_repository(tmp_path: Path) -> None:
    """A committed link among the editable files that points outside: read_file refuses it, and
    the best code in the prompt leaves it out too (it sent the outside file's content)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "creds.py").write_text('SECRET = "outside-file-content"\n')
    repo = make_task(tmp_path / "task")
    (repo / "creds.py").symlink_to(outside / "creds.py")
    toml = repo / "autoresearch.toml"
    toml.write_text(toml.read_text().replace('editable = ["exp.py"]', 'editable = ["exp.py", "creds.py"]'))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a link")
    with FakeLLM("openai", good_edit()) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    sent = json.dumps([q["body"] for q in fake.requests])
    assert "X = 3.0" in sent and "outside-file-content" not in sent


# ---------------------------------------------------------------------------
# limits: steps, tokens and wall time; a model that does not edit


@pytest.mark.parametrize("limit,env,spent", [
    ("step limit (3)", {"AUTORESEARCH_LLM_STEPS": "3"}, 3000),
    pytest.param("token limit (3500)", {"AUTORESEARCH_LLM_MAX_TOKENS": "3500"}, 4000, marks=pytest.mark.extended),
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


@pytest.mark.parametrize("kind", ["openai", pytest.param("anthropic", marks=pytest.mark.slow)])
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


def test_a_finish_with_no_description_is_asked_again(tmp_path: Path) -> None:
    """finish("") becomes the commit message: the model is asked once for a line saying what it
    changed (the ledger had "(no description)"); a second empty one is taken as it is."""
    repo = make_task(tmp_path / "task")
    edit = Say("", [("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": "X = 1.0"})])
    again = [Say("", [("finish", {"description": " "})]), Say("", [("finish", {"description": "X to 1.0"})])]
    edit2 = Say("", [("edit_file", {"path": "exp.py", "search": "X = 1.0", "replace": "X = 0.5"})])
    twice = [Say("", [("finish", {"description": ""})])] * 2
    with FakeLLM("openai", [edit, *again, edit2, *twice]) as fake:
        r = run_llm(repo, fake, trials=2)
    assert r.returncode == 0, r.stderr
    assert fake.invalid == []
    t = ledger(repo)
    assert [x.description for x in t[1:]] == ["X to 1.0", "(no description)"]
    assert "the description is empty" in json.dumps(fake.requests[2]["body"])
    assert len(fake.requests) == 6


def test_model_that_never_edits_is_an_agent_error(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    look = Say("Let me look.", [("read_file", {"path": "exp.py"})])
    with FakeLLM("openai", [look] + [Say("Thinking.")] * 3 + good_edit()) as fake:
        r = run_llm(repo, fake, trials=2)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP]
    assert "did not change any file" in t[1].reason


@pytest.mark.extended  # (a loop run: about 3.5 s)
def test_a_model_whose_writes_were_refused_is_told_in_the_reason(tmp_path: Path) -> None:
    """A model that tried to change the protected prepare.py and a path out of the repository,
    each refused by the tools, then gave up talking: the trial's reason said only "the model
    did not change any file", and a user reading `status` in the morning could not tell a model
    that tampers from one that idles. The refused writes are named; the loop goes on."""
    repo = make_task(tmp_path / "task")
    tamper = Say("", [("write_file", {"path": "prepare.py", "content": "print('loss: 0')\n"}),
                      ("edit_file", {"path": "../exp.py", "search": "X", "replace": "Y"})])
    script = [tamper, Say("", [("finish", {"description": "made the loss zero"})]), *[Say("Done.")] * 2, *good_edit()]
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake, trials=2)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP]
    assert "did not change any file; its writes were refused" in t[1].reason
    assert "prepare.py is not editable" in t[1].reason and "../exp.py: outside the repository" in t[1].reason
    assert "prepare.py is not editable" in cli("status", str(repo), "--tag", "t").stdout
    assert "loss: 0" not in (repo / "prepare.py").read_text()


def test_a_model_that_never_calls_a_tool_stops_the_loop(tmp_path: Path) -> None:
    """Text only, no tool call ever (a server without tool calling): it will recur, so three
    trials in a row stop the loop and say what to check."""
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", default=Say("I would lower X to 1.0.")) as fake:
        r = run_llm(repo, fake, trials=6)
    assert r.returncode == 1, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP] + [Status.AGENT_ERROR] * 3
    assert "never called a tool: does it support tool calls?" in t[1].reason
    assert "3 times in a row" in r.stderr + r.stdout


# ---------------------------------------------------------------------------
# cost and --max-cost


def test_status_says_what_the_agent_spent(tmp_path: Path) -> None:
    """The tokens and cost were in the ledger, `show N` and the report, but neither `status` nor
    the table `run` ends with said what the night cost."""
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", good_edit()) as fake:
        r = run_llm(repo, fake)
    assert r.returncode == 0, r.stderr
    line = "agent spend: $0.0084 (3,000 tokens in, 300 out, over 1 proposal)"
    assert line in r.stdout, r.stdout
    assert line in cli("status", str(repo), "--tag", "t").stdout
    r = cli("run", str(repo), "--tag", "u", "--agent-cmd", "echo nothing", "--trials", "1")
    assert "agent spend" not in r.stdout + cli("status", str(repo), "--tag", "u").stdout  # (nothing to say)


def run_priced(tmp_path: Path, price: float, max_cost: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A run of up to 5 LLM trials of 1000+100 tokens a call, at `price` $ per million tokens
    in and out, stopped by --max-cost `max_cost`."""
    repo = make_task(tmp_path / "task")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"fake-model": [price, price]}))
    script = good_edit("2.0") + good_edit("1.5", old="2.0") + good_edit("1.0", old="1.5")
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake, "--max-cost", max_cost, trials=5, model="openai/fake-model",
                    env={"AUTORESEARCH_PRICES": str(prices)})
    assert r.returncode == 0, r.stderr
    return repo, r


def test_max_cost_stops_the_loop(tmp_path: Path) -> None:
    repo, r = run_priced(tmp_path, 1000.0, "5")  # $1.1 per 1000+100 tokens
    t = ledger(repo)
    assert len(t) == 3  # baseline + 2 trials: $3.3 after one, $6.6 after two >= $5
    assert [x.cost for x in t[1:]] == [pytest.approx(3.3), pytest.approx(3.3)]
    assert "--max-cost" in r.stdout + r.stderr


def test_a_small_spend_is_shown_to_the_tenth_of_a_cent(tmp_path: Path) -> None:
    """A cheap model's --max-cost 0.005 reached said "($0.01)", its trials "cost $0.00": the
    spend is shown as $0.0066."""
    repo, r = run_priced(tmp_path, 1.0, "0.005")  # $0.0011 per 1000+100 tokens
    t = ledger(repo)
    assert len(t) == 3  # baseline + 2 trials: $0.0033 after one, $0.0066 after two >= $0.005
    assert [x.cost for x in t[1:]] == [pytest.approx(0.0033), pytest.approx(0.0033)]
    out = r.stdout + r.stderr
    assert "--max-cost $0.005 reached ($0.0066 spent)" in out, out
    assert "cost $0.0033" in out and "$0.00;" not in out and "$0.01)" not in out


def test_unknown_price_is_said_and_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A remote server's model with no known price: said, recorded at cost 0 and marked. (The
    endpoint names a remote URL; its chat client talks to the fake on 127.0.0.1.)"""
    from types import SimpleNamespace

    from autoresearch.agents.base import Context
    from autoresearch.agents.llm import LLMAgent, make_llm
    from autoresearch.agents.providers import make_chat, resolve
    from autoresearch.agents.retry import RetryPolicy
    from autoresearch.task import load_task

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    remote = "https://models.example.com/v1"
    make_llm(SimpleNamespace(model="openai/some-new-model", base_url=remote, timeout=None))
    assert "no price known for openai/some-new-model" in capsys.readouterr().err
    repo = make_task(tmp_path / "task")
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    ctx = Context(task=load_task(repo), workdir=repo, number=1, best=best, history=(best,),
                  log_path=tmp_path / "agent.log", ledger_dir=tmp_path)
    with FakeLLM("openai", good_edit()) as fake:
        agent = LLMAgent(resolve("openai/some-new-model", remote), make_chat(resolve("openai/some-new-model", fake.url)),
                         policy=RetryPolicy(attempts=1))
        proposal = agent.propose(ctx)
    assert proposal.cost == 0.0 and proposal.tokens_in == 3000 and proposal.extra.get("price") == "unknown"


def test_local_providers_are_priced_by_your_table_and_pro_models_by_their_own() -> None:
    """vllm/my-local named in AUTORESEARCH_PRICES was recorded at $0 (a local provider was
    always free); o3-pro took o3's price by prefix, a tenth of its own."""
    from autoresearch.agents.llm import LLMAgent
    from autoresearch.agents.providers import make_chat, resolve

    chat = make_chat(resolve("openai/x", "http://127.0.0.1:9/v1"))

    def price(model: str, prices: dict | None = None, base_url: str | None = None) -> tuple | None:
        return LLMAgent(resolve(model, base_url, {"OPENAI_API_KEY": KEY}), chat, prices=prices).price

    assert price("vllm/my-local", {"my-local": (0.5, 1.5)}) == (0.5, 1.5)
    assert price("vllm/my-local") == (0.0, 0.0)
    assert price("ollama/mistral-large") == (0.0, 0.0)  # not Mistral's API price by prefix
    assert price("ollama/mistral-large", {"mistral-large": (1.0, 1.0)}) == (1.0, 1.0)
    assert price("vllm/my-local", {"vllm/my-local": (0.5, 1.5)}) == (0.5, 1.5)  # the full spec too
    assert price("openai/o3-pro") == (20.0, 80.0) and price("openai/o3-pro-2025-06-10") == (20.0, 80.0)
    assert price("openai/o3") == (2.0, 8.0) and price("openai/gpt-5-pro") == (15.0, 120.0)
    # nor a mini or a deep-research model its family's (o1-mini at o1's price stopped --max-cost 14x early)
    assert price("openai/o1-mini-2024-09-12") == (1.10, 4.40) and price("openai/o3-deep-research") == (10.0, 40.0)
    assert price("openai/o4-mini-deep-research-2025-06-26") == (2.0, 8.0)
    # Claude's later models are not their family's first price by prefix (claude-opus-4: $15 / $75)
    assert price("openai/claude-opus-4.6") == (5.0, 25.0) and price("openai/claude-opus-4-1") == (15.0, 75.0)
    assert price("openai/gpt-5.5-2026-04-23") == (5.0, 30.0) and price("openai/gpt-5.5-pro") == (30.0, 180.0)


def test_a_tiered_model_is_priced_call_by_call_at_its_prompt_size(tmp_path: Path) -> None:
    """claude-haiku-5-5 costs $0.10 / $0.50 a million tokens for a prompt of up to 100,000 tokens
    and $0.50 / $2.50 above: it had no price (recorded as $0, so --max-cost never stopped it).
    One call of a 150,000-token prompt is priced at the upper tier, the two small ones below."""
    repo = make_task(tmp_path / "task")
    read, edit, finish = good_edit()
    script = [Say(read.text, read.calls, tokens_in=150_000, tokens_out=1_000), edit, finish]
    with FakeLLM("anthropic", script) as fake:
        r = run_llm(repo, fake, model="anthropic/claude-haiku-5-5")
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert t[1].tokens_in == 152_000 and t[1].tokens_out == 1_200
    upper = (0.50 * 150_000 + 2.50 * 1_000) / 1e6
    lower = 2 * (0.10 * 1_000 + 0.50 * 100) / 1e6
    assert t[1].cost == pytest.approx(upper + lower)
    # a CLI tool's totals (many calls summed) are priced at the first tier
    from autoresearch.agents.prices import PRICES, cost
    assert cost(PRICES["claude-haiku-5-5"], 150_000, 1_000, one_call=False) == pytest.approx(0.0155)


def test_a_model_served_on_this_machine_costs_nothing_unsaid(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", good_edit()) as fake:
        r = run_llm(repo, fake, model="openai/some-new-model")
    assert r.returncode == 0, r.stderr
    assert "no price known" not in r.stderr
    t = ledger(repo)
    assert t[1].cost == 0.0 and t[1].tokens_in == 3000 and "price" not in t[1].extra


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


@pytest.mark.parametrize("where", ["userinfo", pytest.param("query", marks=pytest.mark.extended)])
def test_credentials_in_the_base_url_appear_nowhere(tmp_path: Path, where: str) -> None:
    """--base-url http://user:secret@host/v1: the secret was kept in the ledger (the options a
    resume reuses) and written in the agent's log. So was a key in the URL's query, as some
    gateways take it (http://host/v1?key=secret)."""
    repo = make_task(tmp_path / "task")
    secret = "URLSECRETVALUE99"
    with FakeLLM("openai", good_edit()) as fake:
        url = fake.url.replace("http://", f"http://tok:{secret}@") if where == "userinfo" else f"{fake.url}?key={secret}"
        r = cli("run", str(repo), "--tag", "t", "--agent", "llm", "--model", "openai/gpt-4.1", "--base-url", url,
                "--trials", "1", env={"OPENAI_API_KEY": KEY}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ledger(repo)[1].status is Status.KEEP
    texts = [r.stdout + r.stderr, git(repo, "log", "--all", "-p")]
    texts += [p.read_bytes().decode("latin-1") for p in (repo / ".autoresearch").rglob("*") if p.is_file()]
    assert not [t for t in texts if secret in t]
    said = "http://[redacted]@127.0.0.1" if where == "userinfo" else "?key=[redacted]"
    assert said in (repo / ".autoresearch" / "t" / "agent" / "1.log").read_text()
    again = cli("run", str(repo), "--tag", "t", "--trials", "1")  # not resumed on a URL without them
    assert again.returncode == 2 and "give the agent's flags again" in again.stderr, again.stderr


def test_a_key_in_quoted_pieces_leaves_no_piece_in_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that writes the key in parts ('AUDITPLAIN' + 'KEY0987...'): every part of 8+
    characters is scrubbed, not only the first (the rest of the key stayed in agent/<n>.log)."""
    from autoresearch.agents.secrets import redact

    key = "AUDITPLAINKEY0987654321zyxwvu"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    for text in ["""edit_file(replace="K = 'AUDITPLAIN' + 'KEY0987654321zyxwvu'")""",
                 "'AUDITPLAINKEY' + '0987654321zyxwvu'", "x = 'AUDITPL' 'AINKEY09876' '54321zyxwvu'"]:
        out = redact(text)
        assert not any(key[i:i + 8] in out for i in range(len(key) - 7)), out
        assert "[redacted]" in out
    assert redact("AUDIT 0987 zyxwvu: short runs are no key") == "AUDIT 0987 zyxwvu: short runs are no key"
    for text in ("ssh://git@github.com/x.git", "http://h/?q=a@b", "mailto:me@example.com"):
        assert redact(text) == text  # a user name alone, an address: no credential
    for text in ("http://tok:hunter2@127.0.0.1/v1", "https://ghp0123456789abcdefXYZ@github.com/x"):
        assert "hunter2" not in redact(text) and "ghp0123" not in redact(text) and "[redacted]@" in redact(text)


@pytest.mark.parametrize("args,needle", [
    (["--agent", "llm"], "--model PROVIDER/NAME"),
    (["--agent", "llm", "--model", "openai/gpt-4.1"], "OPENAI_API_KEY"),
    (["--agent", "llm", "--model", "anthropic/claude-sonnet-4-5"], "ANTHROPIC_API_KEY"),
    (["--agent", "llm", "--model", "nosuch/x"], "unknown provider"),
    (["--agent", "hybrid", "--model", "openai/gpt-4.1", "--llm-share", "1.5"], "--llm-share"),
    (["--agent", "llm", "--model", "openai/gpt-4.1", "--prices", '{"my-model": "cheap"}'],
     """'my-model' is "cheap", not [input, output]"""),
    (["--agent", "llm", "--model", "openai/gpt-4.1", "--prices", '{"m": [NaN, 1]}'], "'m' is [NaN, 1], not"),
    (["--agent", "llm", "--model", "openai/gpt-4.1", "--prices", '{"m": {"input": 1}}'], "'m' is {\"input\": 1}, not"),
])
def test_bad_llm_usage_is_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    repo = make_task(tmp_path / "task")
    env = {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""}
    if "--llm-share" in args or "--prices" in args:
        env["OPENAI_API_KEY"] = KEY
    if "--prices" in args:  # (not a flag: the price file's variable)
        at = args.index("--prices")
        (tmp_path / "prices.json").write_text(args[at + 1])
        env["AUTORESEARCH_PRICES"] = str(tmp_path / "prices.json")
        args = args[:at]
    r = cli("run", str(repo), "--tag", "t", "--trials", "1", *args, env=env)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr and KEY not in r.stderr


# ---------------------------------------------------------------------------
# what the audit of --agent llm found: lost spend, flags for another agent, the log's size


def test_an_unexpected_failure_keeps_the_spend(tmp_path: Path) -> None:
    """A proposal that fails with an exception nobody planned for (here: its agent log cannot be
    written any more: its folder is gone) is an agent_error that still records the model, the
    tokens and the cost spent; the loop goes on."""
    repo = make_task(tmp_path / "task")
    folder = repo / ".autoresearch" / "t" / "agent"

    def break_the_log(body: dict) -> Say:
        shutil.rmtree(folder)
        folder.write_text("")  # appending to agent/1.log now fails (NotADirectoryError)
        return Say("", [("list_files", {})])

    script = [Say("", [("read_file", {"path": "exp.py"})]), break_the_log, *good_edit()]
    with FakeLLM("openai", script) as fake:
        r = run_llm(repo, fake, trials=2)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.AGENT_ERROR, Status.KEEP], t[1].reason
    assert "NotADirectoryError" in t[1].reason
    assert (t[1].model, t[1].tokens_in, t[1].tokens_out) == ("openai/gpt-4.1", 2000, 200)
    assert t[1].cost == pytest.approx(2000 * 2 / 1e6 + 200 * 8 / 1e6)


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


def test_text_only_replies_from_a_model_that_has_used_tools_are_not_fatal(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "task")
    with FakeLLM("openai", good_edit(), default=Say("I would lower X further.")) as fake:
        r = run_llm(repo, fake, trials=4)
    assert r.returncode == 0, r.stderr
    t = ledger(repo)
    assert [x.status for x in t] == [Status.KEEP, Status.KEEP] + [Status.AGENT_ERROR] * 3
    assert all("did not change any file" in x.reason for x in t[2:])


@pytest.mark.parametrize("kind", ["openai", pytest.param("anthropic", marks=pytest.mark.extended)])
def test_a_big_write_is_not_sent_again_on_every_step(tmp_path: Path, kind: str) -> None:
    """A whole file the model wrote rides in its own tool call, which every later request
    repeats; past the context budget an old call's big argument is stubbed, as old tool
    outputs are, so a long conversation does not pay for it again and again."""
    from conftest import EXPERIMENT

    pad = "# " + "padding " * 8000 + "\n"  # about 64 KB
    repo = make_task(tmp_path / "task")
    script = [Say("", [("write_file", {"path": "exp.py", "content": EXPERIMENT.replace("X = 3.0", "X = 1.0") + pad})]),
              *[Say("", [("read_file", {"path": "prepare.py"})]) for _ in range(4)],
              Say("", [("finish", {"description": "set X to 1.0, with a long comment"})])]
    with FakeLLM(kind, script) as fake:
        r = run_llm(repo, fake, env={"AUTORESEARCH_LLM_CONTEXT": "20000"})
    assert r.returncode == 0, r.stderr + r.stdout
    assert ledger(repo)[1].status == Status.KEEP
    assert pad.strip() in branch_file(repo)  # the file itself is whole
    sizes = [len(json.dumps(q["body"])) for q in fake.requests if q["body"].get("messages")]
    assert len(sizes) == 6, sizes
    assert sizes[1] > 64_000  # the next step still shows the model its own call
    assert max(sizes[4:]) < 40_000, sizes  # later ones no longer carry it


def test_many_tool_calls_at_once_stay_within_the_context_budget(tmp_path: Path) -> None:
    """Each tool's output was cut to 16 000 characters on its own, but one reply may call a
    tool dozens of times, and the last two steps are sent whole: 60 reads at once made the next
    requests a million characters (a context-length refusal, fatal). One step's outputs are now
    cut, together, to half the context budget; the calls themselves all run."""
    from autoresearch.agents.base import Context
    from autoresearch.agents.llm import Limits, LLMAgent
    from autoresearch.agents.providers import make_chat, resolve
    from autoresearch.agents.retry import RetryPolicy
    from autoresearch.task import load_task

    repo = make_task(tmp_path / "task", files={f"data/f{i}.txt": "a line of data\n" * 2000 for i in range(20)})
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    ctx = Context(task=load_task(repo), workdir=repo, number=1, best=best, history=(best,),
                  log_path=tmp_path / "agent.log", ledger_dir=tmp_path)
    reads = [("read_file", {"path": f"data/f{i}.txt"}) for i in range(20)]
    edit = ("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": "X = 1.0"})
    script = [Say("", [*reads, edit]), Say("", [("finish", {"description": "set X to 1.0"})])]
    with FakeLLM("openai", script) as fake:
        endpoint = resolve("openai/gpt-4.1", fake.url, {"OPENAI_API_KEY": KEY})
        agent = LLMAgent(endpoint, make_chat(endpoint), Limits(context_chars=20_000), RetryPolicy(attempts=1))
        proposal = agent.propose(ctx)
    assert proposal.description == "set X to 1.0" and "X = 1.0" in (repo / "exp.py").read_text()
    results = [m["content"] for m in fake.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert len(results) == 21 and results[-1] == "edited exp.py"  # every call answered, the edit made
    assert sum(map(len, results)) < 20_000, [len(x) for x in results]
    assert "ask for less at once" in results[1]


def test_a_model_that_reasons_aloud_stays_within_the_context_budget(tmp_path: Path) -> None:
    """A model that writes a long text with each tool call (a reasoning model whose thinking
    comes in its replies' content) had every one of them sent again on each request: the
    requests grew by a reply each step, past the context budget and then any context window
    (a context-length refusal, fatal). Old replies' long texts are now elided like old tool
    outputs; the last two stay whole."""
    from autoresearch.agents.base import Context
    from autoresearch.agents.llm import Limits, LLMAgent
    from autoresearch.agents.providers import make_chat, resolve
    from autoresearch.agents.retry import RetryPolicy
    from autoresearch.task import load_task

    repo = make_task(tmp_path / "task")
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    ctx = Context(task=load_task(repo), workdir=repo, number=1, best=best, history=(best,),
                  log_path=tmp_path / "agent.log", ledger_dir=tmp_path)
    musing = "Perhaps X matters more than I thought; let me weigh it once more. " * 150  # ~10k chars
    script = [*[Say(f"step {i}: {musing}", [("read_file", {"path": "prepare.py"})]) for i in range(8)],
              Say("", [("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": "X = 1.0"})]),
              Say("", [("finish", {"description": "set X to 1.0"})])]
    with FakeLLM("openai", script) as fake:
        endpoint = resolve("openai/gpt-4.1", fake.url, {"OPENAI_API_KEY": KEY})
        agent = LLMAgent(endpoint, make_chat(endpoint), Limits(context_chars=20_000), RetryPolicy(attempts=1))
        proposal = agent.propose(ctx)
    assert proposal.description == "set X to 1.0" and "X = 1.0" in (repo / "exp.py").read_text()
    sizes = [len(json.dumps(q["body"]["messages"])) for q in fake.requests if q["body"].get("messages")]
    assert len(sizes) == 10, sizes
    assert max(sizes) < 40_000, sizes  # (without the elision: 84 000 by the last)
    last = [m.get("content") or "" for m in fake.requests[-1]["body"]["messages"] if m["role"] == "assistant"]
    assert "step 0: Perhaps" in last[0] and "elided to save context" in last[0]  # its start kept, said cut


@pytest.mark.parametrize("kind", ["openai", pytest.param("anthropic", marks=pytest.mark.extended)])
def test_a_tool_call_cut_at_the_reply_token_limit_is_not_run(tmp_path: Path, kind: str) -> None:
    """A model writing a whole file in one call hits the reply's token limit inside it: the
    call's arguments stop where the reply did (Anthropic's input, parsed, is a file cut in
    half). It was run: the half file written, or the model told only "not valid JSON", and it
    tried the same again. The cut call is not run, and the model is told why and what to do;
    the calls before it in the reply are run."""
    from autoresearch.agents.base import Context
    from autoresearch.agents.llm import Limits, LLMAgent
    from autoresearch.agents.providers import make_chat, resolve
    from autoresearch.agents.retry import RetryPolicy
    from autoresearch.task import load_task

    repo = make_task(tmp_path / "task")
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    ctx = Context(task=load_task(repo), workdir=repo, number=1, best=best, history=(best,),
                  log_path=tmp_path / "agent.log", ledger_dir=tmp_path)
    half = EXPERIMENT.replace("X = 3.0", "X = 1.0")[:40]  # a write cut in the middle of the file
    script = [Say("", [("read_file", {"path": "exp.py"}), ("write_file", {"path": "exp.py", "content": half})],
                  stop="length" if kind == "openai" else "max_tokens"),
              Say("", [("edit_file", {"path": "exp.py", "search": "X = 3.0", "replace": "X = 1.0"})]),
              Say("", [("finish", {"description": "set X to 1.0"})])]
    with FakeLLM(kind, script) as fake:
        model = "openai/gpt-4.1" if kind == "openai" else "anthropic/claude-sonnet-4-5"
        endpoint = resolve(model, fake.url, {"OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY})
        agent = LLMAgent(endpoint, make_chat(endpoint), Limits(), RetryPolicy(attempts=1))
        proposal = agent.propose(ctx)
    assert proposal.description == "set X to 1.0"
    assert (repo / "exp.py").read_text() == EXPERIMENT.replace("X = 3.0", "X = 1.0")  # whole, not the half
    told = json.dumps(fake.requests[1]["body"])
    assert "cut at the reply's token limit (8192 tokens) inside this call, so it was not run" in told
    assert "exp.py (lines 1-" in told  # the read before it was run


def test_greps_past_the_time_limit_are_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A grep whose pattern backtracks without end runs to its own limit (10 s); a reply holding
    dozens of them ran every one, minutes past the agent's time limit. Past it, a grep is not
    run (the other tools take an instant); the proposal ends at its time limit."""
    from autoresearch.agents import tools as tools_module
    from autoresearch.agents.base import AgentError, Context
    from autoresearch.agents.llm import Limits, LLMAgent
    from autoresearch.agents.providers import make_chat, resolve
    from autoresearch.agents.retry import RetryPolicy
    from autoresearch.task import load_task

    monkeypatch.setattr(tools_module, "GREP_SECONDS", 0.5)
    repo = make_task(tmp_path / "task", files={"sub/x.txt": "x" * 60 + "\n"})
    best = Trial(number=0, status=Status.KEEP, description="baseline", metric=6.0)
    ctx = Context(task=load_task(repo), workdir=repo, number=1, best=best, history=(best,),
                  log_path=tmp_path / "agent.log", ledger_dir=tmp_path, time_limit=1.0)
    greps = [("grep", {"pattern": "(x+x+)+y", "path": "sub"})] * 8
    with FakeLLM("openai", [Say("", greps), Say("", [("finish", {"description": "none"})])]) as fake:
        endpoint = resolve("openai/gpt-4.1", fake.url, {"OPENAI_API_KEY": KEY})
        agent = LLMAgent(endpoint, make_chat(endpoint), Limits(), RetryPolicy(attempts=1))
        with pytest.raises(AgentError, match=r"time limit \(--agent-timeout 1 s\)"):
            agent.propose(ctx)
    log = (tmp_path / "agent.log").read_text()
    assert log.count("the search stopped at 0.5 s") <= 3, log  # (without the limit: all 8 ran, 4 s)
    assert "grep(...) not run: the agent's time limit was reached" in log


def test_proposals_are_made_side_by_side_with_agent_concurrency(tmp_path: Path) -> None:
    """--agent-concurrency 2 with --workers 2: two conversations with the model at once (a slow
    model keeps both workers busy), each proposal its own edit, description and spend."""
    repo = make_task(tmp_path / "task")
    lock, state = threading.Lock(), {"now": 0, "most": 0, "n": 0}

    def slow(body: dict) -> Say:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.6)  # (a model thinking: the experiment takes far less)
        with lock:
            state["now"] -= 1
            if '"role": "tool"' in json.dumps(body["messages"]):
                return Say("", [("finish", {"description": "set X anew"})])
            state["n"] += 1
            value = 1.0 + state["n"] / 10
        return Say("", [("write_file", {"path": "exp.py", "content": EXPERIMENT.replace("X = 3.0", f"X = {value}")})])

    with FakeLLM("openai", default=slow) as fake:
        r = run_llm(repo, fake, "--workers", "2", "--agent-concurrency", "2", trials=4,
                    env={"AUTORESEARCH_LLM_TIMEOUT": "20"})
    assert r.returncode == 0, r.stderr + r.stdout
    t = ledger(repo)
    assert len(t) == 5 and all(x.status in (Status.KEEP, Status.DISCARD) for x in t), [(x.status, x.reason) for x in t]
    assert all(x.tokens_in == 2000 and x.description == "set X anew" for x in t[1:])
    assert state["most"] == 2  # (one at a time, as before, made it 1)
