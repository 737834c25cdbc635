"""autoresearch's own code, where it lies in a folder the agent can write (a virtual
environment, an editable checkout): an agent that edits the reaper script every later command
runs under, or plants a module, would run code as the harness. The loop holds its own files as
they were when it started: each change is put back before anything else runs, the trial is
rejected, and the loop goes on."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import SRC, cli, make_task, script_agent, trials

from autoresearch.records import Status

AGENT = """\
sed -i "s/^X = .*/X = 2.$((9 - AUTORESEARCH_TRIAL))/" exp.py
if [ "$AUTORESEARCH_TRIAL" = 2 ]; then
  printf 'open("{mark}", "a").write("the agent\\x27s reaper ran\\\\n")\\n' >> {pkg}/reaper.py
  printf 'X = 1\\n' > {pkg}/planted.py
fi
echo "X to 2.$((9 - AUTORESEARCH_TRIAL))"
"""


def test_the_harness_code_edited_by_an_agent_is_put_back_before_it_runs(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    shutil.copytree(SRC / "autoresearch", lib / "autoresearch", ignore=shutil.ignore_patterns("__pycache__"))
    pkg, mark = lib / "autoresearch", tmp_path / "mark"
    reaper = (pkg / "reaper.py").read_bytes()
    repo = make_task(tmp_path / "task")
    agent = script_agent(tmp_path / "a.sh", AGENT.replace("{mark}", str(mark)).replace("{pkg}", str(pkg)))
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "4",
            env={"PYTHONPATH": str(lib)}, timeout=120)
    assert r.returncode == 0, r.stderr
    done = trials(repo)
    assert [t.status for t in done] == [Status.KEEP, Status.KEEP, Status.REJECTED, Status.KEEP, Status.KEEP], \
        [(t.status.value, t.reason) for t in done]
    assert "changed autoresearch's own code (autoresearch/planted.py, autoresearch/reaper.py)" in done[2].reason, \
        done[2].reason
    assert (pkg / "reaper.py").read_bytes() == reaper
    assert not (pkg / "planted.py").exists()
    assert not mark.exists(), mark.read_text()  # the edited reaper never ran
    # what was found there is kept (an edit of yours to an editable checkout, made while a loop
    # ran, was lost when it was put back)
    kept = list((repo / ".autoresearch/t/quarantine/own-code").glob("*/autoresearch/reaper.py"))
    assert len(kept) == 1 and kept[0].read_bytes().startswith(reaper) and b"the agent" in kept[0].read_bytes()
    assert len(list((repo / ".autoresearch/t/quarantine/own-code").glob("*/autoresearch/planted.py"))) == 1
    assert "copied under" in done[2].reason
