"""--backend ray on a real local Ray instance: `ray start --head` on 127.0.0.1 (one per module,
declaring 2 logical GPUs so that Ray's own GPU assignment is exercised), and `ray.init()` with no
address. Experiments report where they ran in their output, which comes back in the driver's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent
from test_scale import check_ledger_and_git

from autoresearch.ledger import Ledger
from autoresearch.records import Status
from autoresearch.sandbox import problem as sandbox_problem

pytest.importorskip("ray")

EXPERIMENT = """\
import os, socket, time
X = 10.0
S = 0.3
t0 = time.time()
print(f"cwd: {os.getcwd()}")
print(f"gpus: {os.environ.get('CUDA_VISIBLE_DEVICES')}")
try:  # the Ray head listens there: reachable unless the experiment has no network
    socket.create_connection(("127.0.0.1", int(os.environ.get("AR_PORT", "1"))), timeout=2).close()
    print("net: yes")
except OSError:
    print("net: no")
spot = os.path.join(os.environ["AR_SPOT"], os.environ["AUTORESEARCH_TAG"])
os.makedirs(spot, exist_ok=True)
n = os.environ["AUTORESEARCH_TRIAL"]
worker = up = os.getppid()  # the Ray worker that runs it: the nearest ancestor named ray::...
try:                        # (the command's reaper stands between; a sandbox hides it)
    for _ in range(5):
        if b"ray::" in open(f"/proc/{up}/cmdline", "rb").read():
            worker = up
            break
        up = int(open(f"/proc/{up}/stat").read().rsplit(")", 1)[1].split()[1])
except (OSError, ValueError):
    pass
with open(os.path.join(spot, f"{n}.{os.getpid()}.pid"), "w") as f:
    f.write(str(worker))
if os.environ.get("AUTORESEARCH_TAG") == "lost" and n == "1" and not os.path.exists(os.path.join(spot, "again")):
    open(os.path.join(spot, "again"), "w").close()
    time.sleep(60)  # the test kills this experiment's Ray worker meanwhile
if os.environ.get("AUTORESEARCH_TAG") in ("headless", "farhead") and n == "2":
    open(os.path.join(spot, "again"), "w").close()
    time.sleep(60)  # the test stops the whole cluster meanwhile
if os.environ.get("AUTORESEARCH_TAG") == "dead" and n != "0":  # every worker lost, as on a dead node
    import signal
    os.kill(worker, signal.SIGKILL)
    time.sleep(30)
