"""Results you can trust: noise, the sealed holdout, the evaluator's integrity, the causality
probe. Real task repositories, real loops through the CLI, real subprocesses.
(The sandbox is tested in test_sandbox.py, the audit in test_audit.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, git, make_task, script_agent, trials

from autoresearch.loop import visible
from autoresearch.process import kill_owned
from autoresearch.records import Status, Trial

METRIC = '\n[metric]\nname = "loss"\ngoal = "minimize"\n'




def run(root: Path, agent: str, trials_: int, *extra: str, tag: str = "t") -> subprocess.CompletedProcess[str]:
    r = cli("run", str(root), "--tag", tag, "--agent", "cli", "--agent-cmd", agent,
            "--trials", str(trials_), *extra)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


# ---------------------------------------------------------------------------
# noise: baseline_runs, min_delta = "auto", confirm

SEEDED = """\
import os
SEED = int(os.environ["AUTORESEARCH_SEED"])
LUCKY = 0.0
BONUS = 0.0
# the metric's seed-to-seed spread: seeds 0, 1, 2 give 1.00, 1.01, 0.99
loss = 1.0 + {0: 0.0, 1: 0.01, 2: -0.01}.get(SEED, 0.0) - BONUS
loss += -LUCKY if SEED == 0 else LUCKY / 5  # better on seed 0 only, worse on average
print(f"loss: {loss}")
print(f"seed_seen: {SEED}")
"""


def test_repeats_noise_and_confirm_end_to_end(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task", experiment=SEEDED, toml_extra=(
        '[acceptance]\nmin_delta = "auto"\nbaseline_runs = 3\nconfirm = 2\n'
        + METRIC + 'record = ["seed_seen"]\n'))
    agent = script_agent(tmp_path / "agent.sh", """\
        case $AUTORESEARCH_TRIAL in
          1) sed -i 's/^LUCKY = .*/LUCKY = 0.05/' exp.py; echo "lucky on one seed" ;;
          2) sed -i 's/^BONUS = .*/BONUS = 0.1/' exp.py; echo "really better" ;;
        esac
        """)
    run(root, agent, 2)
    base, lucky, real = trials(root)
    # the baseline: three runs with seeds 0, 1, 2; the noise is their spread
    assert [r["seed_seen"] for r in base.repeats] == [0.0, 1.0, 2.0]
    assert base.metric == pytest.approx(1.0)
    assert base.extra["noise"] == pytest.approx(0.01)
    assert base.spread("loss") == pytest.approx(0.01)
    # 0.95 on seed 0 clears the bar (0.02); the confirmation runs (new seeds 1, 2) bring the
    # mean back to 0.99, which does not
    assert lucky.status is Status.DISCARD
    assert [r["seed_seen"] for r in lucky.repeats] == [0.0, 1.0, 2.0]
    assert lucky.metric == pytest.approx((0.95 + 1.02 + 1.0) / 3)
    assert "did not hold up over 3 runs" in lucky.reason
    # a real gain holds up on every seed: kept, its figure the mean of its three runs
    assert real.status is Status.KEEP
    assert real.metric == pytest.approx(0.9)
    assert len(real.repeats) == 3
    # mean +- spread where repeats exist
    status = cli("status", str(root)).stdout
    assert re.search(r"1 ± 0\.01\b", status), status
    assert "noise: sd" in status and "pooled over 9 repeated runs" in status
    show = cli("show", "2", str(root)).stdout
    assert re.search(r"loss: 0\.9 ± 0\.01 \(mean ± sd of 3 runs\)", show), show
    # only the best's first run folder is kept
    assert sorted(p.name for p in (root / ".autoresearch" / "t" / "runs").iterdir()) == ["2"]


NOISY = """\
import os, random
SEED = int(os.environ["AUTORESEARCH_SEED"])
seeded = random.Random(SEED).gauss(0, 0.01)                             # seed-to-seed spread
unseeded = random.Random(os.urandom(16)).gauss(0, 0.01)                 # nondeterminism
print(f"loss: {1.0 + seeded + unseeded}")
"""


def test_null_changes_on_a_noisy_metric_are_rarely_kept(tmp_path: Path) -> None:
    """20 trials that only add a comment, on a metric with seeded and unseeded noise, under
    baseline_runs = 3, min_delta = "auto", confirm = 2: at most one kept. (A simulation of this
    policy gives P(more than one kept in 20) of about 0.15%; the test can fail by chance that
    rarely.)"""
    root = make_task(tmp_path / "task", experiment=NOISY, toml_extra=(
        '[acceptance]\nmin_delta = "auto"\nbaseline_runs = 3\nconfirm = 2\n' + METRIC))
    agent = script_agent(tmp_path / "agent.sh", """\
        echo "# null change $AUTORESEARCH_TRIAL" >> exp.py
        echo "add a comment"
        """)
    run(root, agent, 20)
    done = trials(root)[1:]
    assert len(done) == 20
    assert all(t.status in (Status.KEEP, Status.DISCARD) for t in done), [t.reason for t in done]
    kept = [t for t in done if t.status is Status.KEEP]
    assert len(kept) <= 1, [(t.number, t.metric) for t in kept]
    # every candidate that cleared the bar was confirmed on two more seeds
    assert all(len(t.repeats) == 3 for t in done if t.reason.startswith("did not hold up") or t in kept)


@pytest.mark.parametrize("extra, message", [
    ('[acceptance]\nmin_delta = "auto"\n' + METRIC, "'acceptance.baseline_runs' >= 2"),
    (METRIC + 'holdout = "test_loss"\n', "'metric.holdout' needs 'evaluate'"),
    (METRIC + 'record = ["loss"]\n', "'metric.record' must not list 'loss'"),
])
def test_task_file_errors(tmp_path: Path, extra: str, message: str) -> None:
    root = make_task(tmp_path / "task", toml_extra=extra)
    r = cli("run", str(root), "--tag", "t", "--trials", "1")
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------
# the sealed holdout

HOLDOUT = "0.4242917"  # what the evaluator adds to the loss for test_loss: easy to grep for

EVAL_TASK = 'evaluate = "python prepare.py"\n' + METRIC + 'holdout = "test_loss"\n'
EVALUATOR = f"""\
import json, os
run = os.environ["AUTORESEARCH_RUN_DIR"]
loss = json.load(open(os.path.join(run, "result.json")))["loss"]
print(f"loss: {{loss}}")
print(f"test_loss: {{loss + {HOLDOUT}}}")
"""
EXPERIMENT = """\
import json, os
X = 3.0
loss = (X - 1.0) ** 2
json.dump({"loss": loss}, open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "result.json"), "w"))
print(f"loss: {loss}")
"""


def eval_task(tmp_path: Path, experiment: str = EXPERIMENT, evaluator: str = EVALUATOR,
              holdout: bool = True) -> Path:
    """A task whose evaluator prints the loss and a holdout (read as one unless `holdout` is
    False: then nothing is sealed and the ledger is not hidden from the experiment)."""
    toml = EVAL_TASK if holdout else EVAL_TASK.replace('holdout = "test_loss"\n', "")
    return make_task(tmp_path / "task", experiment=experiment, toml_extra=toml,
                     files={"prepare.py": evaluator})


LOWER_X = """\
sed -i "s/^X = .*/X = $((3 - AUTORESEARCH_TRIAL)).0/" exp.py
echo "lower X"
"""


def holdout_strings(t: Trial) -> list[str]:
    """The ways the holdout of trial t could be written: repr and 6 significant digits."""
    v = t.figures["test_loss"]
    return [repr(v), f"{v:.6g}", f"{v:.6f}"]


def test_holdout_is_recorded_and_shown_but_never_reaches_an_agent(tmp_path: Path) -> None:
    root = eval_task(tmp_path)
    agent = script_agent(tmp_path / "agent.sh", LOWER_X)
    run(root, agent, 2)
    ts = trials(root)
    assert [t.status for t in ts] == [Status.KEEP] * 3
    for t in ts:  # the holdout, read from the evaluator, beside the metric of every kept trial
        assert t.figures["test_loss"] == pytest.approx(t.metric + float(HOLDOUT))
    status = cli("status", str(root)).stdout
    assert "test_loss" in status and f"{ts[2].figures['test_loss']:.6g}" in status
    assert "(holdout, sealed from agents)" in cli("show", "2", str(root)).stdout
    # what an agent is given or may read holds no holdout figure: the prompts, the history it
    # observes, results.tsv, the experiment logs and its own logs
    tag = root / ".autoresearch" / "t"
    seen = [p for sub in ("agent", "logs") for p in (tag / sub).rglob("*") if p.is_file()] + [tag / "results.tsv"]
    assert any(p.name == "prompt.md" for p in seen)
    text = "\n".join(p.read_text() for p in seen)
    text += "\n".join(repr(visible(t, "test_loss")) for t in ts)
    for t in ts:
        for s in holdout_strings(t):
            assert s not in text, s
    assert "[test_loss: sealed]" in (tag / "logs" / "1.log").read_text()
    # the evaluator's whole output is kept, in the sealed folder
    assert "test_loss: " in (tag / "sealed" / "1.eval.log").read_text()


def test_a_failing_evaluator_does_not_leak_the_holdout_through_the_reason(tmp_path: Path) -> None:
    failing = EVALUATOR + "raise SystemExit(3 if loss == 1.0 else 0)\n"  # fails for X = 2
    root = eval_task(tmp_path, evaluator=failing)
    run(root, script_agent(tmp_path / "agent.sh", LOWER_X), 1)
    t = trials(root)[1]
    assert t.status is Status.CRASH and "the evaluator failed (exit 3)" in t.reason
    assert "[test_loss: sealed]" in t.reason
    assert all(s not in t.reason for s in ("1.42429", "1.4242917"))


DUMP = """\
# an agent that tries to read every figure it can reach, and says what it found
set +e
out={out}
{{
  echo "== prompt"; cat "$AUTORESEARCH_PROMPT_FILE"
  echo "== env"; env
  root=$(cd ../../../.. && pwd)
  echo "== ledger"; cat ../../ledger.sqlite ../../ledger.sqlite-wal ../../results.tsv 2>&1
  echo "== sealed"; cat ../../sealed/* ../../logs/* ../../runs/*/* 2>&1
  echo "== tree"; find "$root" -type f 2>&1
  echo "== files"; find "$root" -type f -exec cat {{}} + 2>&1
  echo "== procs"; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>&1
  echo "== via /proc"; ls /proc/1/root"$root"/.autoresearch/t 2>&1
}} > "$out/dump.$AUTORESEARCH_TRIAL" 2>&1
sed -i "s/^X = .*/X = $((3 - AUTORESEARCH_TRIAL)).0/" exp.py
echo "lower X"
"""


def test_a_cli_agent_cannot_read_the_holdout(tmp_path: Path) -> None:
    """The agent process is run under bubblewrap with the ledger folders hidden: it reads
    everything it can reach and the holdout is nowhere in it."""
    from autoresearch import sandbox

    if sandbox.problem():
        pytest.skip(f"the seal needs bubblewrap: {sandbox.problem()}")
    root = eval_task(tmp_path)
    out = tmp_path / "seen"
    out.mkdir()
    agent = script_agent(tmp_path / "agent.sh", DUMP.format(out=out))
    run(root, agent, 2)
    ts = trials(root)
    assert [t.status for t in ts] == [Status.KEEP] * 3
    dumps = b"\n".join(p.read_bytes() for p in sorted(out.iterdir()))
    assert b"== files" in dumps and b"exp.py" in dumps  # it did read the tree
    assert b"No such file" in dumps  # ... and found no ledger there
    ledger = (root / ".autoresearch" / "t" / "ledger.sqlite").read_bytes()
    ledger += (root / ".autoresearch" / "t" / "ledger.sqlite-wal").read_bytes()
    for t in ts[:2]:  # trials finished before the last agent ran
        strings = holdout_strings(t)
        assert any(s.encode() in ledger for s in strings)  # the grep would have found it...
        for s in strings:
            assert s.encode() not in dumps, s  # ...where the agent looked


EXFILTRATE = """\
cat >> exp.py <<'EOF'
# print every sealed thing this code can reach, for the agent to read in the log
import glob
for path in ["../../ledger.sqlite", "../../ledger.sqlite-wal", *glob.glob("../../sealed/*"),
             *glob.glob("../../runs/*/*"), *glob.glob("/proc/[0-9]*/root" + os.getcwd() + "/../../sealed/*")]:
    try:
        print(path, open(path, "rb").read().decode("latin-1"))
    except OSError as e:
        print(path, "refused:", e)
