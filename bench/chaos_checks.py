"""The invariants bench/chaos.py checks after its kills, and what it observes meanwhile (the
user's checkout, the run's processes, results.tsv as read at any instant); see its docstring."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
TAG = "chaos"
GIT_ENV = {"GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@u", "GIT_COMMITTER_NAME": "u",
           "GIT_COMMITTER_EMAIL": "u@u"}
TSV_ROW = re.compile(r"^[0-9a-f]{7}\t-?\d+\.\d{6}\t\d+\.\d\t(keep|discard|crash)\t[^\t\n]+$")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV},
                          capture_output=True, text=True, check=True).stdout.strip()


def checkout_state(repo: Path) -> dict[str, str]:
    """What the user sees of their repository: HEAD, branch, status and every file's hash."""
    state = {"HEAD": git(repo, "rev-parse", "HEAD"), "branch": git(repo, "symbolic-ref", "HEAD"),
             "status": git(repo, "status", "--porcelain", "-uall", "--ignored=no"),
             "main": git(repo, "rev-parse", "refs/heads/main")}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if rel.split("/")[0] in (".git", ".autoresearch") or not path.is_file():
            continue
        state[f"file {rel}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


# ---------------------------------------------------------------------------
# observation


def marked_processes(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries CHAOS_MARKER=<marker>."""
    needle = f"CHAOS_MARKER={marker}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
            if needle not in env.split(b"\0"):
                continue
            with open(f"/proc/{entry.name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def wait_no_processes(marker: str, seconds: float = 3.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        left = marked_processes(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def read_tsv(path: Path) -> tuple[str | None, list[str]]:
    """(why it is malformed or None, its rows)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, []
    if not text.endswith("\n"):
        return "does not end with a newline", []
    lines = text.split("\n")[:-1]
    if not lines or lines[0] != "commit\tloss\tmemory_gb\tstatus\tdescription":
        return f"bad header {lines[:1]!r}", []
    for line in lines[1:]:
        if not TSV_ROW.match(line):
            return f"malformed row {line!r}", []
    return None, lines[1:]


def ledger_rows(repo: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"file:{repo / '.autoresearch' / TAG / 'ledger.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise RuntimeError("ledger.sqlite fails PRAGMA integrity_check")
        return db.execute("SELECT * FROM trials ORDER BY number").fetchall()
    finally:
        db.close()


def check_invariants(c: Any) -> None:
    r, repo = c.report, c.repo
    v = r.violations
    rows = ledger_rows(repo)
    r.trials = len(rows)
    r.statuses = Counter(t["status"] for t in rows)
    numbers = [t["number"] for t in rows]
    if numbers != list(range(len(rows))):
        v.append(f"trial numbers are not 0..{len(rows) - 1}: gaps at "
                 f"{sorted(set(range(max(numbers, default=0) + 1)) - set(numbers))[:10]}")
    running = [t["number"] for t in rows if t["status"] == "running"]
    if running:
        v.append(f"trials still running after a clean stop: {running}")

    # results.tsv: well formed, no duplicate, equal to what the ledger says, nothing lost
    why, tsv = read_tsv(c.tsv)
    if why is not None:
        v.append(f"results.tsv: {why}")
    # one row per finished trial with a commit, in order; a commit measured twice is a
    # duplicate (an interrupted attempt, e.g. of the baseline, may share its commit with the retry)
    recorded = [t for t in rows if t["status"] != "running" and t["commit_sha"]]
    if [row[:7] for row in tsv] != [t["commit_sha"][:7] for t in recorded]:
        v.append("results.tsv rows do not match the ledger's finished trials one to one")
    measured = Counter(t["commit_sha"] for t in recorded if t["status"] != "interrupted")
    r.duplicated += [f"commit {sha[:7]} in {n} rows of results.tsv" for sha, n in measured.items() if n > 1]
    ids = Counter(m.group(0) for t in rows for m in [re.search(r"id=[0-9a-f-]+", t["description"])] if m)
    r.duplicated += [f"proposal {i} recorded {n} times" for i, n in ids.items() if n > 1]
    sys.path.insert(0, str(SRC))
    from autoresearch.ledger import Ledger

    led = Ledger.read(repo, TAG)
    try:
        if c.tsv.read_text() != led.tsv_text():
            v.append("results.tsv differs from the ledger")
    finally:
        led.close()
    final = set(tsv)
    r.lost += [f"results.tsv row seen during the runs: {row!r}" for row in sorted(c.seen_rows - final)]
    by_number = {t["number"]: t for t in rows}
    for number, status in sorted(c.printed.items()):
        got = by_number.get(number)
        if got is None or got["status"] != status:
            r.lost.append(f"trial {number} printed as {status}, ledger has "
                          f"{got['status'] if got else 'nothing'}")

    # git: refs, parents, the branch
    refs = dict(line.split(" ", 1)[::-1] for line in
                git(repo, "for-each-ref", "--format=%(objectname) %(refname)", f"refs/autoresearch/{TAG}/").splitlines())
    for t in rows:
        if t["commit_sha"] and refs.get(f"refs/autoresearch/{TAG}/trials/{t['number']}") != t["commit_sha"]:
            v.append(f"trial {t['number']} ({t['status']}) has no ref refs/autoresearch/{TAG}/trials/{t['number']}")
        if not t["commit_sha"] and t["status"] not in ("interrupted",):
            v.append(f"trial {t['number']} ({t['status']}) has no commit")
    v += check_duplicates(repo, rows)
    commits = [t["commit_sha"] for t in rows if t["commit_sha"]]
    parents = {}
    if commits:
        for line in git(repo, "log", "--no-walk=unsorted", "--format=%H %P", *set(commits)).splitlines():
            sha, *ps = line.split()
            parents[sha] = ps[0] if ps else None
    best, best_metric = None, None
    for t in rows:
        if t["agent"] != "baseline" and t["commit_sha"] and best is not None and parents.get(t["commit_sha"]) != best:
            v.append(f"trial {t['number']} does not start from the best commit of its moment")
        if t["status"] == "keep":
            if best_metric is not None and not t["metric"] < best_metric:
                v.append(f"trial {t['number']} kept without beating {best_metric}")
            best, best_metric = t["commit_sha"], t["metric"]
    branch = git(repo, "rev-parse", f"refs/heads/autoresearch/{TAG}")
    if branch != best:
        v.append(f"autoresearch/{TAG} is {branch[:7]}, the best kept trial is {(best or '?')[:7]}")

    # nothing stale in .git, the user's checkout untouched, no process left
    locks = [str(p.relative_to(repo)) for p in (repo / ".git").rglob("*.lock")]
    locks += [str(p.relative_to(repo)) for p in (repo / ".git").glob("worktrees/*/locked")]
    if locks:
        v.append(f"stale locks in .git: {locks}")
    listing = git(repo, "worktree", "list", "--porcelain")
    if "prunable" in listing or "\nlocked" in listing:
        v.append(f"stale worktrees: {listing}")
    after = checkout_state(repo)
    for key in sorted(set(after) | set(c.before)):
        if after.get(key) != c.before.get(key):
            v.append(f"the user's checkout changed: {key}: {c.before.get(key)!r} -> {after.get(key)!r}")
    left = wait_no_processes(c.marker)
    if left:
        cmds = [Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
                for p in left if Path(f"/proc/{p}/cmdline").exists()]
        v.append(f"{len(left)} process(es) of the run still alive: {cmds}")


def check_duplicates(repo: Path, rows: list[sqlite3.Row]) -> list[str]:
    """A duplicate is the code of the measured trial it names, and carries that trial's figure."""
    by_number = {t["number"]: t for t in rows}
    out = []
    for t in rows:
        same = re.match(r"same code as trial (\d+)", t["reason"] or "") if t["status"] == "duplicate" else None
        first = by_number.get(int(same[1])) if same else None
        if same and (first is None or first["status"] in ("interrupted", "rejected", "agent_error", "running")
                     or first["metric"] != t["metric"]
                     or git(repo, "rev-parse", f"{first['commit_sha']}^{{tree}}")
                     != git(repo, "rev-parse", f"{t['commit_sha']}^{{tree}}")):
            out.append(f"trial {t['number']} is recorded as a duplicate of trial {same[1]}, which is other "
                       "code or has another figure")
    return out
