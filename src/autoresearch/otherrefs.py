"""Refs made or moved in another tag's namespace while a trial's agent or experiment ran.

A loop watches its own refs (guard.GitGuard) and the user's (noted on the trial). The other
loops' namespaces, `refs/autoresearch/<other>/...` and the branches `autoresearch/<other>`, are
written by the loops of those tags, which may be running beside this one: a change there while a
loop holds that tag's lock is that loop's and is left alone. With no loop on the tag, nothing of
the harness writes there but what the tag's ledger records (a loop of it that ran and ended
meanwhile): any other change is an agent's (or an experiment's) doing, noted on the trial that
ran. A ref made there is removed (a trial ref planted for a trial the tag has not run yet would
be taken by its next loop for its own; a branch `autoresearch/<name>` of no tag would be taken by
a `run --tag <name>` for a tag to resume), and the note says how to make it again; one the tag's
ledger records (a trial's ref, the branch at the best trial) is put back to what the ledger says,
as `autoresearch run --tag <other> --trials 0` would; any other moved or deleted one is noted.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from autoresearch.errors import AutoresearchError
from autoresearch.ledger import Ledger

PREFIXES = ("refs/autoresearch/", "refs/heads/autoresearch/")


def owner(ref: str) -> str:
    """The tag whose namespace `ref` is in."""
    if ref.startswith("refs/heads/autoresearch/"):
        return ref.removeprefix("refs/heads/autoresearch/")
    return ref.removeprefix("refs/autoresearch/").split("/", 1)[0]


class OtherTags:
    def __init__(self, root: Path, ledgers: Path, tag: str, scan: Callable[[tuple[str, ...], tuple[str, ...]], dict[str, str]],
                 git: Callable[..., subprocess.CompletedProcess[str]]) -> None:
        self.root, self.ledgers, self.tag = root, ledgers, tag
        self.scan, self.git = scan, git
        self.known = self._read()

    def _read(self) -> dict[str, str]:
        refs = self.scan(PREFIXES, (f"refs/autoresearch/{self.tag}/",))
        refs.pop(f"refs/heads/autoresearch/{self.tag}", None)
        return refs

    def recorded(self, tag: str) -> dict[str, str]:
        """What the ledger of `tag` says its refs hold: its trials' refs, its branch at the best."""
        if not (self.ledgers / tag / "ledger.sqlite").is_file():
            return {}
        try:
            led = Ledger.read(self.root, tag)
        except (AutoresearchError, OSError):
            return {}
        try:
            trials, best = led.trials(), led.best()
        finally:
            led.close()
        out = {f"refs/autoresearch/{tag}/trials/{t.number}": t.commit for t in trials if t.commit}
        if best is not None and best.commit:
            out[f"refs/heads/autoresearch/{tag}"] = best.commit
        return out

    def check(self) -> list[str]:
        """What changed in the other tags' namespaces since the last look, not a loop's doing,
        one line each; a ref made there is removed."""
        now = self._read()
        before, out = self.known, []
        changed = sorted(r for r in set(now) | set(before) if now.get(r) != before.get(r))
        ledgers: dict[str, dict[str, str]] = {}
        for ref in changed:
            tag = owner(ref)
            if Ledger.loop_running(self.ledgers / tag):
                continue  # (that loop's, or seen by that loop's own guard)
            if tag not in ledgers:
                ledgers[tag] = self.recorded(tag)
            if now.get(ref) and ledgers[tag].get(ref) == now[ref]:
                continue  # (a loop of that tag ran meanwhile, or put its refs back)
            out.append(self._said(ref, tag, before.get(ref, ""), now.get(ref, ""), ledgers[tag]))
        self.known = self._read() if out else now  # (what was put back or removed: as it is now)
        return out

    def _said(self, ref: str, tag: str, old: str, new: str, recorded: dict[str, str]) -> str:
        whose = f"tag {tag}'s" if (self.ledgers / tag / "ledger.sqlite").is_file() else f"a loop's of tag {tag}, which has no ledger here"
        what = (f"{'moved' if new else 'deleted'} {ref} ({whose}) from {old[:7]}{f' to {new[:7]}' if new else ''}"
                if old else f"made {ref} ({whose}) at {new[:7]}")
        if ref in recorded:  # (no loop on the tag: its ledger says what the ref holds, as `run --trials 0` would)
            if self.git("update-ref", "--no-deref", ref, recorded[ref]).returncode == 0:
                return f"{what}: put back to {recorded[ref][:7]}, as its ledger records"
        elif not old and self.git("update-ref", "--no-deref", "-d", ref, new).returncode == 0:
            return f"{what}: removed (`git update-ref {ref} {new[:12]}` makes it again)"
        elif not old:
            return f"{what} (could not be removed)"
        return what + (f" (`autoresearch run --tag {tag} --trials 0` puts the tag back)" if recorded else "")
