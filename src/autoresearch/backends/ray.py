"""`--backend ray`: each measurement is a Ray task, placed by the cluster where its resources are.

The trial's code travels as a gzipped tarball of its worktree at the trial's commit; on the
worker it is unpacked into a temporary folder and measured by `autoresearch.execute` (the
evaluator's restore re-extracts it); `--sandbox` and the holdout's seal are built there, by
execute, with the worker's bubblewrap. The task's `setup` runs once per node before the first
experiment there (its folder is kept for the next runs, and removed once no trial has used it for
a week: rayworker.prune_setups). The experiment's environment is the worker's own (secrets
removed) plus the AUTORESEARCH_* variables; CUDA_VISIBLE_DEVICES is the GPUs Ray granted (empty
for none). The log, the evaluator's log and the metric file (when the task names one) come back
and are written where the local backend would have written them; other artifacts of the run stay on the worker and are
deleted there.

A worker or node that dies under a task comes back as outcome "lost" (the loop records it and
runs the trial once more); Ray's own retries are off so that this happens once, visibly.
Ctrl-C cancels every task in flight: politely first (the task kills its experiment's processes),
then by force. The ledger, the agent and git stay with the driver. Ray is imported lazily.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from autoresearch.backends.rayworker import Returned, eval_log_path, measure_stream, pack
from autoresearch.errors import AutoresearchError, UsageError
from autoresearch.execute import ExecResult, ExecSpec
from autoresearch.filetree import write_log
from autoresearch.process import (
    GRACE_SECONDS,
    OWNER_VAR,
    last_lines,
)
from autoresearch.records import printable
from autoresearch.task import Task, list_files

INSTALL_HINT = "pip install -e '.[ray]' (in the autoresearch checkout)"
# Errors that mean the worker or its node died under the task, not that the trial failed.
LOST = {"WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError",
        "OwnerDiedError", "ObjectReconstructionFailedError", "OutOfMemoryError", "HeadGone"}
HEARTBEAT = 10.0  # seconds between asks, while a task is out, whether the cluster's head answers
RAY_NAMES = {"cpu": "CPU", "gpu": "GPU", "memory": "memory"}
UNITS = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


class HeadGone(Exception):
    """The cluster's head stopped answering while a task was out (the message says how)."""


def head_address(address: str | None, gcs: str) -> str:
    """Where to ask whether the cluster's head answers: a Ray Client address (ray://HOST:PORT)
    itself, as the head's own address may not be reachable from the client; else the GCS's."""
    if address and address.startswith("ray://"):
        return address.split("://", 1)[1].rstrip("/")
    return gcs


def setup_key(task: Task, workdir: Path) -> str:
    """What a node's setup folder is known by: the task, its setup command and the code that
    no agent changes (the files a setup script reads). A tag whose prepare.py changed sets up
    anew on every node, as `run` does locally, rather than reuse what the old one made."""
    digest = hashlib.sha256(f"{task.root}\0{task.setup}".encode())
    for rel in sorted(list_files(workdir)):
        if task.is_editable(rel) or rel == ".git":  # (a worktree's pointer: which one ran first)
            continue
        path = workdir / rel
        try:
            body = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
        except OSError:
            body = b""
        digest.update(rel.encode() + b"\0" + hashlib.sha256(body).digest())
    return digest.hexdigest()[:16]


