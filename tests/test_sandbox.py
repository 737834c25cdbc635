"""`--sandbox`: experiments (and their evaluation) under bubblewrap. Real loops, a real TCP
listener on 127.0.0.1, real writes attempted; skipped with the reason where bwrap cannot run."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent, trials

from autoresearch import sandbox
from autoresearch.records import Status

needs_bwrap = pytest.mark.skipif(sandbox.problem() is not None,
                                 reason=f"--sandbox cannot run here: {sandbox.problem()}")

EVALUATED = """\
evaluate = "python prepare.py"

[metric]
name = "loss"
goal = "minimize"
"""
EVALUATOR = """\
import json, os
print(f"loss: {json.load(open(os.path.join(os.environ['AUTORESEARCH_RUN_DIR'], 'r.json')))['loss']}")
"""
EXPERIMENT = """\
import json, os
X = 3.0
json.dump({"loss": (X - 1) ** 2}, open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "r.json"), "w"))
print("trained")
"""




def task(tmp_path: Path) -> Path:
    return make_task(tmp_path / "task", experiment=EXPERIMENT, toml_extra=EVALUATED,
                     files={"prepare.py": EVALUATOR})


def sandboxed_run(root: Path, agent: str, *extra: str) -> None:
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", agent,
            "--trials", "1", "--sandbox", *extra)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` by content, but the harness's own (the ledger, .git)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in (".autoresearch", ".git")]
        for f in filenames:
            p = Path(dirpath, f)
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "?"
    return out


@needs_bwrap
def test_a_normal_experiment_and_its_evaluation_work_in_the_sandbox(tmp_path: Path) -> None:
    root = task(tmp_path)
    agent = script_agent(tmp_path / "agent.sh", "sed -i 's/^X = .*/X = 2.0/' exp.py\necho 'X 2'\n")
    sandboxed_run(root, agent)
    base, t = trials(root)
    assert (base.status, base.metric) == (Status.KEEP, 4.0)
    assert (t.status, t.metric) == (Status.KEEP, 1.0)


def loopback_server() -> tuple[socket.socket, str]:
    """A socket bound on 127.0.0.1 (not listening yet: `listening`), and the lines an experiment
    adds to connect to it, printf-escaped."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    return server, (f"import socket\\ns = socket.create_connection(('127.0.0.1', {port}), timeout=3)\\n"
                    "print('connected')\\n")


@needs_bwrap
def test_a_resumed_tag_keeps_its_sandbox_and_trial_judges_under_it(tmp_path: Path) -> None:
    """A loop started with --sandbox and resumed with `run --tag T` (after a kill, overnight)
    stays sandboxed, and says so; so does `autoresearch trial` of that tag; --no-sandbox is the
    way out, and a tag started without it resumes without it."""
    server, connect = loopback_server()
    with listening(server) as accepted:
        root = task(tmp_path)
        r = cli("run", str(root), "--tag", "t", "--trials", "0", "--sandbox")
        assert r.returncode == 0, r.stderr
        agent = script_agent(tmp_path / "agent.sh", f"printf \"{connect}\" >> exp.py\necho 'phone home'\n")
        r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
        assert r.returncode == 0, r.stderr
        assert "tag t goes on under --sandbox, as its last run did (--no-sandbox to run without it)" in r.stderr
        assert trials(root)[1].status is Status.CRASH and "Connection refused" in trials(root)[1].reason
        # `trial` judges the user's change under the tag's sandbox too
        with open(root / "exp.py", "a") as f:
            f.write("# by hand\n" + connect.replace("\\n", "\n"))
        r = cli("trial", "-m", "phone home by hand", str(root), "--tag", "t")
        assert "the trial runs under --sandbox, as tag t's last run did" in r.stderr, r.stderr
        assert trials(root)[2].status is Status.CRASH and "Connection refused" in trials(root)[2].reason
        assert accepted == []
        git(root, "checkout", "--", "exp.py")
        # --no-sandbox: out of it, and recorded so (the next resume is unsandboxed too)
        agent = script_agent(tmp_path / "agent.sh", f"printf \"# $AUTORESEARCH_TRIAL\\n{connect}\" >> exp.py\necho 'phone home'\n")
        r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1", "--no-sandbox")
        assert r.returncode == 0 and "--sandbox" not in r.stderr, r.stderr
        assert trials(root)[3].status is Status.DISCARD  # (measured: it connected; the loss is the same)
        r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
        assert r.returncode == 0 and "--sandbox" not in r.stderr, r.stderr
        time.sleep(0.5)
    assert len(accepted) == 2



