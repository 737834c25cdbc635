"""Helpers shared by the red-team tests (test_redteam_*.py, and test_scale's trials side by
side): an experiment that leaves its figure in AUTORESEARCH_RUN_DIR and an evaluator that
prints it (so a figure the experiment prints itself is never the one of record), and the
environment of a machine where bubblewrap works or where it cannot make its namespaces.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoresearch.sandbox import problem as sandbox_problem

EVALUATOR = """\
import json, os
run = os.environ["AUTORESEARCH_RUN_DIR"]
print(f"loss: {json.load(open(os.path.join(run, 'result.json')))['loss']}")
"""

EXPERIMENT = """\
import json, os
X = 3.0
loss = (X - 1.0) ** 2
json.dump({"loss": loss}, open(os.path.join(os.environ["AUTORESEARCH_RUN_DIR"], "result.json"), "w"))
"""


def bwrap_env(tmp_path: Path, bwrap: str) -> dict[str, str]:
    """The environment for `bwrap` "working" (skipped where it cannot run here) or "broken" (a
    `bwrap` first on PATH that fails as where user namespaces are not allowed)."""
    if bwrap == "working" and sandbox_problem():
        pytest.skip(f"bubblewrap cannot run here: {sandbox_problem()}")
    if bwrap != "broken":
        return {}
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    return {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
