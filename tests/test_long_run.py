"""A two-day run of one tag (700 trials and more): what an agent is shown stays bounded, and
still reaches every trial. The history is a tag's worth of trial records; the agents are the
real CLI agent (a script run in a task repository) and the LLM agent's tools.

bench/longrun.py measures the rest as the trial count grows (overhead, memory, disk, commands).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import git, make_task, script_agent

from autoresearch.agents.base import Context
from autoresearch.agents.cli import CommandAgent
from autoresearch.agents.llm import Limits, first_message
from autoresearch.agents.tools import Tools
from autoresearch.gitrepo import Git
from autoresearch.records import Status, Trial
from autoresearch.session import trees_of
from autoresearch.task import load_task


def two_days(n: int = 700, keep_every: int = 3, figures: int = 0) -> tuple[Trial, ...]:
    """`n` finished trials after the baseline, one in `keep_every` kept (a metric that keeps
    improving), with descriptions and figures as long as an LLM agent's on cpu-gpt (and
    `figures` more recorded figures)."""
    more = {f"recorded_figure_{i}": 1234.5678 for i in range(figures)}
    trials = [Trial(number=0, status=Status.KEEP, description="baseline", metric=2.0,
                    figures={"val_bpb": 2.0, "training_seconds": 60.0, "peak_vram_mb": 0.0, "num_steps": 900, **more})]
    for n_ in range(1, n + 1):
        kept = n_ % keep_every == 0
        trials.append(Trial(
            number=n_, status=Status.KEEP if kept else Status.DISCARD, metric=2.0 - n_ / 10_000,
            description=f"trial {n_}: raise the learning rate warmup and lower weight decay so the "
                        "early steps do not overshoot, keeping depth and width as in the best",
            figures={"val_bpb": 2.0 - n_ / 10_000, "training_seconds": 60.1, "peak_vram_mb": 0.0, "num_steps": 912,
                     **more},
            reason="" if kept else f"{2.0 - n_ / 10_000:.6f}, worse than the best"))
    return tuple(trials)


def cli_prompt(tmp_path: Path, history: tuple[Trial, ...]) -> str:
    """The prompt file the CLI agent is given for the next trial (a script copies it)."""
    repo = make_task(tmp_path / "task")
    ledger_dir = tmp_path / "ledger"
    (ledger_dir / "agent").mkdir(parents=True)
    seen = tmp_path / "seen.md"
    agent = CommandAgent(script_agent(tmp_path / "a.sh", f'cp "$AUTORESEARCH_PROMPT_FILE" {seen}\n'
                                      "sed -i 's/^X = 3.0/X = 2.0/' exp.py\necho 'X to 2'\n"))
    number = history[-1].number + 1
    best = [t for t in history if t.status is Status.KEEP][-1]
    ctx = Context(task=load_task(repo), workdir=repo, number=number, best=best, history=history,
                  log_path=ledger_dir / "agent" / f"{number}.log", ledger_dir=ledger_dir)
    assert agent.propose(ctx).description == "X to 2"
    return seen.read_text()


def test_the_cli_prompt_stays_bounded_when_hundreds_of_trials_were_kept(tmp_path: Path) -> None:
    """Every keep was in the prompt: after 700 trials, a third of them kept, its history was
    three times its 12,000-character limit and grew by a line a keep (now the latest keeps as
    far as the limit goes, and the 40 most recent trials)."""
    prompt = cli_prompt(tmp_path, two_days())
    history = prompt.split("# Every trial so far", 1)[1].split("# Now: trial", 1)[0]
    assert len(history) < 13_000, len(history)
    assert "#699 keep" in history and "#700 discard" in history and "#661 discard" in history
    assert "older trials omitted" in history


def test_the_cli_prompt_says_where_the_omitted_trials_are(tmp_path: Path) -> None:
    """Past ~80 trials the prompt omits the older ones ('... 600 older trials omitted ...',
    nothing more): a coding agent had no word of where to find them, and repeated them."""
    prompt = cli_prompt(tmp_path, two_days())
    line = next(x for x in prompt.splitlines() if "older trials omitted" in x)
    assert str(tmp_path / "ledger" / "results.tsv") in line


@pytest.mark.parametrize("figures", [0, 16])
def test_the_llm_agent_can_page_back_through_every_trial(tmp_path: Path, figures: int) -> None:
    """read_history showed the kept trials and the 40 most recent, the rest counted: with 700
    trials the model could not see what trials 1 to 660 tried (only a later `last` window), so
    it repeated them. Now the count names `before=N`, and paging back reaches every trial, also
    when 40 trials' lines (many recorded figures) outgrow a tool's output: the newest of each
    page were cut off the end, never to be seen."""
    repo = make_task(tmp_path / "task")
    history = two_days(keep_every=50, figures=figures)
    ctx = Context(task=load_task(repo), workdir=repo, number=701, best=history[-1], history=history,
                  log_path=tmp_path / "agent.log", ledger_dir=tmp_path)
    first = first_message(ctx, Limits().context_chars)
    assert "read_history with before=" in first
    tools, seen, args, calls = Tools(ctx), set(), {}, 0
    while calls < 100:
        calls += 1
        out = tools.call("read_history", args)
        assert not out.startswith("error") and "characters cut" not in out, out[-300:]
        seen |= {int(m) for m in re.findall(r"^#(\d+) ", out, re.M)}
        if not (m := re.search(r"read_history with before=(\d+)", out)):
            break
        args = {"before": int(m.group(1))}
    assert seen == set(range(701))
    assert figures or calls < 700 // 40, calls  # (a page back holds as many as fit, not 40)


def test_an_outage_of_the_agent_does_not_fill_the_history(tmp_path: Path) -> None:
    """An LLM API down overnight makes a few dozen agent errors an hour, each the same line of
    ~300 characters: the 40 most recent trials of the history were all that error, and the
    agent, back, saw nothing of what it had tried last. Errors alike in a row are one line."""
    error = "agent error: the API call failed after 6 attempt(s): APIConnectionError: Connection error."
    history = two_days(650) + tuple(
        Trial(number=n, status=Status.AGENT_ERROR, description=error, reason=error[13:] + " (http://x/v1)")
        for n in range(651, 751))
    prompt = cli_prompt(tmp_path, history)
    assert "#651-#750 agent_error (100 in a row, alike)" in prompt
    assert "#649 discard" in prompt and prompt.count("APIConnectionError") == 2


def test_the_code_of_every_trial_is_indexed_past_what_one_command_line_holds(tmp_path: Path) -> None:
    """A resumed loop indexes the code (the tree) of every measured trial, to tell a proposal of
    code it measured already; the commits went to git on its command line, which a tag of some
    38,000 trials outgrew (no resume at all: `Argument list too long`). Cheap experiments (the
    blank task runs seven a second) reach that in hours."""
    repo = make_task(tmp_path / "t")
    first = git(repo, "rev-parse", "HEAD").strip()
    (repo / "exp.py").write_text("X = 2\n")
    git(repo, "commit", "-qam", "two")
    second = git(repo, "rev-parse", "HEAD").strip()
    gone = [f"{n:040x}" for n in range(1, 40_001)]  # (pruned, or never there)
    trials = [Trial(number=0, status=Status.KEEP, commit=first)]
    trials += [Trial(number=n, status=Status.DISCARD, commit=c) for n, c in enumerate(gone, start=1)]
    trials += [Trial(number=40_001, status=Status.DISCARD, commit=second),
               Trial(number=40_002, status=Status.DISCARD, commit=first)]
    found = trees_of(Git(repo), trials)
    assert found == {git(repo, "rev-parse", f"{first}^{{tree}}").strip(): 0,
                     git(repo, "rev-parse", f"{second}^{{tree}}").strip(): 40_001}