time.sleep(S)
print(f"span: {t0} {time.time()}")
print(f"loss: {X}")
"""

AGENT = """\
sed -i "s/^X = .*/X = $((20 - AUTORESEARCH_TRIAL)).0/; s/^S = .*/S = ${AR_S:-0.3}/" exp.py
echo "X = $((20 - AUTORESEARCH_TRIAL))"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head on 127.0.0.1 (4 CPUs, 2 logical GPUs), private to this module, stopped by pid."""
    with _head() as (address, env, _):
        yield address, env


@contextlib.contextmanager
def _head() -> Iterator[tuple[str, dict[str, str], subprocess.Popen]]:
    tmp = Path(tempfile.mkdtemp(prefix="arr-", dir="/tmp"))  # short: Ray's socket paths
    (tmp / "spot").mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_TMPDIR=str(tmp), AR_SPOT=str(tmp / "spot"), AR_PORT=str(port))
    # Token authentication (Ray >= 2.52; on by default from 2.59 for local clusters), with a token
    # of this module's own: the head and every driver use it, whatever ~/.ray/auth_token holds
    # (one written there by an earlier local instance must not lock the tests out).
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    proc = _ray_start(env, tmp / "head.log", "--head", f"--port={port}", "--num-cpus=4", "--num-gpus=2",
                      "--include-dashboard=false")
    try:
        yield f"127.0.0.1:{port}", env, proc
    finally:
        proc.terminate()  # `ray start --block` stops the processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _ray_start(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    """`ray start ARGS --block` on 127.0.0.1 in a session of its own, once it is up."""
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    with open(log, "w") as out:
        proc = subprocess.Popen([ray_bin, "start", *args, "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                                 "--block"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while "--block" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return proc


def _task(tmp_path: Path, toml_extra: str = "", files: dict[str, str] | None = None) -> tuple[Path, str]:
    root = make_task(tmp_path / "task", toml_extra=toml_extra, experiment=EXPERIMENT, files=files)
    return root, script_agent(tmp_path / "agent.sh", AGENT)


def _rows(root: Path, tag: str) -> list:
    led = Ledger.read(root, tag)
    try:
        return led.trials()
    finally:
        led.close()


def _figure(log: str, name: str) -> str:
    return [line.split(": ", 1)[1] for line in log.splitlines() if line.startswith(f"{name}: ")][-1]


@pytest.mark.slow  # (a Ray head of its own: about 15 s; CI runs the slow tests too)
def test_trials_run_as_ray_tasks_on_a_cluster_address(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    address, env = ray_head
    root, agent = _task(tmp_path, toml_extra="setup = 'echo x >> \"$AR_SPOT/setup-$AUTORESEARCH_TAG\"'\n")
    r = cli("run", str(root), "--tag", "addr", "--agent", "cli", "--agent-cmd", agent, "--trials", "4",
            "--ray-address", address, env={**env, "AR_S": "1.5"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 workers, backend ray" in r.stdout  # one GPU per trial by default; the cluster has 2
    rows = check_ledger_and_git(root, "addr", 4)
    assert [t.metric for t in rows] == [10.0, 19.0, 18.0, 17.0, 16.0]
    spans = []
    for t in rows:  # each log came back into the driver's ledger
        log = (root / ".autoresearch" / "addr" / "logs" / f"{t.number}.log").read_text()
        assert not _figure(log, "cwd").startswith(str(root))  # it ran from the shipped code
        assert _figure(log, "gpus") in ("0", "1")  # the GPU Ray granted
        assert _figure(log, "net") == "yes"
        spans.append(tuple(float(x) for x in _figure(log, "span").split()))
    assert any(a[0] < b[1] and b[0] < a[1] for a in spans for b in spans if a != b)
    assert (Path(env["AR_SPOT"]) / "setup-addr").read_text() == "x\n"  # once on the node


@pytest.mark.extended
def test_a_killed_ray_worker_is_recorded_and_the_trial_requeued_once(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    address, env = ray_head
    root, agent = _task(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(root), "--tag", "lost",
                             "--agent", "cli", "--agent-cmd", agent, "--trials", "2",
                             "--ray-address", address, "--workers", "1", "--trial-resources", "cpu=1"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    spot = Path(env["AR_SPOT"]) / "lost"
    deadline = time.monotonic() + 120
    while not (spot / "again").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    pidfile = next(spot.glob("1.*.pid"))
    worker = int(pidfile.read_text())
    assert b"ray::" in Path(f"/proc/{worker}/cmdline").read_bytes()  # a Ray worker process
    os.kill(worker, signal.SIGKILL)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert "its worker was lost" in out and "re-queued once" in out
    # what Ray prints of it on the driver ("(raylet) A worker died ...") is plain text, as the
    # loop's own lines are: its colour codes ended up in nohup logs
    assert "A worker died" in out and "\x1b" not in out, out
    rows = check_ledger_and_git(root, "lost", 2)
    one = rows[1]
    assert one.status is Status.DISCARD and one.metric == 19.0
    assert len(one.extra["lost_workers"]) == 1 and "WorkerCrashedError" in one.extra["lost_workers"][0]
    # the note heads the log, the second attempt's output after it (it came last, under an
    # empty "second attempt" section, as if that attempt had printed nothing)
    log = (root / ".autoresearch" / "lost" / "logs" / "1.log").read_text()
    assert log.startswith("=== autoresearch: second attempt, whose output follows; the worker of the first "
                          "was lost: WorkerCrashedError"), log
    assert "loss: 19" in log.split("===", 2)[2], log
    shown = cli("show", "1", str(root), "--tag", "lost").stdout
    assert "lost worker (the trial was run again): WorkerCrashedError" in shown
    assert len(list(spot.glob("1.*.pid"))) == 2  # it ran twice, trial 2 once
    assert len(list(spot.glob("2.*.pid"))) == 1


@pytest.mark.slow  # (a Ray head of its own, stopped under the loop: about 30 s)
def test_a_cluster_whose_head_goes_away_ends_the_loop_in_its_own_words(tmp_path: Path) -> None:
    """The head killed mid-trial: Ray ends a driver whose head is gone a minute later (exit
    1, a line of Ray's), after it had run the lost trial a second time into the void. The loop
    sees the head gone, records what was in flight as interrupted, and says so itself at once."""
    with _head() as (address, env, head):
        root, agent = _task(tmp_path)
        proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(root), "--tag", "headless",
                                 "--agent", "cli", "--agent-cmd", agent, "--trials", "5", "--ray-address", address,
                                 "--workers", "1", "--trial-resources", "cpu=1"],
                                env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        spot = Path(env["AR_SPOT"]) / "headless"
        deadline = time.monotonic() + 120
        while not (spot / "again").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        os.killpg(head.pid, signal.SIGKILL)  # its machine gone: the head's processes, not the module's
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=120)
        runs = len(list(spot.glob("2.*.pid")))  # (the head's folder goes with it)
    assert proc.returncode == 1, out + err
    assert time.monotonic() - stopped < 30, err  # (Ray's own end comes 60 s after its head's)
    last = err.strip().splitlines()[-1]
    assert last.startswith("autoresearch: error: the Ray cluster's head") and "nothing answers" in last, err
    assert "`run --tag` goes on once the cluster is back" in last
    rows = _rows(root, "headless")
    assert [t.status for t in rows[:3]] == [Status.KEEP, Status.DISCARD, Status.INTERRUPTED], rows
    assert rows[2].reason == "the Ray cluster's head went away while it ran"
    assert "lost_workers" not in rows[2].extra  # not run a second time
    assert not [t for t in rows if t.status is Status.RUNNING] and runs == 1


def test_the_head_is_asked_where_the_driver_reaches_it() -> None:
    """Through Ray Client the head's own GCS address may be a private one the driver cannot
    reach: the heartbeat asks the client address, or it would find a live head gone."""
    from autoresearch.backends.ray import head_address

    assert head_address("ray://10.0.0.1:10001", "192.168.1.5:6379") == "10.0.0.1:10001"
    assert head_address("ray://head.example:10001/", "192.168.1.5:6379") == "head.example:10001"
    for given in ("10.0.0.1:6379", None, "auto", "local"):
        assert head_address(given, "10.0.0.1:6379") == "10.0.0.1:6379"


@pytest.mark.slow  # (a head and a node of its own: about 45 s)
def test_a_head_gone_under_a_trial_on_another_node_is_found_by_the_heartbeat(tmp_path: Path) -> None:
    """The trial on a node of its own, the head killed: no worker is lost that the driver hears
    of, and Ray waited on the task until it ended the driver a minute later, with a line of its
    own. The backend asks every 10 s, while a task is out, whether the head still answers."""
    with _head() as (address, env, head):
        node = _ray_start(env, Path(env["RAY_TMPDIR"]) / "node.log", f"--address={address}",
                          "--num-cpus=2", '--resources={"far": 2}')
        try:
            root, agent = _task(tmp_path)
            proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(root), "--tag", "farhead",
                                     "--agent", "cli", "--agent-cmd", agent, "--trials", "5", "--ray-address",
                                     address, "--workers", "1", "--trial-resources", "far=1,cpu=1"],
                                    env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            spot = Path(env["AR_SPOT"]) / "farhead"
            deadline = time.monotonic() + 120
            while not (spot / "again").exists():
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
            os.killpg(head.pid, signal.SIGKILL)
            stopped = time.monotonic()
            out, err = proc.communicate(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
    assert proc.returncode == 1, out + err
    assert time.monotonic() - stopped < 40, err  # (Ray's own end comes 60 s after its head's)
    assert err.strip().splitlines()[-1].startswith("autoresearch: error: the Ray cluster's head"), err
    rows = _rows(root, "farhead")
    assert [t.status for t in rows] == [Status.KEEP, Status.DISCARD, Status.INTERRUPTED], rows
    assert rows[2].reason == "the Ray cluster's head went away while it ran"


@pytest.mark.slow  # (CI runs the slow tests too)
def test_workers_lost_trial_after_trial_stop_the_loop(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    """A node gone under a live head: every trial lost its worker twice, in a second, and the loop
    went on proposing, committing and losing them (53 crash trials in 65 s, all night)."""
    address, env = ray_head
    root, agent = _task(tmp_path)
    r = subprocess.run([sys.executable, "-m", "autoresearch", "run", str(root), "--tag", "dead", "--agent", "cli",
                        "--agent-cmd", agent, "--trials", "20", "--ray-address", address, "--workers", "1",
                        "--trial-resources", "cpu=1"], env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the Ray workers of 3 runs in a row were lost, each run twice" in r.stderr, r.stdout + r.stderr
    assert "\x1b" not in r.stdout + r.stderr, r.stdout + r.stderr  # (Ray's "(raylet) A worker died" lines too)
    rows = _rows(root, "dead")
    assert [t.status for t in rows] == [Status.KEEP] + [Status.CRASH] * 3, [(t.status, t.reason) for t in rows]
    assert all(len(t.extra["lost_workers"]) == 1 for t in rows[1:])


@pytest.mark.extended  # (time: the default suite keeps its siblings)
def test_a_trial_waiting_in_rays_queue_is_shown_queued_not_running(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    """Two trials in flight on a cluster that holds one at a time (cpu=4 of the head's 4): the
    second waits in Ray's queue for the first to end, and was shown `running` all the while
    (its time against the budget ticking, the live page saying "experiment running"). Now it is
    `queued` until a node starts it, on the terminal and on the page."""
    from autoresearch.report.serve import LiveReport

    address, env = ray_head
    root, agent = _task(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(root), "--tag", "wait", "--agent", "cli",
                             "--agent-cmd", agent, "--trials", "2", "--ray-address", address, "--workers", "2",
                             "--trial-resources", "cpu=4"], env={**os.environ, **env, "AR_S": "3"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    page: set[tuple[int, str]] = set()
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # (the tag's ledger not made yet)
            page |= {(r["number"], r["phase"]) for r in LiveReport(root, "wait").state()["running"]}
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    check_ledger_and_git(root, "wait", 2)
    said = {n: time.strptime(line[:8], "%H:%M:%S") for line in out.splitlines()
            for n in (1, 2) if line[9:].startswith(f"[trial {n}] running")}
    first, second = sorted(said, key=lambda n: said[n])
    # the second started when the first's 3 s experiment had ended, not when it was sent
    assert time.mktime(said[second]) - time.mktime(said[first]) >= 2, out
    assert f"[trial {second}] queued (in Ray" in out, out
    assert (second, "queued, waiting to start") in page and (second, "experiment running") in page, page
    log = (root / ".autoresearch" / "wait" / "logs" / f"{second}.log").read_text()
    assert _figure(log, "loss") == f"{20 - second}.0"  # (the log that came back replaced the driver's line)


EVALUATE = """\
import json, os
out = json.load(open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "out.json")))
json.dump({"loss": out["x"] * 2}, open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "metrics.json"), "w"))
"""


@pytest.mark.slow  # (CI runs the slow tests too)
@pytest.mark.parametrize("where", ["run-folder", "working-folder"])
def test_an_evaluator_and_a_metric_file_work_on_ray(ray_head, tmp_path: Path, where: str) -> None:  # noqa: ANN001
    """The evaluator may write the metric file in the run folder or in its working folder, as on
    the local backend; on a Ray worker the working folder was not looked in: every trial crashed."""
    address, env = ray_head
    experiment = EXPERIMENT.replace('print(f"loss: {X}")', 'import json\n'
                                    'json.dump({"x": X}, open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "out.json"), "w"))')
    evaluate = EVALUATE if where == "run-folder" else EVALUATE.replace(
        'open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "metrics.json"), "w")', 'open("metrics.json", "w")')
    root = make_task(tmp_path / "task", experiment=experiment, files={"evaluate.py": evaluate},
                     toml_extra='evaluate = "python evaluate.py"\n[metric]\nname = "loss"\ngoal = "minimize"\n'
                                'file = "metrics.json"\n')
    agent = script_agent(tmp_path / "agent.sh", AGENT)
    r = cli("run", str(root), "--tag", "evl", "--agent", "cli", "--agent-cmd", agent, "--trials", "2",
            "--ray-address", address, "--trial-resources", "cpu=1,gpu=0", "--workers", "2", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = check_ledger_and_git(root, "evl", 2)
    assert [t.metric for t in rows] == [20.0, 38.0, 36.0]
    runs = root / ".autoresearch" / "evl" / "runs"
    if where == "run-folder":
        assert json.loads((runs / "0" / "metrics.json").read_text()) == {"loss": 20.0}  # the best's
    log = (root / ".autoresearch" / "evl" / "logs" / "1.log").read_text()
    assert "=== evaluate" in log
    assert (root / ".autoresearch" / "evl" / "sealed" / "1.eval.log").exists()  # back, sealed
    assert _figure(log, "gpus") == ""  # gpu=0: it sees no GPU of the node


@pytest.mark.slow  # (CI runs the slow tests too)
def test_a_committed_metric_file_a_ray_run_did_not_write_is_no_result(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    """The remote run wrote no metrics.json: the driver's worktree still has the committed one,
    which is not this run's result (it was read as one)."""
    address, env = ray_head
    exp = "import json\nW = 1\nif W:\n    json.dump({'loss': 5.0}, open('metrics.json', 'w'))\n"
    root = make_task(tmp_path / "task", experiment=exp, files={"metrics.json": '{"loss": 0.001}'},
                     toml_extra='[metric]\nname = "loss"\ngoal = "minimize"\nfile = "metrics.json"\n')
    agent = script_agent(tmp_path / "agent.sh", "sed -i 's/^W = .*/W = 0/' exp.py\necho W 0\n")
    r = cli("run", str(root), "--tag", "stale", "--agent-cmd", agent, "--trials", "1",
            "--ray-address", address, "--trial-resources", "cpu=1,gpu=0", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    ts = Ledger.read(root, "stale").trials()
    assert ts[0].status is Status.KEEP and ts[0].metric == 5.0
    assert ts[1].status is Status.CRASH and "was there before the experiment ran" in ts[1].reason


def test_ctrl_c_cancels_the_ray_tasks_in_flight(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    address, env = ray_head
    root, agent = _task(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(root), "--tag", "stop",
                             "--agent", "cli", "--agent-cmd", agent, "--trials", "4",
                             "--ray-address", address],
                            env={**os.environ, **env, "AR_S": "60"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    spot = Path(env["AR_SPOT"]) / "stop"
    deadline = time.monotonic() + 120
    while len([p for p in spot.glob("*.pid") if not p.name.startswith("0.")]) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    experiments = [int(p.name.split(".")[1]) for p in spot.glob("*.pid") if not p.name.startswith("0.")]
    time.sleep(0.5)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert time.monotonic() - stopped < 20
    for pid in experiments:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
    rows = _rows(root, "stop")
    assert rows[0].status is Status.KEEP
    assert len(rows) >= 3 and all(t.status is Status.INTERRUPTED for t in rows[1:])




@pytest.mark.slow  # (CI runs the slow tests too)
def test_sandbox_on_a_ray_worker(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    from autoresearch.sandbox import problem

    if problem():
        pytest.skip(problem() or "")
    address, env = ray_head
    root, agent = _task(tmp_path)
    r = cli("run", str(root), "--tag", "box", "--agent", "cli", "--agent-cmd", agent, "--trials", "1",
            "--ray-address", address, "--trial-resources", "cpu=1", "--sandbox", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    for n in (0, 1):
        log = (root / ".autoresearch" / "box" / "logs" / f"{n}.log").read_text()
        assert _figure(log, "net") == "no" and _figure(log, "loss") == ("10.0", "19.0")[n]

def test_a_request_no_node_can_meet_is_one_line_and_exit_2(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    address, env = ray_head
    root, agent = _task(tmp_path)
    r = cli("run", str(root), "--tag", "big", "--agent", "cli", "--agent-cmd", agent, "--trials", "1",
            "--ray-address", address, "--trial-resources", "gpu=4,cpu=1", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == ["autoresearch: error: --trial-resources gpu=4,cpu=1: no node of "
                                             "the Ray cluster has that much (nodes: GPU 2, CPU 4)"]
    assert not (root / ".autoresearch" / "big").exists()

@pytest.mark.parametrize("asked, workers", [("gpu=0", 4), ("cpu=0", 4)])
def test_a_request_of_no_gpu_or_no_cpu_runs_on_every_cpu(ray_head, tmp_path: Path, asked: str, workers: int) -> None:  # noqa: ANN001
    address, env = ray_head
    root, agent = _task(tmp_path)
    r = cli("run", str(root), "--tag", "none", "--agent", "cli", "--agent-cmd", agent, "--trials", "1",
            "--ray-address", address, "--trial-resources", asked, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{workers} workers, backend ray" in r.stdout  # the cluster's CPUs: 4
    log = (root / ".autoresearch" / "none" / "logs" / "1.log").read_text()
    assert _figure(log, "gpus") == ""  # granted none, it sees none


def test_a_log_comes_back_byte_for_byte(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    address, env = ray_head
    experiment = 'import sys\nX = 3.0\nsys.stdout.buffer.write(b"bytes: \\xff\\xfe\\x00caf\\xe9\\n")\nprint(f"loss: {X}")\n'
    root = make_task(tmp_path / "task", experiment=experiment)
    r = cli("run", str(root), "--tag", "bin", "--agent", "search", "--trials", "0", "--ray-address", address,
            "--trial-resources", "cpu=1", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (root / ".autoresearch" / "bin" / "logs" / "0.log").read_bytes()
    assert b"bytes: \xff\xfe\x00caf\xe9\n" in log  # as the experiment wrote them (Latin-1, say), as locally
    assert _rows(root, "bin")[0].metric == 3.0


@pytest.mark.slow
def test_ray_init_without_an_address_starts_a_local_instance(tmp_path: Path) -> None:
    root, agent = _task(tmp_path)
    tmp = Path(tempfile.mkdtemp(prefix="arl-", dir="/tmp"))
    # HOME too: Ray (>= 2.59) writes a token for a local instance to ~/.ray/auth_token
    env = {"RAY_TMPDIR": str(tmp), "AR_SPOT": str(tmp), "RAY_ADDRESS": "", "HOME": str(tmp)}
    try:
        r = cli("run", str(root), "--tag", "local", "--agent", "cli", "--agent-cmd", agent, "--trials", "2",
                "--backend", "ray", "--workers", "2", env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = check_ledger_and_git(root, "local", 2)
    log = (root / ".autoresearch" / "local" / "logs" / "1.log").read_text()
    assert _figure(log, "loss") == "19.0" and not _figure(log, "cwd").startswith(str(root))
    assert rows[1].status is Status.DISCARD


def _marked(token: str) -> list[int]:
    """The processes whose environment carries AUTORESEARCH_OWNER=`token`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"AUTORESEARCH_OWNER={token}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_sigkilled_loop_leaves_no_ray_instance_of_its_own(tmp_path: Path) -> None:
    """The instance `ray.init()` started for the loop carries its mark; the watchdog stops it."""
    root, agent = _task(tmp_path)
    tmp = Path(tempfile.mkdtemp(prefix="ark-", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "AR_SPOT": str(tmp), "RAY_ADDRESS": "", "HOME": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "run", str(root), "--tag", "kill", "--agent",
                             "cli", "--agent-cmd", agent, "--trials", "500", "--backend", "ray"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    token = f"ray:{root / '.autoresearch' / 'kill'}"
    try:
        deadline = time.monotonic() + 120
        while not (root / ".autoresearch" / "kill" / "logs" / "2.log").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        assert _marked(token)  # Ray's processes, started by the loop
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 20
        while _marked(token) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _marked(token)
    finally:
        proc.kill()
        for pid in _marked(token):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_ray_address_nothing_answers_at_is_refused_at_once(tmp_path: Path) -> None:
    """Ray would retry for minutes, deaf to Ctrl-C: autoresearch refuses the address first."""
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = make_task(tmp_path / "task")
    began = time.monotonic()
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "1",
            "--ray-address", f"127.0.0.1:{port}", timeout=120)
    assert r.returncode == 2 and f"--ray-address 127.0.0.1:{port}: nothing answers" in r.stderr, r.stderr
    assert time.monotonic() - began < 30
    # the address ray.init() would take: RAY_ADDRESS (it waited for minutes), and the last cluster
    # `ray start` made, gone without `ray stop` (over 5 minutes)
    began = time.monotonic()
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "1",
            "--backend", "ray", env={"RAY_ADDRESS": f"127.0.0.1:{port}"}, timeout=120)
    assert r.returncode == 2 and f"RAY_ADDRESS 127.0.0.1:{port}: nothing answers" in r.stderr, r.stderr
    assert time.monotonic() - began < 30


@pytest.mark.extended  # (time: the default suite keeps its siblings)
def test_a_head_address_written_as_a_url_is_refused_or_taken(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    """`http://HOST:PORT` of the head's own port: Ray refused it with a line torn from a list of
    its advice (exit 1); `HOST:PORT/` and a stray space, which Ray cannot parse, are the address."""
    address, env = ray_head
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--tag", "t", "--agent", "search", "--trials", "0", "--ray-address",
            f"http://{address}", env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"autoresearch: error: --ray-address http://{address}: an http:// address is for "
                                "Ray's job submission, not for a driver: give the address `ray start --head` "
                                "printed for `ray.init` (HOST:6379), or ray://HOST:10001")
    r = cli("run", str(repo), "--tag", "t", "--agent", "search", "--trials", "0", "--ray-address",
            f" {address}/", "--trial-resources", "cpu=1", env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _rows(repo, "t")[0].status is Status.KEEP
    r = cli("run", str(repo), "--tag", "env", "--agent", "search", "--trials", "0", "--backend", "ray",
            "--trial-resources", "cpu=1", env={**env, "RAY_ADDRESS": f"{address}/ "}, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _rows(repo, "env")[0].status is Status.KEEP


@pytest.mark.extended  # (Ray's client waits 30 s)
def test_ray_client_address_at_the_heads_own_port_names_the_client_port(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    """ray://HOST:6379 (the head's port, where no Ray Client server is): the line named token
    authentication, which had nothing to do with it."""
    address, env = ray_head
    repo = make_task(tmp_path / "task")
    r = cli("run", str(repo), "--tag", "t", "--agent", "search", "--trials", "0", "--ray-address",
            f"ray://{address}", env=env, timeout=180)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == (f"autoresearch: error: cannot connect to Ray at ray://{address}: ray client "
                                "connection timeout (ray:// is for the head's Ray Client server, port 10001 unless "
                                "`ray start` was given --ray-client-server-port; the address `ray start --head` "
                                "printed, HOST:6379, goes without ray://)"), r.stderr


def test_a_ray_address_where_a_web_server_answers_is_refused_at_once(tmp_path: Path) -> None:
    """The dashboard's address (8265, which `ray start` prints too) or any web server: Ray tried
    it for over 8 minutes, printing its own warnings, then exited 1."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        repo = make_task(tmp_path / "task")
        began = time.monotonic()
        r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "1",
                "--ray-address", f"127.0.0.1:{port}", timeout=120)
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip() == (f"autoresearch: error: --ray-address 127.0.0.1:{port}: a web server answers "
                                    f"at 127.0.0.1:{port}, not a Ray cluster's head (Ray's dashboard is at 8265): "
                                    "give the address `ray start --head` printed for `ray.init` (HOST:6379), or "
                                    "ray://HOST:10001"), r.stderr
        assert time.monotonic() - began < 30
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow  # (a local Ray instance: about 15 s)
def test_a_cluster_gone_without_ray_stop_is_passed_by(tmp_path: Path) -> None:
    """A head that died without `ray stop` leaves its address in ray_current_cluster, where
    ray.init() with no address looks first: it tried it for over 5 minutes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stale = Path(tempfile.mkdtemp(prefix="arr-", dir="/tmp"))  # short: Ray's socket paths
    try:
        (stale / "ray").mkdir()
        (stale / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
        repo = make_task(tmp_path / "task")
        r = cli("run", str(repo), "--tag", "t", "--trials", "0", "--backend", "ray",
                env={"RAY_TMPDIR": str(stale)}, timeout=240)
        assert r.returncode == 0, r.stderr
        assert f"the Ray cluster last started on this machine (127.0.0.1:{port}) is gone" in r.stderr
    finally:
        shutil.rmtree(stale, ignore_errors=True)


@pytest.mark.parametrize("sandbox", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_what_setup_makes_and_shared_paths_reach_every_trial_on_ray(ray_head, tmp_path: Path, sandbox: bool) -> None:  # noqa: ANN001
    """Setup writes git-ignored data inside the repository, and `shared` names a folder of the
    user's checkout: on Ray every trial's code gets both linked, not the baseline alone (the
    setup used to run in the first trial's own folder, deleted after it; a shared link made
    the code's tarball refuse to unpack)."""
    address, env = ray_head
    if sandbox and sandbox_problem() is not None:
        pytest.skip(f"no sandbox here: {sandbox_problem()}")
    exp = ("X = 3.0\nfrom pathlib import Path\n"
           "base = float(Path('data/base.txt').read_text())\nextra = float(Path('mine/extra.txt').read_text())\n"
           "print(f'loss: {X + base + extra}')\n")
    root = make_task(tmp_path / "task", experiment=exp, files={".gitignore": "data/\nmine/\n"},
                     toml_extra="setup = 'mkdir -p data && echo 1 > data/base.txt'\nshared = [\"mine\"]\n")
    (root / "mine").mkdir()
    (root / "mine" / "extra.txt").write_text("10\n")
    agent = script_agent(tmp_path / "agent.sh", 'sed -i "s/^X = .*/X = $AUTORESEARCH_TRIAL.5/" exp.py\necho X\n')
    r = cli("run", str(root), "--tag", "su", "--agent-cmd", agent, "--trials", "3", "--workers", "1",
            "--ray-address", address, *(["--sandbox"] if sandbox else []), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [t.metric for t in _rows(root, "su")] == [14.0, 12.5, 13.5, 14.5]


@pytest.mark.extended  # (time: the default suite keeps its siblings)
def test_a_tag_whose_setup_script_changed_sets_up_anew_on_ray(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    """A node keeps what setup made for the next runs; a new tag after a fix of the (protected)
    script that setup runs must get what the new script makes, as locally, not the old data."""
    address, env = ray_head
    exp = "X = 3.0\nfrom pathlib import Path\nprint(f'loss: {X + float(Path(\"data/v.txt\").read_text())}')\n"
    prepare = "import os\nV = {}\nos.makedirs('data', exist_ok=True)\nopen('data/v.txt', 'w').write(str(V))\n"
    root = make_task(tmp_path / "task", experiment=exp, files={".gitignore": "data/\n", "prepare.py": prepare.format(1)},
                     toml_extra="setup = 'python prepare.py'\n")
    for tag, v in (("one", 1), ("two", 20)):
        (root / "prepare.py").write_text(prepare.format(v))
        git(root, "commit", "-qam", f"data {v}", "--allow-empty")
        r = cli("run", str(root), "--tag", tag, "--agent", "search", "--trials", "0", "--ray-address", address,
                "--trial-resources", "cpu=1", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert _rows(root, tag)[0].metric == 3.0 + v
    r = cli("run", str(root), "--tag", "local", "--agent", "search", "--trials", "0")
    assert r.returncode == 0 and _rows(root, "local")[0].metric == 23.0, r.stdout + r.stderr


@pytest.mark.extended  # (time: the default suite keeps its siblings)
def test_setup_folders_no_trial_used_for_a_week_are_pruned_on_the_node(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    """Every task, and every change of the files its setup reads, made a setup folder on each node
    that lasted for ever (a data set each, say). A trial on the node now removes those no trial
    has used for a week; a recent one, one being set up (its lock held) and the run's own stay."""
    import fcntl

    address, env = ray_head
    marks = Path(tempfile.gettempdir()) / "autoresearch-setup"  # (the workers' too: the same machine)
    marks.mkdir(exist_ok=True)
    planted = {name: secrets.token_hex(8) for name in ("old", "recent", "busy")}
    week = 7 * 86400
    for name, key in planted.items():
        (marks / key / "data").mkdir(parents=True)
        (marks / key / "data" / "shard.bin").write_bytes(b"x" * 1000)
        (marks / f"{key}.made").write_text('["data"]')
        for mark in (".done", ".lock"):
            (marks / f"{key}{mark}").touch()
        age = week - 86400 if name == "recent" else week + 86400
        for path in (marks / key, marks / f"{key}.made", marks / f"{key}.done", marks / f"{key}.lock"):
            os.utime(path, (time.time() - age, time.time() - age))
    root = make_task(tmp_path / "task", toml_extra="setup = 'mkdir -p data && echo 1 > data/base.txt'\n")
    try:
        with open(marks / f"{planted['busy']}.lock") as busy:
            fcntl.flock(busy, fcntl.LOCK_EX)  # (being set up on the node now)
            r = cli("run", str(root), "--tag", "prune", "--agent", "search", "--trials", "1", "--ray-address", address,
                    "--trial-resources", "cpu=1", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        left = {name: (marks / key).exists() or (marks / f"{key}.lock").exists() for name, key in planted.items()}
        assert left == {"old": False, "recent": True, "busy": True}, left
        assert not list(marks.glob(f"{planted['old']}*"))  # its marks too
        log = (root / ".autoresearch" / "prune" / "logs" / "setup.log").read_text()
        r = cli("run", str(root), "--tag", "prune", "--agent", "search", "--trials", "1", "--ray-address", address,
                "--trial-resources", "cpu=1", env=env)  # resumed: what the node set up for it serves
        assert r.returncode == 0, r.stdout + r.stderr
        assert (root / ".autoresearch" / "prune" / "logs" / "setup.log").read_text() == log
    finally:
        for key in planted.values():
            shutil.rmtree(marks / key, ignore_errors=True)
            for mark in (".made", ".done", ".lock"):
                (marks / f"{key}{mark}").unlink(missing_ok=True)


def test_what_setup_printed_on_a_node_comes_back_to_the_setup_log(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    """Locally logs/setup.log holds setup's output; on Ray the trial's log that followed replaced
    it, and a setup that worked left no trace of what it said."""
    address, env = ray_head
    root = make_task(tmp_path / "task", toml_extra=f"setup = 'echo downloaded {tmp_path.name} shards'\n")
    r = cli("run", str(root), "--tag", "su", "--agent", "search", "--trials", "1", "--ray-address", address,
            "--trial-resources", "cpu=1", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (root / ".autoresearch" / "su" / "logs" / "setup.log").read_text()
    assert log.count(f"downloaded {tmp_path.name} shards\n") == 1  # once on the node: one part
    assert log.startswith("=== autoresearch: setup on ") and "before trial 0 ===\n" in log
    r = cli("run", str(root), "--tag", "again", "--agent", "search", "--trials", "0", "--ray-address", address,
            "--trial-resources", "cpu=1", env=env)  # the same code in another tag: what the node made serves
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (root / ".autoresearch" / "again" / "logs" / "setup.log").exists()


def test_a_committed_link_to_a_data_set_reaches_the_code_on_ray(ray_head, tmp_path: Path) -> None:  # noqa: ANN001
    """A repository that commits `data -> /datasets/x` (a shared file system): the tarball of the
    code unpacked with the "data" filter refused the link, and every trial crashed on Ray."""
    address, env = ray_head
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "base.txt").write_text("7\n")
    exp = "X = 3.0\nfrom pathlib import Path\nprint(f'loss: {X + float(Path(\"data/base.txt\").read_text())}')\n"
    root = make_task(tmp_path / "task", experiment=exp)
    (root / "data").symlink_to(tmp_path / "datasets")
    git(root, "add", "data")
    git(root, "commit", "-qm", "data")
    for tag, flags in (("local", []), ("ray", ["--ray-address", address, "--trial-resources", "cpu=1"])):
        r = cli("run", str(root), "--tag", tag, "--agent", "search", "--trials", "0", *flags, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert _rows(root, tag)[0].metric == 10.0


def test_a_stale_task_folder_is_swept_and_its_pid_file_goes_last(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A worker killed in the middle of removing its folder left one without its pid file,
    which no sweep took for one of ours again (a run folder may hold checkpoints): the pid file
    is removed last now. Swept: a folder whose worker is gone; kept: one whose worker lives."""
    import subprocess

    from autoresearch.backends import rayworker

    monkeypatch.setattr(rayworker.tempfile, "gettempdir", lambda: str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    folders = {}
    for name, pid in (("gone", gone.pid), ("alive", os.getpid())):
        folder = tmp_path / f"autoresearch-1-{name}"
        (folder / "run" / "ckpt").mkdir(parents=True)
        (folder / "run" / "ckpt" / "weights.bin").write_bytes(b"x" * 1000)
        (folder / "pid").write_text(f"{rayworker.platform.node()} {pid}")
        folders[name] = folder
    removed: list[str] = []
    unlink = Path.unlink

    def noting(self: Path, missing_ok: bool = False) -> None:
        removed.append(self.name)
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", noting)
    rayworker.sweep_stale()
    assert not folders["gone"].exists() and (folders["alive"] / "run" / "ckpt" / "weights.bin").exists()
    assert removed[-1] == "pid", removed  # (the files before it went with their folders)


def test_a_trial_waiting_on_a_setup_lock_the_pruner_removed_takes_the_new_one(tmp_path: Path) -> None:
    """The pruner removes a setup folder's lock file while it holds it: a trial that waited on
    that lock meanwhile would hold a lock on a removed file, beside one taking the new file's
    (two setups at once in one folder). It takes the lock again on the file now there."""
    import fcntl
    import threading

    from autoresearch.backends import rayworker

    path = tmp_path / "0123456789abcdef.lock"
    seen: list[bool] = []
    with open(path, "a") as pruner:
        fcntl.flock(pruner, fcntl.LOCK_EX)

        def trial() -> None:
            with rayworker._held(path), open(path) as other:  # nobody else can take the file's lock now
                seen.append(not _try_lock(other))

        waiter = threading.Thread(target=trial)
        waiter.start()
        time.sleep(0.3)  # (the trial waits on the lock)
        path.unlink()
    waiter.join(timeout=10)
    assert seen == [True] and path.exists()


def _try_lock(f) -> bool:  # noqa: ANN001
    import fcntl

    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
