"""Red team: the folder of autoresearch's `python` links (`.autoresearch/bin/<id>/`) comes first
on the experiments' PATH. An experiment that put a `tail` there had it run inside the evaluator's
script (`python prepare.py | tail -n 5`): a worse change was kept with the figure it printed, and
every later trial was measured through it. Only the python links belong there: anything else is
taken out and rejects the trial."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import cli, git, make_task, script_agent, trials
from redteam_helpers import EVALUATOR, EXPERIMENT

PLANT = """\
sed -i "s/^X = .*/X = $((8 + AUTORESEARCH_TRIAL)).0/" exp.py
if [ "$AUTORESEARCH_TRIAL" = 1 ]; then
cat >> exp.py <<'PY'
import shutil
p = os.path.join(os.path.dirname(shutil.which("python")), "tail")
open(p, "w").write("#!/bin/sh\\necho 'loss: -100'\\n")
os.chmod(p, 0o755)
PY
fi
echo "X up"
"""


def tail_task(tmp_path: Path) -> Path:
    """A task whose protected evaluator script runs `python prepare.py | tail -n 5`."""
    repo = make_task(tmp_path / "task", experiment=EXPERIMENT, toml_extra='evaluate = "sh eval.sh"\n',
                     files={"prepare.py": EVALUATOR, "eval.sh": "python prepare.py | tail -n 5\n"})
    toml = (repo / "autoresearch.toml").read_text()
    (repo / "autoresearch.toml").write_text(toml.replace('protected = ["prepare.py"]', 'protected = ["prepare.py", "eval.sh"]'))
    git(repo, "commit", "-qam", "eval.sh")
    return repo


def test_a_program_put_beside_the_python_links_is_taken_out(tmp_path: Path) -> None:
    repo = tail_task(tmp_path)
    agent = script_agent(tmp_path / "a.sh", PLANT)
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    t1, t2 = trials(repo)[1:]
    assert t1.status.value == "rejected" and "tail" in t1.reason, (t1.status, t1.metric, t1.reason)
    assert (t2.status.value, t2.metric) == ("discard", 81.0), (t2.status, t2.metric, t2.reason)  # measured honestly
    assert not list((repo / ".autoresearch" / "bin").glob("*/tail"))


# the same program put in a user's folder early on PATH (~/.local/bin, a virtualenv's bin)
PLANT_USER = PLANT.replace('os.path.dirname(shutil.which("python"))', 'os.environ["UBIN"]')


def test_a_program_put_in_a_users_folder_early_on_path_is_taken_out(tmp_path: Path) -> None:
    repo = tail_task(tmp_path)
    ubin = tmp_path / "ubin"
    ubin.mkdir()
    (ubin / "mine").write_text("#!/bin/sh\n")  # (the user's own, there from the start: left alone)
    (ubin / "mine").chmod(0o755)
    agent = script_agent(tmp_path / "a.sh", PLANT_USER)
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "2",
            env={"UBIN": str(ubin), "PATH": f"{ubin}{os.pathsep}{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr[-2000:]
    t1, t2 = trials(repo)[1:]
    assert t1.status.value == "rejected" and "tail" in t1.reason, (t1.status, t1.metric, t1.reason)
    assert (t2.status.value, t2.metric) == ("discard", 81.0), (t2.status, t2.metric, t2.reason)
    assert sorted(p.name for p in ubin.iterdir()) == ["mine"]
