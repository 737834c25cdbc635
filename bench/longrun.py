#!/usr/bin/env python
"""A two-day run in minutes: what grows with the number of trials of one tag.

The blank template (an experiment of ~50 ms), driven through the real CLI in segments up to
each checkpoint (default 10, 100, 300, 700 trials) with the search agent; at each checkpoint
a few trials with a scripted CLI agent and one with the built-in LLM agent against a fake
OpenAI-compatible server on 127.0.0.1 (tests/fakes), then the commands a user runs. Printed
side by side per checkpoint:

- harness time per trial (wall from one trial's end to the next one's end, less its
  experiment), median over the segment's last 50 search trials, and the time a resumed `run`
  takes to start its first trial;
- the loop process's RSS (peak and at the end of the segment, sampled from /proc);
- the CLI agent's prompt file (AUTORESEARCH_PROMPT_FILE) and the LLM agent's first request
  (the JSON body) in characters;
- the disk: .autoresearch/<tag>/, .git, its refs and worktrees;
- the time of status, show N, report --out, space and serve (to its first page);
- whether results.tsv has one row per trial with a commit, and processes left behind.

    python bench/longrun.py                           # 10,100,300,700 in /tmp
    python bench/longrun.py --checkpoints 10,50 --dir /tmp/lr
    python bench/longrun.py --continuous llm          # one run of 700 LLM trials, serve beside it
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(ROOT / "tests"))

from fakes.llm_server import FakeLLM, Say  # noqa: E402

TAG = "long"
RANDOM = random.Random(0)
ENV = {**os.environ, "PYTHONPATH": str(SRC), "OPENAI_API_KEY": "dummy", "AUTORESEARCH_LLM_RETRIES": "1"}

AGENT = r'''import os, random, re, sys
from pathlib import Path
prompt = Path(os.environ["AUTORESEARCH_PROMPT_FILE"])
with open(sys.argv[1], "a") as log:
    log.write(f"{os.environ['AUTORESEARCH_TRIAL']} {prompt.stat().st_size}\n")
path = Path("experiment.py")
steps, warmup = random.randint(10, 400), random.randint(0, 50)  # (few values: most would be duplicates)
text = re.sub(r"^STEPS = \d+", f"STEPS = {steps}", path.read_text(), flags=re.M)
path.write_text(re.sub(r"^WARMUP = \d+", f"WARMUP = {warmup}", text, flags=re.M))
Path(os.environ["AUTORESEARCH_DESCRIPTION_FILE"]).write_text(f"STEPS = {steps}, WARMUP = {warmup}, by the scripted agent")
'''


def cli(*args: str, timeout: float = 1800) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "autoresearch", *args], env=ENV, capture_output=True,
                       text=True, timeout=timeout)
    return time.perf_counter() - t0, p


def rss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else 0.0


def rows(repo: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"file:{repo / '.autoresearch' / TAG / 'ledger.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM trials ORDER BY number").fetchall()
    finally:
        db.close()


def run(repo: Path, n: int, *agent: str) -> dict[str, float]:
    """`run --trials n` with the agent; RSS sampled; the time to its first trial's start."""
    before = len(rows(repo)) if (repo / ".autoresearch" / TAG / "ledger.sqlite").exists() else 0
    began = time.time()
    p = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", TAG,
                          "--trials", str(n), *agent], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    samples: list[float] = []
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(p.stdout or []), daemon=True)
    reader.start()
    while p.poll() is None:
        samples.append(rss_mb(p.pid))
        time.sleep(0.25)
    reader.join()
    if p.returncode:
        sys.exit(f"run failed ({p.returncode}):\n{''.join(out[-30:])}")
    new = rows(repo)[before:]
    first = min((r["started"] for r in new), default=began)
    samples = [s for s in samples if s] or [0.0]
    return {"wall": time.time() - began, "first": first - began, "rss_peak": max(samples),
            "rss_end": samples[-1]}


def harness_ms(repo: Path, last: int = 50) -> float:
    """Median, over the last `last` search trials, of wall per trial less its experiment."""
    rs = [r for r in rows(repo) if r["ended"]]
    gaps = [(b["ended"] - a["ended"] - b["run_seconds"]) * 1000 for a, b in zip(rs, rs[1:], strict=False)
            if b["agent"] == "search" and a["agent"] in ("search", "baseline")]
    return statistics.median(gaps[-last:]) if gaps else float("nan")


def du(path: Path) -> float:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0]) / 1e6


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout


def first_requests(fake: FakeLLM) -> list[int]:
    """The size of each proposal's first request (its messages hold no tool result yet)."""
    return [len(json.dumps(r["body"])) for r in fake.requests
            if r["path"].endswith("/chat/completions")
            and not any(m.get("role") == "tool" for m in r["body"].get("messages", []))]


