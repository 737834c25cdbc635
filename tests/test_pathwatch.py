"""The programs the task's commands name besides python (`bash run.sh`, `make score`), as the
experiments' PATH finds them: one an agent puts before them on PATH, rewrites or replaces is
taken away or put back, and the trial rejected (pathwatch.PathWatch)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from conftest import cli, make_task, script_agent, trials

from autoresearch import pathwatch
from autoresearch.pathwatch import PathWatch, named_programs

RUNNER = '#!/bin/sh\nexec python "$@"\n'
FAKE = "#!/bin/sh\necho 'loss: 0.0'\n"


def test_the_names_of_programs_are_every_plain_word_of_the_commands() -> None:
    names = named_programs(["env OMP_NUM_THREADS=1 make -C eval score && bash run.sh | tee out.txt",
                            "python prepare.py --evaluate; ./local.sh 'a b' \"unclosed"])
    for name in ("env", "make", "eval", "score", "bash", "run.sh", "tee", "out.txt", "python", "prepare.py"):
        assert name in names, name
    for word in ("OMP_NUM_THREADS=1", "-C", "&&", "|", "--evaluate", ";", "./local.sh", "a b"):
        assert word not in names, word


def tool(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    (folder / name).chmod(0o755)
    return folder / name


def test_a_program_put_before_rewritten_or_made_a_link_is_taken_away_or_put_back(tmp_path: Path) -> None:
    early, tools = tmp_path / "early", tmp_path / "tools"
    early.mkdir()
    runner = tool(tools, "runexp", RUNNER)
    watch = PathWatch(["runexp exp.py"], f"{early}{os.pathsep}{tools}", keep=tmp_path / "keep",
                      skip=lambda n: n.startswith("python"))
    assert watch.names == ["runexp"] and watch.check_and_restore() is None

    tool(early, "runexp", FAKE)  # before it on PATH
    why = watch.check_and_restore()
    assert why is not None and "put a `runexp`" in why and str(early / "runexp") in why, why
    assert not (early / "runexp").exists() and (tmp_path / "keep" / "runexp").read_text() == FAKE

    runner.write_text(FAKE)  # rewritten in place
    why = watch.check_and_restore()
    assert why is not None and "changed `runexp`" in why and "restored" in why, why
    assert runner.read_text() == RUNNER and stat.S_IMODE(runner.stat().st_mode) == 0o755

    fake = tool(tmp_path / "elsewhere", "fake", FAKE)
    runner.unlink()
    runner.symlink_to(fake)  # replaced by a link to the agent's file
    assert "restored" in (watch.check_and_restore() or "")
    assert not runner.is_symlink() and runner.read_text() == RUNNER and fake.read_text() == FAKE

    runner.unlink()  # removed: the one of the start is made anew
    assert "restored" in (watch.check_and_restore() or "")
    assert runner.read_text() == RUNNER
    assert watch.check_and_restore() is None


def linked_then_retargeted(tmp_path: Path, real: Path) -> tuple[Path, PathWatch]:
    """tools/runexp, a link to `real`, watched; then pointed at the agent's fake program."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "runexp").symlink_to(real)
    watch = PathWatch(["runexp"], str(tools), keep=tmp_path / "keep", skip=lambda n: False)
    (tools / "runexp").unlink()
    (tools / "runexp").symlink_to(tool(tmp_path / "agent", "x", FAKE))
    return tools, watch


def test_a_program_that_is_a_link_has_its_link_and_its_file_put_back(tmp_path: Path) -> None:
    real = tool(tmp_path / "opt", "runexp-1.0", RUNNER)
    tools, watch = linked_then_retargeted(tmp_path, real)
    assert "restored" in (watch.check_and_restore() or "")
    assert os.readlink(tools / "runexp") == str(real) and real.read_text() == RUNNER
    real.write_text(FAKE)
    assert "restored" in (watch.check_and_restore() or "")
    assert real.read_text() == RUNNER and (tools / "runexp").is_symlink()


