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
import time

from autoresearch.process import kill_owned, undebuggable

PASSES = 50  # kill passes at most, 0.1 s apart


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
    # again until a pass finds none: what a marked process forked while the first pass went by
    # (a Ray raylet starting a worker) is not in its listing
    for _ in range(PASSES):
        if not sum(kill_owned(token) for token in tokens):
            break
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
