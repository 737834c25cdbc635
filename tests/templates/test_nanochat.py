"""The nanochat template: the smoke run end to end, the causality probe, the GPU peaks and the
small-machine settings. Real parts only: subprocesses on a smoke cache made here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pyarrow")
np = pytest.importorskip("numpy")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from nanochat_helpers import (  # noqa: E402
    SUMMARY_KEYS,
    TEMPLATE,
    assert_nothing_pickled,
    figures,
    load_prepare,
    run,
    task_env,
)
from safetensors.torch import save_file  # noqa: E402

from autoresearch.task import tomllib as task_toml  # noqa: E402  (tomli on Python 3.10)

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    env = task_env(
        root,
        AUTORESEARCH_SMOKE="1",
        AUTORESEARCH_TIME_BUDGET="10",
        AUTORESEARCH_SEED="1",
        AUTORESEARCH_TRIAL="0",
    )
    task = root / "task"
    shutil.copytree(TEMPLATE, task)
    run(["prepare.py"], task, env)
    return root, task, env


def test_smoke_prepare_says_it_ignores_data(smoke, tmp_path):
    _, task, env = smoke
    args = [sys.executable, "prepare.py", "--data", str(tmp_path / "nowhere")]
    proc = subprocess.run(args, cwd=task, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"--data {tmp_path / 'nowhere'} is ignored" in proc.stderr
    assert "data ready" in proc.stdout


def test_smoke_run_prints_the_summary_and_evaluates_the_checkpoint(smoke):
    root, task, env = smoke
    trained = run(["train.py"], task, env)
    summary = trained[trained.index("\n---\n") :]
    got = figures(summary)
    assert list(got) == SUMMARY_KEYS
    assert got["num_steps"] > 10 and got["depth"] == 2
    assert got["peak_vram_mb"] > 100  # on the CPU, the peak resident memory (torch alone is more)

    scored = run(["prepare.py", "--evaluate"], task, env)
    got_eval = figures(scored)
    assert got_eval["val_bpb"] == pytest.approx(got["val_bpb"], abs=1e-5)  # same checkpoint
    for echoed in set(SUMMARY_KEYS) - {"val_bpb", "total_seconds"}:  # what the training measured
        assert got_eval[echoed] == pytest.approx(got[echoed], abs=0.06)
    assert 0 < got_eval["test_bpb"]

    # it learned: far below the bits per byte of a uniform guess over the vocabulary
    data = root / "cache" / "nanochat" / "smoke"
    token_bytes, val = np.load(data / "token_bytes.npy"), np.load(data / "val.npy")[: 8192 + 1]
    targets = val[1:]
    uniform = (token_bytes[targets] > 0).sum() * np.log2(512) / token_bytes[targets].sum()
    assert got_eval["val_bpb"] < 0.85 * uniform

    assert_nothing_pickled(root / "cache")
    assert_nothing_pickled(root / "run")


def test_a_crash_in_the_final_evaluation_loses_no_training(smoke, tmp_path):
    """The checkpoint is written before train.py scores it: when that scoring fails (here a
    stand-in that raises), the run still succeeds, with the error, a note, and the summary block
    less val_bpb; the weights, config and training figures are in the run folder and the
    evaluation of record scores them. (The failure made the whole trial a crash.)"""
    _, task, env = smoke
    env = {**env, "AUTORESEARCH_TIME_BUDGET": "2", "AUTORESEARCH_RUN_DIR": str(tmp_path / "run")}
    crashing = ("import runpy, sys, prepare\n"
                "def boom(*a, **k):\n    raise MemoryError('out of memory in the evaluation')\n"
                "prepare.evaluate_bpb = boom\nsys.argv = ['train.py']\n"
                "runpy.run_path('train.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", crashing], cwd=task, env=env, capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "MemoryError: out of memory in the evaluation" in proc.stderr, out
    assert "`python prepare.py --evaluate` scores the checkpoint" in proc.stdout, out
    assert list(figures(proc.stdout[proc.stdout.index("\n---\n"):])) == SUMMARY_KEYS[1:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_steps"] > 1 and summary["training_seconds"] >= 2 and "val_bpb" not in summary
    scored = figures(run(["prepare.py", "--evaluate"], task, env))
    assert scored["val_bpb"] > 0 and scored["num_steps"] == summary["num_steps"]


def test_under_an_evaluate_step_train_py_leaves_the_scoring_to_it(smoke, tmp_path):
    """With AUTORESEARCH_EVALUATE (the harness's word that the task's `evaluate` scores the
    checkpoint next) train.py does not read the validation set a second time: no val_bpb of its
    own, and the rest of the summary block."""
    _, task, env = smoke
    env = {**env, "AUTORESEARCH_TIME_BUDGET": "2", "AUTORESEARCH_RUN_DIR": str(tmp_path / "run"),
           "AUTORESEARCH_EVALUATE": "python prepare.py --evaluate"}
    watched = ("import runpy, sys, prepare\nreal = prepare.evaluate_bpb\n"
               "def counted(*a, **k):\n    print('EVALUATED')\n    return real(*a, **k)\n"
               "prepare.evaluate_bpb = counted\nsys.argv = ['train.py']\n"
               "runpy.run_path('train.py', run_name='__main__')\n")
    out = run(["-c", watched], task, env)
    assert "EVALUATED" not in out and "note: val_bpb is left to `python prepare.py --evaluate`" in out, out
    assert list(figures(out[out.index("\n---\n"):])) == SUMMARY_KEYS[1:]  # (the crash test's evaluator scores such a run)


def score_embedding_model(
    env: dict, tmp_path: Path, preamble: str, forward: str, ok: bool = True, summary: dict | None = None
) -> str:
    """What `prepare.py --evaluate` prints for a train.py whose model is one random embedding
    table (512 x 512) with `forward` as the body of its forward(idx), `preamble` above it, and
    `summary` as the summary.json train.py left."""
    task = tmp_path / "task"
    task.mkdir(parents=True)
    for protected in ("prepare.py", "corpus.py", "hardware.py", "evalguard.py"):
        shutil.copy(TEMPLATE / protected, task)
    (task / "train.py").write_text(f"""