def llm_step(body: dict) -> Say:
    """Edit STEPS in the first turn, finish in the next."""
    messages = body.get("messages", [])
    if any(m.get("role") == "tool" for m in messages):
        return Say("", [("finish", {"description": "STEPS changed by the fake model"})])
    text = "\n".join(str(m.get("content")) for m in messages)
    m = re.search(r"^STEPS = \d+  # search.*\nWARMUP = \d+", text, re.M)  # (in the best code shown)
    old = m.group(0) if m else "STEPS = 50"
    new = re.sub(r"STEPS = \d+", f"STEPS = {RANDOM.randint(10, 400)}", old)  # (the same change again
    new = re.sub(r"WARMUP = \d+", f"WARMUP = {RANDOM.randint(0, 50)}", new)  # is a duplicate, paced)
    return Say("", [("edit_file", {"path": "experiment.py", "search": old, "replace": new})])


def serve_time(repo: Path) -> tuple[float, int]:
    """Seconds from `serve --port 0` to its page fetched, and the page's size."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "autoresearch", "serve", str(repo), "--tag", TAG, "--port", "0"],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = ""
        assert p.stdout
        for line in p.stdout:
            if m := re.search(r"http://127\.0\.0\.1:\d+\S*", line):
                url = m.group(0)
                break
        if not url:
            return float("nan"), 0
        with urllib.request.urlopen(url, timeout=300) as r:
            page = r.read()
        return time.perf_counter() - t0, len(page)
    finally:
        p.terminate()
        p.wait(10)


def leftovers(repo: Path) -> list[str]:
    """Processes (other than this one) whose command line or cwd is in the task's folder."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if str(repo) in cmd or cwd.startswith(str(repo)):
            found.append(f"{d.name}: {cmd[:80]}")
    return found


