"""Results you can trust, the sealed holdout: recorded and shown to the user, but nowhere an agent
looks (its prompts, the history, results.tsv, the logs), not through an evaluator's failure, not
to a CLI agent that reads all it can reach, nor to code an agent writes.

Real task repositories, real loops through the CLI, real subprocesses. (Results you can trust
also: noise in test_noise.py, the sealed holdout in test_holdout.py, the evaluator in
test_evaluator.py, the causality probe in test_causality.py; the sandbox in test_sandbox.py,
the audit in test_audit.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import cli, make_task, script_agent, trials
from trust_helpers import EVALUATOR, EXPERIMENT, HOLDOUT, LOWER_X, eval_task, run

from autoresearch.loop import visible
from autoresearch.records import Status, Trial

# ---------------------------------------------------------------------------
# the sealed holdout


def holdout_strings(t: Trial, name: str = "test_loss") -> list[str]:
    """The ways the holdout of trial t could be written: repr and 6 significant digits."""
    v = t.figures[name]
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


def test_a_description_that_carries_the_holdout_figure_is_sealed_in_the_record(tmp_path: Path) -> None:
    """An agent that found the figure (a leak outside the seal: a file in /tmp its experiment
    wrote) and put it in its description: the history every later agent reads holds
    `[test_loss: sealed]` instead; the rest of the description stays."""
    root = eval_task(tmp_path)
    agent = script_agent(tmp_path / "agent.sh", 'sed -i "s/^X = .*/X = 2.0/" exp.py\n'
                         'echo "lower X; saw test_loss was 1.4242917 and TEST_LOSS=1e-3; less test_loss overfitting" '
                         '> "$AUTORESEARCH_DESCRIPTION_FILE"\n')
    run(root, agent, 1)
    (_, t) = trials(root)
    assert t.description == ("lower X; saw [test_loss: sealed] and [test_loss: sealed]; less test_loss "
                             "overfitting"), t.description
    assert "1.4242917" not in (root / ".autoresearch" / "t" / "results.tsv").read_text()


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


MLFLOW_PEEK = """\
root=$(dirname "$(git rev-parse --path-format=absolute --git-common-dir)")
cat $(find "$root/mlruns" -path '*metrics/test_loss') > {out}/agent-$AUTORESEARCH_TRIAL 2>&1 || true
cat >> exp.py <<PY
import glob
for path in glob.glob("$root/mlruns/*/*/metrics/test_loss"):
    print("peek", open(path).read())
PY
sed -i "s/^X = .*/X = $((3 - AUTORESEARCH_TRIAL)).0/" exp.py
echo "read the MLflow store"
"""


def test_an_mlflow_store_in_the_repository_is_sealed_as_the_ledger_is(tmp_path: Path) -> None:
    """`--mlflow ./mlruns` (the flag's own example) logs every trial's figures, the holdout's
    included, into the task's repository: a sealed agent read every earlier trial's holdout
    there (`find mlruns -path '*metrics/test_loss'`), and so could the code it wrote. The local
    store is hidden from both, as the ledgers are; the figures are still logged."""
    from autoresearch import sandbox

    if sandbox.problem():
        pytest.skip(f"the seal needs bubblewrap: {sandbox.problem()}")
    pytest.importorskip("mlflow")
    root = eval_task(tmp_path)
    out = tmp_path / "seen"
    out.mkdir()
    r = cli("run", str(root), "--tag", "t", "--agent", "cli", "--trials", "2", "--mlflow", "./mlruns",
            "--agent-cmd", script_agent(tmp_path / "agent.sh", MLFLOW_PEEK.format(out=out)), cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    ts = trials(root)
    assert [t.status for t in ts] == [Status.KEEP] * 3
    assert list((root / "mlruns").glob("*/*/metrics/test_loss"))  # logged...
    seen = "\n".join(p.read_text() for p in out.iterdir())
    seen += "\n".join(p.read_text() for p in (root / ".autoresearch" / "t" / "logs").iterdir())
    for t in ts[:2]:
        for s in holdout_strings(t):
            assert s not in seen, s  # ...where neither the agent nor its code could look


@pytest.mark.extended
def test_a_holdout_named_within_the_metrics_name_seals_only_itself(tmp_path: Path) -> None:
    """A holdout `loss` beside a metric `val_loss`: the seal blanked every `val_loss` figure too,
    so the LLM agent's history showed its own metric as `val_loss=[sealed]` for every trial."""
    from fakes.llm_server import FakeLLM
    from llm_helpers import good_edit, run_llm

    evaluator = EVALUATOR.replace('print(f"loss: {loss}")', 'print(f"val_loss: {loss}")').replace(
        'print(f"test_loss: ', 'print(f"loss: ')
    toml = 'evaluate = "python prepare.py"\n\n[metric]\nname = "val_loss"\ngoal = "minimize"\nholdout = "loss"\n'
    root = make_task(tmp_path / "task", experiment=EXPERIMENT.replace("print(f\"loss: {loss}\")\n", ""),
                     toml_extra=toml, files={"prepare.py": evaluator})
    with FakeLLM("openai", good_edit("2.0") + good_edit("1.5", old="2.0")) as fake:
        r = run_llm(root, fake, trials=2)
    assert r.returncode == 0, r.stderr + r.stdout
    ts = trials(root)
    assert [t.status for t in ts] == [Status.KEEP] * 3
    assert ts[1].figures["loss"] == pytest.approx(1.0 + float(HOLDOUT))
    prompt = json.dumps(fake.requests[3]["body"])  # trial 2's first request: the history of 0 and 1
    assert re.search(r"val_loss\W+1(\.0*)?\b", prompt), prompt[:3000]  # the metric is shown
    assert "val_loss=[sealed]" not in prompt and "val_loss: [sealed]" not in prompt
    for t in ts[:2]:
        for s in holdout_strings(t, "loss"):
            assert s not in prompt, s  # and the holdout is not