EOF
sed -i "s/^X = .*/X = $((3 - AUTORESEARCH_TRIAL)).0/" exp.py
echo "read the ledger"
"""


def test_code_an_agent_writes_cannot_read_the_holdout_either(tmp_path: Path) -> None:
    """Without --sandbox too, a task with a holdout runs its experiments with the ledger hidden
    (where bubblewrap works), so the experiment cannot print the holdout into its log."""
    from autoresearch import sandbox

    if sandbox.problem():
        pytest.skip(f"the seal needs bubblewrap: {sandbox.problem()}")
    root = eval_task(tmp_path)
    run(root, script_agent(tmp_path / "agent.sh", EXFILTRATE), 2)
    ts = trials(root)
    assert [t.status for t in ts] == [Status.KEEP] * 3
    logs = "\n".join(p.read_text() for p in (root / ".autoresearch" / "t" / "logs").iterdir())
    assert "../../ledger.sqlite refused" in logs
    for t in ts:
        for s in holdout_strings(t):
            assert s not in logs, s


# ---------------------------------------------------------------------------
# the evaluator is the only source of the figures of record


def test_the_evaluators_figure_is_recorded_not_the_runs_claim(tmp_path: Path) -> None:
    root = eval_task(tmp_path)
    agent = script_agent(tmp_path / "agent.sh", """\
        sed -i 's/^X = .*/X = 2.5/' exp.py
        echo 'print("loss: -100.0")' >> exp.py
        echo "claim a better loss"
        """)
    run(root, agent, 1)
    t = trials(root)[1]
    assert t.metric == pytest.approx(2.25) and t.status is Status.KEEP
    assert any("names the figure 'loss'" in f for f in t.flags)  # and the audit saw the print
    assert "loss: -100.0" in (root / ".autoresearch" / "t" / "logs" / "1.log").read_text()


def test_a_metric_file_is_the_evaluators_not_the_runs(tmp_path: Path) -> None:
    evaluator = """\
