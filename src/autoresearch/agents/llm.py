"""`--agent llm`: a tool-using agent over an LLM API (OpenAI-compatible servers and Anthropic).

One proposal is a short conversation: the model gets program.md, the task, a condensed history
of every trial and the best code, then calls tools (agents/tools.py) to read and edit the
worktree until it calls `finish` with a one-line description. The harness then commits, runs and
judges, as for any agent.

Guarantees:
- Limits per proposal: steps (model calls), tokens (in + out) and wall time (--agent-timeout,
  default 15 minutes). Reaching one, an API failure that outlives its retries, or any other
  failure (a bug included) raises AgentError (the loop records agent_error and goes on) carrying
  the model, tokens and cost spent, so the ledger and --max-cost see every dollar. A refusal that
  will recur (a bad key or model, HTTP 400) is fatal: three in a row stop the loop.
- A bad AUTORESEARCH_LLM_* setting is a UsageError (exit 2) that names it.
- Tokens and cost of each proposal go into the ledger (prices: agents/prices.py).
- The conversation is written to agent/<n>.log with keys redacted (each message cut to
  LOG_CHARS); keys are never logged. The tools refuse an edit that would write a key.
- The conversation stays under a context budget: the history is condensed to fit, and old tool
  outputs, then the long arguments of old tool calls (a whole file written), then the long texts
  of the model's old replies, are elided as the conversation grows.
"""

from __future__ import annotations

import ipaddress
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from autoresearch.agents.base import AgentError, BaseAgent, Context, Proposal
from autoresearch.agents.prices import PRICES, Price, cost, load_overrides, price_of
from autoresearch.agents.providers import (
    Chat,
    ConfigError,
    Endpoint,
    LLMError,
    OutOfTime,
    Reply,
    make_chat,
    resolve,
)
from autoresearch.agents.retry import RetryPolicy, call_with_retries, setting
from autoresearch.agents.secrets import key_values, redact
from autoresearch.agents.tools import PAGE_BACK, SPECS, Tools, sealed
from autoresearch.errors import UsageError
from autoresearch.prompt import build_prompt, history_lines
from autoresearch.records import Status, Trial
from autoresearch.task import Task, list_files

SYSTEM = """You are a research engineer working in an automated experiment loop. Each turn of the \
loop you make ONE change to the editable files that you expect to improve the metric; the \
harness then commits it, runs the experiment under a fixed time budget, measures the metric and \
keeps the change only if the metric improved. You never run the experiment, git or a shell.

Work with the tools: read the code (read_file, grep, list_files), look at past trials \
(read_history, read_log), make your change with edit_file (exact search/replace) or write_file, \
then call finish with a one-line description of what you changed and why. Make one coherent \
change per trial; do not repeat a change from the history; keep the code runnable within the \
time budget; change only editable files."""


LOG_CHARS = 8000  # of one message in agent/<n>.log (the model's text; the first prompt is bounded by the context)


STEP_FLOOR = 300  # characters of a tool's output always kept (an error, "edited exp.py"), however many calls

CUT = ("length", "max_tokens")  # a reply's stop reason when it reached the reply's token limit


@dataclass
class Limits:
    """Per-proposal limits and the context budget; environment overrides for each."""

    steps: int = 40
    tokens: int = 400_000  # input + output over the whole proposal
    reply_tokens: int = 8192  # one reply
    seconds: float = 900.0
    context_chars: int = 120_000  # about 30k tokens

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """The limits with the environment's overrides; ValueError names a bad variable."""
        env = os.environ if env is None else env
        lim = cls()
        lim.steps = int(setting(env, "AUTORESEARCH_LLM_STEPS", lim.steps, 1, whole=True))
        lim.tokens = int(setting(env, "AUTORESEARCH_LLM_MAX_TOKENS", lim.tokens, 1, whole=True))
        lim.reply_tokens = int(setting(env, "AUTORESEARCH_LLM_REPLY_TOKENS", lim.reply_tokens, 1, whole=True))
        lim.context_chars = int(setting(env, "AUTORESEARCH_LLM_CONTEXT", lim.context_chars, 1000, whole=True))
        return lim


@dataclass
class Spend:
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    def add(self, reply: Reply, price: Price | None) -> None:
        self.tokens_in += reply.tokens_in
        self.tokens_out += reply.tokens_out
        self.cost += cost(price, reply.tokens_in, reply.tokens_out, reply.cache_read, reply.cache_write)


# ---------------------------------------------------------------------------
# memory: what the model is shown


