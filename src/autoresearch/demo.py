"""`autoresearch demo`: the embedded default, the whole loop on a laptop with no LLM and no GPU.

It creates the cpu-gpt task in a new folder (a byte-level GPT trained on the local Python
standard library), sets the time budget of one trial, and runs the baseline and N trials with
the search agent (or the LLM agent when a model is given), through the same loop as
`autoresearch run`, under the tag `demo`. Run again on the same folder, it resumes that tag.
The defaults finish within five minutes on two cores and usually keep an improvement: a
shorter budget than the template's 60 s moves the optimum of its constants, which were tuned
for 60 s, and the search finds some of that.
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from autoresearch.errors import UsageError

TAG = "demo"
TEMPLATE = "cpu-gpt"
DEFAULT_TRIALS = 6
DEFAULT_BUDGET = 20.0  # seconds of training per trial
OVERHEAD = 23.0  # seconds a trial takes beyond its budget on two idle cores (start, evaluation)


@dataclass(frozen=True)
class DemoResult:
    root: Path
    tag: str
    baseline: float | None
    best: float | None
    best_number: int
    best_description: str
    kept: int
    trials: int
    interrupted: bool


def default_dir() -> Path:
    return Path.cwd() / f"autoresearch-demo-{time.strftime('%Y%m%d-%H%M%S')}"


def set_budget(toml: str, budget: float) -> str:
    """The task file's text with `time_budget` set to `budget` and `timeout` to leave room for
    starting, evaluating and a slow machine (other lines, comments included, untouched)."""
    timeout = max(4 * budget, budget + 120)
    text, n = re.subn(r"^(time_budget\s*=\s*)[0-9.eE+_-]+", rf"\g<1>{budget:g}", toml, count=1, flags=re.M)
    if n == 0:
        raise UsageError("the cpu-gpt task file has no time_budget line")
    text, n = re.subn(r"^(timeout\s*=\s*)[0-9.eE+_-]+", rf"\g<1>{timeout:g}", text, count=1, flags=re.M)
    return text


def create(directory: Path, budget: float) -> Path:
    """A new cpu-gpt task in `directory`, its budget set, committed (clean, as `run` needs)."""
    from autoresearch.gitrepo import Git
    from autoresearch.scaffold import init_here

    root = init_here(directory, TEMPLATE)
    toml = root / "autoresearch.toml"
    text = set_budget(toml.read_text(), budget)
    if text != toml.read_text():
        toml.write_text(text)
        git = Git(root)
        git.run("commit", "-q", "-am", f"demo: a time budget of {budget:g} s per trial")
    return root


def existing_budget(root: Path, budget: float | None) -> None:
    """`root` must hold the demo's task (made by an earlier demo, or `init --template cpu-gpt`),
    set up with the same budget."""
    from autoresearch.task import load_task

    task = load_task(root)
    if task.name != TEMPLATE:
        raise UsageError(f"{root} holds the task {task.name!r}, not the demo's {TEMPLATE} task: "
                         f"`autoresearch run {root}` runs it; the demo makes its own folder (give a new one)")
    if budget is not None and abs(task.time_budget - budget) > 1e-9:
        raise UsageError(f"{root} was set up with --budget {task.time_budget:g}; to change it, "
                         "start the demo in a new folder")


def summary(root: Path, tag: str, interrupted: bool) -> DemoResult:
    from autoresearch.ledger import Ledger
    from autoresearch.records import Status, measured_baseline

    led = Ledger.read(root, tag)
    try:
        trials = led.trials()
        best = led.best()
    finally:
        led.close()
    base = measured_baseline(trials)
    # the trials proposed after the baseline: a baseline run again (its first run was stopped)
    # is not one of them, nor a kept improvement
    after = [t for t in trials if t.number > (base.number if base else 0)]
    return DemoResult(
        root=root, tag=tag, baseline=base.metric if base else None,
        best=best.metric if best else None, best_number=best.number if best else 0,
        best_description=best.description if best else "", trials=len(after),
        kept=sum(t.status is Status.KEEP for t in after), interrupted=interrupted)


def report(root: Path, tag: str) -> str:
    """Where the results are: report.html when the report module is installed."""
    results = root / ".autoresearch" / tag / "results.tsv"
    try:
        from autoresearch.report import build_report
    except ImportError:
        return f"results: {results}"
    try:
        return f"report: {build_report(root, tag)}\nresults: {results}"
    except Exception as e:  # a failed report must not hide the results
        return f"results: {results} (the report failed: {type(e).__name__}: {e})"


def require_torch() -> None:
    """The demo's task trains a small GPT: without PyTorch every trial would crash; say so first."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise UsageError("the demo trains a small GPT with PyTorch, which is not installed: "
                         "pip install torch (the CPU build is enough)")