def import_ray() -> Any:
    # What Ray prints on the driver ("(raylet) A worker died ...") in plain text, as the loop's
    # own lines are: its colour codes ended up in nohup logs and pipes. Its deduplication (read
    # as Ray is imported) adds a coloured "[repeated Nx across cluster]" to a line it had printed.
    # (Set in your environment, either is yours.)
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
    except ImportError:
        raise UsageError(f"--backend ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def parse_resources(text: str) -> dict[str, float]:
    """`gpu=1,cpu=8,memory=32G,my_accel=1` -> {'gpu': 1.0, 'cpu': 8.0, 'memory': 34359738368.0,
    'my_accel': 1.0}; cpu, gpu and memory are Ray's, any other name a custom resource."""
    out: dict[str, float] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        name, sep, value = (s.strip() for s in item.partition("="))
        name = name.lower() if name.lower() in RAY_NAMES else name
        scale, unit = 1, value.lower()
        unit = unit[:-2] if unit.endswith("ib") else unit[:-1] if unit[-2:-1] in UNITS and unit.endswith("b") else unit
        if name == "memory" and unit[-1:] in UNITS:  # (32G, 32GB and 32GiB alike: 32 x 2**30 bytes)
            scale, value = UNITS[unit[-1]], unit[:-1]
        try:
            amount = float(value) * scale
        except ValueError:
            amount = -1.0
        if not sep or not name or not amount >= 0:
            raise UsageError(f"--trial-resources: expected NAME=AMOUNT, got {item!r} (e.g. gpu=1,cpu=8"
                             + ("; memory in bytes or with K, M, G, T: memory=32G)" if name == "memory" else ")"))
        if name in out:  # (which one was meant: the last silently won)
            raise UsageError(f"--trial-resources names {name} twice: {text.strip()!r}")
        out[name] = amount
    return out


def describe(resources: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" if k != "memory" else f"memory={v / 2**30:.3g}G" for k, v in resources.items())


def reachable(address: str, timeout: float = 5.0, given: str = "--ray-address") -> None:
    """Refuse at once (exit 2) an address nothing listens on: Ray itself would retry for minutes,
    deaf to Ctrl-C. `given`: where the address came from, for the message."""
    if address in ("auto", "local"):
        return
    if address.split("://", 1)[0].lower() in ("http", "https") and "://" in address:
        raise UsageError(f"{given} {address}: an http:// address is for Ray's job submission, not for a "
                         "driver: give the address `ray start --head` printed for `ray.init` (HOST:6379), "
                         "or ray://HOST:10001")
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"{given} {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379, or ray://HOST:10001)")
    try:
        conn = socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout)
    except OSError as e:
        raise UsageError(f"{given} {address}: nothing answers at {host}:{port} "
                         f"({e.strerror or e}); is the cluster up (`ray status`)?") from None
    # Ray's head (its GCS, or the ray:// client server) speaks gRPC: asked in HTTP/1, it answers
    # with HTTP/2 frames. A web server (the dashboard, at 8265, which `ray start` also prints)
    # answers "HTTP/1.1 ...", and Ray would try it for minutes
    try:
        conn.settimeout(min(timeout, 2.0))
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        said = conn.recv(16)
    except OSError:
        said = b""  # (no answer in time: left to Ray)
    finally:
        conn.close()
    if said.startswith(b"HTTP/"):
        raise UsageError(f"{given} {address}: a web server answers at {host}:{port}, not a Ray cluster's "
                         "head (Ray's dashboard is at 8265): give the address `ray start --head` printed "
                         "for `ray.init` (HOST:6379), or ray://HOST:10001")


def default_address() -> str | None:
    """What `ray.init()` with no address would use: RAY_ADDRESS (checked: exit 2 when nothing
    answers), else the cluster `ray start` last made on this machine; "local" (a new instance)
    when that one is gone without `ray stop` (Ray would try it for minutes), else None."""
    if (env := os.environ.get("RAY_ADDRESS", "").strip().rstrip("/")) and env != "auto":
        reachable(env, given="RAY_ADDRESS")
        os.environ["RAY_ADDRESS"] = env  # (as the flag's: Ray takes no `HOST:PORT/`)
        return None
    linux = os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None  # (where Ray looks)
    try:
        last = (Path(os.environ.get("RAY_TMPDIR") or linux or "/tmp") / "ray" / "ray_current_cluster").read_text().strip()
        reachable(last, timeout=2.0)
    except OSError:
        return None
    except UsageError:  # (a head that died without `ray stop` leaves its address there)
        print(f"autoresearch: the Ray cluster last started on this machine ({last}) is gone: starting a "
              "local instance", file=sys.stderr)
        return "local"
    return None


@contextlib.contextmanager
def _marked(token: str) -> Iterator[None]:
    """This process's environment carries OWNER_VAR=`token` for a while (what it starts meanwhile
    inherits it)."""
    if not token:
        yield
        return
    old = os.environ.get(OWNER_VAR)
    os.environ[OWNER_VAR] = token
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(OWNER_VAR, None)
        else:
            os.environ[OWNER_VAR] = old