PROBE_HOME = ("import pathlib\n"
              "for f in ('.ssh/id_ed25519', '.netrc', 'notes.txt'):\n"
              "    try:\n"
              "        print('read', f, repr((pathlib.Path.home() / f).read_text().strip()))\n"
              "    except OSError as e:\n"
              "        print('read', f, 'refused', type(e).__name__)\n")


@needs_bwrap
def test_the_keys_and_logins_of_the_home_are_out_of_a_sandboxed_experiments_sight(tmp_path: Path) -> None:
    """The filesystem is readable in the sandbox, but not ~/.ssh, ~/.aws, ~/.netrc and the like:
    with no network an experiment cannot use them, but what it reads it can print to its log,
    which the agent reads and sends to its LLM provider."""
    root = make_task(tmp_path / "task", experiment=EXPERIMENT.replace('print("trained")', PROBE_HOME + 'print("trained")'),
                     toml_extra=EVALUATED, files={"prepare.py": EVALUATOR})
    home = root / "home"  # (inside the checkout, which stays readable: the sandbox's /tmp is its own)
    with open(root / ".git" / "info" / "exclude", "a") as f:
        f.write("home/\n")
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / ".netrc").write_text("machine x login me password hunter2\n")
    (home / "notes.txt").write_text("plain notes\n")
    for flag in ("--sandbox", "--no-sandbox"):
        r = cli("run", str(root), "--tag", flag.strip("-"), "--trials", "0", flag, env={"HOME": str(home)})
        assert r.returncode == 0, r.stderr
    shut = (root / ".autoresearch" / "sandbox" / "logs" / "0.log").read_text()
    assert "PRIVATE KEY" not in shut and "hunter2" not in shut, shut
    assert "read notes.txt 'plain notes'" in shut, shut  # (the rest of the home stays readable)
    assert "read .ssh/id_ed25519 refused" in shut and re.search(r"read \.netrc (refused|'')", shut), shut
    # the control: without the sandbox they are there (the experiment runs as you)
    assert "hunter2" in (root / ".autoresearch" / "no-sandbox" / "logs" / "0.log").read_text()


@contextlib.contextmanager
def listening(server: socket.socket) -> Iterator[list[bytes]]:
    """`server` accepting in a thread while the block runs: what each connection sent, in order
    (the first 64 bytes); closed at the end."""
    server.listen()
    server.settimeout(0.2)
    got: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(3)
                try:
                    got.append(conn.recv(64))
                except OSError:
                    got.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        stop.set()
        thread.join()
        server.close()