def demo_root(folder: str | None, budget: float | None) -> tuple[Path, bool, bool]:
    """The demo's task folder: `folder` (else a new one here), its task made there with the
    budget unless it holds one already (then resumed, with the same budget); returns the folder,
    whether it was made now, and whether the folder was there before."""
    directory = Path(folder).resolve() if folder else default_dir()
    created, existed = not (directory / "autoresearch.toml").is_file(), directory.exists()
    if not created:
        existing_budget(directory, budget)
        print(f"autoresearch demo: going on in {directory} (tag {TAG})")
        return directory, created, existed
    if existed and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory} already exists and holds no demo (no autoresearch.toml): "
                         "choose a new folder, or an empty one")
    print(f"autoresearch demo: creating the {TEMPLATE} task in {directory} ...", flush=True)
    return create(directory, DEFAULT_BUDGET if budget is None else budget), created, existed


def remove_made(root: Path, existed: bool) -> None:
    """Take away the demo made in `root` just now (the folder itself, unless it was there before)."""
    for child in ([root] if not existed else list(root.iterdir())):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink()


def plan_line(trials: int, budget: float, agent_name: str, resumed: bool) -> str:
    """What the demo is about to do, and about how long it takes."""
    minutes = (trials + (not resumed)) * (budget + OVERHEAD) / 60
    what = f"{trials} more trial{'s' * (trials != 1)}" if resumed else \
        f"the baseline and {trials} trial{'s' * (trials != 1)}"
    return (f"{what} of {budget:g} s each with the {agent_name} agent: about {max(minutes, 1):.0f} min"
            + ("" if resumed else " (plus building the corpus once)"))


def cmd_demo(args: argparse.Namespace) -> int:
    from autoresearch.agents.registry import agent_options, build_agent, options_record
    from autoresearch.foreground import EXIT_INTERRUPTED, events_for, run_until_stopped
    from autoresearch.loop import Loop, Options
    from autoresearch.session import open_session
    from autoresearch.task import load_task
    from autoresearch.views import status_text

    require_torch()
    trials = DEFAULT_TRIALS if args.trials is None else args.trials
    root, created, existed = demo_root(args.dir, args.budget)
    task = load_task(root)
    try:
        opts = agent_options(args, task, TAG)
        agent = build_agent(opts, task)
    except UsageError:
        if created:  # a bad flag leaves no half-made demo behind
            remove_made(root, existed)
        raise
    resumed = (root / ".autoresearch" / TAG / "ledger.sqlite").exists()
    print(plan_line(trials, task.time_budget, agent.name, resumed), flush=True)
    session = open_session(task, TAG)
    session.ledger.set_meta("agent_options", options_record(opts))
    events = events_for(task)
    loop = Loop(session, agent, Options(trials=trials), events)
    try:
        run_until_stopped(loop)
    finally:
        events.close()
        session.close()
    result = summary(root, TAG, loop.cancel.is_set())
    print(status_text(root, TAG))
    print(outcome_line(result, task.metric.name, task.metric.minimize))
    print(report(root, TAG))
    print(f"go on with: autoresearch run {root} --tag {TAG} --trials 20")
    return EXIT_INTERRUPTED if result.interrupted else 0


def outcome_line(r: DemoResult, metric: str, minimize: bool) -> str:
    if r.baseline is None or r.best is None:
        return "no baseline was measured"
    if r.best_number == 0 or r.best == r.baseline:
        return f"no trial beat the baseline ({metric} {r.baseline:.6g}) in {r.trials} trial{'s' * (r.trials != 1)}"
    gain = (r.baseline - r.best) if minimize else (r.best - r.baseline)
    return (f"{metric}: baseline {r.baseline:.6g} -> best {r.best:.6g} "
            f"({100 * gain / abs(r.baseline):.2f}% better, {r.kept} kept of {r.trials} trial{'s' * (r.trials != 1)}; "
            f"best: trial {r.best_number}, {r.best_description})")
