"""What an agent is told: program.md, the task, the history of trials, the best result.

The sealed holdout figure never appears here (the loop strips it from every trial an agent sees).
"""

from __future__ import annotations

import re

from autoresearch.agents.base import Context
from autoresearch.records import Status, Trial, clip


def named(holdout: str) -> str:
    """A regular expression of the figure `holdout` as a word of its own: a holdout `loss` is not
    `val_loss` (blanking that would hide the metric from the agent)."""
    return rf"(?<!\w){re.escape(holdout)}(?!\w)"


def visible(trial: Trial, holdout: str | None) -> Trial:
    """The trial as an agent may see it: the sealed holdout figure removed, also from the
    reason (which can quote an evaluator's output)."""
    if not holdout:
        return trial
    sealed = re.compile(rf"{named(holdout)}\s*[:=]\s*\S+")
    return trial.with_(figures={k: v for k, v in trial.figures.items() if k != holdout},
                       repeats=[{k: v for k, v in r.items() if k != holdout} for r in trial.repeats],
                       reason=sealed.sub(f"{holdout}: [sealed]", trial.reason))


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def history_lines(trials: tuple[Trial, ...] | list[Trial], metric: str, limit_chars: int = 12000,
                  more: str = "", squeeze: bool = True, recent: int = 40) -> list[str]:
    """A compact line per finished trial, newest last, and one per trial in flight (proposed,
    not measured yet: with several workers, the agent that proposes beside it must not propose
    the same). When the lines outgrow `limit_chars`, the `recent` most recent stay (as many as
    fit, unless not `squeeze`), and the kept trials before them as far as the limit goes (the latest
    first); the rest are counted, and `more` says where to read them ({before}: the number of
    the first of the recent)."""
    pairs: list[tuple[Trial, str]] = []
    alike = 0  # agent errors alike in a row (an API down overnight makes hundreds): one line, its
    for t in trials:  # pair holding the first of them (a page back starts before it)
        if not t.status.finished:
            if t.description:  # (the trial being proposed now has none yet)
                pairs.append((t, f"#{t.number} {'running':<11} {metric}=(not measured yet)  {t.description}"))
            continue
        if t.status is Status.AGENT_ERROR and pairs and (prev := pairs[-1][0]).status is Status.AGENT_ERROR \
                and (prev.reason, prev.description) == (t.reason, t.description):
            alike = alike + 1 if alike else 2
            pairs[-1] = (prev, f"#{prev.number}-#{t.number} agent_error ({alike} in a row, alike)  "
                               f"{t.description} [{clip(t.reason, 160)}]")
            continue
        alike = 0
        figs = ", ".join(f"{k}={fmt(v)}" for k, v in t.figures.items() if k != metric)
        # (a crash's reason is its log's tail: its end has the error)
        why = f" [{clip(t.reason, 160)}]" if t.reason and t.status is not Status.KEEP else ""
        pairs.append((t, f"#{t.number} {t.status.value:<11} {metric}={fmt(t.metric)}  {t.description}"
                      + (f"  ({figs})" if figs else "") + why))
    if sum(len(line) + 1 for _, line in pairs) <= limit_chars:
        return [line for _, line in pairs]
    shown = size = 0  # (40 lines of many figures may not fit)
    for _, line in reversed(pairs[-recent:]):
        if shown and squeeze and size + len(line) + 1 > limit_chars - 200:
            break
        shown, size = shown + 1, size + len(line) + 1
    old, last = pairs[:-shown], pairs[-shown:]
    # (a run that keeps often has hundreds of keeps after two days: all of them outgrew any limit)
    room = limit_chars - size - 200
    kept: list[str] = []
    for t, line in reversed(old):
        if t.status is Status.KEEP:
            room -= len(line) + 1
            if room < 0:
                break
            kept.append(line)
    note = more.replace("{before}", str(last[0][0].number))
    return kept[::-1] + [f"... {len(old) - len(kept)} older trials omitted{note} ..."] + [line for _, line in last]


def build_prompt(ctx: Context, history: list[str] | None = None) -> str:
    """The prompt; `history` replaces the default history lines (e.g. condensed to a budget)."""
    task = ctx.task
    m = task.metric
    best = ctx.best
    direction = "lower is better" if m.minimize else "higher is better"
    program = task.program_text(ctx.workdir).strip() or f"(no {task.program}: improve the metric)"
    parts = [
        "# Research program\n", program, "\n",
        "# The task\n",
        f"- You may change only these paths (globs): {', '.join(task.editable)}",
        f"- Never change: {', '.join(task.always_protected + task.protected)}",
        "- Any other file you create or change (notes, logs, caches, a test run's output) makes the trial "
        "rejected: remove scratch files before you finish.",
        f"- The experiment command: `{task.command}`, run by the harness with a time budget of "
        f"{task.time_budget:g} s (AUTORESEARCH_TIME_BUDGET); hard timeout {task.timeout:g} s.",
        f"- The metric: {m.name} ({direction}).",
        "- Do not commit, and change no git state (no checkout, reset, stash, branch, tag or worktree): the harness "
        "commits, runs, measures and decides.",
        "- Finish by stating, in one line, what you changed and why.",
        "",
        f"# The best result so far: trial #{best.number}, {m.name} = {fmt(best.metric)}"
        f" ({best.description})",
        "The working directory holds that code.\n",
        "# Every trial so far (number, status, metric, description; `running`: in flight now)",
        *(history if history is not None else history_lines(ctx.history, m.name)),
        "",
        f"# Now: trial #{ctx.number}",
        "Propose one new change that you expect to improve the metric. Do not repeat a trial "
        "from the history.",
    ]
    return "\n".join(parts) + "\n"