import json, os
run = os.environ["AUTORESEARCH_RUN_DIR"]
if os.path.exists(os.path.join(run, "result.json")):
    loss = json.load(open(os.path.join(run, "result.json")))["loss"]
    json.dump({"loss": loss}, open(os.path.join(run, "metrics.json"), "w"))
"""
    root = make_task(tmp_path / "task", experiment=EXPERIMENT, files={"prepare.py": evaluator},
                     toml_extra='evaluate = "python prepare.py"\n' + METRIC + 'file = "metrics.json"\n')
    agent = script_agent(tmp_path / "agent.sh", """\
        cat > exp.py <<'EOF'
        import json, os
        json.dump({"loss": -100.0}, open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "metrics.json"), "w"))
        EOF
        echo "write the metric file myself"
        """)
    run(root, agent, 1)
    base, t = trials(root)
    assert base.metric == pytest.approx(4.0)
    assert t.status is Status.CRASH and "metrics.json was not written" in t.reason


@pytest.mark.parametrize("holdout", [False, True], ids=["hash-check", "sealed"])
def test_an_experiment_that_changes_a_protected_file_is_rejected(tmp_path: Path, holdout: bool) -> None:
    """Unsealed, the file is read-only by mode (root ignores that) and hash-checked after the
    run: rejected. Sealed (a task with a holdout, where bwrap works), the file is bound
    read-only: the write itself fails, and the run with it."""
    from autoresearch import sandbox

    if holdout and sandbox.problem():
        pytest.skip(f"the seal needs bubblewrap: {sandbox.problem()}")
    root = eval_task(tmp_path, holdout=holdout)
    agent = script_agent(tmp_path / "agent.sh", """\
        cat >> exp.py <<'EOF'
        os.chmod("prepare.py", 0o644)
        with open("prepare.py", "a") as f:
            f.write("print('loss: -100')\\n")
        EOF
        echo "improve the evaluator"
        """)
    run(root, agent, 1)
    t = trials(root)[1]
    if holdout:
        assert t.status is Status.CRASH and "Read-only file system" in t.reason, t.reason
    else:
        assert t.status is Status.REJECTED and "changed protected file(s): prepare.py" in t.reason
    assert "loss: -100" not in (root / "prepare.py").read_text()
    assert t.metric is None


SHADOW = '''\
cat >> exp.py <<'EOF'
# leave a module that shadows the evaluator's `import json` (the script's folder comes first)
FAKE = 'import sys\\nprint("loss: -100.0")\\nsys.exit(0)\\n'
open("json.py", "w").write(FAKE)
os.makedirs("__pycache__", exist_ok=True)
EOF
echo "shadow json"
'''

DAEMON = '''\
cat >> exp.py <<'EOF'
# a daemon in its own session that plants the shadow module once the tree was restored
import subprocess
subprocess.Popen(["setsid", "bash", "-c",
                  "sleep 0.7; printf 'print(\\"loss: -100.0\\")\\\\nraise SystemExit(0)\\\\n' > json.py"],
                 start_new_session=True)
EOF
echo "plant json later"
'''

SLOW_EVALUATOR = "import time\ntime.sleep(1.5)\n" + EVALUATOR


@pytest.mark.parametrize("trick", [SHADOW, DAEMON], ids=["shadow-module", "daemon"])
def test_files_the_run_leaves_cannot_reach_the_evaluator(tmp_path: Path, trick: str) -> None:
    """Unsealed (no holdout): the tree is restored before the evaluator, and what the run left
    running is killed first."""
    root = eval_task(tmp_path, evaluator=SLOW_EVALUATOR, holdout=False)
    agent = script_agent(tmp_path / "agent.sh", "sed -i 's/^X = .*/X = 2.5/' exp.py\n" + trick)
    run(root, agent, 1)
    t = trials(root)[1]
    assert t.status is Status.KEEP and t.metric == pytest.approx(2.25), t.reason
    time.sleep(1.0)
    assert not list((root / ".autoresearch" / "t" / "worktrees").rglob("json.py"))
    # the control: the same evaluator beside such a module is fooled
    fooled = tmp_path / "fooled"
    fooled.mkdir()
    (fooled / "prepare.py").write_text(EVALUATOR)
    (fooled / "json.py").write_text('print("loss: -100.0")\nraise SystemExit(0)\n')
    out = subprocess.run([sys.executable, "prepare.py"], cwd=fooled, capture_output=True, text=True)
    assert out.stdout.strip() == "loss: -100.0"


def test_kill_owned_matches_a_trial_not_its_namesakes() -> None:
    procs = {owner: subprocess.Popen(["sleep", "30"], env={**os.environ, "AUTORESEARCH_OWNER": owner})
             for owner in ("/x/t:1", "/x/t:10", "/x/t:1:agent")}
    try:
        assert kill_owned("/x/t:1") == 2
        time.sleep(0.2)
        assert procs["/x/t:1"].poll() is not None and procs["/x/t:1:agent"].poll() is not None
        assert procs["/x/t:10"].poll() is None
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


# ---------------------------------------------------------------------------
# the causality probe (a self-made evaluator with the templates' `autoresearch_reject:` contract)

MODEL = '''\
"""A one-layer attention model over bytes, trained for a second; saved for the evaluator."""
import os, time
import torch
import torch.nn.functional as F

CAUSAL = True
torch.manual_seed(int(os.environ.get("AUTORESEARCH_SEED", "0")))
DIM, CONTEXT = 32, 16


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(256, DIM)
        self.pos = torch.nn.Parameter(torch.zeros(CONTEXT, DIM))
        self.qkv = torch.nn.Linear(DIM, 3 * DIM)
        self.out = torch.nn.Linear(DIM, 256)

    def forward(self, idx):
        x = self.embed(idx) + self.pos[: idx.shape[1]]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=CAUSAL)
        return self.out(x + y)


def batches(text):
    data = torch.tensor(list(text.encode()), dtype=torch.long)
    while True:
        i = torch.randint(0, len(data) - CONTEXT - 1, (32,))
        yield torch.stack([data[j:j + CONTEXT] for j in i]), torch.stack([data[j + 1:j + CONTEXT + 1] for j in i])


if __name__ == "__main__":
    model = Model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    text = open("corpus.txt").read()
    start = time.time()
    for x, y in batches(text):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(); loss.backward(); opt.step()
        if time.time() - start > 1.5:
            break
    torch.save(model.state_dict(), os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "model.pt"))
    print(f"train_loss: {loss.item():.4f}")
'''

PROBE = '''\
"""The evaluator: validation loss and a causality probe (changing tokens after position t must
not change the prediction at t)."""
import os
import torch
import torch.nn.functional as F
from train import Model, CONTEXT

model = Model()
model.load_state_dict(torch.load(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "model.pt")))
model.eval()
torch.manual_seed(0)
with torch.no_grad():
    x = torch.randint(0, 256, (4, CONTEXT))
    t = CONTEXT // 2
    y = x.clone()
    y[:, t + 1:] = torch.randint(0, 256, (4, CONTEXT - t - 1))
    if not torch.allclose(model(x)[:, : t + 1], model(y)[:, : t + 1], atol=1e-5):
        print(f"autoresearch_reject: the prediction at position {t} depends on later tokens")
    data = torch.tensor(list(open("corpus.txt").read().encode()), dtype=torch.long)
    n = (len(data) - 1) // CONTEXT * CONTEXT
    xs, ys = data[:n].view(-1, CONTEXT), data[1:n + 1].view(-1, CONTEXT)
    loss = F.cross_entropy(model(xs).flatten(0, 1), ys.flatten())
print(f"loss: {loss.item():.6f}")
'''


CAUSAL_TASK = """\
name = "causal"
editable = ["train.py"]
protected = ["prepare.py", "corpus.txt"]
command = "python train.py"
evaluate = "python prepare.py"
time_budget = 2
timeout = 60