import torch.nn as nn
{preamble}

class Model(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.emb = nn.Embedding(config["vocab_size"], config["vocab_size"])

    def forward(self, idx):
        {forward}

def build_model(config):
    return Model(config)
""")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_file({"emb.weight": torch.randn(512, 512)}, str(run_dir / "model.safetensors"))
    (run_dir / "model_config.json").write_text(json.dumps({"vocab_size": 512}))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run(
        ["prepare.py", "--evaluate"], task, {**env, "AUTORESEARCH_RUN_DIR": str(run_dir)}, ok=ok
    )


CHEATS = {
    "reads the next token": "logits + self.emb(idx.roll(-1, dims=1))",
    "reads another row": "logits + self.emb(idx.roll(1, dims=0))",
    # red team, round 5: only where it takes the call for the scoring's, not the fixed probe's
    "reads the next token in batches of the scoring's size":
        "logits + self.emb(idx.roll(-1, dims=1)) if idx.shape[0] == 8 else logits",
    "reads the next token once the fixed probe's calls are over":
        "logits + self.emb(idx.roll(-1, dims=1)) if (CALLS.append(1) or len(CALLS)) > 6 else logits",
}


@pytest.mark.parametrize("cheat", [c if i in (0, 3) else pytest.param(c, marks=pytest.mark.extended)
                                   for i, c in enumerate(CHEATS)])
def test_a_model_that_sees_the_answers_is_rejected(smoke, tmp_path, cheat):
    out = score_embedding_model(
        smoke[2], tmp_path, "CALLS = []", f"logits = self.emb(idx)\n        return {CHEATS[cheat]}"
    )
    assert "autoresearch_reject: model is not causal" in out
    assert "val_bpb" not in out


class Table(torch.nn.Module):
    """One random embedding table as the model; `peek` adds to the logit of the next token (the
    answer), `bos` is the logit given to BOS, a token never scored."""

    def __init__(self, peek: float = 0.0, bos: float | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.peek, self.bos = torch.nn.Embedding(512, 512), peek, bos

    def forward(self, idx):
        logits = self.emb(idx) + self.peek * torch.nn.functional.one_hot(idx.roll(-1, 1), 512)
        if self.bos is not None:
            logits[..., 0] = self.bos  # (BOS is the first id: the tokenizer's only special token)
        return logits


def smoke_prepare(smoke, monkeypatch):
    """The template's prepare.py, in this process, on the smoke cache the fixture made."""
    monkeypatch.setenv("AUTORESEARCH_SMOKE", "1")
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(smoke[0] / "cache"))
    prepare = load_prepare()
    assert prepare.Tokenizer().bos_id == 0
    return prepare


