"""Eight writers on one ledger at once: threads sharing one Ledger (the workers of one loop),
and separate processes each opening it. Nothing is lost, nothing is torn, and results.tsv is
exactly what the ledger holds when the last writer is done. The default run writes 40 trials;
the slow one (pytest -m slow) 500: each trial is three fsync'd commits and an fsync'd rewrite of
results.tsv, about 27 ms on the reference machine, and the writers take turns."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from autoresearch.ledger import Ledger
from autoresearch.records import Status, Trial

WRITERS = 8
STATUSES = [Status.KEEP, Status.DISCARD, Status.CRASH, Status.TIMEOUT, Status.REJECTED]


def lifecycle(led: Ledger, number: int) -> None:
    """One trial as the loop writes it: begin, update with its commit, finish."""
    t = Trial(number=number, status=Status.RUNNING, description=f"trial {number}\twith a tab", agent="w")
    led.begin(t)
    t = t.with_(commit=f"{number:040x}")
    led.update(t)
    status = STATUSES[number % len(STATUSES)]
    led.finish(t.with_(status=status, metric=float(number) if status in (Status.KEEP, Status.DISCARD) else None,
                       figures={"peak_vram_mb": 1024.0 * (number % 4)}))


def check(directory: Path, total: int) -> None:
    led = Ledger(directory, "loss")
    try:
        trials = led.trials()
        assert [t.number for t in trials] == list(range(total)), "lost or extra trials"
        for t in trials:
            assert t.status is STATUSES[t.number % len(STATUSES)] and t.commit == f"{t.number:040x}"
        seqs = [r[0] for r in led._db.execute("SELECT seq FROM trials ORDER BY seq")]
        assert seqs == list(range(1, total + 1)), "the finish order has gaps or repeats"
        assert led._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        text = (directory / "results.tsv").read_text()
        assert text == led.tsv_text(), "results.tsv is not the ledger's"
        lines = text.splitlines()
        assert len(lines) == total + 1 and all(line.count("\t") == 4 for line in lines)
        assert not list(directory.glob("*.tmp")), "temporary files left"
    finally:
        led.close()


SIZES = [40, pytest.param(500, marks=pytest.mark.slow)]


@pytest.mark.parametrize("total", SIZES)
def test_eight_threads_share_one_ledger(tmp_path: Path, total: int) -> None:
    led = Ledger(tmp_path, "loss")
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def writer(w: int) -> None:
        try:
            start.wait()
            for number in range(w, total, WRITERS):
                lifecycle(led, number)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    led.close()
    assert not errors, errors[:3]
    check(tmp_path, total)


WRITER = textwrap.dedent("""\
    import sys, time
    sys.path.insert(0, sys.argv[4])
    from test_concurrency import lifecycle
    from autoresearch.ledger import Ledger
    led = Ledger(sys.argv[1], "loss")
    w, writers, trials = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[6])
    while time.time() < float(sys.argv[5]):  # start together
        time.sleep(0.001)
    for number in range(w, trials, writers):
        lifecycle(led, number)
    led.close()
    """)


@pytest.mark.parametrize("total", SIZES)
def test_eight_processes_open_the_same_ledger(tmp_path: Path, total: int) -> None:
    import time

    Ledger(tmp_path, "loss").close()
    go = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), str(WRITERS),
                               str(Path(__file__).parent), str(go), str(total)], stderr=subprocess.PIPE, text=True)
             for w in range(WRITERS)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-500:] for e in errs if e]
    check(tmp_path, total)


@pytest.mark.parametrize("writers", [8])
def test_concurrent_writers_never_show_a_torn_results_tsv(tmp_path: Path, writers: int) -> None:
    """A reader polling results.tsv while the threads write always sees a whole file."""
    led = Ledger(tmp_path, "loss")
    done = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        while not done.is_set():
            try:
                text = (tmp_path / "results.tsv").read_text()
            except FileNotFoundError:
                continue
            if not text.endswith("\n") or any(line.count("\t") != 4 for line in text.splitlines()):
                seen.append(text)

    r = threading.Thread(target=reader)
    r.start()
    threads = [threading.Thread(target=lambda w=w: [lifecycle(led, n) for n in range(w, 48, writers)])
               for w in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    done.set()
    r.join()
    led.close()
    assert not seen


def test_a_ledger_sees_what_another_connection_wrote(tmp_path: Path) -> None:
    """`trials()` answers from what this Ledger read and wrote until another connection (a
    process finishing trials beside it, a restore) writes: then it reads the database again."""
    mine, other = Ledger(tmp_path, "loss"), Ledger(tmp_path, "loss")
    try:
        lifecycle(mine, 0)
        assert [(t.number, t.status) for t in mine.trials()] == [(0, Status.KEEP)]
        mine.begin(Trial(number=2, status=Status.RUNNING))  # begun out of order: still by number
        lifecycle(other, 1)
        assert [t.number for t in mine.trials()] == [0, 1, 2]
        assert mine.trials()[1].status is STATUSES[1] and mine.trials()[2].status is Status.RUNNING
        other._db.execute("UPDATE trials SET description='changed' WHERE number=0")
        assert mine.trials()[0].description == "changed"
        mine.finish(Trial(number=2, status=Status.CRASH, commit="2" * 40))
        assert other.trials()[2].status is Status.CRASH and mine.trials()[2].status is Status.CRASH
        assert (tmp_path / "results.tsv").read_text() == other.tsv_text() == mine.tsv_text()
    finally:
        mine.close()
        other.close()