def condensed_history(trials: tuple[Trial, ...] | list[Trial], metric: str, budget: int) -> list[str]:
    """history_lines, shrunk until it fits `budget` characters: all the trials when they fit;
    else the kept ones and the 40 most recent; else a count by status, the last kept ones and
    fewer recent ones."""
    lines = history_lines(trials, metric, limit_chars=budget, more=PAGE_BACK, squeeze=False)
    if sum(len(x) + 1 for x in lines) <= budget:
        return lines
    done = [t for t in trials if t.status.finished]
    counts: dict[str, int] = {}
    for t in done:
        counts[t.status.value] = counts.get(t.status.value, 0) + 1
    head = f"{len(done)} trials so far: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    flight = [t for t in trials if not t.status.finished and t.description]  # (always shown)
    for recent, kept_n in ((20, 20), (10, 10), (5, 5), (3, 3)):
        kept = [t for t in done if t.status is Status.KEEP][-kept_n:]
        tail = done[-recent:]
        chosen = sorted({t.number: t for t in kept + tail + flight}.values(), key=lambda t: t.number)
        body = history_lines(chosen, metric, limit_chars=10**9)
        out = [head, f"(shown: the last {len(kept)} kept and the {len(tail)} most recent; read_history "
               f"with before={tail[0].number if tail else 0} lists the others)", *body]
        if sum(len(x) + 1 for x in out) <= budget:
            return out
    return [head, *[line[:200] for line in body[-3:]]]


