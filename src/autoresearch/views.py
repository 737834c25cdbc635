"""Text views of a tag for the terminal: `status` and `show`."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from autoresearch.decide import noise_groups, pooled_noise
from autoresearch.errors import UsageError, no_folder
from autoresearch.events import gain_text
from autoresearch.gitrepo import Git
from autoresearch.ledger import Ledger, list_tags, tag_dir
from autoresearch.process import last_lines, log_digests, read_tail
from autoresearch.prompt import fmt
from autoresearch.records import Trial, clip, measured_baseline, printable
from autoresearch.task import elsewhere, task_above
from autoresearch.treecheck import untrue

STALE = "  [no loop is running: `run --tag` records it as interrupted and goes on]"  # a trial left running


def pick_tag(root: Path, tag: str | None) -> str:
    """The tag asked for, or the most recently used one."""
    if tag:
        return tag
    if not root.is_dir():
        raise UsageError(no_folder(root))
    tags = list_tags(root)
    if not tags and not (root / "autoresearch.toml").is_file():
        if (above := task_above(root)) is not None:  # a DIR given below the task's folder
            raise UsageError(f"no autoresearch.toml in {root} {elsewhere(above)}")
        raise UsageError(f"no autoresearch.toml in {root} or a folder above it in its git repository, "
                         "and no runs here (give the task's folder as DIR, e.g. `autoresearch status DIR`, "
                         "`autoresearch report DIR`)")
    if not tags:
        raise UsageError(f"no autoresearch runs in {root} (start one with `autoresearch run`)")
    return last_used(root, tags)


def last_used(root: Path, tags: list[str] | set[str]) -> str:
    """Of `tags`, the one whose ledger was written last, or whose loop started last. SQLite
    writes a running loop's transactions to ledger.sqlite-wal, and copies them into
    ledger.sqlite only at a checkpoint (a clean end): a loop that runs, or was killed, changed
    the -wal file; a loop starting writes its pid in the lock."""
    def written(tag: str) -> float:
        folder = tag_dir(root, tag)
        times = [0.0]
        for name in ("ledger.sqlite", "ledger.sqlite-wal", "lock"):
            with contextlib.suppress(OSError):  # (gone since it was listed; no -wal after a clean end)
                times.append((folder / name).stat().st_mtime)
        return max(times)
    return max(tags, key=written)


def with_spread(t: Trial, name: str, value: float | None) -> str:
    spread = t.spread(name)
    return fmt(value) + (f" ± {spread:.2g}" if spread is not None else "")


def noise_text(trials: list[Trial], metric: str, min_delta: str | None) -> str:
    """'noise: sd X over N repeated runs (bar Y)' where repeats exist, else ''."""
    groups = noise_groups(trials, metric)
    if not groups:
        return ""
    noise = pooled_noise(groups)
    bar = f"; min_delta auto: bar {2 * noise:.3g}" if min_delta == "auto" else ""
    return f"noise: sd {noise:.3g} of {metric}, pooled over {sum(map(len, groups))} repeated runs{bar}"


def last_run_text(raw: str | None) -> str:
    """`last run: ended Nov 30 00:12 after 400 trials: --trials 400 done`, or ''."""
    try:
        info = json.loads(raw or "")
        when = time.strftime("%b %d %H:%M", time.localtime(float(info["ended"])))
        n = int(info.get("trials", 0))
        return f"last run: ended {when} after {n} trial{'s' * (n != 1)}: {info.get('why', '')}"
    except (ValueError, TypeError, KeyError):
        return ""


def ended_at(raw: str | None) -> float:
    """When the last run recorded its end (0 when it did not)."""
    try:
        return float(json.loads(raw or "")["ended"])
    except (ValueError, TypeError, KeyError):
        return 0.0


LONG_TABLE = 40  # rows of `status` past which its first lines are said again under the table


def _table_rows(trials: list, shown: list, metric: str, holdout: str, alive: bool) -> list[tuple[str, ...]]:
    """`status`'s table: its header and a row for each trial of `shown`."""
    rows = [("#", "commit", "status", metric, *([holdout] if holdout else []), "seconds", "description")]
    for t in shown:
        said = t.reason and t.description.startswith(f"agent error: {t.reason}"[:60])  # the reason is the description
        note = f"  [{t.reason}]" if t.reason and t.status.value != "keep" and not said else ""
        if t.status.value == "running" and not alive:
            note += STALE
        note += f"  [audit: {len(t.flags)} flag{'s' if len(t.flags) > 1 else ''}]" if t.flags else ""
        held = [with_spread(t, holdout, t.figures.get(holdout))] if holdout else []
        rows.append((str(t.number), t.short or "-", t.status.value,
                     with_spread(t, metric, t.metric) if t.status.shows_figure else "-",
                     *held, seconds_text(t, alive), clip(t.description + note, 160)))
    return rows


