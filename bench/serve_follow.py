"""What `autoresearch serve` costs a page that follows a long run, per update (a trial started
or finished): the bytes sent and the server's time, for the old way (the page reloaded itself:
the whole page, table and plot rebuilt and sent) and the new one (the page asks update.json for
what changed and fetches progress.png at most every PLOT_EVERY seconds), side by side.

The ledger is written with the library's own Ledger, as the loop writes it (a real git
repository, a commit for every kept trial so that the page shows its diff, a log for every
crash), then trials are added one at a time while a real server on 127.0.0.1 answers.

    python bench/serve_follow.py [--trials 2000] [--updates 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from autoresearch.ledger import Ledger  # noqa: E402
from autoresearch.records import Status, Trial  # noqa: E402
from autoresearch.report.follow import PLOT_EVERY  # noqa: E402
from autoresearch.report.serve import make_server  # noqa: E402

TOML = """name = "follow"
editable = ["exp.py"]
command = "python exp.py"
time_budget = 1
timeout = 10
[metric]
name = "loss"
goal = "minimize"
record = ["peak_vram_mb", "num_steps"]
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


class Writer:
    """Trials written as the loop writes them: begin (running), then finish."""

    def __init__(self, repo: Path) -> None:
        self.repo, self.rng = repo, random.Random(0)
        self.led = Ledger.open(repo, "t", "loss")
        self.led.set_meta("metric_name", "loss")
        self.led.set_meta("goal", "minimize")
        self.led.acquire()  # (a loop holds the tag)
        self.best, self.head, self.n = 10.0, git(repo, "rev-parse", "HEAD"), 0

    def begin(self) -> Trial:
        t = Trial(self.n, Status.RUNNING, "baseline" if self.n == 0 else
                  f"X={self.rng.uniform(0, 5):.4f}, LR={10 ** self.rng.uniform(-4, -1):.2e}, "
                  f"DEPTH={self.rng.randint(2, 12)}: search (tpe), trial {self.n}",
                  agent="search", parent=self.head, started=time.time(), seed=self.n)
        self.led.begin(t)
        self.n += 1
        return t

    def finish(self, t: Trial) -> None:
        roll, loss = self.rng.random(), self.best * self.rng.uniform(0.97, 1.3)
        log = self.repo / ".autoresearch" / "t" / "logs" / f"{t.number}.log"
        if t.number and roll < 0.05:
            log.write_text("".join(f"step {i} loss 3.2\n" for i in range(200)) + "Traceback: boom\n")
            done = t.with_(status=Status.CRASH, reason="exit code 1", log_path=str(log))
        elif t.number == 0 or loss < self.best * 0.995:
            (self.repo / "exp.py").write_text(f"X = {loss}\n" + "# a line\n" * 40)
            git(self.repo, "commit", "-qam", t.description)
            commit = git(self.repo, "rev-parse", "HEAD")
            done = t.with_(status=Status.KEEP, metric=loss, commit=commit, log_path=str(log),
                           figures={"loss": loss, "peak_vram_mb": 2048.0, "num_steps": 900})
            self.best, self.head = loss, commit
        else:
            done = t.with_(status=Status.DISCARD, metric=loss, commit=self.head[:7] + "0" * 33,
                           figures={"loss": loss, "peak_vram_mb": 2048.0, "num_steps": 900})
        self.led.finish(done.with_(ended=time.time(), run_seconds=0.01))


def get(url: str) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
    return body, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--updates", type=int, default=10, help="trials added while the page follows")
    args = ap.parse_args()
    repo = Path(tempfile.mkdtemp(prefix="ar-follow-")) / "task"
    repo.mkdir()
    (repo / "autoresearch.toml").write_text(TOML)
    (repo / "exp.py").write_text("X = 1\n")
    (repo / ".gitignore").write_text(".autoresearch/\n")
    git(repo, "init", "-q")
    git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "start", "--allow-empty")
    git(repo, "config", "user.name", "bench")
    git(repo, "config", "user.email", "bench@example.com")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "task")
    w = Writer(repo)
    t0 = time.perf_counter()
    for _ in range(args.trials):
        w.finish(w.begin())
    print(f"ledger: {args.trials} trials written in {time.perf_counter() - t0:.1f} s "
          f"({sum(t.status is Status.KEEP for t in w.led.trials())} kept)")

    servers = [make_server(repo, "t", port=0) for _ in range(2)]  # each its own caches: old, new
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    base, new_base = servers[0].url, servers[1].url
    get(new_base)  # (the new page's first load)
    page, first = get(base)
    version = page.split(b'data-version="', 1)[1].split(b'"', 1)[0].decode()
    print(f"first load: page {len(page):,} bytes in {first:.2f} s")
    old: list[tuple[int, float]] = []
    new: list[tuple[int, float]] = []
    for i in range(2 * args.updates):  # a trial starts, then finishes: two updates each
        if i % 2 == 0:
            running = w.begin()
        else:
            w.finish(running)
        # each page polls state.json, sees a new version, then: the new one asks what changed,
        state, state_took = get(new_base + "state.json")
        body, took = get(new_base + f"update.json?v={version}")
        assert b'"reload"' not in body, body  # (what changed, not "load the whole page")
        new.append((len(state) + len(body), state_took + took))
        state, state_took = get(base + "state.json")
        page, took = get(base)  # the old one reloaded itself: the whole page, rebuilt
        old.append((len(state) + len(page), state_took + took))
        version = page.split(b'data-version="', 1)[1].split(b'"', 1)[0].decode()
    png, png_took = get(new_base + f"progress.png?v={version}")  # (drawn for this version)
    for server in servers:
        server.shutdown()
    w.led.close()

    def line(name: str, rows: list[tuple[int, float]]) -> str:
        return (f"{name:<34} {statistics.mean(b for b, _ in rows):>12,.0f} "
                f"{1000 * statistics.median(s for _, s in rows):>10.0f} {1000 * max(s for _, s in rows):>9.0f}")

    print(f"\n{2 * args.updates} updates at {args.trials} trials     bytes/update  median ms    max ms")
    print(line("old: state.json + the whole page", old))
    print(line("new: state.json + update.json", new))
    print(f"{'new: + progress.png (at most every':<34} {len(png):>12,} {1000 * png_took:>10.0f}   "
          f"(once per {PLOT_EVERY:.0f} s)")
    print(f"bytes ratio old/new (without the plot): {statistics.mean(b for b, _ in old) / statistics.mean(b for b, _ in new):.0f}x")


if __name__ == "__main__":
    main()
