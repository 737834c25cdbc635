"""`--agent hybrid`: the search agent tunes the numeric constants, the LLM makes structural changes.

The LLM gets `--llm-share` of the trials (default 0.3), spread evenly: trial k goes to the LLM
when that keeps its count closest to share x k (so 0.3 gives 3 of every 10, never 3 in a row at
the start). Both agents observe every finished trial, whichever of them proposed it, so the
search learns from the LLM's results and the LLM sees the search's in its history. If the search
agent has nothing to propose (no constants found) the LLM takes the trial. After an LLM error
that will recur (a bad key or model name, an account out of credit) the LLM takes the next trial
too, so that three in a row stop the loop as they do `--agent llm` (the search's trials in
between would hide them all night). The proposer is recorded in the trial's `extra` as `proposer`.
"""

from __future__ import annotations

from typing import Any

from autoresearch.agents.base import Agent, AgentError, BaseAgent, Context, Proposal
from autoresearch.errors import UsageError
from autoresearch.records import Trial
from autoresearch.task import Task

ROLE = ("You work alongside a numeric search (Optuna) that tunes the UPPER_CASE numeric constants "
        "at the top of the editable files on the other trials. Do not spend your trial on "
        "re-tuning those constants: make a structural change the search cannot make (the "
        "model, the algorithm, the optimizer, the schedule, the data pipeline, a bug fix). New "
        "numeric constants you introduce at the top of a file become tunable by the search.")


class HybridAgent(BaseAgent):
    name = "hybrid"

    def __init__(self, search: Agent, llm: Agent, share: float = 0.3) -> None:
        if not 0.0 <= share <= 1.0:
            raise UsageError(f"--llm-share must be between 0 and 1, got {share:g}")
        self.search = search
        self.llm = llm
        self.share = share
        self.proposals = 0
        self.llm_proposals = 0
        self.llm_failing = False  # its last proposal failed in a way that will recur

    def pick(self) -> str:
        """'llm' or 'search' for the next proposal (deterministic, evenly spread)."""
        k = self.proposals + 1
        return "llm" if self.llm_proposals + 1 <= self.share * k + 1e-9 else "search"

    def propose(self, ctx: Context) -> Proposal:
        who = "llm" if self.llm_failing and self.share > 0 else self.pick()
        self.proposals += 1
        if who == "search":
            try:
                p = self.search.propose(ctx)
                return _tagged(p, "search")
            except AgentError as e:
                if self.share == 0.0:
                    raise
                ctx.log(f"[hybrid] the search agent has nothing to propose ({e}); the LLM takes this trial")
        self.llm_proposals += 1
        try:
            p = self.llm.propose(ctx)
        except AgentError as e:
            self.llm_failing = e.fatal
            raise
        self.llm_failing = False
        return _tagged(p, "llm")

    def observe(self, trial: Trial) -> None:
        self.search.observe(trial)
        self.llm.observe(trial)

    def preflight(self) -> list[str]:
        check = getattr(self.llm, "preflight", None)
        llm = check() if check and self.share > 0 else []  # (--llm-share 0: the LLM is never asked)
        return list(getattr(self.search, "preflight", list)()) + llm


def _tagged(p: Proposal, who: str) -> Proposal:
    return Proposal(description=p.description, model=p.model, tokens_in=p.tokens_in,
                    tokens_out=p.tokens_out, cost=p.cost, extra={**p.extra, "proposer": who})


def make_hybrid(opts: Any, task: Task) -> HybridAgent:
    from autoresearch.agents.llm import make_llm

    share = float(opts.llm_share)
    if not 0.0 <= share <= 1.0:
        raise UsageError(f"--llm-share must be between 0 and 1, got {share:g}")
    llm = make_llm(opts, role=ROLE)
    try:
        from autoresearch.agents.search import SearchAgent
    except ImportError as e:
        raise UsageError(f"--agent hybrid needs the search agent, which is not available: {e}") from None
    return HybridAgent(SearchAgent(task, sampler=opts.sampler, seed=opts.seed), llm, share)