def _run_state(tag: str, trials: list, running: list[int], last_run: str | None, alive: bool) -> str:
    """How the tag's last run ended, or that a loop runs on it now ("" when nothing is known)."""
    ended = last_run_text(last_run)
    flying = f"trial{'s' if len(running) > 1 else ''} {', '.join(map(str, running))}"
    if alive:  # (the last run's end is an earlier invocation's)
        ended = "a loop is running on this tag now" + (f" ({flying} in flight)" if running else "")
    elif not running:
        pass
    elif ended_at(last_run) > max(t.started for t in trials if t.status.value == "running"):
        ended += f" ({flying} left in flight: `autoresearch run --tag {tag}` records {'them' if len(running) > 1 else 'it'} as interrupted)"
    else:  # (a SIGKILL, a machine that went down: nothing could record the end)
        ended = (f"last run: stopped without a word (killed, or the machine went down) while {flying} ran; "
                 f"`autoresearch run --tag {tag}` resumes")
    return ended


def _summary_lines(trials: list, best, metric: str, holdout: str, min_delta: str | None,  # noqa: ANN001
                   goal: str) -> list[str]:
    """Under `status`'s table: the noise, the spend, the best trial and the audit's flags."""
    lines = [x for x in (noise_text(trials, metric, min_delta), spend_text(trials)) if x]
    if best is not None:
        base = measured_baseline(trials)
        sealed = f", {holdout} = {with_spread(best, holdout, best.figures.get(holdout))}" if holdout else ""
        lines.append(f"best: trial {best.number} ({best.short}) {metric} = "
                     f"{with_spread(best, metric, best.metric)}{gain_text(best, base, goal == 'minimize')}"
                     f"{sealed} — {best.description}")
    flagged = [t.number for t in trials if t.flags]
    if flagged:
        lines.append(f"audit: trial{'s' if len(flagged) > 1 else ''} {', '.join(map(str, flagged))} "
                     "flagged (see `autoresearch show N`)")
    return lines


def status_text(root: Path, tag: str | None, limit: int | None = None) -> str:
    tag = pick_tag(root, tag)
    led = Ledger.read(root, tag)
    try:
        trials = led.trials()
        best = led.best()
        goal = led.get_meta("goal") or "minimize"
        holdout = led.get_meta("holdout") or ""
        min_delta = led.get_meta("min_delta")
        last_run = led.get_meta("last_run")
    finally:
        led.close()
    metric = led.metric_name
    shown = trials if limit is None else trials[len(trials) - limit:] if limit else []
    running = [t.number for t in trials if t.status.value == "running"]
    alive = Ledger.loop_running(tag_dir(root, tag))
    rows = _table_rows(trials, shown, metric, holdout, alive)
    n = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    kept = max(0, sum(t.status.value == "keep" for t in trials) - 1)  # the first keep is the baseline
    done = len(trials) - len(running)
    lines = [f"tag {tag}: {done} trial{'s' * (done != 1)} (the baseline included), "
             f"{kept} kept improvement{'s' * (kept != 1)}" + (f", {len(running)} in flight" if running else "")]
    if ended := _run_state(tag, trials, running, last_run, alive):
        lines.append(ended)
    head = list(lines)
    for r in rows if shown else []:  # (--last 0: the summary alone, no empty table's header)
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:n], widths, strict=True)) + "  " + r[n])
    if len(shown) > LONG_TABLE:  # (what scrolled away above it: the count, a loop running, the last run)
        lines += head
    lines += _summary_lines(trials, best, metric, holdout, min_delta, goal)
    return "\n".join(lines + refs_warnings(root, tag, trials, best))