def checkpoint(repo: Path, scratch: Path, fake: FakeLLM, seg: dict[str, float]) -> dict[str, object]:
    prompts = scratch / "prompts.txt"
    prompts.write_text("")
    agent_cmd = f"{sys.executable} {scratch / 'agent.py'} {prompts}"
    run(repo, 3, "--agent", "cli", "--agent-cmd", agent_cmd)
    prompt_size = max(int(line.split()[1]) for line in prompts.read_text().split("\n") if line)
    fake.requests.clear()
    run(repo, 1, "--agent", "llm", "--model", "openai/x", "--base-url", fake.url)
    req = max(first_requests(fake), default=0)
    rs = rows(repo)
    n = len(rs) - 1
    out = Path(tempfile.mkdtemp(dir=scratch))
    t_status, p_status = cli("status", str(repo), "--tag", TAG)
    t_show, _ = cli("show", str(n // 2), str(repo), "--tag", TAG)
    t_report, p_report = cli("report", str(repo), "--tag", TAG, "--out", str(out))
    t_space, _ = cli("space", str(repo))
    t_serve, page = serve_time(repo)
    tsv = (repo / ".autoresearch" / TAG / "results.tsv").read_text().splitlines()
    with_commit = sum(1 for r in rs if r["commit_sha"] and r["status"] != "running")
    return {
        "trials": n, "harness_ms": harness_ms(repo), "resume_s": seg["first"],
        "rss_peak": seg["rss_peak"], "rss_end": seg["rss_end"],
        "cli_prompt": prompt_size, "llm_request": req,
        "ledger_mb": du(repo / ".autoresearch" / TAG), "git_mb": du(repo / ".git"),
        "refs": len(git(repo, "for-each-ref").splitlines()),
        "worktrees": len(git(repo, "worktree", "list").splitlines()),
        "loose": int(re.search(r"^count: (\d+)", git(repo, "count-objects", "-v"), re.M).group(1)),  # type: ignore[union-attr]
        "status_s": t_status, "status_lines": len(p_status.stdout.splitlines()),
        "show_s": t_show, "report_s": t_report, "report_rc": p_report.returncode,
        "html_kb": sum(f.stat().st_size for f in out.iterdir()) / 1e3, "space_s": t_space,
        "serve_s": t_serve, "page_kb": page / 1e3,
        "tsv_ok": len(tsv) - 1 == with_commit, "left": len(leftovers(repo)),
    }


class Browser(threading.Thread):
    """A browser left open on serve's page: state.json every 2 s, the page again when its
    version changes (as the page's script does). `pages`: (trials, seconds, bytes) per reload."""

    def __init__(self, server: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.server, self.stop, self.pages = server, threading.Event(), []  # type: ignore[var-annotated]
        self.start()

    def run(self) -> None:
        url = ""
        for line in self.server.stdout or []:
            if m := re.search(r"http://127\.0\.0\.1:\d+\S*", line):
                url = m.group(0).rstrip("/") + "/"
                break
        version = None
        while url and not self.stop.wait(2):
            try:
                with urllib.request.urlopen(url + "state.json", timeout=60) as r:
                    state = json.load(r)
                if state["version"] != version:
                    version = state["version"]
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(url, timeout=300) as r:
                        size = len(r.read())
                    self.pages.append((state["trials"], time.perf_counter() - t0, size))
            except OSError:
                continue


def continuous(scratch: Path, agent: str, marks: list[int]) -> None:
    """One `run --trials max(marks)` of `agent`, with `serve` following it: the RSS of both and
    the harness time per trial as the trial count passes each mark."""
    repo = scratch / f"blank-{agent}"
    _, p = cli("init", str(repo), "--template", "blank")
    if p.returncode:
        sys.exit(p.stdout + p.stderr)
    (scratch / "agent.py").write_text(AGENT)
    prompts = scratch / f"prompts-{agent}.txt"
    prompts.write_text("")
    with FakeLLM("openai", default=llm_step, model="x", listed=["x"]) as fake:
        args = {"search": ["--agent", "search"],
                "cli": ["--agent", "cli", "--agent-cmd", f"{sys.executable} {scratch / 'agent.py'} {prompts}"],
                "llm": ["--agent", "llm", "--model", "openai/x", "--base-url", fake.url]}[agent]
        loop = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", TAG,
                                 "--trials", str(max(marks) + 3), *args], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        server = subprocess.Popen([sys.executable, "-m", "autoresearch", "serve", str(repo), "--tag", TAG,
                                   "--port", "0"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        browser = Browser(server)
        seen: dict[int, tuple[float, float, int]] = {}
        try:
            while loop.poll() is None:
                time.sleep(0.5)
                try:
                    n = len(rows(repo)) - 1
                except sqlite3.Error:
                    continue
                for mark in marks:
                    if n >= mark and mark not in seen:
                        seen[mark] = (rss_mb(loop.pid), rss_mb(server.pid), max(first_requests(fake)[-3:], default=0))
                fake.requests[:] = fake.requests[-50:]  # (the fake keeps every request otherwise)
        finally:
            browser.stop.set()
            server.terminate()
            server.wait(10)
            if loop.poll() is None:
                loop.terminate()
                loop.wait(60)
        if loop.returncode:
            sys.exit(f"run failed ({loop.returncode})")
        rs = [r for r in rows(repo) if r["ended"]]
        sizes = {int(a): int(b) for a, b in (x.split() for x in prompts.read_text().splitlines())}
        print(f"\n{agent} agent, one run of {max(marks)} trials, serve following it ({repo})")
        print(f"{'trials':>8}{'loop RSS MB':>13}{'serve RSS MB':>14}{'harness ms':>12}{'prompt chars':>14}"
              f"{'page s':>8}{'page KB':>9}")
        for mark in marks:
            window = [(b["ended"] - a["ended"] - b["run_seconds"]) * 1000
                      for a, b in zip(rs, rs[1:], strict=False) if mark - 10 < b["number"] <= mark]
            loop_rss, serve_rss, request = seen.get(mark, (0.0, 0.0, 0))
            pages = [(secs, size) for n, secs, size in browser.pages if mark - 20 < n <= mark + 5]
            page_s = statistics.median(x for x, _ in pages) if pages else float("nan")
            page_kb = max((y for _, y in pages), default=0) / 1e3
            print(f"{mark:>8}{loop_rss:>13.1f}{serve_rss:>14.1f}{statistics.median(window) if window else 0:>12.1f}"
                  f"{sizes.get(mark, request):>14}{page_s:>8.2f}{page_kb:>9.0f}")
        print(f"(the page, as a browser left open: {len(browser.pages)} reloads)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", default="10,100,300,700")
    parser.add_argument("--dir", default="")
    parser.add_argument("--continuous", choices=["search", "cli", "llm"],
                        help="instead: one run of this agent to the last checkpoint, serve beside it")
    args = parser.parse_args()
    marks = [int(x) for x in args.checkpoints.split(",")]
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="longrun-"))
    scratch.mkdir(parents=True, exist_ok=True)
    if args.continuous:
        return continuous(scratch, args.continuous, marks)
    repo = scratch / "blank"
    _, p = cli("init", str(repo), "--template", "blank")
    if p.returncode:
        sys.exit(p.stdout + p.stderr)
    (scratch / "agent.py").write_text(AGENT)
    results = []
    with FakeLLM("openai", default=llm_step, model="x", listed=["x"]) as fake:
        for mark in marks:
            done = len(rows(repo)) - 1 if (repo / ".autoresearch" / TAG / "ledger.sqlite").exists() else 0
            seg = run(repo, max(1, mark - done), "--agent", "search")
            results.append(checkpoint(repo, scratch, fake, seg))
            print(json.dumps(results[-1]), flush=True)
    print(f"\nblank template, search agent, in {scratch}; each checkpoint then adds 3 CLI and 1 LLM trials")
    keys = list(results[0])
    print(f"{'':<14}" + "".join(f"{str(r['trials']):>12}" for r in results))
    for k in keys[1:]:
        cells = "".join(f"{v:>12.3g}" if isinstance(v, float) else f"{v!s:>12}" for v in (r[k] for r in results))
        print(f"{k:<14}{cells}")


if __name__ == "__main__":
    main()
