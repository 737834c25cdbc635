"""The command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from autoresearch import __version__
from autoresearch.errors import AutoresearchError, UsageError
from autoresearch.foreground import (
    EXIT_INTERRUPTED,
    events_for,
    run_until_stopped,
)
from autoresearch.task import TASK_FILE, loop_worktree

TASK_DIR_HELP = (f"the task repository (default: the nearest folder holding {TASK_FILE}, from the "
                 "current one up to its git repository's root)")
TAG_HELP = "the run's name (default: the tag whose ledger was written last)"
NOT_ROOT = re.compile(r"(?P<dir>.+) is not the root of its git repository \((?P<top>.+) is\)")  # Git.open's: explained

PATH_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG}
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                      errno.EIO, errno.EMFILE, errno.ENFILE}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # type: ignore[override]  # one line and exit 2, as for a bad task file
        command = self.prog.partition(" ")[2]  # "autoresearch run" -> "run"; printed after "autoresearch: error:"
        raise UsageError(f"{command}: {message}" if command else message)


def _whole(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from `least` (to `most`)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least or most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be >= {least}{f' and <= {most}' if most else ''}, got {value}")
        return value
    return parse


_positive_int, _at_least_one, _port = _whole(0), _whole(1), _whole(0, 65535)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_float(text: str, finite: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or finite and math.isinf(value):  # (inf hours: no limit; an inf budget: no task file)
        raise argparse.ArgumentTypeError(f"must be {'a finite number ' if finite else ''}> 0, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:  # (what numpy's and Optuna's samplers take)
        raise argparse.ArgumentTypeError(f"must be between 0 and {2**32 - 1}, got {text}")
    return value


def default_tag() -> str:
    return time.strftime("%b%d").lower()


def find_task_dir(start: Path | None = None) -> Path:
    """The folder of the task, as git finds .git: `start` (the current folder) if it holds
    autoresearch.toml, else the nearest parent that does, looking no further up than the git
    repository's root; `start` itself when none does (its error then names it)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / TASK_FILE).is_file():
            return folder
        if (folder / ".git").exists():
            break
    return here


def below_root(folder: Path) -> None:
    """Raise the error that explains a task file in a subfolder of its repository, if it is one."""
    from autoresearch.gitrepo import Git

    if (folder / TASK_FILE).is_file():
        try:
            Git.open(folder)
        except UsageError as e:
            if NOT_ROOT.fullmatch(str(e)):
                raise


def explain(error: AutoresearchError) -> str:
    """The error's line, with what to do where that is not plain from it."""
    m = NOT_ROOT.fullmatch(str(error))
    if m is None:
        return str(error)
    sub = Path(os.path.relpath(m["dir"], m["top"])).as_posix()
    editable, command = "train.py", "python train.py"
    try:
        from autoresearch.task import load_task, tomllib

        task = load_task(m["dir"])
        editable, command = task.editable[0], task.command
    except AutoresearchError:  # (a task file that does not load there: its own words, as they are)
        with contextlib.suppress(OSError, ValueError, TypeError, IndexError, KeyError):
            raw = tomllib.loads((Path(m["dir"]) / TASK_FILE).read_text())  # (task.py's, 3.10 or not)
            editable, command = str(raw.get("editable", [editable])[0]), str(raw.get("command", command))
    cd = f"cd {shlex.quote(sub)} && {command}"
    return (f"{error}; {TASK_FILE} belongs at the repository's root: move it to {m['top']} with its "
            f"paths written from there (editable = [{json.dumps(f'{sub}/{editable}', ensure_ascii=False)}], "
            f"program and protected likewise) and its commands run in {sub} "
            f"(command = {json.dumps(cd, ensure_ascii=False)})")


def _add_agent_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", default=None, help="search (default), llm, hybrid, cli, or a preset: claude, codex, aider, gemini, opencode")
    p.add_argument("--agent-cmd", default=None, help="for --agent cli: the command, e.g. 'my-agent --prompt {prompt_file}'")
    p.add_argument("--agent-timeout", type=_positive_float, default=None, help="seconds one proposal may take (default: 900 for llm, 1800 for cli and the presets)")
    p.add_argument("--model", default=None, help="for LLM agents: PROVIDER/NAME, e.g. openai/gpt-4.1 or anthropic/claude-sonnet-4-5")
    p.add_argument("--base-url", default=None, help="an OpenAI-compatible server's URL")
    p.add_argument("--sampler", default=None, choices=["tpe", "random", "cmaes", "gp"],
                   help="the search agent's Optuna sampler (default: [agent] sampler, else tpe)")
    p.add_argument("--llm-share", type=_share, default=None,
                   help="for --agent hybrid: the LLM's share of trials (default: [agent] llm_share, else 0.3)")
    p.add_argument("--max-cost", type=_positive_float, default=None, help="stop when the LLM cost reaches this many USD")


