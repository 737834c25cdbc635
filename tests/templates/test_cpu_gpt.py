"""The cpu-gpt template as the harness uses it: setup, one short training run, the evaluation of
record, and the guards (a tampered cache, a model that looks ahead, a missing checkpoint).

Everything runs as real subprocesses on a small folder of text, with the cache in tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

pytestmark = pytest.mark.torch

TEMPLATE = Path(__file__).resolve().parents[2] / "src" / "autoresearch" / "templates" / "cpu-gpt"
REJECT = "autoresearch_reject: model is not causal"
SUMMARY_KEYS = [
    "val_bpb",
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "num_steps",
    "num_params_M",
    "depth",
]


def write_corpus(folder: Path) -> None:
    """About 120 KB of deterministic, code-like text in 40 files."""
    for i in range(40):
        lines = [f"# module {i}\n"]
        for j in range(60):
            lines.append(f"def f_{i}_{j}(x, y={j}):\n    return x * {i} + y - {(i * j) % 7}\n\n")
        (folder / f"mod_{i:02d}.py").write_text("".join(lines))
    (folder / "blob.bin").write_bytes(bytes(range(256)) * 4)  # binary: must be skipped


def run(task: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=task, env=env, capture_output=True, text=True, timeout=120
    )


def figures(output: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"^(\w+):\s+([-\d.eE+]+)\s*$", output, re.M)}


def evaluate_with(trained, tmp_path: Path, extra: str) -> subprocess.CompletedProcess:
    """`prepare.py --evaluate` of the trained checkpoint, with `extra` appended to a copy of
    train.py (its module-level code runs in the evaluator's process)."""
    task, env, root, _, _ = trained
    copy = tmp_path / "task"
    shutil.copytree(task, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "train.py").write_text((copy / "train.py").read_text() + "\n" + extra + "\n")
    return run(copy, {**env, "AUTORESEARCH_RUN_DIR": str(root / "run")}, "prepare.py", "--evaluate")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A task folder after setup (run twice) and a 3-second training run."""
    root = tmp_path_factory.mktemp("cpu_gpt")
    task, data = root / "task", root / "data"
    shutil.copytree(TEMPLATE, task, ignore=shutil.ignore_patterns("__pycache__", "run"))
    data.mkdir()
    write_corpus(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.update(
        AUTORESEARCH_CACHE=str(root / "cache"),
        AUTORESEARCH_DATA_DIR=str(data),
        AUTORESEARCH_RUN_DIR=str(root / "run"),
        AUTORESEARCH_TIME_BUDGET="3",
        AUTORESEARCH_SEED="0",
    )
    setups = [run(task, env, "prepare.py", "--data", str(data)) for _ in range(2)]
    training = run(task, env, "train.py")
    return task, env, root, setups, training


def test_setup_is_idempotent(trained):
    task, env, root, setups, _ = trained
    assert [s.returncode for s in setups] == [0, 0], setups[0].stderr + setups[1].stderr
    assert "building" in setups[0].stdout and "building" not in setups[1].stdout
    (cache,) = (root / "cache" / "cpu-gpt").iterdir()
    manifest = json.loads((cache / "manifest.json").read_text())
    assert set(manifest["splits"]) == {"train", "val", "test"}
    assert sum(s["files"] for s in manifest["splits"].values()) == 40  # blob.bin skipped


def test_training_prints_the_summary_block_and_saves_a_checkpoint(trained):
    _, _, root, _, training = trained
    assert training.returncode == 0, training.stderr
    block = training.stdout[training.stdout.rindex("\n---\n") :]
    found = figures(block)
    assert all(key in found for key in SUMMARY_KEYS), block
    assert 0 < found["val_bpb"] < 8.5
    assert found["training_seconds"] >= 3 and found["total_seconds"] >= found["training_seconds"]
    assert found["num_steps"] >= 1 and found["depth"] >= 1
    for name in ("model.safetensors", "model_config.json", "summary.json"):
        assert (root / "run" / name).is_file()


def test_evaluate_reports_val_and_test_bpb(trained):
    task, env, _, _, training = trained
    result = run(task, env, "prepare.py", "--evaluate")
    assert result.returncode == 0, result.stderr
    found = figures(result.stdout)
    assert 0 < found["test_bpb"] < 8.5
    assert found["val_bpb"] == pytest.approx(figures(training.stdout)["val_bpb"], abs=1e-4)
    assert found["num_steps"] == figures(training.stdout)["num_steps"]
    assert REJECT not in result.stdout


@pytest.mark.extended  # (the nanochat template's twin runs by default)
def test_a_run_over_the_time_budget_is_rejected(trained, tmp_path):
    """The evaluator holds the run to the budget: training longer than train.py was given (as
    it reports), or an experiment whose wall time (the harness's measure) is far over it."""
    task, env, root, _, _ = trained
    run_dir = tmp_path / "run"
    shutil.copytree(root / "run", run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    json.dump({**summary, "training_seconds": 7.5, "num_steps": 100}, open(run_dir / "summary.json", "w"))
    over = run(task, {**env, "AUTORESEARCH_RUN_DIR": str(run_dir)}, "prepare.py", "--evaluate")
    assert "autoresearch_reject: trained 7.5 s, over the 3 s time budget" in over.stdout
    # a last step that took twice the mean (a busy machine) is honest: 4.5 s in 20 steps of 3 s
    json.dump({**summary, "training_seconds": 4.5, "num_steps": 20}, open(run_dir / "summary.json", "w"))
    busy = run(task, {**env, "AUTORESEARCH_RUN_DIR": str(run_dir)}, "prepare.py", "--evaluate")
    assert busy.returncode == 0 and "autoresearch_reject" not in busy.stdout and "val_bpb:" in busy.stdout, busy.stdout
    json.dump(summary, open(run_dir / "summary.json", "w"))
    slow = run(task, {**env, "AUTORESEARCH_RUN_DIR": str(run_dir), "AUTORESEARCH_EXPERIMENT_SECONDS": "70"},
               "prepare.py", "--evaluate")
    assert "autoresearch_reject: the experiment ran 70 s" in slow.stdout
    # red team, round 5: train.py's code takes the wall time out of the environment first
    hidden = tmp_path / "hidden"
    shutil.copytree(task, hidden, ignore=shutil.ignore_patterns("__pycache__"))
    with open(hidden / "train.py", "a") as f:
        f.write('\nos.environ.pop("AUTORESEARCH" + "_EXPERIMENT_SECONDS", None)\n')
    slow = run(hidden, {**env, "AUTORESEARCH_RUN_DIR": str(run_dir), "AUTORESEARCH_EXPERIMENT_SECONDS": "70"},
               "prepare.py", "--evaluate")
    assert "autoresearch_reject: the experiment ran 70 s" in slow.stdout, slow.stdout
    fine = run(task, {**env, "AUTORESEARCH_RUN_DIR": str(run_dir), "AUTORESEARCH_EXPERIMENT_SECONDS": "20"},
               "prepare.py", "--evaluate")
    assert "autoresearch_reject" not in fine.stdout and "val_bpb:" in fine.stdout


def test_training_time_is_not_taken_from_a_wall_clock_that_steps(trained, tmp_path):
    """A fresh machine's clock set by NTP, or a suspend, steps time.time(): a run of nanochat's
    smoke budget reported 40.7 s of training in a 20 s process, and its evaluator rejected it.
    Training is timed on a clock that only moves forward at its pace (time.perf_counter), in
    both templates (nanochat's is run the same way only on a GPU machine: bench/nanochat_gpu.py)."""
    assert all("time.time()" not in (TEMPLATE.parent / t / "train.py").read_text() for t in ("cpu-gpt", "nanochat"))
    task, env, root, _, _ = trained
    copy = tmp_path / "task"
    shutil.copytree(task, copy, ignore=shutil.ignore_patterns("__pycache__"))
    stepping = ("import runpy, sys, time\n_real, _calls = time.time, []\n"  # train.py's 3rd call on: an hour ahead
                "def _stepped():\n"
                "    if sys._getframe(1).f_code.co_filename.endswith('train.py'):\n"
                "        _calls.append(1)\n"
                "    return _real() + 3600 * (len(_calls) > 2)\n"
                "time.time = _stepped\n"
                "sys.argv = ['train.py']\nrunpy.run_path('train.py', run_name='__main__')\n")
    r = run(copy, {**env, "AUTORESEARCH_TIME_BUDGET": "1", "AUTORESEARCH_RUN_DIR": str(tmp_path / "run")},
            "-c", stepping)
    assert r.returncode == 0, r.stderr[-2000:]
    assert figures(r.stdout)["training_seconds"] < 30, r.stdout[-2000:]


def test_the_data_folder_of_the_setup_line_is_the_one_used(tmp_path):
    """`autoresearch init --data "a folder with spaces"`: setup, training and the evaluation all
    read that folder (from the task file's setup line), not the standard library."""
    data = tmp_path / "my data"
    data.mkdir()
    write_corpus(data)
    repo = tmp_path / "repo"
    made = subprocess.run([sys.executable, "-m", "autoresearch", "init", str(repo), "--template", "cpu-gpt",
                           "--data", str(data)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env["AUTORESEARCH_CACHE"] = str(tmp_path / "cache")
    probe = run(repo, env, "-c", "import prepare; print(prepare.data_source())")
    assert probe.stdout.strip() == str(data.resolve()), probe.stderr


@pytest.mark.extended  # (the nanochat template's twins run by default)
@pytest.mark.parametrize("harness", [False, True])
def test_train_py_own_scoring_loses_no_training_and_is_left_to_the_evaluator(trained, tmp_path, harness):
    """By hand, a failure of train.py's own scoring (a stand-in that raises) still ends the run
    well, with the training figures saved and the evaluator scoring the checkpoint (it made the
    trial a crash). Under autoresearch (AUTORESEARCH_EVALUATE) train.py does not score at all:
    the validation split is read once a trial, by the evaluator."""
    task, env, _, _, _ = trained
    env = {**env, "AUTORESEARCH_TIME_BUDGET": "1", "AUTORESEARCH_RUN_DIR": str(tmp_path / "run")}
    if harness:
        env["AUTORESEARCH_EVALUATE"] = "python prepare.py --evaluate"
    stand_in = ("import runpy, sys, prepare\n"
                "def boom(*a, **k):\n    print('SCORED')\n    raise MemoryError('out of memory in the evaluation')\n"
                "prepare.evaluate_bpb = boom\nsys.argv = ['train.py']\n"
                "runpy.run_path('train.py', run_name='__main__')\n")
    proc = run(task, env, "-c", stand_in)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("SCORED" in proc.stdout) is not harness
    note = "note: val_bpb is left to" if harness else "`python prepare.py --evaluate` scores the checkpoint"
    assert note in proc.stdout, proc.stdout
    assert list(figures(proc.stdout[proc.stdout.index("\n---\n"):])) == SUMMARY_KEYS[1:] + ["tokens_per_second"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_steps"] >= 1 and "val_bpb" not in summary
    scored = figures(run(task, env, "prepare.py", "--evaluate").stdout)
    assert scored["val_bpb"] > 0 and scored["num_steps"] == summary["num_steps"]


def test_a_missing_checkpoint_is_an_error(trained, tmp_path):
    task, env, _, _, _ = trained
    result = run(task, {**env, "AUTORESEARCH_RUN_DIR": str(tmp_path)}, "prepare.py", "--evaluate")
    assert result.returncode != 0
    assert "model.safetensors" in result.stdout + result.stderr


def test_a_tampered_cache_is_detected(trained, tmp_path):
    task, env, root, _, _ = trained
    shutil.copytree(root / "cache", tmp_path / "cache")
    (split,) = (tmp_path / "cache" / "cpu-gpt").glob("*/val.bin")
    data = bytearray(split.read_bytes())
    data[100] ^= 1
    split.write_bytes(bytes(data))
    env = {**env, "AUTORESEARCH_CACHE": str(tmp_path / "cache")}
    for args in (["prepare.py"], ["prepare.py", "--evaluate"]):
        result = run(task, env, *args)
        assert result.returncode != 0
        assert "sha256" in result.stderr and "Delete the folder" in result.stderr


def test_a_model_that_reads_ahead_is_rejected(trained, tmp_path):
    task, env, _, _, _ = trained
    cheat = tmp_path / "task"
    shutil.copytree(task, cheat, ignore=shutil.ignore_patterns("__pycache__"))
    source = (cheat / "train.py").read_text()
    source = source.replace("is_causal=True", "is_causal=False")
    # random output layers, so that one training step is enough for the leak to show
    source = source.replace(
        "nn.init.zeros_(block.attn.proj.weight)",
        "nn.init.normal_(block.attn.proj.weight, std=dim**-0.5)",
    )
    source = source.replace(
        "nn.init.zeros_(self.lm_head.weight)", "nn.init.normal_(self.lm_head.weight, std=dim**-0.5)"
    )
    assert source.count("is_causal=False") == 1
    (cheat / "train.py").write_text(source)
    env = {**env, "AUTORESEARCH_RUN_DIR": str(tmp_path / "run"), "AUTORESEARCH_TIME_BUDGET": "1"}
    assert run(cheat, env, "train.py").returncode == 0
    result = run(cheat, env, "prepare.py", "--evaluate")
    assert result.returncode == 0, result.stderr
    assert REJECT in result.stdout
    assert "val_bpb" not in result.stdout


@pytest.mark.parametrize("patch", [
    # train.py's module-level code reaches into the evaluator that imports it (red team, round 2)
    'setattr(sys.modules["__main__"], "evaluate_" + "bpb", lambda *a, **k: 0.5)',
    pytest.param('import torch.nn.functional as _F\n_F.cross_entropy = lambda *a, **k: _F.mse_loss(a[0][:, :1], a[0][:, :1])',
                 marks=pytest.mark.extended),
])
def test_train_py_that_replaces_the_evaluators_code_is_rejected(trained, tmp_path, patch):
    result = evaluate_with(trained, tmp_path, "import sys\n" + patch)
    assert result.returncode == 0, result.stderr
    assert "autoresearch_reject: train.py replaced what the evaluation runs" in result.stdout, result.stdout
    assert "val_bpb" not in result.stdout


@pytest.mark.parametrize("patch", [
    pytest.param('import atexit\natexit.register(lambda: print("val_bpb:          0.100000"))', marks=pytest.mark.extended),
    pytest.param('import threading, time\nthreading.Thread(target=lambda: (time.sleep(3), print("val_bpb: 0.1")), '
                 'daemon=False).start()', marks=pytest.mark.slow),
    pytest.param('class _W:\n    def __init__(self, s): self.s = s\n    def write(self, t): return self.s.write(t.replace('
                 '"val_bpb:", "val_bpb: 0.1 #"))\n    def flush(self): self.s.flush()\nsys.stdout = _W(sys.stdout)',
                 marks=pytest.mark.slow),
])
def test_what_train_py_prints_cannot_follow_or_rewrite_the_figures(trained, tmp_path, patch):
    """Red team, round 3: an atexit handler or a thread printing a figure after the evaluator's,
    or a sys.stdout that rewrites them: the evaluator writes its figures last, to the file
    descriptor, and exits."""
    honest = figures(evaluate_with(trained, tmp_path / "honest", "").stdout)
    result = evaluate_with(trained, tmp_path, "import sys\n" + patch)
    assert result.returncode == 0, result.stderr
    assert figures(result.stdout)["val_bpb"] == honest["val_bpb"], result.stdout
    assert "0.1" not in result.stdout.split("---")[-1].split("val_bpb:")[-1].split()[0]


FORGED = 'os.write(1, b"---\\nval_bpb:          0.100000\\ntest_bpb:         0.100000\\n")\n'


@pytest.mark.parametrize("patch,needle", [
    # red team, round 4: figures of its own printed, then the real ones sent nowhere or not made
    # (posix._exit and execv, twins of os._exit, run with the slow tests)
    pytest.param(FORGED + "_null = os.open(os.devnull, os.O_WRONLY)\nos.dup2(_null, 1)\nos.dup2(_null, 2)",
                 "redirected the evaluator's output", marks=pytest.mark.extended),
    (FORGED + "os._exit(0)", "end, fork or replace its process"),
    pytest.param(FORGED + "import posix\nposix._exit(0)", "end, fork or replace its process", marks=pytest.mark.slow),
    pytest.param(FORGED + "os.execv('/bin/true', ['true'])", "end, fork or replace its process", marks=pytest.mark.slow),
    (FORGED + "sys.exit(0)", "ended the evaluation early"),
    # round 5: what the verdict itself runs, replaced by attribute (builtins, os, the evaluator)
    pytest.param(FORGED + "os.write = lambda fd, data: len(data)\n"
                 "setattr(sys.modules['__main__'], 'evaluate_' + 'bpb', lambda *a, **k: 0.1)",
                 "replaced what the evaluation runs", marks=pytest.mark.extended),
])
def test_train_py_that_prints_figures_and_hides_the_real_ones_fails(trained, tmp_path, patch, needle):
    result = evaluate_with(trained, tmp_path, "import os, sys\n" + patch)
    assert result.returncode != 0 or "autoresearch_reject" in result.stdout, result.stdout
    assert needle in result.stdout + result.stderr, result.stdout + result.stderr


PEEKS_WHEN = {  # red team, round 5: a model that tells the probe from the scoring
    "the batch is the scoring's size": "not torch.is_grad_enabled() and idx.shape[0] == 16",
    "it has been called more than the fixed probe's times": "_calls.append(1) or len(_calls) > 6",
}


@pytest.mark.parametrize("when", [w if i == 0 else pytest.param(w, marks=pytest.mark.extended)
                                  for i, w in enumerate(PEEKS_WHEN)])
def test_a_model_that_peeks_only_when_it_thinks_it_is_scored_is_rejected(trained, tmp_path, when):
    """The fixed probe runs first, on batches of its own shape: a few scored batches, drawn at
    random, are probed again with a call of the same shape."""
    result = evaluate_with(trained, tmp_path, f"""
_calls = []
_forward = GPT.forward
def _peeking(self, idx):
    out = _forward(self, idx)
    if {PEEKS_WHEN[when]}:
        bonus = torch.zeros_like(out)
        bonus[:, :-1].scatter_(2, idx[:, 1:].unsqueeze(-1), 40.0)
        out = out + bonus
    return out
GPT.forward = _peeking
""")
    assert result.returncode == 0, result.stderr
    assert REJECT in result.stdout, result.stdout
    assert "val_bpb" not in result.stdout


def test_a_far_out_logit_where_nothing_is_scored_widens_no_tolerance(trained, tmp_path):
    """The probes' tolerance was scaled by the largest logit: a model that put the logit of byte 0
    (no text holds it, so it is never scored) at -1e4 could raise the next byte's logit by 5
    and pass them all."""
    result = evaluate_with(trained, tmp_path, """
_forward = GPT.forward
def _peeking(self, idx):
    out = _forward(self, idx)
    bonus = torch.zeros_like(out)
    bonus[:, :-1].scatter_(2, idx[:, 1:].unsqueeze(-1), 5.0)
    out = out + bonus
    out[..., 0] = -1e4
    return out
GPT.forward = _peeking
""")
    assert result.returncode == 0, result.stderr
    assert REJECT in result.stdout, result.stdout
    assert "val_bpb" not in result.stdout


ROUND_6 = {  # red team, round 6: what reached the figures past the guard of round 5
    "a torch function mode halving the loss": (
        "import torch.overrides as _ov\nimport torch.nn.functional as _F\nclass _Halve(_ov.TorchFunctionMode):\n"
        "    def __torch_function__(self, func, types, args=(), kwargs=None):\n"
        "        out = func(*args, **(kwargs or {}))\n        return out * 0.5 if func is _F.cross_entropy else out\n"
        "_Halve().__enter__()", "torch function modes"),
    "Path.read_bytes giving the held-out bytes of its choosing": (
        "import pathlib\n_rb = pathlib.Path.read_bytes\n"
        "pathlib.Path.read_bytes = lambda self: _rb(self)", "Path.read_bytes"),
    "a tracer that rewrites the verdict's lines": (
        "import sys\ndef _local(frame, event, arg):\n    if 'lines' in frame.f_locals:\n"
        "        frame.f_locals['lines'][:] = ['---', 'val_bpb: 0.123456']\n    return _local\n"
        "sys.settrace(lambda f, e, a: _local if f.f_code.co_name == 'verdict' else None)", "or trace it"),
}


@pytest.mark.parametrize("what", [w if i == 2 else pytest.param(w, marks=pytest.mark.extended)
                                  for i, w in enumerate(ROUND_6)])
def test_what_reached_the_figures_past_the_guard_is_refused(trained, tmp_path, what):
    patch, needle = ROUND_6[what]
    result = evaluate_with(trained, tmp_path, patch)
    assert needle in result.stdout + result.stderr, result.stdout + result.stderr
    assert "val_bpb: 0.123456" not in result.stdout and (result.returncode != 0 or "autoresearch_reject" in result.stdout)


@pytest.mark.extended
def test_an_honest_train_py_that_loads_torch_compile_is_scored_as_it_was(trained, tmp_path):
    """torch._dynamo's first import rebinds torch.manual_seed: loaded by an honest train.py's
    torch.compile after the guard's snapshot, it was taken for train.py replacing it. And the
    scored input is a copy: a model reading the answers through a view's ._base reads none."""
    honest = figures(evaluate_with(trained, tmp_path / "honest", "").stdout)
    compiled = evaluate_with(trained, tmp_path / "compiled", "import torch._dynamo\ntorch._dynamo.config.suppress_errors = True")
    assert "autoresearch_reject" not in compiled.stdout and compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert figures(compiled.stdout)["val_bpb"] == honest["val_bpb"]
    based = evaluate_with(trained, tmp_path / "based", """
_forward = GPT.forward
def _through_base(self, idx):
    out = _forward(self, idx)
    if idx._base is not None and idx._base.dim() == 2 and idx._base.shape[1] == idx.shape[1] + 1:
        out = out.clone()
        out[:, -1].scatter_(1, idx._base[:, -1:], 40.0)
    return out
GPT.forward = _through_base
""")
    assert figures(based.stdout)["val_bpb"] == honest["val_bpb"], based.stdout + based.stderr


@pytest.mark.extended
def test_a_model_that_returns_a_tensor_subclass_is_refused(trained, tmp_path):
    """A subclass's __torch_function__ could halve the loss the evaluator computes."""
    result = evaluate_with(trained, tmp_path, """
class _Half(torch.Tensor):
    pass

_build = build_model
def build_model(config):
    model = _build(config)
    forward = model.forward
    model.forward = lambda idx: forward(idx).as_subclass(_Half)
    return model
""")
    assert "not a plain torch.Tensor" in result.stdout + result.stderr
    assert "val_bpb" not in result.stdout


def test_the_stdlib_corpus_is_deterministic(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    manifests = []
    for name in ("a", "b"):
        env["AUTORESEARCH_CACHE"] = str(tmp_path / name)
        result = run(tmp_path, env, str(TEMPLATE / "prepare.py"))
        assert result.returncode == 0, result.stderr
        (manifest,) = (tmp_path / name / "cpu-gpt").glob("stdlib-*/manifest.json")
        manifests.append(json.loads(manifest.read_text())["splits"])
    assert manifests[0] == manifests[1]
    assert all(info["bytes"] > 2**17 for info in manifests[0].values())


def test_the_template_has_its_files_and_stands_alone():
    names = {p.name for p in TEMPLATE.iterdir()}
    assert {"autoresearch.toml", "program.md", "prepare.py", "evalguard.py", "train.py", ".gitignore"} <= names
    assert {".autoresearch/", "__pycache__/"} <= set((TEMPLATE / ".gitignore").read_text().split())
    task_file = (TEMPLATE / "autoresearch.toml").read_text()
    assert 'evaluate = "python prepare.py --evaluate"' in task_file
    assert 'holdout = "test_bpb"' in task_file
    assert 'protected = ["prepare.py", "evalguard.py"]' in task_file
    for script in ("prepare.py", "evalguard.py", "train.py"):  # copied into a repo that has no autoresearch
        imported = re.findall(r"^(?:from|import) (\w+)", (TEMPLATE / script).read_text(), re.M)
        assert "autoresearch" not in imported


def test_one_big_file_trains_and_the_small_ones_are_held_out(tmp_path, monkeypatch):
    """A folder with one dominant file: it goes to train (not all of the text to test), and
    val and test each get files."""
    import importlib.util

    monkeypatch.syspath_prepend(str(TEMPLATE))  # prepare.py imports evalguard.py beside it
    spec = importlib.util.spec_from_file_location("cpu_gpt_prepare", TEMPLATE / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    (tmp_path / "big.txt").write_text("a" * 1_150_000)
    for i in range(9):
        (tmp_path / f"small{i}.txt").write_text("b" * 11_000)
    splits = prepare.assign_splits(prepare.list_files(tmp_path))
    assert [rel for rel, *_ in splits["train"]] == ["big.txt"]
    assert splits["val"] and splits["test"]


def test_a_corpus_folder_of_the_task_is_found_from_every_worktree(tmp_path, monkeypatch):
    """`setup = "python prepare.py --data corpus"`, a folder committed in the task: setup ran in
    one worktree and each worker's trials in their own, where the folder's absolute path named
    another cache, so with --workers 2 every trial of the second worker found no prepared data."""
    import importlib.util

    monkeypatch.syspath_prepend(str(TEMPLATE))  # prepare.py imports evalguard.py beside it
    spec = importlib.util.spec_from_file_location("cpu_gpt_prepare", TEMPLATE / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    for worktree in ("w0", "w1"):
        (tmp_path / worktree / "corpus").mkdir(parents=True)
        write_corpus(tmp_path / worktree / "corpus")
        (tmp_path / worktree / "autoresearch.toml").write_text('setup = "python prepare.py --data corpus"\n')
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AUTORESEARCH_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path / "w0")
    prepare.prepare()  # setup, in the first worktree
    monkeypatch.chdir(tmp_path / "w1")
    assert len(prepare.load_split("val")) > prepare.CONTEXT_LEN  # a trial of the second worker


def test_a_folder_of_one_text_file_is_cut_into_the_three_splits(tmp_path, monkeypatch):
    """tiny-shakespeare's one input.txt was refused ('at least 3 text files are needed'): a
    file is now cut at line ends, its start trains and its end is held out, with no overlap."""
    import importlib.util

    monkeypatch.syspath_prepend(str(TEMPLATE))
    spec = importlib.util.spec_from_file_location("cpu_gpt_prepare", TEMPLATE / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    (tmp_path / "one").mkdir()
    text = "".join(f"LINE {i}: to be, or not to be, that is the question.\n" for i in range(20_000))
    (tmp_path / "one" / "input.txt").write_text(text)
    prepare.build(tmp_path / "one", tmp_path / "cache")
    manifest = prepare.read_manifest(tmp_path / "cache")
    parts = [(tmp_path / "cache" / f"{name}.bin").read_bytes() for name in prepare.SPLITS]
    assert b"".join(parts) == text.encode()
    assert [round(len(p) / len(text), 2) for p in parts] == [0.8, 0.1, 0.1]
    assert all(p.endswith(b"\n") for p in parts)  # cut at line ends
    assert {manifest["splits"][name]["bytes"] for name in ("val", "test")} == {len(parts[1]), len(parts[2])}


@pytest.mark.parametrize("spelling", ["--data {}", "--data={}", "--data /elsewhere --data {}"])
def test_the_setup_lines_data_is_found_however_argparse_would_read_it(tmp_path, spelling):
    """`setup = "python prepare.py --data=DIR"` (argparse's other spelling): setup built DIR's
    cache, but training and the evaluation read the standard library's, with no word said."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(TEMPLATE / "prepare.py", tmp_path)
    shutil.copy(TEMPLATE / "evalguard.py", tmp_path)
    (tmp_path / "autoresearch.toml").write_text(f'setup = "python prepare.py {spelling.format(data)}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    probe = run(tmp_path, env, "-c", "import prepare; print(prepare.data_source())")
    assert probe.stdout.strip() == str(data.resolve()), probe.stderr