def _connect(ray: Any, address: str | None, owner: str) -> str | None:
    """Start or join the Ray instance at `address` (the default one: a local instance started
    here, or the cluster this machine belongs to); the address it was reached at."""
    import autoresearch

    address = (address or "").strip().rstrip("/") or None  # (Ray takes no `HOST:PORT/`)
    if address:
        reachable(address)
    else:
        address = default_address()
    if os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_MODE"):
        os.environ["RAY_AUTH_MODE"] = "token"  # a token given is a token to use (Ray >= 2.59)

    package = str(Path(autoresearch.__file__).parent)
    try:
        # no dashboard for a local instance started here (ignored for a cluster); Ray's
        # notice about its future GPU default is moot: a trial granted none sees none
        warnings.filterwarnings("ignore", message=".*RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", category=FutureWarning)
        # (a ray:// address its client cannot reach: the line below says so, and where to look)
        warnings.filterwarnings("ignore", message="Ray Client connection timed out", category=UserWarning)
        # a local instance started here carries the loop's mark, so that the watchdog
        # stops it if the loop is SIGKILLed (Ray's own agents outlive their driver)
        with _marked(f"ray:{owner}" if owner else ""):
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                     include_dashboard=False, runtime_env={"py_modules": [package]})
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds; one line for the user
        said = last_lines(str(e), 1)[:300]
        hint = (" (a cluster with token authentication also needs RAY_AUTH_MODE=token and its token "
                "here: RAY_AUTH_TOKEN, or ~/.ray/auth_token from `ray get-auth-token`)") if address else ""
        if (address or "").startswith("ray://") and "client connection timeout" in said:
            hint = (" (ray:// is for the head's Ray Client server, port 10001 unless `ray start` was "
                    "given --ray-client-server-port; the address `ray start --head` printed, HOST:6379, "
                    "goes without ray://)")
        raise AutoresearchError(f"cannot connect to Ray at {address or 'the default address'}: "
                                f"{said}{hint}") from None
    return address


