"""autoresearch: a harness for autonomous experiment loops.

An agent edits the editable files of a task repository; the harness commits the change, runs
the experiment under a fixed time budget, reads the metric, keeps the commit if it improved
and rewinds it otherwise, records everything, and repeats.
"""

from __future__ import annotations

__version__ = "0.1.0"

from autoresearch.errors import AutoresearchError, UsageError

__all__ = ["AutoresearchError", "UsageError", "__version__", "load"]


def load(directory: str = ".", tag: str | None = None):  # noqa: ANN201 - pandas is optional
    """The trials of a tag as a pandas DataFrame (for notebooks)."""
    from autoresearch.frame import load_frame

    return load_frame(directory, tag)
