"""Helpers shared by the tests of results you can trust (test_noise.py, test_holdout.py,
test_evaluator.py, test_causality.py): the metric's table, `run` (a loop through the CLI that
must succeed), and a task whose evaluator prints the loss and a sealed holdout.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import cli, make_task

METRIC = '\n[metric]\nname = "loss"\ngoal = "minimize"\n'


def run(root: Path, agent: str, trials_: int, *extra: str, tag: str = "t") -> subprocess.CompletedProcess[str]:
    r = cli("run", str(root), "--tag", tag, "--agent", "cli", "--agent-cmd", agent,
            "--trials", str(trials_), *extra)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


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