[metric]
name = "loss"
goal = "minimize"
"""


@pytest.mark.slow
@pytest.mark.torch
def test_a_model_that_attends_to_future_tokens_is_rejected(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    corpus = "".join(f"the {w} sat on the mat; " for w in ("cat", "dog", "bird", "fox")) * 40
    root = make_task(tmp_path / "task", toml=CAUSAL_TASK,
                     files={"train.py": MODEL, "prepare.py": PROBE, "corpus.txt": corpus})
    agent = script_agent(tmp_path / "agent.sh", """\
        sed -i 's/^CAUSAL = True/CAUSAL = False/' train.py
        echo "let attention see the whole window"
        """)
    run(root, agent, 1)
    base, peek = trials(root)
    assert base.status is Status.KEEP
    assert peek.status is Status.REJECTED
    assert "depends on later tokens" in peek.reason
    assert "autoresearch_reject" in (root / ".autoresearch" / "t" / "logs" / "1.log").read_text()


# the same contract without torch (fast): a "model" that predicts each byte from a window of
# the text, which a one-character change lets reach one position ahead

COUNTING = """\
import collections, json, os
AHEAD = 0  # how far past position t the model may look (0: causal)


def predict(data, t):
    \"\"\"The distribution of the byte at t + 1, from the bytes up to t + AHEAD.\"\"\"
    seen = data[max(0, t - 1): t + 1 + AHEAD]
    return {b: 1.0 / len(seen) for b in seen}