def build_parser() -> argparse.ArgumentParser:
    from autoresearch import demo
    parser = Parser(prog="autoresearch", description="Autonomous experiment loops: an agent edits, the harness runs, measures, keeps or rewinds, and records.",
                    epilog="exit status: 0 success, 1 the loop or trial failed, 2 bad usage or a bad task file, 130 stopped by a signal")
    parser.add_argument("--version", action="version", version=f"autoresearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("init", help="scaffold a task repository from a template")
    p.add_argument("dir", help="a new folder (or an empty one) for the task repository")
    p.add_argument("--template", default="blank", help="blank (the default), cpu-gpt or nanochat")
    p.add_argument("--data", default=None, help="a folder of data instead of the default corpus: text files (cpu-gpt, nanochat) or parquet files with a 'text' column (nanochat)")

    _add_run(sub)

    p = sub.add_parser("trial", help="judge the working tree's uncommitted change as the next trial",
                       epilog="exit status: 0 the change was measured (keep, discard, or a duplicate of a measured trial), "
                              "1 it was not (crash, timeout, rejected), 2 bad usage (no change to judge, a change that "
                              "conflicts with the best code, a loop running on the tag), 130 stopped")
    p.add_argument("dir", nargs="?", default=None, help=TASK_DIR_HELP)
    p.add_argument("-m", "--message", required=True, help="what the change is")
    p.add_argument("--tag", default=None, help=TAG_HELP[:-1] + ", or today's date when there is none yet)")
    p.add_argument("--no-rewind", action="store_true", help="leave the working tree as it is after the verdict")

    _add_views(sub)

    p = sub.add_parser("demo", help="the embedded default: a cpu-gpt task, its baseline and N trials, a report")
    p.add_argument("dir", nargs="?", default=None,
                   help="a new folder for the task (default: ./autoresearch-demo-TIME); a demo's folder resumes it")
    p.add_argument("--trials", type=_positive_int, default=None,
                   help=f"trials after the baseline (default {demo.DEFAULT_TRIALS})")
    p.add_argument("--budget", type=lambda t: _positive_float(t, finite=True), default=None,
                   help=f"seconds of training per trial (default {demo.DEFAULT_BUDGET:g})")
    _add_agent_args(p)

    p = sub.add_parser("space", help="the search space the search agent finds")
    p.add_argument("dir", nargs="?", default=None, help=TASK_DIR_HELP)
    p.add_argument("--tag", default=None,
                   help="show the values of this run's best code beside its baseline's (default: the checkout's)")

    sub.add_parser("agents", help="every agent and preset, and whether what it needs is here")

    p = sub.add_parser("serve", help="a live report page on 127.0.0.1 that follows a running loop")
    p.add_argument("dir", nargs="?", default=None, help=TASK_DIR_HELP)
    p.add_argument("--tag", default=None, help="the tag to follow (default: the latest; one not started yet is waited for)")
    p.add_argument("--port", type=_port, default=8765, help="port on 127.0.0.1 (default 8765; 0 picks a free one)")
    return parser


def _add_run(sub) -> None:  # noqa: ANN001
    """`run` and its flags."""
    p = sub.add_parser("run", help="the loop; resumes a tag that exists")
    p.add_argument("dir", nargs="?", default=None, help=TASK_DIR_HELP)
    p.add_argument("--tag", default=None, help="the run's name (branch autoresearch/TAG); default: today's date, e.g. nov26")
    p.add_argument("--trials", type=_positive_int, default=None, help="new trials in this invocation (the baseline not counted)")
    p.add_argument("--hours", type=_positive_float, default=None, help="stop starting trials after this many hours")
    p.add_argument("--workers", type=_at_least_one, default=None, help="trials in flight at once (default: a resumed tag's last run's, with its --gpus; else one per GPU group of --gpus; on Ray, what the cluster holds; else 1)")
    p.add_argument("--gpus", default=None, help="GPU ids to use, e.g. 0,1,2,3 (each trial in flight gets its own, via CUDA_VISIBLE_DEVICES)")
    p.add_argument("--gpus-per-trial", type=_at_least_one, default=None, help="GPUs pinned for each trial (default 1)")
    p.add_argument("--agent-concurrency", type=_positive_int, default=None, help="proposals the agent prepares while trials run (0: ask only when a worker is free; default 0 for one worker, 1 for more)")
    p.add_argument("--backend", default=None, choices=["local", "ray"], help="where experiments run: this machine (default), or Ray tasks on a cluster")
    p.add_argument("--ray-address", default=None, help="the Ray cluster, e.g. 10.0.0.1:6379 (implies --backend ray; default: RAY_ADDRESS, the local `ray start` cluster, or a new local instance)")
    p.add_argument("--trial-resources", default=None, help="for --backend ray: what each trial asks for, e.g. gpu=1,cpu=8,memory=32G (default: cpu=1, with --gpus-per-trial GPUs when the cluster has GPUs)")
    p.add_argument("--sandbox", action=argparse.BooleanOptionalAction, default=None, help="run experiments with no network and writes confined to the trial's folders (bubblewrap; a resumed tag keeps its last run's choice)")
    p.add_argument("--seed", type=_seed, default=0, help="seeds the search agent's sampler, and is AUTORESEARCH_SEED of a trial's first run (default 0)")
    p.add_argument("--keep-runs", action="store_true", help="keep every trial's run folder (default: only the best's)")
    p.add_argument("--mlflow", default=None, help="log each trial to MLflow at this tracking URI")
    _add_agent_args(p)


def _add_views(sub) -> None:  # noqa: ANN001
    """The commands that read a tag: status, show, report."""
    p = sub.add_parser("status", help="table of trials and the best so far")
    p.add_argument("dir", nargs="?", default=None, help=TASK_DIR_HELP)
    p.add_argument("--tag", default=None, help=TAG_HELP)
    p.add_argument("--last", type=_positive_int, default=None, help="only the last N trials (0: the summary alone)")

    p = sub.add_parser("show", help="one trial: description, figures, diff, log tail")
    p.add_argument("number", type=_positive_int, metavar="N", help="the trial's number, as `status` lists it (0: the baseline)")
    p.add_argument("dir", nargs="?", default=None, help=TASK_DIR_HELP)
    p.add_argument("--tag", default=None, help=TAG_HELP)

    p = sub.add_parser("report", help="progress.png and a self-contained report.html")
    p.add_argument("dir", nargs="?", default=None, help=TASK_DIR_HELP)
    p.add_argument("--tag", default=None, help=TAG_HELP)
    p.add_argument("--out", default=None, help="the folder to write (default: DIR/.autoresearch/TAG/report)")
    p.add_argument("--results", default=None, help="a results.tsv in autoresearch's format instead of a tag")
    p.add_argument("--goal", default=None, choices=["minimize", "maximize"], help="with --results: the metric's goal (default: inferred from the kept rows)")
    p.add_argument("--mlflow", default=None, help="also log each trial to MLflow at this tracking URI")



# ---------------------------------------------------------------------------
# commands


def cmd_run(args: argparse.Namespace) -> int:
    from autoresearch.launch import run_tag
    from autoresearch.ledger import check_tag
    from autoresearch.task import load_task
    from autoresearch.views import status_text

    task = load_task(args.dir)
    tag = check_tag(default_tag() if args.tag is None else args.tag)
    outcome = run_tag(task, tag, args)
    print(status_text(task.root, tag, limit=20))
    print(f"best: trial {outcome.best.number} on branch autoresearch/{tag} ({outcome.best.short}); "
          f"results: {outcome.results}")
    return EXIT_INTERRUPTED if outcome.interrupted else 0


def cmd_trial(args: argparse.Namespace) -> int:
    from autoresearch.drive import run_working_tree_trial
    from autoresearch.errors import LoopBusy
    from autoresearch.ledger import check_tag, list_tags
    from autoresearch.task import load_task
    from autoresearch.verdict import busy_default, print_verdict
    from autoresearch.views import last_used

    if not args.message.strip():
        raise UsageError("-m/--message is empty: say what the change is (it is the trial's description)")
    task = load_task(args.dir)
    tags = list_tags(task.root)
    tag = check_tag(args.tag if args.tag is not None else (last_used(task.root, tags) if tags else default_tag()))
    try:
        trial, best = run_working_tree_trial(task, tag, args.message, rewind=not args.no_rewind,
                                             events=events_for(task), runner=run_until_stopped)
    except LoopBusy as e:
        raise (e if args.tag is not None else busy_default(e, sorted(tags))) from None
    return print_verdict(task, tag, trial, best, rewind=not args.no_rewind)


def cmd_status(args: argparse.Namespace) -> int:
    from autoresearch.views import status_text

    print(status_text(Path(args.dir).resolve(), args.tag, args.last))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from autoresearch.views import show_text

    print(show_text(Path(args.dir).resolve(), args.number, args.tag))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from autoresearch.scaffold import init_here

    dest = init_here(args.dir, args.template, args.data)
    print(f"created {args.template} task in {dest}; next: autoresearch run {dest} --tag {default_tag()}")
    return 0


def _optional(module: str, func: str):  # noqa: ANN202
    import importlib

    try:
        return getattr(importlib.import_module(f"autoresearch.{module}"), func)
    except ImportError as e:
        raise AutoresearchError(f"this command is not available in this build ({e})") from None


# string flags whose empty value would otherwise read as the flag not given
NON_EMPTY = {"tag": "a tag", "out": "a path", "results": "a path", "data": "a folder",
             "mlflow": "a tracking URI (e.g. ./mlruns)", "ray_address": "the cluster's address (e.g. 10.0.0.1:6379)",
             "trial_resources": "what each trial asks for (e.g. gpu=1,cpu=8)"}
TASK_COMMANDS = {"run", "trial", "status", "show", "report", "space", "serve"}
COMMANDS = {
    "run": cmd_run, "trial": cmd_trial, "status": cmd_status, "show": cmd_show, "init": cmd_init,
    "report": lambda a: _optional("report.cli", "cmd_report")(a),
    "demo": lambda a: _optional("demo", "cmd_demo")(a),
    "space": lambda a: _optional("agents.spaceview", "cmd_space")(a),
    "agents": lambda a: _optional("agents.listing", "cmd_agents")(a),
    "serve": lambda a: _optional("report.serve", "cmd_serve")(a),
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra and args.command is None:
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
        if args.command is None:
            build_parser().print_help()
            return 2
        if args.command in TASK_COMMANDS and extra and args.dir is None and len(extra) == 1 and not extra[0].startswith("-"):
            args.dir, extra = extra[0], []  # `show 3 --tag T DIR`: argparse takes DIR with N or not at all
        if extra:  # (argparse leaves them to the top parser, which does not know the command)
            raise UsageError(f"{args.command}: unrecognized arguments: {' '.join(extra)}")
        for flag, what in NON_EMPTY.items():  # an empty value is no value: not "the latest tag", not "here",
            value = getattr(args, flag, None)  # not "no cluster" (a `--ray-address "$ADDR"` unset ran locally)
            if isinstance(value, str) and not value.strip():
                raise UsageError(f"--{flag.replace('_', '-')} is empty: give {what}")
        if args.command in TASK_COMMANDS and args.dir is None:
            args.dir = str(find_task_dir())
        if args.command in ("run", "trial") and (inside := loop_worktree(Path(args.dir))):
            raise UsageError(f"{args.dir} is a trial's worktree of the loop of tag {inside[1]} (the task: {inside[0]}): "
                             f"that loop commits, runs and measures what is changed here; leave the change and end "
                             f"(`{args.command}` here would make a loop of its own and rewind the change)")
        try:
            return COMMANDS[args.command](args)
        except UsageError:  # (the task file read first: its program, say, not found in a subfolder)
            if args.command in TASK_COMMANDS:
                below_root(Path(args.dir))
            raise
    except AutoresearchError as e:
        print(f"autoresearch: error: {explain(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("autoresearch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `autoresearch show 3 | head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            sys.stderr.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS and e.errno not in PATH_ERRNOS:
            raise
        # the machine, not our code: a full disk, a read-only or unwritable folder; or a path
        # given that cannot be used (a file where a folder is wanted, a folder that cannot exist)
        where = f": {e.filename}" if e.filename else ""
        print(f"autoresearch: error: {e.strerror}{where}", file=sys.stderr)
        return 2 if e.errno in PATH_ERRNOS else 1


if __name__ == "__main__":
    sys.exit(main())
