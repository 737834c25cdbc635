"""The programs the harness runs, found on PATH once, as the harness starts.

An agent (or an experiment) may write to a folder on PATH before the system's own (a virtual
environment's bin, ~/.local/bin): a `git` or a `bwrap` put there mid-loop would run as the
harness, with the harness's rights, every time it next ran git. Found at import, the harness
runs the programs that were there when it started, whatever is put before them later.
"""

from __future__ import annotations

import shutil

GIT = shutil.which("git") or "git"
BWRAP = shutil.which("bwrap")
