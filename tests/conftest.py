"""Shared fixtures: real git repositories in tmp dirs and the real CLI in a subprocess.

Tests run against the source tree of the checkout they live in (src/ first on sys.path and on
PYTHONPATH for subprocesses), so every worktree tests its own code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
os.environ["PYTHONPATH"] = str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")
for _k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
    os.environ.pop(_k, None)

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `python -m autoresearch ARGS` for real."""
    return subprocess.run([sys.executable, "-m", "autoresearch", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


EXPERIMENT = """\
import os, sys
X = 3.0
Y = 2
print("training...")
loss = (X - 1.0) ** 2 + Y
print(f"loss: {loss}")
print(f"peak_vram_mb: 2048.0")
"""


def make_task(root: Path, toml_extra: str = "", experiment: str = EXPERIMENT, files: dict[str, str] | None = None,
              toml: str | None = None) -> Path:
    """A small task repository: exp.py prints `loss:`; prepare.py is protected."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "exp.py").write_text(experiment)
    (root / "prepare.py").write_text("DATA = 'fixed'\n")
    (root / "program.md").write_text("# program\nMinimise loss.\n")
    (root / "autoresearch.toml").write_text(toml if toml is not None else textwrap.dedent("""\
        name = "t"
        editable = ["exp.py"]
        protected = ["prepare.py"]
        command = "python exp.py"
        time_budget = 5
        timeout = 10
        """) + toml_extra + ("" if "[metric]" in toml_extra else '\n[metric]\nname = "loss"\ngoal = "minimize"\nrecord = ["peak_vram_mb"]\n'))
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "task")
    return root


def trials(root: Path, tag: str = "t") -> list:
    """Every trial of a tag, read from its ledger."""
    from autoresearch.ledger import Ledger

    led = Ledger.read(root, tag)
    try:
        return led.trials()
    finally:
        led.close()


def wait_for(path: Path, seconds: float = 60) -> None:
    """Until `path` exists (a marker a running agent or experiment writes), at most `seconds`."""
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def script_agent(path: Path, body: str) -> str:
    """A scripted agent: a bash script run in the trial's worktree; returns --agent-cmd."""
    path.write_text("#!/bin/bash\nset -e\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


# a scripted agent for red-team deeds: each trial lowers X a little (an honest change); trial 2
# also does the deed (shell lines; $GD is the repository's common .git folder)
DEED_AGENT = """\
sed -i "s/^X = .*/X = 2.$((9 - AUTORESEARCH_TRIAL))/" exp.py
GD=$(git rev-parse --git-common-dir)
if [ "$AUTORESEARCH_TRIAL" = 2 ]; then
{deed}
fi
echo "X to 2.$((9 - AUTORESEARCH_TRIAL))"
"""


def run_deed(tmp_path: Path, deed: str, trials_: int = 4, env: dict[str, str] | None = None,
             timeout: float = 300) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A new task repository, and `run` on it of `trials_` trials of DEED_AGENT doing `deed`."""
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", DEED_AGENT.replace("{deed}", deed))
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", str(trials_),
            env=env, timeout=timeout)
    return repo, r


@pytest.fixture
def task_repo(tmp_path: Path) -> Path:
    return make_task(tmp_path / "task")