@pytest.mark.parametrize("far_out", [-1e4, float("-inf")])
def test_one_far_out_logit_where_nothing_is_scored_widens_no_tolerance(smoke, monkeypatch, far_out):
    """The probes' tolerance was scaled by the largest logit: a model that put the logit of BOS
    (never scored) at -1e4 passed both probes while it read the next token (val_bpb 0.30 where an
    honest one scores 5), and an honest one that put it at -inf was rejected (inf - inf is nan)."""
    prepare = smoke_prepare(smoke, monkeypatch)
    peeking, honest = Table(peek=8.0, bos=far_out), Table(bos=far_out)
    assert "moved by" in prepare.causality_problem(peeking)
    with pytest.raises(prepare.Peeked):
        prepare.evaluate_bpb(peeking, "val", 8, probes=4)
    assert prepare.causality_problem(honest) is None
    assert prepare.evaluate_bpb(honest, "val", 8, probes=4) == pytest.approx(
        prepare.evaluate_bpb(Table(), "val", 8), rel=0.05
    )


def test_positions_that_predict_bos_are_left_out_whatever_their_loss(smoke, monkeypatch):
    """A model that never predicts BOS (its logit -inf: BOS is never scored) has an infinite loss
    where BOS is next; left out as 0 x inf that was nan, and val_bpb with it."""
    prepare = smoke_prepare(smoke, monkeypatch)
    monkeypatch.setattr(prepare, "EVAL_TOKENS", 10**9)  # the whole split: documents start in it
    rows = (len(prepare.load_split("val")) - 1) // prepare.MAX_SEQ_LEN
    assert (prepare.load_split("val")[1 : rows * prepare.MAX_SEQ_LEN + 1] == 0).sum() >= 2
    never = prepare.evaluate_bpb(Table(bos=float("-inf")), "val", 8)
    assert never == pytest.approx(prepare.evaluate_bpb(Table(bos=-1e4), "val", 8), rel=1e-6)


REPLACED = {
    "the evaluator's function": ('import sys\nsetattr(sys.modules["__main__"], "evaluate_" + "bpb", '
                                 'lambda *a, **k: 0.5)', "evaluate_bpb"),
    # red team, round 5: below the functions the evaluator names, and what it reads from disk
    "torch's own loss under F.cross_entropy": ("import torch\n_ce = torch._C._nn.cross_entropy_loss\n"
                                               "setattr(torch._C._nn, 'cross_entropy_loss', lambda *a, **k: _ce(*a, **k) * 0.5)",
                                               "torch._C._nn.cross_entropy_loss"),
    "np.load scaling the byte counts": ("import numpy as np\n_load = np.load\nsetattr(np, 'lo' + 'ad', lambda f, *a, **k: "
                                        "_load(f, *a, **k) * (4 if str(f).endswith('token_bytes.npy') else 1))", "np.load"),
    "os.write as well, so that the reject is not written": (
        'import os, sys\nos.write(1, b"---\\nval_bpb: 0.1\\n")\nos.write = lambda fd, data: len(data)\n'
        'setattr(sys.modules["__main__"], "evaluate_" + "bpb", lambda *a, **k: 0.5)', "evaluate_bpb"),
}