if __name__ == "__main__":
    json.dump({"ahead": AHEAD}, open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "model.json"), "w"))
"""

COUNTING_PROBE = """\
import math
from train import predict
data = open("corpus.txt", "rb").read()
t = 10
changed = data[: t + 1] + bytes(255 - b for b in data[t + 1:])
if predict(data, t) != predict(changed, t):
    print(f"autoresearch_reject: the prediction at position {t} depends on later tokens")
loss = -sum(math.log(predict(data, i).get(data[i + 1], 1e-3)) for i in range(len(data) - 2)) / (len(data) - 2)
print(f"loss: {loss:.6f}")
"""


def test_a_predictor_that_peeks_ahead_is_rejected(tmp_path: Path) -> None:
    root = make_task(tmp_path / "task", toml=CAUSAL_TASK, files={
        "train.py": COUNTING, "prepare.py": COUNTING_PROBE, "corpus.txt": "abcabcabd" * 30})
    agent = script_agent(tmp_path / "agent.sh", """\
        sed -i 's/^AHEAD = 0/AHEAD = 1/' train.py
        echo "use one more byte of context"
        """)
    run(root, agent, 1)
    base, peek = trials(root)
    assert base.status is Status.KEEP
    assert peek.status is Status.REJECTED and "depends on later tokens" in peek.reason


# ---------------------------------------------------------------------------
# the evaluator's own failures, files and output


def test_an_evaluator_past_the_timeout_is_a_timeout_and_its_output_explains_the_verdict(tmp_path: Path) -> None:
    """An evaluator that hangs is killed at the timeout and the trial says so (status timeout);
    a missing figure is explained with the evaluator's output, not the run's own print."""
    evaluator = """\
