"""A full disk or an unwritable ledger folder: one clear line, a clean stop (exit 1, no process
left), nothing half-written (results.tsv whole, the ledger intact), and a resume that works
once there is room again.

How the faults are made, for real: a small tmpfs mounted on the task's .autoresearch folder
(needs root or CAP_SYS_ADMIN; skipped otherwise), a read-only bind mount of the ledger folder
(same), and RLIMIT_FSIZE on the loop's process (works for any user: writes past the limit fail
with EFBIG, as Python ignores SIGXFSZ). chmod cannot stand in: the suite may run as root.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent


def owned(folder: Path) -> list[int]:
    """Live processes started by the loop of this ledger folder (their AUTORESEARCH_OWNER)."""
    needle = f"AUTORESEARCH_OWNER={folder}".encode()
    pids = []
    for entry in os.scandir("/proc"):
        try:
            env = Path(f"/proc/{entry.name}/environ").read_bytes() if entry.name.isdigit() else b""
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0] if env else "Z"
        except OSError:
            continue
        if state != "Z" and any(item.startswith(needle) for item in env.split(b"\0")):
            pids.append(int(entry.name))
    return pids


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def tmpfs() -> Iterator[callable]:  # type: ignore[type-arg]
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
            pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the file system holding `folder` to the last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def one_clear_line(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("autoresearch: error:") and any(n in last for n in needles), r.stderr


def whole(repo: Path, tag: str) -> None:
    """Nothing half-written: the ledger is intact and results.tsv is a whole file, with no
    temporary file beside it."""
    d = repo / ".autoresearch" / tag
    db = sqlite3.connect(f"file:{d / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    text = (d / "results.tsv").read_text()
    assert text.startswith("commit\tloss\tmemory_gb\tstatus\tdescription\n") and text.endswith("\n")
    assert all(line.count("\t") == 4 for line in text.splitlines())
    assert not list(d.glob("*.tmp"))


def agent_for(tmp_path: Path) -> str:
    return script_agent(tmp_path / "a.sh", 'sed -i "s/^X = .*/X = 1.$AUTORESEARCH_TRIAL/" exp.py\necho "trial $AUTORESEARCH_TRIAL"\n')


def test_disk_already_full(tmp_path: Path, tmpfs) -> None:  # noqa: ANN001
    repo = make_task(tmp_path / "r")
    fill(tmpfs(repo / ".autoresearch", "256k"))
    head = git(repo, "rev-parse", "HEAD")
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent_for(tmp_path), "--trials", "1")
    one_clear_line(r, "disk is full", "No space left")
    assert git(repo, "branch", "--list", "autoresearch/*") == ""  # nothing begun
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""


def test_disk_fills_up_while_a_trial_runs(tmp_path: Path, tmpfs) -> None:  # noqa: ANN001
    marker = tmp_path / "running"
    exp = (f"import os, pathlib, time\nX = 3.0\nif os.environ['AUTORESEARCH_TRIAL'] == '2':\n"
           f"    pathlib.Path({str(marker)!r}).touch(); time.sleep(1.5)\nprint(f'loss: {{X}}')\n")
    repo = make_task(tmp_path / "r", experiment=exp)
    folder = tmpfs(repo / ".autoresearch", "2m")
    agent = agent_for(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t", "--agent", "cli",
                             "--agent-cmd", agent, "--trials", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert marker.exists(), proc.communicate()
    filler = fill(folder)  # someone else fills the disk while trial 2 runs
    out, err = proc.communicate(timeout=60)
    one_clear_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                   "disk is full", "No space left")
    assert not owned(folder / "t")  # the experiment in flight was killed
    whole(repo, "t")
    filler.unlink()  # room again: the tag resumes
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    whole(repo, "t")
    db = sqlite3.connect(repo / ".autoresearch/t/ledger.sqlite")
    rows = db.execute("SELECT number, status FROM trials ORDER BY number").fetchall()
    db.close()
    assert [n for n, _ in rows] == list(range(len(rows))) and rows[0][1] == "keep" and rows[1][1] == "keep"
    assert rows[2][1] in ("crash", "interrupted") and rows[-1][1] in ("keep", "discard")
    assert (repo / ".autoresearch/t/results.tsv").read_text().count("\n") == 1 + sum(1 for _ in rows)


def test_ledger_folder_read_only(tmp_path: Path) -> None:
    repo = make_task(tmp_path / "r")
    agent = agent_for(tmp_path)
    assert cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1").returncode == 0
    folder = repo / ".autoresearch" / "t"
    before = (folder / "results.tsv").read_bytes()
    if not _mount("--bind", str(folder), str(folder)):
        pytest.skip("cannot bind-mount here (needs root or CAP_SYS_ADMIN)")
    try:
        assert _mount("-o", "remount,bind,ro", str(folder))
        r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
        one_clear_line(r, "Read-only", "readonly")
        assert (folder / "results.tsv").read_bytes() == before
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    whole(repo, "t")


@pytest.mark.parametrize("kib", [40, pytest.param(160, marks=pytest.mark.slow)])
def test_file_size_limit_stops_the_loop_cleanly(tmp_path: Path, kib: int) -> None:
    """RLIMIT_FSIZE (any user, no mount): no file of the loop may grow past the limit, so a
    write fails at the first run's start (40 KiB) or after some trials (160 KiB, the ledger's
    write-ahead log fills). The loop stops with one line; it resumes once the limit is gone."""
    repo = make_task(tmp_path / "r")
    agent = agent_for(tmp_path)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))

    r = subprocess.run([sys.executable, "-m", "autoresearch", "run", str(repo), "--tag", "t", "--agent", "cli",
                        "--agent-cmd", agent, "--trials", "200"], capture_output=True, text=True, preexec_fn=limit,
                       timeout=300)
    one_clear_line(r, "disk is full", "File too large", "disk I/O error")
    if (repo / ".autoresearch/t/results.tsv").exists():
        whole(repo, "t")
    assert not owned(repo / ".autoresearch" / "t")
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    whole(repo, "t")


def test_an_experiment_that_fills_the_disk_through_its_run_folder(tmp_path: Path, tmpfs) -> None:  # noqa: ANN001
    """The run folder is where an experiment may write: bounded by the disk only. A trial that
    fills the disk fails; its folder is removed (when the loop records it, or on resume if the
    loop had to stop), so the next trials have room again."""
    exp = ("import os\nX = 3.0\nif os.environ['AUTORESEARCH_TRIAL'] == '2':\n"
           "    f = open(os.path.join(os.environ['AUTORESEARCH_RUN_DIR'], 'junk'), 'wb')\n"
           "    try:\n        while True: f.write(b'0' * 65536); f.flush()\n    except OSError: pass\n"
           "print(f'loss: {X}')\n")
    repo = make_task(tmp_path / "r", experiment=exp)
    tmpfs(repo / ".autoresearch", "3m")
    agent = agent_for(tmp_path)
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "3")
    if r.returncode != 0:
        one_clear_line(r, "disk is full", "No space left")
        r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    whole(repo, "t")
    assert not (repo / ".autoresearch/t/runs/2").exists()