def test_a_run_whose_wall_time_is_far_over_the_budget_is_rejected(smoke, tmp_path):
    """However little training train.py reports (a clock it slowed), the harness's measure of the
    experiment holds it; read before train.py's code, which cannot take it out of the environment."""
    env = {**smoke[2], "AUTORESEARCH_EXPERIMENT_SECONDS": "300"}  # smoke: 10 s budget, 162.5 s allowed
    hide = 'import os\nos.environ.pop("AUTORESEARCH" + "_EXPERIMENT_SECONDS", None)'
    out = score_embedding_model(env, tmp_path, hide, "return self.emb(idx)")
    assert "autoresearch_reject: the experiment ran 300 s, more than the 10 s time budget allows" in out, out


def test_a_run_one_slow_step_past_the_budget_is_scored_and_a_longer_one_rejected(smoke, tmp_path):
    """Training stops at the first step that ends past the budget: on a CPU or a Mac with
    program.md's settings a step takes seconds, so an honest run ends up to a step over. One
    step (twice the mean, for a busy machine) is allowed, as in cpu-gpt; more is not."""
    env = smoke[2]  # smoke: a 10 s budget, one untimed step on the CPU
    honest = score_embedding_model(env, tmp_path / "honest", "", "return self.emb(idx)",
                                   summary={"training_seconds": 13.5, "num_steps": 5})
    assert "autoresearch_reject" not in honest and "val_bpb:" in honest, honest
    over = score_embedding_model(env, tmp_path / "over", "", "return self.emb(idx)",
                                 summary={"training_seconds": 13.5, "num_steps": 300})
    assert "autoresearch_reject: trained 13.5 s, over the 10 s time budget" in over, over


@pytest.mark.parametrize("what", [w if i < 2 else pytest.param(w, marks=pytest.mark.extended)
                                  for i, w in enumerate(REPLACED)])
def test_a_train_py_that_replaces_what_the_evaluation_runs_is_rejected(smoke, tmp_path, what):
    """Its module-level code runs in the evaluator's process (the model is needed there)."""
    patch, name = REPLACED[what]
    out = score_embedding_model(smoke[2], tmp_path, patch, "return self.emb(idx)")
    assert "autoresearch_reject: train.py replaced what the evaluation runs" in out, out
    assert name in out.split("replaced what the evaluation runs")[1], out
    assert "val_bpb: 0.1" not in out.splitlines()[-1], out


@pytest.mark.parametrize(
    "hide, needle",
    [
        (
            "_null = os.open(os.devnull, os.O_WRONLY)\nos.dup2(_null, 1)",
            "redirected the evaluator's output",
        ),
        pytest.param("os._exit(0)", "end, fork or replace its process",  # (cpu-gpt's runs by default)
                     marks=pytest.mark.extended),
    ],
)
def test_a_train_py_that_prints_figures_and_hides_the_real_ones_fails(
    smoke, tmp_path, hide, needle
):
    forged = 'import os\nos.write(1, b"---\\nval_bpb: 0.1\\ntest_bpb: 0.1\\n")\n' + hide
    out = score_embedding_model(smoke[2], tmp_path, forged, "return self.emb(idx)", ok=False)
    assert needle in out, out