import json, os, time
run = os.environ["AUTORESEARCH_RUN_DIR"]
loss = json.load(open(os.path.join(run, "result.json")))["loss"]
if loss < 0.1:
    time.sleep(60)
if loss < 4.0:
    print("evaluated, no figure")
print(f"loss: {loss}")
"""
    root = make_task(tmp_path / "task", experiment=EXPERIMENT, files={"prepare.py": evaluator},
                     toml_extra='evaluate = "python prepare.py"\n' + METRIC)
    toml = (root / "autoresearch.toml").read_text().replace("timeout = 10", "timeout = 3")
    (root / "autoresearch.toml").write_text(toml)
    git(root, "commit", "-qam", "timeout 3")
    agent = script_agent(tmp_path / "agent.sh", """\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then sed -i 's/^X = .*/X = 1.5/' exp.py; fi
        if [ "$AUTORESEARCH_TRIAL" = 2 ]; then sed -i 's/^X = .*/X = 1.1/' exp.py; fi
        echo "move X"
        """)
    r = run(root, agent, 2)
    assert "timeout (3 s) is not above time_budget (5 s)" in r.stdout + r.stderr
    base, first, second = trials(root)
    assert base.status is Status.KEEP
    assert first.status is Status.KEEP  # 0.25: printed last by the evaluator
    assert second.status is Status.TIMEOUT and "the evaluator was killed after the 3 s timeout" in second.reason


def test_a_missing_figure_is_explained_with_the_evaluators_output(tmp_path: Path) -> None:
    evaluator = 'print("evaluated, val: 1.0")\n'
    root = make_task(tmp_path / "task", experiment='print("loss: 0.5")\n', files={"prepare.py": evaluator},
                     toml_extra='evaluate = "python prepare.py"\n' + METRIC)
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0")
    assert r.returncode == 1
    assert "no 'loss' figure in the output; last output: evaluated, val: 1.0" in r.stderr, r.stderr
    assert "loss: 0.5" not in r.stderr.split("last output:")[1]


def test_an_evaluator_may_write_the_metric_file_in_its_working_folder(tmp_path: Path) -> None:
    """`file = "metrics.json"` with an evaluator: read from $AUTORESEARCH_RUN_DIR or the folder
    the evaluator ran in, and only what the evaluator wrote (the run's own copy is removed)."""
    evaluator = """\
import json, os
loss = json.load(open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "result.json")))["loss"]
if loss != 0.25:
    json.dump({"loss": loss}, open("metrics.json", "w"))
"""
    root = make_task(tmp_path / "task", experiment=EXPERIMENT, files={"prepare.py": evaluator},
                     toml_extra='evaluate = "python prepare.py"\n' + METRIC + 'file = "metrics.json"\n')
    agent = script_agent(tmp_path / "agent.sh", """\
        if [ "$AUTORESEARCH_TRIAL" = 1 ]; then sed -i 's/^X = .*/X = 2.0/' exp.py; fi
        if [ "$AUTORESEARCH_TRIAL" = 2 ]; then
          sed -i 's/^X = .*/X = 1.5/' exp.py
          echo 'json.dump({"loss": -1.0}, open("metrics.json", "w"))' >> exp.py
        fi
        echo "move X"
        """)
    run(root, agent, 2)
    base, first, second = trials(root)
    assert (base.metric, first.metric, first.status) == (4.0, 1.0, Status.KEEP)
    assert second.status is Status.CRASH and "metrics.json was not written" in second.reason
    assert "$AUTORESEARCH_RUN_DIR or the working folder" in second.reason


def test_memory_gb_comes_from_peak_vram_mb_without_record(tmp_path: Path) -> None:
    """results.tsv's memory_gb is read from `peak_vram_mb:` as autoresearch prints it, whether or
    not the task lists it under `record`."""
    root = make_task(tmp_path / "task", experiment='print("loss: 2.0")\nprint("peak_vram_mb: 45000.7")\n',
                     toml_extra=METRIC)
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0")
    assert r.returncode == 0, r.stderr
    row = (root / ".autoresearch/t/results.tsv").read_text().splitlines()[1].split("\t")
    assert row[1:4] == ["2.000000", "43.9", "keep"]


@pytest.mark.parametrize("goal, old, new", [("maximize", 0.3, 0.4), ("maximize", 0.4, 0.5),
                                           ("minimize", 0.5, 0.4), ("minimize", 0.4, 0.3)])
def test_a_gain_equal_to_min_delta_is_not_more_than_it(tmp_path: Path, goal: str, old: float, new: float) -> None:
    """min_delta = 0.1: 0.3 -> 0.4 and 0.4 -> 0.5 both gain exactly the bar (whatever the float
    subtraction says: 0.10000000000000003 and 0.09999999999999998), so neither is kept."""
    root = make_task(tmp_path / "task", experiment=f"X = {old}\nprint(f'loss: {{X}}')\n",
                     toml_extra=f'[acceptance]\nmin_delta = 0.1\n[metric]\nname = "loss"\ngoal = "{goal}"\n')
    agent = script_agent(tmp_path / "agent.sh", f"""\
        sed -i 's/^X = .*/X = {new}/' exp.py
        echo "move X"
        """)
    run(root, agent, 1)
    t = trials(root)
    assert [x.status for x in t] == [Status.KEEP, Status.DISCARD], t[1].reason


@pytest.mark.parametrize("sandboxed", [False, True], ids=["plain", "sandbox"])
def test_what_setup_writes_in_the_repository_reaches_every_trial_and_the_evaluator(tmp_path: Path, sandboxed: bool) -> None:
    """setup writes data/ (git-ignored) inside the repository: every trial's experiment and
    evaluation find it, not only the baseline; a trial that does not touch it is not rejected
    for it; on resume an idempotent setup finds its output where it left it."""
    prep = """\
import os, sys
if sys.argv[1:] == ["--evaluate"]:
    data = open("data/d.txt").read().strip()
    loss = float(open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "loss.txt")).read())
    print(f"loss: {loss}")
    print(f"data: {len(data)}")
else:
    if not os.path.exists("data/d.txt"):
        os.makedirs("data", exist_ok=True)
        open("data/d.txt", "w").write("x" * 10)
        with open(os.path.join(os.environ["MADE"], "made.log"), "a") as f:
            f.write("made\\n")
"""
    exp = """\
import os
X = 3.0
n = len(open("data/d.txt").read().strip())
open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "loss.txt"), "w").write(str((X - 1.0) ** 2 + n))
"""
    root = make_task(tmp_path / "task", experiment=exp, files={"prepare.py": prep, ".gitignore": "data/\n"},
                     toml_extra='setup = "python prepare.py"\nevaluate = "python prepare.py --evaluate"\n'
                                '[acceptance]\nbaseline_runs = 2\n' + METRIC + 'record = ["data"]\n')
    agent = script_agent(tmp_path / "agent.sh", LOWER_X)
    env = {"MADE": str(tmp_path)}
    if sandboxed:
        from autoresearch import sandbox

        if sandbox.problem() is not None:
            pytest.skip(f"bubblewrap cannot run here: {sandbox.problem()}")
    flags = ["--sandbox"] if sandboxed else []
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "2", *flags, env=env)
    assert r.returncode == 0, r.stderr
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "1", *flags, env=env)
    assert r.returncode == 0, r.stderr
    done = trials(root)
    assert [t.status for t in done] == [Status.KEEP, Status.KEEP, Status.KEEP, Status.DISCARD], [t.reason for t in done]
    assert [t.figures.get("data") for t in done] == [10.0] * 4
    assert (tmp_path / "made.log").read_text() == "made\n"  # made once, found again on resume
    assert not (root / "data").exists()  # and the user's checkout untouched


def test_the_harness_own_variables_reach_the_experiment_and_secrets_do_not(tmp_path: Path) -> None:
    """Keys and tokens are kept from experiments (they run code an agent wrote), but an
    AUTORESEARCH_* setting such as AUTORESEARCH_EVAL_TOKENS is the task's own and passes."""
    exp = ("import os\nprint('loss: 1.0')\n"
           "print('eval tokens', os.environ.get('AUTORESEARCH_EVAL_TOKENS'))\n"
           "print('key', os.environ.get('SOME_API_KEY'), os.environ.get('GH_TOKEN'))\n")
    root = make_task(tmp_path / "task", experiment=exp, toml_extra=METRIC)
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--agent-cmd", "true", "--trials", "0",
            env={"AUTORESEARCH_EVAL_TOKENS": "1048576", "SOME_API_KEY": "sk-x", "GH_TOKEN": "ghp_x"})
    assert r.returncode == 0, r.stderr
    log = (root / ".autoresearch/t/logs/0.log").read_text()
    assert "eval tokens 1048576" in log and "key None None" in log