class RayBackend:
    """Trials as Ray tasks. `address` None: `ray.init()` (RAY_ADDRESS, the cluster `ray start`
    made on this machine, or a new local instance); `resources` None: one GPU per trial
    (`gpus_per_trial`) when the cluster has GPUs, else one CPU."""

    name = "ray"
    remote = True

    def __init__(self, task: Task, address: str | None = None,
                 resources: dict[str, float] | None = None, gpus_per_trial: int = 1, owner: str = "") -> None:
        ray = import_ray()
        self.ray = ray
        self.setup = task.setup
        self.task = task
        self.setup_key = ""  # (of the code setup runs with: made at the first trial)
        self.metric_file = task.metric.file
        self.shared = tuple((rel, str(task.root / rel)) for rel in task.shared)  # linked where a node has them
        self.started = False
        self.gone = ""  # why the cluster's head is taken to be gone (then no task is sent)
        self._watchers: list[threading.Thread] = []
        self._closing = threading.Event()
        if not ray.is_initialized():
            address = _connect(ray, address, owner)
            self.started = True
        try:
            gcs = "" if (address or "").startswith("ray://") else ray.get_runtime_context().gcs_address
        except Exception:  # noqa: BLE001 - (no address to ask: the head is not watched)
            gcs = ""
        self.head = head_address(address, gcs)
        totals = ray.cluster_resources()
        if gpus_per_trial != 1 and not resources and totals.get("GPU", 0) <= 0:
            self.close()
            raise UsageError(f"--gpus-per-trial {gpus_per_trial}: the Ray cluster has no GPU")
        self.request = dict(resources) if resources else (
            {"gpu": float(gpus_per_trial), "cpu": 1.0} if totals.get("GPU", 0) > 0 else {"cpu": 1.0})
        try:
            self._check_fits()
        except UsageError:
            self.close()
            raise
        # max_calls=0: keep workers across GPU tasks (Ray restarts them by default); the GPU
        # memory belongs to the experiment's process, which has exited by then. A streaming
        # generator: its first item says when a node has started it (until then the trial is
        # queued in Ray, waiting for a node with the resources free), its second is the result
        self._task = ray.remote(max_calls=0)(measure_stream).options(num_returns="streaming", **self._options())
        self._lock = threading.Lock()
        self._inflight: set[Any] = set()
        self._watched: set[int] = set()

    def _options(self) -> dict[str, Any]:
        """Ray's options for a trial's task: what `self.request` asks of a node, and no retry
        (a trial that failed is recorded as it failed, not run again behind the loop's back)."""
        options: dict[str, Any] = {"num_cpus": self.request.get("cpu", 1.0),
                                   "num_gpus": self.request.get("gpu", 0.0),
                                   "max_retries": 0, "retry_exceptions": False}
        if "memory" in self.request:
            options["memory"] = int(self.request["memory"])
        custom = {k: v for k, v in self.request.items() if k not in RAY_NAMES}
        if custom:
            options["resources"] = custom
        return options

    def _need(self) -> dict[str, float]:
        """What each task takes from a node: the CPU a Ray task takes unless told otherwise too."""
        asked = {**self.request, "cpu": self.request.get("cpu", 1.0)}
        return {RAY_NAMES.get(k, k): v for k, v in asked.items() if v > 0}

    def _check_fits(self) -> None:
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        need = self._need()
        if any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
            return
        have = "; ".join(", ".join(f"{k} {node.get(k, 0):g}" for k in need) for node in nodes[:3])
        raise UsageError(f"--trial-resources {describe(self.request)}: no node of the Ray cluster "
                         f"has that much (nodes: {have or 'none'})")

    def slots(self, workers: int | None) -> list[tuple[str, ...]]:
        """`workers` trials in flight; by default as many as the cluster holds at once."""
        if workers is None:
            totals = self.ray.cluster_resources()
            workers = max(1, min((int(totals.get(k, 0) // v) for k, v in self._need().items()),
                                 default=int(totals.get("CPU", 1))))  # (cpu=0 alone: one per CPU)
        return [()] * workers

    def run(self, spec: ExecSpec, restore: Callable[[], None], cancel: threading.Event,
            started: Callable[[], None] | None = None) -> ExecResult:
        if self.gone:  # (a call to Ray would wait for the head until Ray ends this process)
            write_log(spec.log_path, f"not sent to Ray: {self.gone}\n".encode())
            return ExecResult("lost", None, 0.0, self.gone)
        restore()
        if self.setup and not self.setup_key:
            self.setup_key = setup_key(self.task, spec.workdir)
        code = pack(spec.workdir)
        # only our variables travel: the worker's own environment is the experiment's base
        spec = replace(spec, env={k: v for k, v in spec.env.items() if k.startswith("AUTORESEARCH_")})
        self._watch(cancel)
        start = time.monotonic()
        ref = self._task.remote(spec, code, self.setup, self.setup_key, self.metric_file, self.shared)
        with self._lock:
            self._inflight.add(ref)
        if cancel.is_set():
            self.ray.cancel(ref, force=True)
        try:
            node = self._next(ref)  # a node started it (it waited in Ray's queue until then)
            with contextlib.suppress(OSError):  # (a note for the while: its output replaces it)
                write_log(spec.log_path, f"=== autoresearch: running on the Ray node {node} since "
                          f"{time.strftime('%H:%M:%S')}; its output comes back when it ends ===\n".encode())
            if started is not None:
                started()
            back: Returned = self._next(ref)
        except Exception as e:  # noqa: BLE001 - sorted below: cancelled, lost, or failed
            return self._failed(spec, e, cancel, time.monotonic() - start)
        finally:
            with self._lock:
                self._inflight.discard(ref)
        write_log(spec.log_path, back.log)
        if back.setup_log is not None:  # (locally logs/setup.log; here one part per node)
            write_log(spec.log_path.with_name("setup.log"), f"=== autoresearch: setup on {back.node}, before "
                      f"trial {spec.number} ===\n".encode() + back.setup_log, append=True)
        if back.eval_log is not None:  # the evaluator's whole output: sealed on the driver too
            eval_log_path(spec).parent.mkdir(parents=True, exist_ok=True)
            write_log(eval_log_path(spec), back.eval_log)
        shutil.rmtree(spec.run_dir, ignore_errors=True)
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        if back.metric is not None and self.metric_file:
            (spec.run_dir / self.metric_file).parent.mkdir(parents=True, exist_ok=True)
            (spec.run_dir / self.metric_file).write_bytes(back.metric)
        if back.result.stale:  # the run wrote none: the one this worktree has (the commit's) is not its result
            (spec.workdir / back.result.stale).unlink(missing_ok=True)
        return back.result

    def _next(self, stream: Any) -> Any:
        """The task's next item, or its error. Ray would wait for a head that is gone until it
        ends this process: the head is asked every HEARTBEAT seconds meanwhile."""
        while not self.ray.wait([stream], timeout=HEARTBEAT)[0]:
            if self._head_gone(until_it_answers=True):
                raise HeadGone(self.gone)
        return self.ray.get(next(stream))

    def _failed(self, spec: ExecSpec, e: Exception, cancel: threading.Event, seconds: float) -> ExecResult:
        if cancel.is_set():
            write_log(spec.log_path, b"=== autoresearch: stopped on the Ray worker; its output did not come back ===\n",
                      append=True)
            return ExecResult("cancelled", None, seconds, "")
        # (a RayTaskError's text starts with a coloured `ray::measure_stream()`: no escape codes in
        # the log, the trial's record or the loop's lines)
        why = f"{type(e).__name__}: {last_lines(printable(str(e)), 2)}"[:400]
        write_log(spec.log_path, f"the Ray task did not complete: {why}\n".encode())
        if type(e).__name__ in LOST:
            return ExecResult("lost", None, seconds, self._head_gone() or why)
        return ExecResult("crash", None, seconds, f"the Ray task failed: {why}")

    def _head_gone(self, until_it_answers: bool = False) -> str:
        """Why the cluster's head is gone ('' while it answers). Ray ends a driver whose head is
        gone a minute later (exit 1, a line of its own): the loop ends first, in its own words.
        Gone: nothing answers at its address twice in a row, 1 s apart (once is a blip). Asked
        four times over 3 s (a node may be seen dead just before its head is), or, for the
        heartbeat, until it answers."""
        failed = 0
        for probe in range(4 if self.head else 0):
            if self.gone:
                break
            try:
                reachable(self.head, timeout=2.0, given="the Ray cluster's head")
                failed = 0
                if until_it_answers:
                    break
            except UsageError as e:
                failed += 1
                if failed == 2:
                    self.gone = (f"{e} The trials in flight are recorded as interrupted; `run --tag` "
                                 "goes on once the cluster is back")
            if probe < 3 and not self.gone:
                time.sleep(1.0)
        return self.gone

    def _watch(self, cancel: threading.Event) -> None:
        with self._lock:
            if id(cancel) in self._watched:
                return
            self._watched.add(id(cancel))
            watcher = threading.Thread(target=self._cancel_on, args=(cancel,), daemon=True)
            self._watchers.append(watcher)
        watcher.start()

    def _cancel_on(self, cancel: threading.Event) -> None:
        while not cancel.wait(0.1):
            if self._closing.is_set():
                return
        with self._lock:
            refs = list(self._inflight)
        for ref in refs:  # politely: the task kills its experiment's processes and ends
            self.ray.cancel(ref)
        deadline = time.monotonic() + GRACE_SECONDS + 1
        while time.monotonic() < deadline and any(r in self._inflight for r in refs):
            time.sleep(0.05)
        for ref in refs:
            if ref in self._inflight:
                self.ray.cancel(ref, force=True)

    def close(self) -> None:
        # The cancel watchers finish first: a Ray call made after ray.shutdown() makes Ray's
        # core worker end the whole process (exit status 1), losing the loop's last words.
        self._closing.set()
        for watcher in self._watchers:
            watcher.join(timeout=GRACE_SECONDS + 5)
        if self.started:
            self.ray.shutdown()
