#!/usr/bin/env python
"""What a resumed search agent spends learning a tag's history before its first proposal.

At its first proposal of a run, the search agent takes in every finished trial of the tag. It
used to read each trial's editable files at its commit and parse them (ast and tokenize) to
find the constants the trial moved: 1,300 trials took 3.4 s on two shared cores, and a resume
of a long tag waited that long for its first trial. A trial the search agent proposed records
the constants it moved (`extra["search"]`), and the agent now learns them from there, parsing
only the parents' code (the kept trials). This bench times both side by side on one tag, in
one process: "from the code" is the agent given the trials without their record (the only
path before), "from the record" the trials as the ledger holds them; and checks that both
learn the same study and the same set of tried code.

It also times the loop's index of the code of every measured trial (`session.trees_of`), which
gave git every commit on its command line (`rev-parse C^{tree} ...`: past some 38,000 trials,
`Argument list too long`, and no resume) and now on its stdin (`cat-file --batch-check`).

    python bench/resume.py DIR --tag T        # a tag of yours (read-only)
    python bench/resume.py --trials 300       # a new tag of the blank task, made first (~2 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from autoresearch.agents.search import SearchAgent  # noqa: E402
from autoresearch.gitrepo import Git  # noqa: E402
from autoresearch.ledger import Ledger  # noqa: E402
from autoresearch.records import Trial  # noqa: E402
from autoresearch.session import trees_of  # noqa: E402
from autoresearch.task import load_task  # noqa: E402


def learn(root: Path, trials: list[Trial], record: bool) -> tuple[float, list[object], set[str]]:
    agent = SearchAgent(load_task(root))
    t0 = time.perf_counter()
    for t in trials:
        agent.observe(t if record else t.with_(extra={}))
    took = time.perf_counter() - t0
    study = [(sorted(s.params.items()), s.value, s.state.name) for s in agent.study.trials]
    return took, study, set(agent.seen)


def make_tag(folder: Path, trials: int) -> Path:
    root = folder / "task"
    cmd = [sys.executable, "-m", "autoresearch"]
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "PATH": "/usr/bin:/bin"}
    subprocess.run([*cmd, "init", str(root), "--template", "blank"], check=True, env=env, capture_output=True)
    subprocess.run([*cmd, "run", str(root), "--tag", "bench", "--agent", "search", "--trials", str(trials)],
                   check=True, env=env, capture_output=True)
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", nargs="?")
    parser.add_argument("--tag", default="bench")
    parser.add_argument("--trials", type=int, default=300, help="without DIR: the trials of the tag made")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir).resolve() if args.dir else make_tag(Path(tmp), args.trials)
        led = Ledger.read(root, args.tag)
        trials = [t for t in led.trials() if t.status.finished]
        led.close()
        times: dict[bool, list[float]] = {False: [], True: []}
        results = {}
        for _ in range(args.repeat):  # interleaved: the machine's load falls on both alike
            for record in (False, True):
                took, study, seen = learn(root, trials, record)
                times[record].append(took)
                results[record] = (study, seen)
        git = Git(root)
        commits = list(dict.fromkeys(t.commit for t in trials if t.commit))
        index: dict[str, list[float]] = {"argv": [], "stdin": []}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            git.run("rev-parse", *(f"{c}^{{tree}}" for c in commits), check=False)  # (the old way)
            index["argv"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            trees_of(git, trials)
            index["stdin"].append(time.perf_counter() - t0)
    old, new = statistics.median(times[False]), statistics.median(times[True])
    print(f"{len(trials)} finished trials of tag {args.tag}; the search agent takes them in "
          f"(median of {args.repeat}, interleaved):")
    print(f"  from the code (before):  {old:7.2f} s   ({1000 * old / len(trials):.2f} ms a trial)")
    print(f"  from the record (now):   {new:7.2f} s   ({1000 * new / len(trials):.2f} ms a trial)")
    same = results[False] == results[True]
    print(f"  the same study and the same tried code: {'yes' if same else 'NO'}"
          f" ({len(results[True][0])} optuna trials)")
    argv_bytes = sum(len(c) + len("^{tree}") + 9 for c in commits)  # (each argument, its NUL and pointer)
    print(f"the code index of {len(commits)} commits: on git's command line (before) "
          f"{1000 * statistics.median(index['argv']):.0f} ms, {argv_bytes / 1e6:.2f} MB of arguments "
          f"(the limit: {os.sysconf('SC_ARG_MAX') / 1e6:.1f} MB); on its stdin (now) "
          f"{1000 * statistics.median(index['stdin']):.0f} ms, no limit")


if __name__ == "__main__":
    main()