def seconds_text(t: Trial, alive: bool) -> str:
    """A trial's seconds as `status` shows them: a trial still running (its loop alive), the time
    since it started (proposal included); a finished one, its experiment's."""
    if t.status.value == "running" and alive and t.started:
        return f"{max(0.0, time.time() - t.started):.1f}"
    return f"{t.run_seconds:.1f}"


def spend_text(trials: list[Trial]) -> str:
    """What the agents spent over the tag (every proposal, failed ones too), '' when nothing."""
    spent = [t for t in trials if t.tokens_in or t.tokens_out or t.cost]
    if not spent:
        return ""
    tokens_in, tokens_out = sum(t.tokens_in for t in spent), sum(t.tokens_out for t in spent)
    return (f"agent spend: ${sum(t.cost for t in spent):.4f} ({tokens_in:,} tokens in, {tokens_out:,} out, "
            f"over {len(spent)} proposal{'s' * (len(spent) != 1)})")


def refs_warnings(root: Path, tag: str, trials: list[Trial], best: Trial | None) -> list[str]:
    """What the tag's git refs say otherwise than its ledger: its branch elsewhere than the best
    trial's commit, trial refs gone or moved (by something other than the loop, e.g. another
    tag's agent; `run --tag T` puts them back, from the ledger)."""
    from autoresearch.session import branch_ref, missing_refs, trial_ref

    git = Git(root)
    fix = f"`autoresearch run --tag {tag} --trials 0` puts {{}} back"
    out = []
    branch = git.rev(branch_ref(tag))
    if best is not None and best.commit and branch != best.commit:
        out.append(f"warning: branch autoresearch/{tag} is at {branch[:7] if branch else 'nothing'}, not the best "
                   f"trial's commit {best.short}: something else moved it; {fix.format('it')}")
    missing = missing_refs(tag, [t for t in trials if t.status.finished], git.refs(f"refs/autoresearch/{tag}/"))
    there = git.present(set(missing.values()))
    lost = [t.number for t in trials if missing.get(trial_ref(tag, t.number)) in there]
    gone = [t.number for t in trials if trial_ref(tag, t.number) in missing and t.number not in lost]

    def listed(numbers: list[int]) -> str:
        return f"trial{'s' if len(numbers) > 1 else ''} " + ", ".join(map(str, numbers[:10])) + (" ..." if len(numbers) > 10 else "")
    if lost:
        out.append(f"warning: the refs of {listed(lost)} are gone or moved (their commits are unreachable "
                   f"to git gc); {fix.format('them')}")
    if gone:  # (taken by a `git prune` before their refs were made: nothing can put them back)
        out.append(f"warning: the commits of {listed(gone)} are gone from git's objects (a `git prune` or "
                   "`git gc --prune=now` while the loop ran?): the ledger keeps their record, not their code")
    return out


def show_text(root: Path, number: int, tag: str | None) -> str:
    given, tag = tag, pick_tag(root, tag)
    others = [] if given else [x for x in list_tags(root) if x != tag]
    hint = f" (the tag used last; the others here: {', '.join(others[:10])}: give --tag)" if others else ""
    if not 0 <= number < 2 ** 63:  # (sqlite's integers)
        raise UsageError(f"no trial {number} in tag {tag!r}{hint}")
    led = Ledger.read(root, tag)
    try:
        t = led.get(number)
        holdout = led.get_meta("holdout") or ""
    finally:
        led.close()
    if t is None:
        raise UsageError(f"no trial {number} in tag {tag!r}{hint}")
    stale = t.status.value == "running" and not Ledger.loop_running(tag_dir(root, tag))
    lines = _record_lines(t, tag, led.metric_name, holdout, stale) + _diff_lines(root, t) + _log_lines(root, tag, t)
    return printable("\n".join(lines))  # (the diff and the logs are the agent's and its code's words)


