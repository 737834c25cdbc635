"""`--agent search`: an Optuna sampler over the task's constants, no LLM.

Each proposal starts from the best code (the trial's worktree), asks the sampler (Optuna
ask/tell) for new values of a few constants, one to three chosen at random, and rewrites only
those values' text. A float moves at least a tenth of its (log) range: a step too small to
measure wastes a trial, so a smaller one asked for is widened to between one and two tenths on
the side the sampler went (TPE asks for such steps near its favourite; refused, they ended in
random draws), and the study is told the value written. CMA-ES instead moves every number at
once, as it is built to. What each Optuna trial holds:

    tpe, random    the constants the trial changed: TPE models each constant on its own,
                   from the trials that moved it, so copies of the best's values would only
                   pull its samples back to where it already is (measured in bench/search.py)
    cmaes, gp      the whole configuration (the rest enqueued as fixed parameters): they model
                   the joint space and need every constant in every trial

Outcomes told to Optuna:

    keep / discard        the metric (the study's direction is the task's goal)
    crash / timeout       the worst metric seen so far, so the sampler learns to avoid the
                          region (FAIL while nothing has been measured yet)
    anything else         FAIL, which every sampler ignores

The study lives in memory and is rebuilt whenever the loop starts: the loop shows the agent
every finished trial, and for each one this agent did not propose itself it reads the
constants at the trial's commit (and its parent's) and adds them as a completed trial. So a
resumed loop, or a search that follows an LLM agent or a person, learns from every earlier
trial. A trial a search agent proposed records the constants it moved (`extra["search"]`):
a resumed search reads them from the record, not by parsing the file at the trial's commit
again (a resume of thousands of trials spent seconds parsing). A value outside its range is
clipped to it; one that cannot be represented (a string
where a number was, a sign change) is left out of that trial.

The ranges are fixed once, from the baseline's code (the first trial the agent is shown), so
they do not drift with the best; constants that appear later are added with ranges inferred
from their first value. Proposals never repeat the code of an earlier trial (but of one
interrupted before it was measured).
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import warnings
from collections.abc import Callable
from typing import Any

from autoresearch.agents.base import AgentError, BaseAgent, Context, Proposal
from autoresearch.agents.constants import (
    Constant,
    FileScan,
    NotLiteral,
    apply_edits,
    short,
    value_of_text,
)
from autoresearch.agents.space import Param, above_note, editable_sources, scan_files, space_of
from autoresearch.errors import UsageError
from autoresearch.records import Status, Trial
from autoresearch.task import Task

SAMPLERS = ("tpe", "random", "cmaes", "gp")
STARTUP_TRIALS = 5  # TPE and GP sample at random until this many trials are complete
TRIES = 30  # asks before giving up on finding a configuration not tried yet
STALLED = 5  # after this many asks that changed nothing new, the free constants are drawn at random
FEW = (1, 2, 3)  # how many constants a proposal changes, and how often
FEW_WEIGHTS = (0.5, 0.3, 0.2)
CMA_SIGMA = 0.15  # CMA-ES's initial step, as a share of each (normalised) range
MIN_MOVE = 0.1  # a float moves at least this share of its (log) range (a smaller step is widened)
WIDEN = 2.0  # a step the sampler took under MIN_MOVE is widened to 1..WIDEN times MIN_MOVE


def make_sampler(name: str, seed: int, x0: dict[str, Any]) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        common: dict[str, Any] = {
            "seed": seed, "n_startup_trials": 0, "warn_independent_sampling": False,
            "independent_sampler": optuna.samplers.RandomSampler(seed=seed)}
        # start from the baseline, not the middle of the space; x0 and sigma0 are deprecated
        # since Optuna 4.9 (to go in 6.0), hence the fallback to the default start
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            try:
                return optuna.samplers.CmaEsSampler(x0=x0 or None, sigma0=CMA_SIGMA, **common)
            except TypeError:
                return optuna.samplers.CmaEsSampler(**common)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    raise UsageError(f"--sampler {name!r} is not a sampler (choose from {', '.join(SAMPLERS)})")


def draw(dist: Any, rng: random.Random) -> Any:
    """A value of an Optuna distribution drawn uniformly (on its log scale when it has one)."""
    from optuna import distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return rng.choice(dist.choices)
    low, high = dist.low, dist.high
    if dist.log:
        x = math.exp(rng.uniform(math.log(low), math.log(high)))
    elif dist.step:
        x = low + rng.randint(0, int(round((high - low) / dist.step))) * dist.step
    else:
        x = rng.uniform(low, high)
    x = min(max(x, low), high)
    return int(round(x)) if isinstance(dist, d.IntDistribution) else float(x)


def widen(p: Param, a: Any, x: Any, rng: random.Random) -> float | None:
    """For a float the sampler moved from `a` to `x`, too near to measure: a value 1 to WIDEN
    times MIN_MOVE of the (log) range from `a` (at random) on x's side, or on the other where the
    range ends first (a random side when x is a); on the step's grid. None when neither side has
    room."""
    if a is None or not isinstance(x, (int, float)):
        return None
    to: Callable[[float], float] = math.log if p.log else float
    back: Callable[[float], float] = math.exp if p.log else float
    span = to(p.high) - to(p.low)
    sides = [1, -1] if x > a else [-1, 1] if x < a else rng.sample([1, -1], 2)
    share = rng.uniform(1.0, WIDEN) * MIN_MOVE  # (not one fixed step: each would soon be tried)
    for side in sides:
        y = back(to(a) + side * share * span)
        if p.step:
            y = p.low + (math.ceil if side > 0 else math.floor)((y - p.low) / p.step - 1e-9 * side) * p.step
        if p.low <= y <= p.high:
            return float(y)
    return None


def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        raise UsageError(f"--sampler {name!r} is not a sampler (choose from {', '.join(SAMPLERS)})")
    need = {"cmaes": "cmaes", "gp": "scipy"}.get(name)
    if need:
        import importlib.util

        if importlib.util.find_spec(need) is None:
            raise UsageError(f"--sampler {name} needs the {need} package: pip install {need}")
        if name == "gp" and importlib.util.find_spec("torch") is None:
            raise UsageError("--sampler gp needs PyTorch: pip install torch")


def digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + files[path] + b"\0")
    return h.hexdigest()



class NoConstants(UsageError):
    """The editable files have no constant to search over."""


class NothingToSearch(BaseAgent):
    """The search agent of `run --trials 0` on files with no constants: only the baseline runs."""

    name = "search"

    def propose(self, ctx: Context) -> Proposal:
        raise AgentError("the editable files have no constants to search over", fatal=True)

class SearchAgent(BaseAgent):
    """Optuna ask/tell over the UPPER_CASE constants of the editable files."""

    name = "search"

    def __init__(self, task: Task, sampler: str = "tpe", seed: int = 0,
                 changes: int | str | None = None) -> None:
        """`changes`: the constants a proposal may change: a number, "all", or None (one to
        three; every number for CMA-ES)."""
        check_sampler(sampler)
        self.task = task
        self.sampler = sampler
        self.seed = seed
        self.changes = changes if changes is not None else ("all" if sampler == "cmaes" else None)
        # CMA-ES and GP model the joint space: they need whole configurations in every trial;
        # TPE and random learn per constant, from the trials that changed it
        self.record_all = sampler in ("cmaes", "gp")
        self.rng = random.Random(seed)
        self.space = space_of(editable_sources(task.root, task))
        if not self.space.params:
            raise NoConstants(f"--agent search found no constants to tune in {task.root} ({self.space.unparsed()}"
                              f"see `autoresearch space {task.root}`)")
        self.study: Any = None
        self.pending: dict[int, Any] = {}  # loop trial number -> the Optuna trial it ran
        self.seen: set[str] = set()  # digests of the editable files of every trial that ran
        self._digests: dict[str, str] = {}  # commit -> the digest of its editable files
        self.worst: float | None = None
        self._values: dict[str, dict[str, Any]] = {}  # commit -> its constants, as sampled
        self._code: dict[str, tuple[dict[str, bytes], dict[str, FileScan]]] = {}  # a parent -> its files, scans
        self._lock = threading.Lock()
        self._git: Any = None
        self._resumed = False
        self.asks = self.refused = 0  # the sampler's asks, and those that gave no untried change
        self.widened = 0  # proposals with a step widened past MIN_MOVE

    def preflight(self) -> list[str]:
        """A `# search:` comment that could not be used (the constant is left as it is), or that is
        not read (on the line above its constant)."""
        return [f"not searched: {where} {why}; it keeps its value (see `autoresearch space`)"
                for where, why in self.space.broken] + [f"{where} {above_note(name)}" for where, name in self.space.above]

    # -- the study ----------------------------------------------------------------------------

    def _resume(self, number: int, x0: dict[str, Any]) -> None:
        """At the first proposal of this run: a resumed run (its first trial is not 1) draws
        from a random stream of its own, not the first run's again, and CMA-ES starts from the
        best code's values, not the baseline's."""
        self._resumed = True
        if number <= 1:
            return
        seed = (self.seed * 1_000_003 + number) % 2**32  # (Optuna's samplers take a seed below 2**32)
        self.rng = random.Random(seed)
        self._study().sampler = make_sampler(self.sampler, seed, {k: x for k, x in x0.items()
                                                                   if x is not None and not isinstance(x, (bool, str))})

    def _study(self) -> Any:
        if self.study is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.ERROR)  # not "greenlet is unavailable"
            x0 = {p.key: p.sampled(p.value) for p in self.space.params
                  if p.kind in ("int", "float") and p.sampled(p.value) is not None}
            direction = (optuna.study.StudyDirection.MINIMIZE if self.task.metric.minimize
                         else optuna.study.StudyDirection.MAXIMIZE)
            self.study = optuna.create_study(direction=direction,
                                             sampler=make_sampler(self.sampler, self.seed, x0))
        return self.study

    def _value(self, trial: Trial) -> float | None:
        """What Optuna is told for a finished trial (None: FAIL)."""
        if trial.status in (Status.KEEP, Status.DISCARD) and trial.metric is not None:
            worse = max if self.task.metric.minimize else min
            self.worst = trial.metric if self.worst is None else worse(self.worst, trial.metric)
            return float(trial.metric)
        if trial.status in (Status.CRASH, Status.TIMEOUT):
            return self.worst
        return None

    # -- learning from the ledger -------------------------------------------------------------

    def observe(self, trial: Trial) -> None:
        import optuna

        with self._lock:
            otrial = self.pending.pop(trial.number, None)
            value = self._value(trial)
            if otrial is not None:
                if value is None:
                    self._study().tell(otrial, state=optuna.trial.TrialState.FAIL)
                else:
                    self._study().tell(otrial, value)
                return
            if not trial.commit:
                return
            if trial.number == 0 and self.study is None:
                baseline = space_of(self._files_at(trial.commit))  # ranges from the baseline's code
                if baseline.params:
                    self.space = baseline
            moved = self._recorded(trial)
            values = self._values_at(trial.commit) if moved is None else {}
            if trial.status is not Status.INTERRUPTED:  # (stopped before it was measured: its code
                self.seen.add(self._digests[trial.commit])  # is untried, a proposal may make it again)
            if value is None:
                return
            if moved is not None:  # (what the parse below would find, from the record)
                before = self._values_at(trial.parent or "")
                values = {k: x for k, x in moved.items() if before.get(k) != x}
            elif trial.parent and not self.record_all:
                before = self._values_at(trial.parent)
                values = {k: x for k, x in values.items() if before.get(k) != x}
            if values:
                dists = {k: self.space.get(k).distribution() for k in values}
                self._study().add_trial(optuna.trial.create_trial(params=values, distributions=dists,
                                                                  value=value))

    def _recorded(self, trial: Trial) -> dict[str, Any] | None:
        """The constants a search agent's proposal moved, in the sampler's terms, from its trial's
        record (`extra["search"]`: each key's text as written into its parent's code, which is
        read instead: the parents are the few kept trials); the digest of the code it wrote goes
        in `_digests`. None where the record cannot stand for the code: no such record or no
        parent, CMA-ES and GP (which learn whole configurations), a key not in the parent's code,
        a text that does not parse."""
        written = trial.extra.get("search")
        if self.record_all or not trial.parent or not trial.commit or not isinstance(written, dict) or not written:
            return None
        self._values_at(trial.parent)  # (first: the space holds the parent's constants then)
        if trial.parent not in self._code:
            files = self._files_at(trial.parent)
            self._code[trial.parent] = (files, scan_files(files))
        files, scans = self._code[trial.parent]
        keys = {p.key: p for p in self.space.params}
        out: dict[str, Any] = {}
        edits: dict[str, list[tuple[int, int, str]]] = {}
        for key, text in written.items():
            p = keys.get(key)
            c = next((c for c in scans[p.path].constants if c.name == p.name), None) if p and p.path in scans else None
            if p is None or c is None or not isinstance(text, str):
                return None
            try:
                x = p.sampled(value_of_text(text))
            except (NotLiteral, SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
                return None
            if x is not None:  # (as the parse leaves out a value that cannot be represented)
                out[key] = x
            edits.setdefault(p.path, []).append((c.start, c.end, text))
        self._digests[trial.commit] = digest({path: apply_edits(data, edits.get(path, [])) for path, data in files.items()})
        return out

    def _files_at(self, commit: str) -> dict[str, bytes]:
        if self._git is None:
            from autoresearch.gitrepo import Git

            self._git = Git(self.task.root).blob_reader()
        out = {}
        for path in self.space.files:
            data = self._git.read(commit, path)
            if data is not None:
                out[path] = data
        return out

    def _values_at(self, commit: str) -> dict[str, Any]:
        """The searched constants at a commit, in the sampler's terms (clipped to the ranges)."""
        if commit not in self._values:
            files = self._files_at(commit)
            self._digests[commit] = digest(files)
            scans = scan_files(files)
            self.space.add(scans)
            values = {}
            for path, scan in scans.items():
                for c in scan.constants:
                    p = self.space.find(path, c.name)
                    x = p.sampled(c.value) if p is not None else None
                    if p is not None and x is not None:
                        values[p.key] = x
            self._values[commit] = values
        return self._values[commit]

    # -- proposing ----------------------------------------------------------------------------

    def propose(self, ctx: Context) -> Proposal:
        with self._lock:
            return self._propose(ctx)

    def _propose(self, ctx: Context) -> Proposal:
        files = editable_sources(ctx.workdir, self.task)
        current = self._current(ctx, files)
        study = self._study()
        if not self._resumed:
            self._resume(ctx.number, {k: p.sampled(c.value) for k, (p, c) in current.items()})
        otrial, changes, new_files, key = self._untried(ctx, study, files, current)
        for path, data in new_files.items():
            if data != files[path]:
                (ctx.workdir / path).write_bytes(data)
        self.seen.add(key)
        self.pending[ctx.number] = otrial
        description = describe([(p.key, _old_text(c), text) for p, c, text in changes])
        ctx.log(f"{self.sampler} (optuna trial {otrial.number}): "
                + ", ".join(f"{p.key} {_old_text(c)} -> {text}" for p, c, text in changes))
        return Proposal(description=description, model=f"optuna-{self.sampler}",
                        extra={"search": {p.key: text for p, _, text in changes}})

    def _current(self, ctx: Context, files: dict[str, bytes]) -> dict[str, tuple[Param, Constant]]:
        """The searched constants in the best code (key -> its parameter and the constant as
        written); constants new to the space are added to it first."""
        scans = scan_files(files)
        new = self.space.add(scans)
        if new:
            ctx.log(f"new constants in the space: {', '.join(p.key for p in new)}")
        current: dict[str, tuple[Param, Constant]] = {}
        for path, scan in scans.items():
            for c in scan.constants:
                p = self.space.find(path, c.name)
                if p is not None and c.value is not NotLiteral and (p.kind == "choice" or isinstance(c.value, (int, float))):  # (one made computed or a string since: left alone)
                    current[p.key] = (p, c)
        if not current:
            raise AgentError("none of the searched constants is in the best code any more", fatal=True)
        return current

    def _untried(self, ctx: Context, study: Any, files: dict[str, bytes],
                 current: dict[str, tuple[Param, Constant]]
                 ) -> tuple[Any, list[tuple[Param, Constant, str]], dict[str, bytes], str]:
        """Ask the sampler until it gives a change whose code no trial had: the Optuna trial,
        the constants it changes, the new files and their digest."""
        import optuna

        for attempt in range(1, TRIES + 1):
            otrial, free = self._ask(study, current, attempt)
            edits, changes, widened = self._edits(otrial.params, current, free)
            new_files = {path: apply_edits(data, edits.get(path, [])) for path, data in files.items()}
            key = digest(new_files)
            if changes and key not in self.seen:
                return self._as_written(ctx, study, otrial, changes, widened), changes, new_files, key
            study.tell(otrial, state=optuna.trial.TrialState.FAIL)
            self.refused += 1
            ctx.log(f"try {attempt}: {'nothing changed' if not changes else 'tried already'}, asking again")
        raise AgentError(f"the {self.sampler} sampler found no untried change in {TRIES} tries "
                         "(the space may be exhausted; widen it with `# search:` comments)", done=True)

    def _ask(self, study: Any, current: dict[str, tuple[Param, Constant]], attempt: int) -> tuple[Any, set[str]]:
        """One Optuna trial, and the constants it may change (the `attempt`-th ask of a proposal)."""
        free = self._choose([p for p, _ in current.values()])
        if attempt > 3 * STALLED:  # the best's neighbours are all tried: draw from the whole space
            free = set(current)
        fixed = {}
        if self.record_all:  # the others enter the trial at their current values
            fixed = {k: p.sampled(c.value) for k, (p, c) in current.items() if k not in free}
            fixed = {k: x for k, x in fixed.items() if x is not None}
        if attempt > STALLED:  # the sampler keeps to what is tried (the best's own values, often)
            fixed.update({k: draw(current[k][0].distribution(), self.rng) for k in sorted(free)})
        if fixed:
            study.enqueue_trial(fixed)
        otrial = study.ask({k: p.distribution() for k, (p, _) in current.items() if k in free or k in fixed})
        self.asks += 1
        return otrial, free

    def _as_written(self, ctx: Context, study: Any, otrial: Any, changes: list[tuple[Param, Constant, str]],
                    widened: dict[str, Any]) -> Any:
        """The Optuna trial that holds what is written: only the constants that moved (one the
        sampler left where it was is no sample of it), at their widened values."""
        import optuna

        moved = {p.key for p, _, _ in changes}
        if not self.record_all and (widened or set(otrial.params) - moved):
            asked = otrial.distributions
            study.tell(otrial, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial({k: widened.get(k, otrial.params[k]) for k in moved})
            otrial = study.ask({k: asked[k] for k in moved})
        if widened:
            self.widened += 1
            ctx.log(f"widened to {MIN_MOVE:.0%}-{WIDEN * MIN_MOVE:.0%} of the range (the sampler's "
                    f"step was too small to measure): {', '.join(sorted(widened))}")
        return otrial

    def _choose(self, params: list[Param]) -> set[str]:
        """The constants this proposal may change."""
        keys = [p.key for p in params]
        if self.changes == "all":
            numbers = {p.key for p in params if p.kind in ("int", "float")}
            others = {p.key for p in params if p.key not in numbers and self.rng.random() < 1 / len(params)}
            return (numbers | others) or {self.rng.choice(keys)}
        n = int(self.changes) if self.changes else self.rng.choices(FEW, FEW_WEIGHTS)[0]
        return set(self.rng.sample(keys, min(n, len(keys))))

    def _edits(self, sampled: dict[str, Any], current: dict[str, tuple[Param, Constant]],
               free: set[str]) -> tuple[dict[str, list[tuple[int, int, str]]], list[tuple[Param, Constant, str]],
                                        dict[str, Any]]:
        """The text edits (per file) that write the sampled values of the free constants, the
        constants that really change, and the values that were widened (in the sampler's terms)."""
        by_path: dict[str, list[tuple[int, int, str]]] = {}
        changes = []
        widened: dict[str, Any] = {}
        for key in sorted(free, key=lambda k: (current[k][1].path, current[k][1].line)):
            p, c = current[key]
            value, text = p.render(sampled[key], c.text)
            if value == c.value and isinstance(value, bool) == isinstance(c.value, bool):
                continue  # e.g. an int that rounds back to its value
            if p.kind == "float" and not self.record_all and p.move(c.value, value) < MIN_MOVE:
                # too small a step to measure (CMA-ES and GP take their own steps): widened
                # to one that is, on the side the sampler went (TPE near its best often asks
                # for such steps; refused, its proposals would turn into random draws)
                y = widen(p, p.sampled(c.value), sampled[key], self.rng)
                if y is None:
                    continue
                value, text = p.render(y, c.text)
                if value == c.value or p.move(c.value, value) < MIN_MOVE:
                    continue
                widened[key] = p.sampled(value)
            by_path.setdefault(c.path, []).append((c.start, c.end, text))
            changes.append((p, c, text))
        return by_path, changes, widened


def describe(changes: list[tuple[str, str, str]], limit: int = 200) -> str:
    """`A 1 -> 2, B 0.1 -> 0.13` in at most `limit` characters (the ledger's): without the old
    values when that is too long, then the first changes and how many more."""
    full = ", ".join(f"{k} {old} -> {new}" for k, old, new in changes)
    if len(full) <= limit:
        return full
    parts = [f"{k}={new}" for k, _, new in changes]
    for n in range(len(parts), 0, -1):
        text = ", ".join(parts[:n]) + (f" (+{len(parts) - n} more)" if n < len(parts) else "")
        if len(text) <= limit:
            return text
    return parts[0][:limit]


def _old_text(c: Constant) -> str:
    text = " ".join(c.text.split())
    return text if len(text) <= 16 else short(c.value)