def best_code(ctx: Context, budget: int) -> str:
    """The editable files of the best trial (the worktree), as much as fits `budget`."""
    files = sorted(f for f in list_files(ctx.workdir) if ctx.task.is_editable(f))
    parts, left, skipped, root = [], budget, [], ctx.workdir.resolve()
    for f in files:
        try:
            if not (ctx.workdir / f).resolve().is_relative_to(root):  # a link out: read_file refuses it too
                continue
            text = (ctx.workdir / f).read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) + 100 > left:
            skipped.append(f)
            continue
        parts.append(f"## {f}\n```\n{text}\n```")
        left -= len(text) + 100
    if skipped:  # named as far as a tenth of the budget goes (an editable glob may match thousands)
        named, room = [], max(500, budget // 10)
        for f in skipped:
            room -= len(f) + 2
            if room < 0:
                break
            named.append(f)
        more = f", and {len(skipped) - len(named)} more (list_files names them)" if len(named) < len(skipped) else ""
        parts.append("Not shown (too long; use read_file): " + ", ".join(named) + more)
    return "\n\n".join(parts) if parts else "(no editable file exists yet)"


def first_message(ctx: Context, budget: int, role: str = "") -> str:
    holdout = ctx.task.metric.holdout
    history = [sealed(x, holdout) for x in condensed_history(ctx.history, ctx.task.metric.name, budget // 4)]
    prompt = build_prompt(ctx, history=history)
    code = best_code(ctx, budget // 2)
    return (prompt + (f"\n# Your role\n{role}\n" if role else "")
            + "\n# The best code so far (the editable files)\n" + code
            + "\n\nMake your change with the tools, then call finish.")


def elide(messages: list[dict[str, Any]], budget: int) -> bool:
    """While the conversation is over `budget` chars, replace old tool outputs with a stub, then
    the long arguments of old tool calls (a whole file written, which every request repeats),
    then the long texts of the model's old replies (a model that reasons aloud in its replies
    sent every one of them again on each request, past any context window); the last two of
    each are kept whole. Whether anything was replaced: then the turns' thinking
    (Reply.blocks) is let go, all of it, since it is signed for the conversation as it was and
    the API refuses a thinking block whose conversation before it changed."""
    changed = _elide(messages, budget)
    if changed:
        for m in messages:
            m.pop("blocks", None)
    return changed


def _elide(messages: list[dict[str, Any]], budget: int) -> bool:
    def size() -> int:
        return sum(len(str(m.get("content", ""))) + sum(len(r["content"]) for r in m.get("results", []))
                   + sum(len(str(v)) for c in m.get("tool_calls") or [] for v in c.arguments.values())
                   + sum(len(str(b.get("thinking") or b.get("data") or "")) for b in m.get("blocks", []))
                   for m in messages)
    changed = False
    for m in [m for m in messages if m["role"] == "tool"][:-2]:
        for r in m["results"]:
            if size() <= budget:
                return changed
            if len(r["content"]) > 200:
                r["content"] = f"[output elided to save context ({len(r['content'])} chars); call the tool again if needed]"
                changed = True
    for m in [m for m in messages if m.get("tool_calls")][:-2]:
        for c in m["tool_calls"]:
            for k, v in c.arguments.items():
                if size() <= budget:
                    return changed
                if isinstance(v, str) and len(v) > 200:
                    c.arguments[k] = f"[elided to save context ({len(v)} chars)]"
                    changed = True
    for m in [m for m in messages if m["role"] == "assistant"][:-2]:  # a model that thinks aloud at length
        text = m.get("content") or ""
        if size() <= budget:
            return changed
        if len(text) > 400:
            m["content"] = text[:200] + f"\n[... the rest of this reply ({len(text) - 200} chars) elided to save context]"
            changed = True
    return changed


# ---------------------------------------------------------------------------
# the agent


class LLMAgent(BaseAgent):
    """Proposes changes by a tool-using conversation with an LLM."""

    name = "llm"
    # each proposal is its own conversation, tools and spend on its own worktree; the SDKs'
    # clients are safe in several threads (what the instance keeps, two flags, only ever turns on)
    concurrent = True

    def __init__(self, endpoint: Endpoint, chat: Chat, limits: Limits | None = None,
                 policy: RetryPolicy | None = None, prices: dict[str, Price] | None = None,
                 role: str = "") -> None:
        self.endpoint = endpoint
        self.chat = chat
        self.limits = limits or Limits()
        self.policy = policy or RetryPolicy()
        table = {**PRICES, **(prices or {})}
        # a local provider's model is priced only by your own table (ollama's mistral-large is
        # not Mistral's API); another provider's, by the common table too
        own = (prices or {}) if endpoint.local else table
        self.price = price_of(endpoint.name, own)
        if self.price is None:  # the full spec too, for an override such as "openrouter/x/y"
            self.price = own.get(endpoint.label)
        if self.price is None and (endpoint.local or on_this_machine(endpoint.base_url)):
            self.price = (0.0, 0.0)  # a model served on a machine of yours costs nothing
        self.role = role
        self.no_usage = False
        self.tools_seen = False  # the model has called a tool once: text-only replies are not its nature

    def preflight(self) -> list[str]:
        """One free request (the list of models): a refused key stops `run` before the baseline."""
        from autoresearch.agents.preflight import check_endpoint

        return check_endpoint(self.chat, self.endpoint)

    def propose(self, ctx: Context) -> Proposal:
        seconds = ctx.time_limit or self.limits.seconds
        spend = Spend()
        log = self._logger(ctx)
        try:
            log(f"# trial {ctx.number}: {self.endpoint.label} via {self.endpoint.base_url or self.endpoint.provider}"
                f" (limits: {self.limits.steps} steps, {self.limits.tokens} tokens, {seconds:g} s)")
            if self.price is None:
                log(f"[cost] no price known for {self.endpoint.name}: cost recorded as 0 (set AUTORESEARCH_PRICES)")
            description = self._converse(ctx, spend, seconds, log)
        except (AgentError, LLMError) as e:
            message, fatal = redact(str(e)), bool(getattr(e, "fatal", False))
        except Exception as e:  # noqa: BLE001 - a bug (or a full disk) must not lose what was spent
            message, fatal = redact(f"{type(e).__name__}: {e}"), False
            _quietly(log, "## unexpected error\n" + traceback.format_exc())
        else:
            extra = {} if self.price is not None else {"price": "unknown"}
            return Proposal(description=description, model=self.endpoint.label, tokens_in=spend.tokens_in,
                            tokens_out=spend.tokens_out, cost=spend.cost, extra=extra)
        _quietly(log, f"## failed: {message}")
        raise AgentError(message, model=self.endpoint.label, tokens_in=spend.tokens_in,
                         tokens_out=spend.tokens_out, cost=spend.cost, fatal=fatal)

    def _converse(self, ctx: Context, spend: Spend, seconds: float, log: Callable[[str], None]) -> str:
        """Model calls and tool runs until the model finishes; returns the description."""
        deadline = time.monotonic() + seconds
        tools = Tools(ctx, keys=key_values((self.endpoint.key,)), log=log)
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": first_message(ctx, self.limits.context_chars, self.role)}]
        log("## prompt\n" + messages[0]["content"])
        nudges, was_cut = 0, False
        for step in range(1, self.limits.steps + 1):
            elide(messages, self.limits.context_chars)
            reply = self._reply(ctx, messages, spend, deadline, seconds, log)
            log(f"## step {step} (tokens in {reply.tokens_in}, out {reply.tokens_out}; "
                f"total ${spend.cost:.4f})" + (f"\n{log_cut(reply.text)}" if reply.text else ""))
            messages.append({"role": "assistant", "content": reply.text, "tool_calls": reply.tool_calls,
                             **({"blocks": reply.blocks} if reply.blocks else {})})
            self.tools_seen = self.tools_seen or bool(reply.tool_calls)
            if reply.tool_calls:
                messages.append({"role": "tool", "results": self._results(tools, reply.tool_calls, log,
                                                                          cut=reply.stop in CUT, deadline=deadline)})
            if tools.finished is not None and (tools.changed or nudges >= 2):
                return tools.finished
            if tools.changed and not reply.tool_calls:  # it edited, then said what it did
                return last_line(reply.text) or "(no description)"
            if tools.finished is not None or not reply.tool_calls:  # talk, or finish, with no edit
                nudges += 1
                was_cut = self._nudge(reply, tools, messages, nudges, was_cut)
            if spend.tokens_in + spend.tokens_out >= self.limits.tokens:
                raise AgentError(f"the token limit ({self.limits.tokens}) was reached before finish")
            if time.monotonic() >= deadline:
                raise AgentError(f"the agent's time limit (--agent-timeout {seconds:g} s) was reached before finish")
        raise AgentError(f"the step limit ({self.limits.steps}) was reached before finish")

    def _reply(self, ctx: Context, messages: list[dict[str, Any]], spend: Spend, deadline: float,
               seconds: float, log: Callable[[str], None]) -> Reply:
        """The model's next reply (retried as the policy says, until the deadline), its tokens
        and cost added to `spend`."""
        try:
            reply = call_with_retries(
                lambda timeout: self.chat.complete(SYSTEM, messages, SPECS, self.limits.reply_tokens, timeout),
                self.policy, deadline, log, ctx.cancel, self.endpoint,
                spent=lambda i, o: spend.add(Reply("", [], i, o), self.price))
        except OutOfTime as e:
            if e.retry_in is not None:
                raise AgentError(f"the server asked to wait {e.retry_in:.1f} s, past the agent's time limit "
                                 f"(--agent-timeout {seconds:g} s) ({e})") from None
            raise AgentError(f"the agent's time limit (--agent-timeout {seconds:g} s) was reached while waiting "
                             f"for the model ({e})") from None
        spend.add(reply, self.price)
        if reply.tokens_in == 0 and reply.tokens_out == 0 and not self.no_usage:
            self.no_usage = True  # said once per loop: the ledger's tokens and cost are 0 from here
            said = (f"{self.endpoint.label} reported no token usage: tokens and cost are "
                    "recorded as 0, and --max-cost cannot stop the loop")
            log(f"[usage] {said}")
            print(f"autoresearch: warning: {said}", file=sys.stderr, flush=True)
        return reply

    def _nudge(self, reply: Reply, tools: Tools, messages: list[dict[str, Any]], nudges: int, was_cut: bool) -> bool:
        """The `nudges`-th reply that changed no file: asked again to edit (the third such
        reply fails the proposal, saying why it likely will recur). Returns whether any of
        them was cut at the reply's token limit."""
        cut = reply.stop in CUT and not reply.tool_calls
        was_cut = was_cut or cut
        if nudges > 2 and was_cut:  # (not a model without tools: one that thinks at length)
            raise AgentError(f"the model changed no file, and its replies were cut at the reply's token limit "
                             f"({self.limits.reply_tokens}; AUTORESEARCH_LLM_REPLY_TOKENS)")
        if nudges > 2 and not self.tools_seen:  # never a tool call from this model: will recur
            raise AgentError("the model answered in text only and never called a tool: does it support "
                             "tool calls? (vLLM needs --enable-auto-tool-choice and a --tool-call-parser; "
                             "Ollama a model that lists tools)", fatal=True)
        if nudges > 2:  # (its writes that were refused said: the trial's reason is all a user reads)
            refused = sorted(set(tools.refused))
            raise AgentError("the model did not change any file" + (
                f"; its writes were refused: {'; '.join(refused[:3])}" if refused else ""))
        tools.finished = None
        messages.append({"role": "user", "content": ("Your reply was cut at the token limit: think "
                         "less aloud. " if cut else "No file has changed yet. ") + "Use "
                         "edit_file or write_file to make your change, then call finish."})
        return was_cut

    def _results(self, tools: Tools, calls: list[Any], log: Callable[[str], None],
                 cut: bool = False, deadline: float = math.inf) -> list[dict[str, str]]:
        """Every call run (but the last of a reply `cut` at the reply's token limit: its arguments
        stop where the reply did, a whole file written half; and no grep past the `deadline`: a
        reply's dozens of 10-second greps held the proposal minutes past its time limit, while
        the other tools take an instant, and a change finished just in time is kept); their
        outputs together cut to half the context budget (each tool's output is cut on its own,
        but a reply may hold dozens of calls, and the last steps are sent whole on every
        request: 60 reads at once made a request of a million characters)."""
        share = max(STEP_FLOOR, self.limits.context_chars // 2)
        room, out = share, []
        for i, call in enumerate(calls):
            if call.name == "grep" and time.monotonic() >= deadline:
                log(f"-> {call.name}(...) not run: the agent's time limit was reached")
                out.append({"id": call.id, "content": "error: not run: the agent's time limit was reached"})
                continue
            if cut and i == len(calls) - 1:
                said = (f"error: your reply was cut at the reply's token limit ({self.limits.reply_tokens} tokens) "
                        f"inside this call, so it was not run; make the change in smaller pieces (edit_file with "
                        "a short search and replace, not a whole file)")
                log(f"-> {call.name}(...) cut at the reply's token limit: not run")
                out.append({"id": call.id, "content": said})
                continue
            result = self._run(tools, call, log)
            text, keep = result["content"], max(room, STEP_FLOOR)
            if len(text) > keep:
                result["content"] = (text[:keep] + f"\n[... {len(text) - keep} more characters cut: the outputs of one "
                                     f"step may hold about {share} characters in all; ask for less at once]")
            room -= len(result["content"])
            out.append(result)
        return out

    def _run(self, tools: Tools, call: Any, log: Callable[[str], None]) -> dict[str, str]:
        out = f"error: {call.error}" if call.error else tools.call(call.name, call.arguments)
        args = call.arguments if isinstance(call.arguments, dict) else {"": call.arguments}
        shown = ", ".join(f"{k}={log_cut(str(v), 300)!r}" for k, v in args.items())
        log(f"-> {call.name}({shown})\n{log_cut(out, 2000)}")
        return {"id": call.id, "content": out}

    @staticmethod
    def _logger(ctx: Context) -> Callable[[str], None]:
        def log(text: str) -> None:
            ctx.log(redact(text))
        return log


def on_this_machine(url: str | None) -> bool:
    """Whether `url` is served on this machine (localhost, a loopback address)."""
    host = (urlsplit(url).hostname or "") if url else ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def log_cut(text: str, limit: int = LOG_CHARS) -> str:
    """`text` as much as the agent log keeps of one message, saying how much was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters not logged]"


def _quietly(log: Callable[[str], None], text: str) -> None:
    """log(text), unless the log cannot be written (a full disk): a failure is being reported."""
    try:
        log(text)
    except OSError:
        pass


def last_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return lines[-1][:200] if lines else ""


# ---------------------------------------------------------------------------
# construction from the command line


def make_llm(opts: Any, role: str = "") -> LLMAgent:
    """An LLMAgent from AgentOptions (--model, --base-url, --agent-timeout); UsageError if the
    model, the key, the SDK or the price file is wrong."""
    try:
        endpoint = resolve(opts.model, opts.base_url)
        prices = load_overrides()
        limits = Limits.from_env()
        policy = RetryPolicy.from_env()
        chat = make_chat(endpoint)  # (last: importing an SDK takes seconds, a bad setting none)
    except (ConfigError, ValueError) as e:
        named = getattr(opts, "named", str)  # (the task file's key, when it gave the value)
        raise UsageError(redact(named(str(e)))) from None
    if opts.timeout:
        limits.seconds = float(opts.timeout)
    agent = LLMAgent(endpoint, chat, limits, policy, prices, role)
    if agent.price is None:
        print(f"autoresearch: no price known for {endpoint.label}; its cost is recorded as 0 "
              "(give one in a JSON file named by AUTORESEARCH_PRICES)", file=sys.stderr)
    return agent


def build(name: str, opts: Any, task: Task) -> Any:
    """The registry's entry point for --agent llm and --agent hybrid."""
    if name == "hybrid":
        from autoresearch.agents.hybrid import make_hybrid

        return make_hybrid(opts, task)
    return make_llm(opts)


__all__ = ["LLMAgent", "Limits", "build", "make_llm", "condensed_history"]