def test_steps_run_off_the_clock_only_where_they_compile(monkeypatch):
    """Ten steps ran off the clock on CPU and MPS too, where nothing is compiled: with the CPU
    settings of program.md (seconds a step) that was minutes of training outside the budget,
    more the larger the batch, so a search there favoured large batches."""
    monkeypatch.delenv("AUTORESEARCH_SMOKE", raising=False)
    assert load_prepare().UNTIMED_STEPS == (10 if torch.cuda.is_available() else 1)


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H200", 989),
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H100 NVL", 835),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA A40", 150),
        ("NVIDIA L40S", 362),
        ("NVIDIA L4", 121),
        ("NVIDIA GeForce RTX 5090", 209),
        ("NVIDIA GeForce RTX 4090", 165),
        ("NVIDIA RTX 6000 Ada Generation", 364),
        ("NVIDIA RTX A6000", 155),
        ("NVIDIA A10G", None),
        ("Some Future GPU", None),
    ],
)
def test_the_peak_of_each_gpu_name(
    name: str, tflops: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MFU is against the detected GPU's own peak; an unknown one has none (MFU 0, with a note),
    not the H100's."""
    hardware = load_prepare("hardware")
    monkeypatch.delenv("AUTORESEARCH_PEAK_TFLOPS", raising=False)
    monkeypatch.setattr(hardware.torch.cuda, "get_device_name", lambda device: name)
    monkeypatch.setattr(hardware.torch.cuda, "get_device_properties",  # (a whole card's SMs: not read)
                        lambda device: type("Props", (), {"multi_processor_count": 132})())
    peak, seen = hardware.peak_flops(torch.device("cuda", 0))
    assert seen == name
    assert (None if peak is None else round(peak / 1e12)) == tflops


@pytest.mark.parametrize(
    "name, sms, tflops",
    [
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", 14, 312 * 14 / 108),
        ("NVIDIA A100-SXM4-80GB MIG 3g.40gb", 42, 312 * 42 / 108),
        ("NVIDIA A100-SXM4-40GB MIG 7g.40gb", 98, 312 * 98 / 108),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 16, 989 * 16 / 132),
        ("NVIDIA H100 PCIe MIG 2g.20gb", 28, 756 * 28 / 114),
        ("NVIDIA A30 MIG 1g.6gb", 14, 165 * 14 / 56),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", None, None),  # its SMs unknown: not the card's peak
        ("Some Future GPU MIG 1g.10gb", 16, None),
        ("NVIDIA A100-SXM4-40GB", 108, 312),  # the whole card
    ],
)
def test_a_mig_slice_has_its_share_of_the_cards_peak(name, sms, tflops):
    """On a MIG slice the device name is the card's plus the profile, and MFU against the whole
    card's peak read 1/7 of the truth on a 1g slice: the slice's SMs over the card's scale it."""
    hardware = load_prepare("hardware")
    peak = hardware.gpu_peak(name, sms)
    assert (None if peak is None else peak / 1e12) == (None if tflops is None else pytest.approx(tflops))


def test_a_mig_slice_is_told_by_its_name_and_its_sms_read_from_the_device(monkeypatch):
    hardware = load_prepare("hardware")
    monkeypatch.delenv("AUTORESEARCH_PEAK_TFLOPS", raising=False)
    monkeypatch.setattr(hardware.torch.cuda, "get_device_name", lambda device: "NVIDIA A100-SXM4-40GB MIG 2g.10gb")
    monkeypatch.setattr(hardware.torch.cuda, "get_device_properties",
                        lambda device: type("Props", (), {"multi_processor_count": 28})())
    peak, seen = hardware.peak_flops(torch.device("cuda", 0))
    assert seen == "NVIDIA A100-SXM4-40GB MIG 2g.10gb" and peak == pytest.approx(312e12 * 28 / 108)


