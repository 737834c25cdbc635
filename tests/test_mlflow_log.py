"""MLflow (report/mlflow_log.py) in a local file store: `run --mlflow` logs every trial, and
`report --mlflow` a finished tag after the fact, each run once; an unusable URI stops `run`
before the tag is made.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import cli
from report_helpers import new_task, run_loop

pytest_plugins = ["report_helpers"]  # the `ran` fixture


def mlflow_runs(store: Path, experiment: str) -> dict[str, object]:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=str(store))
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return {r.data.tags["autoresearch.trial"]: (client, r) for r in client.search_runs([exp.experiment_id])}


@pytest.mark.extended
def test_mlflow_run_and_report_log_every_trial_to_a_local_file_store(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    repo = new_task(tmp_path / "task")
    store = tmp_path / "mlruns"
    result = run_loop(repo, 3, "--mlflow", str(store))
    assert result.returncode == 0, result.stderr + result.stdout
    runs = mlflow_runs(store, "autoresearch/t/t")
    assert sorted(runs) == ["0", "1", "2", "3"]
    client, one = runs["1"]  # type: ignore[misc]
    assert one.data.metrics["loss"] == pytest.approx(3.0)
    assert one.data.metrics["test_loss"] == pytest.approx(3.3)
    assert one.data.params["status"] == "keep" and one.info.status == "FINISHED"
    assert one.data.tags["mlflow.note.content"] == "lower X to 2.0"
    diff = Path(client.download_artifacts(one.info.run_id, "diff.patch", str(tmp_path)))
    assert "+X = 2.0" in diff.read_text()
    _, base = runs["0"]  # type: ignore[misc]
    assert base.data.metrics["loss_spread"] == pytest.approx(0.00707, rel=0.01)
    _, crash = runs["3"]  # type: ignore[misc]
    assert crash.info.status == "FAILED" and crash.data.params["status"] == "crash"
    # after the fact (what `report --mlflow` does): nothing new in the same store, all in a new one
    from autoresearch.report.mlflow_log import export_study
    from autoresearch.report.study import load_study

    assert export_study(load_study(repo, "t"), str(store)) == 0
    fresh = tmp_path / "fresh"
    assert export_study(load_study(repo, "t"), f"file://{fresh}") == 4
    assert sorted(mlflow_runs(fresh, "autoresearch/t/t")) == ["0", "1", "2", "3"]


@pytest.mark.slow
def test_a_new_sqlite_store_prints_none_of_mlflows_own_lines(ran, tmp_path: Path) -> None:
    """MLflow logs INFO lines as it makes a database's tables ("Creating initial MLflow database
    tables..."): they came among report's (and a loop's) own output."""
    pytest.importorskip("mlflow")
    repo, _ = ran
    r = cli("report", str(repo), "--mlflow", f"sqlite:///{tmp_path / 'm.db'}", "--out", str(tmp_path / "r"),
            cwd=tmp_path)  # (a sqlite store keeps its artifacts in ./mlruns)
    assert r.returncode == 0 and "5 new run(s)" in r.stdout, r.stderr
    assert "INFO" not in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.slow
def test_report_mlflow_logs_a_finished_tag_after_the_fact(ran, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    repo, _ = ran
    store = tmp_path / "mlruns"
    first = cli("report", str(repo), "--mlflow", str(store), "--out", str(tmp_path / "r"))
    assert first.returncode == 0 and "5 new run(s)" in first.stdout, first.stderr
    again = cli("report", str(repo), "--mlflow", str(store), "--out", str(tmp_path / "r"))
    assert again.returncode == 0 and "0 new run(s)" in again.stdout, again.stderr
    runs = mlflow_runs(store, "autoresearch/t/t")
    client, kept = runs["4"]  # type: ignore[misc]
    assert kept.data.tags["mlflow.note.content"].startswith("X=1.5 <script>alert(1)</script> red")
    assert kept.data.params["status"] == "keep" and kept.data.metrics["loss"] == pytest.approx(2.25)
    diff = Path(client.download_artifacts(kept.info.run_id, "diff.patch", str(tmp_path)))
    assert "+X = 1.5" in diff.read_text()


@pytest.mark.slow
def test_run_with_an_unusable_mlflow_uri_stops_before_the_tag_is_made(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    repo = new_task(tmp_path / "task")
    result = run_loop(repo, 1, "--mlflow", "bogus://nowhere")
    assert result.returncode == 2 and "--mlflow bogus://nowhere" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (repo / ".autoresearch").exists()


@pytest.mark.slow  # (CI runs the slow tests too)
def test_a_store_inside_the_repository_does_not_make_it_dirty(tmp_path: Path) -> None:
    """The README's `--mlflow ./mlruns`, run from the task's folder: the store made there is
    ignored through .git/info/exclude, so the next run (a resume, another tag) still starts."""
    pytest.importorskip("mlflow")
    from conftest import git, make_task

    repo = make_task(tmp_path / "task")
    for tag, uri in (("a", "./mlruns"), ("a", "./mlruns"), ("b", "file:./mlruns")):
        r = cli("run", "--tag", tag, "--trials", "1", "--mlflow", uri, cwd=repo, timeout=120)
        assert r.returncode == 0, r.stderr
    assert sorted(mlflow_runs(repo / "mlruns", "autoresearch/t/a")) == ["0", "1", "2"]  # (resumed)
    assert git(repo, "status", "--porcelain") == ""


def test_every_local_store_kind_is_kept_out_of_git_literally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder with gitignore's special characters in its name, a file: URI, a sqlite database
    (and the ./mlruns where MLflow puts its artifacts) are excluded as the paths they are; a
    server or a Databricks workspace writes nothing here and adds no line."""
    from conftest import git, make_task

    from autoresearch.report.mlflow_log import keep_out_of_git

    repo = make_task(tmp_path / "task")
    monkeypatch.chdir(repo)
    uris = ["st [1]", "file:./x y", "sqlite:///mlflow.db", "databricks", "http://127.0.0.1:5000", str(tmp_path / "out")]
    for uri in uris:
        keep_out_of_git(uri, repo)
    for name in ("st [1]/a", "x y/b", "mlruns/c", "mlflow.db", "st 1/kept", "databricks/kept"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x")
    assert sorted(git(repo, "status", "--porcelain", "-uall").splitlines()) == ['?? "st 1/kept"', "?? databricks/kept"]


def test_a_store_kept_out_of_git_leaves_the_exclude_file_alone_while_a_loop_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`report --mlflow ./mlruns` (or `run --mlflow` on another tag) beside a running loop wrote
    .git/info/exclude, which the loop watches: it put the file back and rejected its trial in
    flight. Now the file is left alone and a note says to add the store to .gitignore."""
    import fcntl

    from conftest import make_task

    from autoresearch.report.mlflow_log import keep_out_of_git

    repo = make_task(tmp_path / "task")
    assert cli("run", str(repo), "--tag", "t", "--trials", "0").returncode == 0
    monkeypatch.chdir(repo)
    exclude = repo / ".git" / "info" / "exclude"
    before = exclude.read_text()
    fd = os.open(repo / ".autoresearch" / "t" / "lock", os.O_RDONLY)  # a loop holding its tag
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        keep_out_of_git("./mlruns", repo)
    finally:
        os.close(fd)
    assert exclude.read_text() == before
    assert "the MLflow store" in capsys.readouterr().err
    keep_out_of_git("./mlruns", repo)  # no loop: excluded, and said nothing
    assert exclude.read_text() == before + "/mlruns\n" and capsys.readouterr().err == ""