def _record_lines(t: Trial, tag: str, metric: str, holdout: str, stale: bool) -> list[str]:
    """`show`'s head: the trial's status, description, commits, figures, agent, run and flags."""
    runs = f" (mean ± sd of {len(t.repeats)} runs)" if len(t.repeats) > 1 else ""
    lines = [f"trial {t.number} of tag {tag}: {t.status.value}" + (STALE if stale else ""),
             f"description: {t.description}",
             f"commit: {t.commit or '-'}  parent: {t.parent or '-'}",
             f"{metric}: {with_spread(t, metric, t.metric)}{runs}"]
    for k, v in t.figures.items():
        if k != metric:
            lines.append(f"{k}: {with_spread(t, k, v)}" + ("  (holdout, sealed from agents)" if k == holdout else ""))
    if t.reason:
        lines.append(f"reason: {t.reason}")
    lines.append(f"agent: {t.agent}" + (f" ({t.model})" if t.model else "")
                 + (f", tokens {t.tokens_in}+{t.tokens_out}, cost ${t.cost:.4f}" if t.tokens_in else ""))
    lines.append(f"run: {seconds_text(t, not stale)} s{' so far' if t.status.value == 'running' and not stale else ''}, seed {t.seed}")
    if t.flags:
        lines.append(f"audit: {len(t.flags)} flag(s), for a human to look at:")
        lines += [f"  {f}" for f in t.flags]
    for lost in t.extra.get("lost_workers", []):
        lines.append(f"lost worker (the trial was run again): {lost}")
    return lines


def _diff_lines(root: Path, t: Trial) -> list[str]:
    """The trial's diff against its parent, with a warning where its git objects were rewritten."""
    if not (t.commit and t.parent):
        return []
    lines = []
    git = Git(root)
    if lies := untrue(git, t.commit, t.parent, remove=False):  # (an object file rewritten since)
        lines.append(f"warning: the git objects of this trial ({', '.join(lies[:5])}) do not hold what their "
                     "names say: rewritten after it was recorded, so the diff below is not the code that ran")
    return lines + ["", "diff against its parent:", git.diff(t.parent, t.commit).rstrip() or "(no change)"]


def _log_lines(root: Path, tag: str, t: Trial) -> list[str]:
    """The tail of the experiment's log (said missing, or changed since, where it is), else of
    the agent's when the trial never ran."""
    lines: list[str] = []
    log = Path(t.log_path) if t.log_path else None
    if log and not log.exists() and t.status.value in ("keep", "discard", "crash", "timeout"):
        lines += ["", f"log: {log} is missing (removed after the trial was recorded?)"]
    if log and log.exists():
        sealed = log.parent.parent / "sealed" / f"{t.number}.eval.log"
        recorded = t.extra.get("log_sha256") or {}  # ("": there was none when it was recorded)
        changed = [name for name, now in log_digests(log, sealed).items()
                   if isinstance(recorded, dict) and recorded.get(name, now) != now]
        lines += ["", f"log tail ({log}):", last_lines(read_tail(log), 20).rstrip() or "(empty: the experiment printed nothing)"]
        if sealed.exists():
            lines.append(f"(the evaluator's whole output, holdout included: {sealed})")
        for name in changed:
            lines.append(f"warning: {name} was changed after the trial was recorded: it is not the output "
                         "the verdict was read from")
    agent_log = tag_dir(root, tag) / "agent" / f"{t.number}.log"
    if agent_log.exists() and not (log and log.exists()):  # not run: what the agent did is the story
        lines += ["", f"agent log tail ({agent_log}):", last_lines(read_tail(agent_log), 20).rstrip() or "(empty)"]
    return lines