def test_the_small_machine_settings_lie_inside_the_ranges_program_md_gives(tmp_path):
    """Each row of program.md's table, applied to train.py as a user would (values and `# search:`
    ranges): `autoresearch space` lists those ranges and finds no value outside them."""
    table = re.findall(
        r"^\| (.+?) \| (.+?) \| (.+?) \|$", (TEMPLATE / "program.md").read_text(), re.M
    )
    rows = [row for row in table if "DEPTH = " in row[1]]
    assert [r[0].split()[0] for r in rows] == ["24", "8", "Apple"]
    for machine, settings, ranges in rows:
        task = tmp_path / machine.split()[0]
        shutil.copytree(TEMPLATE, task)
        source = (task / "train.py").read_text()
        for name, value in re.findall(r"`([A-Z_]+) = (\d+)`", settings):
            source, n = re.subn(rf"^{name} = \S+", f"{name} = {value}", source, flags=re.M)
            assert n == 1, name
        bounds = re.findall(r"`([A-Z_]+)` (\d+)\.\.(\d+)", ranges)
        assert {"DEPTH", "TOTAL_BATCH_SIZE"} <= {name for name, _, _ in bounds}
        for name, lo, hi in bounds:
            ranged = rf"^({name} = \S+\s+# search: )\S+"
            source, n = re.subn(ranged, rf"\g<1>{lo}..{hi}", source, flags=re.M)
            assert n == 1, name
        (task / "train.py").write_text(source)
        listed = run(["-m", "autoresearch", "space", str(task)], tmp_path, task_env(tmp_path))
        assert "outside" not in listed, (machine, listed)
        for name, lo, hi in bounds:
            assert re.search(rf"^{name}\s+train\.py:\d+\s+\S+\s+{lo}\.\.{hi}\s", listed, re.M), name


def test_every_total_batch_size_the_search_may_pick_is_at_least_one_device_pass():
    """train.py accumulates round(TOTAL_BATCH_SIZE / (DEVICE_BATCH_SIZE x 2048)) passes, at least
    one: a range starting below one pass made every value there the same step (65536 to 393215
    all gave 262144 tokens on the 80 GB defaults), trials a search spent on one configuration
    under many names. The defaults and each row of program.md's table start at one pass."""
    source = (TEMPLATE / "train.py").read_text()
    device_batch = int(re.search(r"^DEVICE_BATCH_SIZE = (\d+)", source, re.M)[1])
    low = int(re.search(r"^TOTAL_BATCH_SIZE = \d+\s+# search: (\d+)\.\.", source, re.M)[1])
    machines = [(device_batch, low)]
    for settings, ranges in re.findall(r"^\| .+? \| (.+?) \| (.+?) \|$", (TEMPLATE / "program.md").read_text(), re.M):
        if "DEVICE_BATCH_SIZE = " in settings:
            machines.append((int(re.search(r"DEVICE_BATCH_SIZE = (\d+)", settings)[1]),
                             int(re.search(r"`TOTAL_BATCH_SIZE` (\d+)\.\.", ranges)[1])))
    assert len(machines) == 4
    for device_batch, low in machines:
        assert low >= device_batch * 2048, (device_batch, low)


def test_the_evaluators_guard_is_one_file_in_both_templates_and_protected(tmp_path):
    """evalguard.py keeps train.py's code from writing the figures; both ML templates ship the
    same file (one source: nanochat's is a link to cpu-gpt's), a new task gets it as a file of
    its own, and each task file protects every module its evaluation runs."""
    from autoresearch.scaffold import init

    cpu_gpt = TEMPLATE.parent / "cpu-gpt"
    for name in ("cpu-gpt", "nanochat"):
        made = init(tmp_path / name, template=name) / "evalguard.py"
        assert not made.is_symlink() and made.read_bytes() == (cpu_gpt / "evalguard.py").read_bytes()
        listed = subprocess.run(["git", "ls-files", "-s", "evalguard.py"], cwd=made.parent,
                                capture_output=True, text=True, check=True).stdout
        assert listed.startswith("100644 "), listed  # committed as a file, not a link
    for folder, modules in ((TEMPLATE, ["prepare.py", "corpus.py", "hardware.py", "evalguard.py"]),
                            (cpu_gpt, ["prepare.py", "evalguard.py"])):
        task_file = task_toml.loads((folder / "autoresearch.toml").read_text())
        assert task_file["protected"] == modules
        imported = {m for f in modules for m in re.findall(r"^from (\w+) import", (folder / f).read_text(), re.M)}
        assert {m + ".py" for m in imported if (folder / f"{m}.py").exists()} <= set(modules)