def test_the_systems_own_programs_are_named_never_written_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program under /usr is the package manager's (an update replaces it): one changed there
    rejects the trial, and is left as it is."""
    monkeypatch.setattr(pathwatch, "SYSTEM", (str(tmp_path / "usr") + "/",))
    runner = tool(tmp_path / "usr" / "bin", "runexp", RUNNER)
    watch = PathWatch(["runexp"], str(runner.parent), keep=tmp_path / "keep", skip=lambda n: False)
    runner.write_text(FAKE)
    why = watch.check_and_restore()
    assert why is not None and "not put back" in why and runner.read_text() == FAKE, why
    assert watch.check_and_restore() is None  # (what it is now is the starting point)


AGENT = """\
sed -i "s/^X = .*/X = 2.$((9 - AUTORESEARCH_TRIAL))/" exp.py
B="$(dirname "$(git rev-parse --git-common-dir)")/.autoresearch/bin"
case "$AUTORESEARCH_TRIAL" in
  2) printf "#!/bin/sh\\necho 'loss: 0.0'\\n" > {early}/runexp; chmod +x {early}/runexp ;;
  3) printf "#!/bin/sh\\necho 'loss: 0.0'\\n" > {tools}/runexp ;;
  4) for d in "$B"/*/; do printf "#!/bin/sh\\necho 'loss: 0.0'\\n" > "$d/runexp"; chmod +x "$d/runexp"; done ;;
esac
echo "X to 2.$((9 - AUTORESEARCH_TRIAL))"
"""


def test_an_agent_that_puts_its_own_program_in_the_place_of_the_tasks_is_rejected(tmp_path: Path) -> None:
    """`command = "runexp exp.py"`: trial 2's agent puts a `runexp` that prints `loss: 0.0` in a
    folder before it on PATH, trial 3's rewrites it, trial 4's puts one in the folder autoresearch
    puts first for `python`. Unwatched, each faked the figure of record and was kept."""
    early, tools = tmp_path / "early", tmp_path / "tools"
    early.mkdir()
    tool(tools, "runexp", RUNNER)
    repo = make_task(tmp_path / "task", toml=(
        'name = "t"\neditable = ["exp.py"]\nprotected = ["prepare.py"]\ncommand = "runexp exp.py"\n'
        'time_budget = 5\ntimeout = 10\n[metric]\nname = "loss"\ngoal = "minimize"\n'))
    agent = script_agent(tmp_path / "a.sh", AGENT.format(early=early, tools=tools))
    r = cli("run", str(repo), "--tag", "t", "--agent", "cli", "--agent-cmd", agent, "--trials", "4",
            env={"PATH": f"{early}{os.pathsep}{tools}{os.pathsep}{os.environ['PATH']}"}, timeout=120)
    assert r.returncode == 0, r.stderr
    done = trials(repo)
    shim = sys.prefix == sys.base_prefix  # (else experiments run the python of the virtualenv autoresearch runs in)
    expected = ["keep", "keep", "rejected", "rejected", "rejected" if shim else "keep"]
    assert [t.status.value for t in done] == expected, [(t.status, t.reason) for t in done]
    assert all(t.metric != 0.0 for t in done), [t.metric for t in done]
    assert "put a `runexp` on the experiments' PATH" in done[2].reason, done[2].reason
    assert "changed `runexp`" in done[3].reason and "restored" in done[3].reason, done[3].reason
    assert (tools / "runexp").read_text() == RUNNER and not (early / "runexp").exists()
    assert (repo / ".autoresearch" / "t" / "quarantine" / "path" / "runexp").read_text() == FAKE


@pytest.mark.parametrize("words", ["", "exp.py"])
def test_a_command_that_names_no_program_on_path_watches_nothing(tmp_path: Path, words: str) -> None:
    watch = PathWatch([f"python {words}"], str(tmp_path), keep=tmp_path / "keep", skip=lambda n: n.startswith("python"))
    assert watch.names == [] and watch.check_and_restore() is None


def test_a_link_to_a_program_without_a_copy_is_pointed_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A link to the system's own program (no copy taken) retargeted at the agent's file is
    pointed back, and said restored (it was 'could not restore': the new link's own inode)."""
    monkeypatch.setattr(pathwatch, "SYSTEM", (str(tmp_path / "usr") + "/",))
    real = tool(tmp_path / "usr" / "bin", "runexp", RUNNER)
    tools, watch = linked_then_retargeted(tmp_path, real)
    why = watch.check_and_restore() or ""
    assert "restored" in why and "could not" not in why, why
    assert os.readlink(tools / "runexp") == str(real) and watch.check_and_restore() is None
