"""`autoresearch.load` (frame.py): the trials of a tag, or a results.tsv, as a pandas DataFrame."""

from __future__ import annotations

import pytest

pytest_plugins = ["report_helpers"]  # the `ran` fixture


def test_load_returns_the_trials_as_a_dataframe(ran) -> None:
    import autoresearch

    repo, _ = ran
    df = autoresearch.load(str(repo), "t")
    assert list(df.index) == [0, 1, 2, 3, 4]
    assert list(df["status"]) == ["keep", "keep", "discard", "crash", "keep"]
    assert df.loc[1, "loss"] == pytest.approx(3.0) and df.loc[1, "test_loss"] == pytest.approx(3.3)
    assert df.loc[0, "loss"] == pytest.approx(6.005) and df.loc[0, "loss_spread"] == pytest.approx(0.00707, rel=0.01)
    assert df["loss"].isna().tolist() == [False, False, False, True, False]
    assert list(df["best_so_far"]) == pytest.approx([6.005, 3.0, 3.0, 3.0, 2.25])
    assert df.attrs["metric"] == "loss" and df.attrs["goal"] == "minimize" and df.attrs["noise"] > 0
    assert str(df["started"].dtype).startswith("datetime64")
    tsv = autoresearch.load(str(repo / ".autoresearch" / "t" / "results.tsv"))
    assert list(tsv["status"]) == ["keep", "keep", "discard", "crash", "keep"]
