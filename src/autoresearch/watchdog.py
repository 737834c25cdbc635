"""The loop's watchdog: a small process that outlives a loop killed with SIGKILL (or the OOM
killer) and then kills what the loop started.

An experiment's own shell dies with the loop (PR_SET_PDEATHSIG), but what that shell started
(`python train.py; echo done`, `torchrun`, `uv run`) would go on, holding a GPU, until the tag is
resumed. The loop holds the write end of a pipe whose read end is the watchdog's stdin; when the
loop is gone, for whatever reason, the read returns and the watchdog kills every process that
carries one of the loop's owner tokens in its environment, then exits.

    python -m autoresearch.watchdog TOKEN...
"""

from __future__ import annotations

import os
import subprocess
import sys

from autoresearch.process import kill_all_owned, undebuggable


def start(tokens: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start a watchdog for `tokens`; returns it and the pipe's write end, to be kept open for
    as long as the loop lives (closing it says: the loop is over)."""
    read, write = os.pipe()  # not inherited by anything else the loop starts (PEP 446)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "autoresearch.watchdog", *tokens], stdin=read,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",  # (no
                                start_new_session=True)  # task file shadows a module; no Ctrl-C for it)
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    return proc, write


def main(tokens: list[str]) -> int:
    undebuggable()  # an experiment must not make it start anything
    while True:
        try:
            if not os.read(0, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    kill_all_owned(tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