@needs_bwrap
def test_no_network_in_the_sandbox(tmp_path: Path) -> None:
    server, connect = loopback_server()
    with listening(server) as accepted:
        root = task(tmp_path)
        agent = script_agent(tmp_path / "agent.sh", f"printf \"{connect}\" >> exp.py\necho 'phone home'\n")
        sandboxed_run(root, agent)
        t = trials(root)[1]
        assert t.status is Status.CRASH and "Connection refused" in t.reason, t.reason
        assert accepted == []
        # the control: the same experiment outside the sandbox reaches the listener
        r = cli("run", str(root), "--tag", "open", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
        assert r.returncode == 0, r.stderr
        time.sleep(0.5)
        assert len(accepted) == 1


WRITER = """
import os, site, sys
wt = os.getcwd()
targets = {
    "the task checkout": os.path.join(TASK, "prepare.py"),
    "a new file beside the task": os.path.join(TASK, "planted.txt"),
    "the ledger": os.path.join(TASK, ".autoresearch", "t", "ledger.sqlite"),
    "the ledger folder": os.path.join(TASK, ".autoresearch", "t", "planted.txt"),
    "a folder outside": os.path.join(OUTSIDE, "planted.txt"),
    "the home folder": os.path.join(os.path.expanduser("~"), ".autoresearch-planted"),
    "site-packages": os.path.join(site.getsitepackages()[0], "planted.pth"),
    "a protected file in the worktree": os.path.join(wt, "prepare.py"),
}
inside = {"worktree": os.path.join(wt, "out.txt"),
          "run folder": os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "out.txt"),
          "/tmp": "/tmp/out.txt"}
for name, path in inside.items():
    open(path, "a").write("ok")
    print("wrote inside:", name)
refused = 0
for name, path in targets.items():
    try:
        open(path, "a").write("planted")
        print("WROTE OUTSIDE:", name)
    except OSError as e:
        refused += 1
        print("refused:", name, type(e).__name__)
sys.exit(f"{refused} writes refused")
"""


@needs_bwrap
def test_writes_outside_the_trials_folders_fail_and_change_nothing(tmp_path: Path) -> None:
    root = task(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched")
    writer = f"TASK = {str(root)!r}\nOUTSIDE = {str(outside)!r}\n" + WRITER
    agent = script_agent(tmp_path / "agent.sh", f"cat >> exp.py <<'EOF'\n{writer}\nEOF\necho 'write everywhere'\n")
    before = fingerprint(root), fingerprint(outside)
    home = Path(os.path.expanduser("~")) / ".autoresearch-planted"
    sandboxed_run(root, agent)
    t = trials(root)[1]
    log = (root / ".autoresearch" / "t" / "logs" / "1.log").read_text()
    assert t.status is Status.CRASH and "8 writes refused" in t.reason, log
    assert "WROTE OUTSIDE" not in log
    assert log.count("wrote inside:") == 3
    assert (fingerprint(root), fingerprint(outside)) == before
    assert not (root / ".autoresearch" / "t" / "planted.txt").exists()
    assert not home.exists() and not Path("/tmp/out.txt").exists()
    assert not list(Path(sys.prefix).rglob("planted.pth"))


@needs_bwrap
def test_nothing_the_experiment_starts_outlives_it(tmp_path: Path) -> None:
    """A daemon that sheds the harness's owner mark (env -i) and leaves the process group is
    still gone when the experiment ends: sandboxed, its PID namespace dies with it; plain, the
    reaper it runs under (a child subreaper) gets it back and kills it."""
    root = task(tmp_path)
    marker = tmp_path / "daemon.out"
    agent = script_agent(tmp_path / "agent.sh", f"""\
        cat >> exp.py <<'EOF'
        import subprocess
        subprocess.Popen(["setsid", "env", "-i", "/bin/sh", "-c", "sleep 2; echo alive > {marker}"],
                         start_new_session=True)
        EOF
        echo 'leave a daemon'
        """)
    sandboxed_run(root, agent)
    time.sleep(3)
    assert not marker.exists()
    # without the sandbox too: it comes back to the command's reaper, which kills it
    r = cli("run", str(root), "--tag", "open", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
    assert r.returncode == 0, r.stderr
    time.sleep(3)
    assert not marker.exists()


def test_a_missing_bwrap_is_a_clear_usage_error(tmp_path: Path) -> None:
    root = task(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "bash"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    r = cli("run", str(root), "--tag", "t", "--trials", "1", "--sandbox",
            env={"PATH": str(bin_dir)})
    assert r.returncode == 2
    assert "apt-get install bubblewrap" in r.stderr and "Traceback" not in r.stderr
    assert not (root / ".autoresearch" / "t").exists()  # nothing was started


def test_gpu_device_nodes_are_passed_through(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm", "null"):
        (dev / name).touch()
    (dev / "nvidia-caps").mkdir()
    found = sandbox.gpu_devices(dev)
    assert [p.name for p in found] == ["nvidia-caps", "nvidia-uvm", "nvidia0", "nvidiactl"]
    argv = sandbox.experiment_prefix(tmp_path / "wt", tmp_path / "run", devices=found)
    for p in found:
        i = argv.index(str(p))
        assert argv[i - 1] == "--dev-bind" and argv[i + 1] == str(p)
    assert "--unshare-net" in argv and argv[argv.index("--cap-drop") + 1] == "ALL"


def broken_bwrap(tmp_path: Path) -> dict[str, str]:
    """PATH with a `bwrap` first that fails as it does where user namespaces are not allowed."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    return {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}


def test_a_bwrap_that_cannot_work_here_is_a_clear_usage_error(tmp_path: Path) -> None:
    root = task(tmp_path)
    r = cli("run", str(root), "--tag", "t", "--trials", "1", "--sandbox", env=broken_bwrap(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "bubblewrap cannot create a sandbox here (bwrap: No permissions" in r.stderr


def test_a_holdout_that_cannot_be_sealed_here_is_said_and_the_loop_goes_on(tmp_path: Path) -> None:
    toml = EVALUATED + 'holdout = "test_loss"\n'
    root = make_task(tmp_path / "task", experiment=EXPERIMENT, toml_extra=toml,
                     files={"prepare.py": EVALUATOR + 'print("test_loss: 1.5")\n'})
    agent = script_agent(tmp_path / "agent.sh", "sed -i 's/^X = .*/X = 2.0/' exp.py\necho 'X 2'\n")
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1",
            env=broken_bwrap(tmp_path))
    assert r.returncode == 0, r.stderr
    # (the loop's own prefix, as its other warnings carry: it had a bare `warning:`)
    assert re.search(r"^\d\d:\d\d:\d\d autoresearch: warning: the holdout is not sealed", r.stdout, re.M), r.stdout
    assert [t.status for t in trials(root)] == [Status.KEEP, Status.KEEP]


@pytest.mark.slow
@pytest.mark.torch
@needs_bwrap
def test_the_nanochat_template_in_the_sandbox_and_its_probe(tmp_path: Path) -> None:
    """The real nanochat template (its CPU smoke configuration) through the loop under
    --sandbox: the baseline trains and is scored, holdout included; a trial that lets attention
    see the future is rejected by the template's causality probe."""
    for module in ("torch", "pyarrow", "tokenizers", "safetensors", "numpy"):
        pytest.importorskip(module)
    task_dir = tmp_path / "task"
    r = cli("init", str(task_dir), "--template", "nanochat")
    assert r.returncode == 0, r.stderr
    toml = (task_dir / "autoresearch.toml").read_text()
    toml = toml.replace("time_budget = 300", "time_budget = 8").replace("timeout = 600", "timeout = 300")
    (task_dir / "autoresearch.toml").write_text(toml)
    # the data cache inside the task (ignored by git): the sandbox's /tmp is private
    with open(task_dir / ".gitignore", "a") as f:
        f.write("cache/\n")
    git(task_dir, "commit", "-qam", "a tiny budget")
    agent = script_agent(tmp_path / "agent.sh", """\
        sed -i 's/is_causal=True/is_causal=False/' train.py
        echo "attention over the whole sequence"
        """)
    env = {"AUTORESEARCH_SMOKE": "1", "AUTORESEARCH_CACHE": str(task_dir / "cache")}
    r = cli("run", str(task_dir), "--tag", "t", "--agent", "cli", "--agent-cmd", agent,
            "--trials", "1", "--sandbox", env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    base, peek = trials(task_dir)
    assert base.status is Status.KEEP and base.metric and base.figures["test_bpb"] > 0
    assert peek.status is Status.REJECTED and "not causal" in peek.reason, peek.reason


@needs_bwrap
def test_data_that_setup_wrote_in_tmp_is_named_when_a_sandboxed_baseline_misses_it(tmp_path: Path) -> None:
    cache = Path(tempfile.mkdtemp(prefix="autoresearch-cache-", dir="/tmp"))
    try:
        exp = f"import pathlib\nprint('loss:', pathlib.Path('{cache}/data.txt').read_text())\n"
        root = make_task(tmp_path / "task", experiment=exp,
                         toml_extra=f'setup = "echo 1.5 > {cache}/data.txt"\n')
        r = cli("run", str(root), "--tag", "t", "--sandbox", "--trials", "0")
        assert r.returncode == 1
        assert "under --sandbox each experiment has a /tmp (and /dev/shm) of its own" in r.stderr, r.stderr
    finally:
        shutil.rmtree(cache, ignore_errors=True)


IPC_AND_SOCKET = """\
import ctypes, os, socket
libc = ctypes.CDLL(None)
libc.shmat.restype = ctypes.c_void_p
segment = libc.shmget(KEY, 4096, 0o1666)
if segment >= 0:
    at = libc.shmat(segment, None, 0)
    print("left by an earlier trial:", ctypes.string_at(at, 64).split(b"\\\\0")[0].decode())
    ctypes.memmove(at, f"trial {os.environ['AUTORESEARCH_TRIAL']} was here\\\\0".encode(), 64)
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(SOCKET)
    s.sendall(b"out of the sandbox")
    print("connected")
except OSError as e:
    print("no socket:", e)
"""


@needs_bwrap
def test_no_unix_socket_and_no_shared_memory_across_the_sandbox(tmp_path: Path) -> None:
    """The network namespace stops TCP, not a connect() to a Unix socket in the filesystem (a
    daemon's: docker's, the session bus), which a read-only mount does not stop either; and
    System V shared memory, kept by the host, carried what one trial left to the next."""
    import ctypes
    import uuid

    folder = Path.home() / ".cache" / f"autoresearch-test-{uuid.uuid4().hex[:8]}"  # (not under /tmp: hidden anyway)
    folder.mkdir(parents=True)
    path = folder / "daemon.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    key = 0x41520000 + os.getpid() % 0xFFFF
    code = f"KEY = {key}\nSOCKET = {str(path)!r}\n" + IPC_AND_SOCKET
    try:
        with listening(server) as got:
            root = task(tmp_path)
            (tmp_path / "probe.py").write_text(code)
            agent = script_agent(tmp_path / "agent.sh", f"cat {tmp_path / 'probe.py'} >> exp.py\n"
                                 "sed -i \"s/^X = .*/X = 2.$AUTORESEARCH_TRIAL/\" exp.py\necho probe\n")
            sandboxed_run(root, agent, "--trials", "2")
            logs = [(root / ".autoresearch" / "t" / "logs" / f"{n}.log").read_text() for n in (1, 2)]
            assert all("no socket:" in log and "connected" not in log for log in logs), logs
            assert got == []
            assert "trial 1 was here" not in logs[1], logs[1]  # nothing carried from one trial to the next
            assert ctypes.CDLL(None).shmget(key, 0, 0) == -1  # nor left on the host
            # the control: outside the sandbox the same code reaches the socket
            r = cli("run", str(root), "--tag", "open", "--agent", "cli", "--agent-cmd", agent, "--trials", "1")
            assert r.returncode == 0, r.stderr
            time.sleep(0.5)
            assert got == [b"out of the sandbox"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        libc = ctypes.CDLL(None)
        segment = libc.shmget(key, 0, 0)
        if segment >= 0:
            libc.shmctl(segment, 0, None)  # IPC_RMID
