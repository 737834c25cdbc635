"""Fake LLM APIs for tests: real HTTP servers on 127.0.0.1 with scripted replies and faults.

`FakeLLM(kind)` serves the OpenAI chat-completions API (kind="openai": POST /v1/chat/completions,
GET /v1/models), the Anthropic messages API (kind="anthropic": POST /v1/messages), the OpenAI
Responses API (kind="responses": POST /v1/responses, what Codex CLI speaks) or Google's Generative
Language API (kind="gemini": POST /v1beta/models/NAME:generateContent and :streamGenerateContent,
what Gemini CLI speaks), as JSON or, when the request asks for it, as a stream of server-sent
events. Each request takes the next step of `script`; when the script runs out, `default` (if
set) answers. A step is:

- a `Say(text, calls, tokens_in, tokens_out)`: an assistant reply, with tool calls
  `[(name, {args}), ...]`;
- a `Fault(kind, ...)`: "429" (with retry-after), "500", "401" (whose message quotes the key
  the client sent, as some providers do), "400" or "422" (a refusal whose reason is `message`,
  e.g. Ollama's "does not support tools"), "hang" (sleeps `seconds` before answering),
  "trickle" (a 200 whose body comes one space every 0.5 s for `seconds`, as a keep-alive proxy
  may send: every read is quick, the reply never whole),
  "malformed" (a 200 whose body is not JSON), "bad-shape" (JSON without choices/content);
- a callable taking the request's JSON and returning a step (for replies that depend on what
  the client sent, e.g. aider's edit format).

Requests are checked as the real APIs check them (roles in order, every tool call answered by
its id or, for Gemini, by a function response in the next turn); a bad one gets a 400 and its
reason goes to `invalid`. The protocol code here is written from the APIs' public documentation.
Every request is kept in `requests` (path, headers, body, arrival time) for assertions about
what was sent; a GET of the model list (GET /v1/models, which lists `listed`) only in `listings`,
as the key it sent. With `key`, any request with another key gets a 401, as the real APIs answer.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Say:
    text: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tokens_in: int = 1000
    tokens_out: int = 100
    stop: str = ""  # the reply's finish_reason / stop_reason (default: the usual one)
    odd_args: bool = False  # tool arguments sent as servers off the spec do: OpenAI's as an
    # object, not a JSON string; Anthropic's input as a JSON string, not an object


@dataclass
class Fault:
    kind: str  # 429 | 500 | 401 | 400 | 422 | hang | trickle | malformed | bad-shape | no-choices(-odd)
    retry_after: float | None = None
    seconds: float = 5.0
    message: str = ""  # the error's message (default: "scripted <status>")
    code: str | None = None  # OpenAI's error.code (e.g. "insufficient_quota")


Step = Say | Fault | Callable[[dict[str, Any]], "Say | Fault"]


class FakeLLM:
    def __init__(self, kind: str = "openai", script: list[Step] | None = None,
                 default: Step | None = None, model: str = "fake-model", key: str | None = None,
                 listed: list[str] | None = None, list_fault: Fault | None = None, thinking: bool = False) -> None:
        self.kind = kind
        # an Anthropic model that thinks (adaptive thinking, on by default from Claude's 5 models):
        # each reply starts with a thinking block signed for the conversation before it
        self.thinking = thinking
        self.script = list(script or [])
        self.default = default
        self.model = model
        self.key = key  # set: every request with another key gets a 401, as the real APIs answer
        # what GET /v1/models lists (by default the model and the names the tests ask for)
        self.listed = listed if listed is not None else [model, "gpt-4.1", "claude-sonnet-4-5-20250929"]
        self.list_fault = list_fault  # what GET /v1/models answers instead of the list
        self.requests: list[dict[str, Any]] = []
        self.listings: list[str] = []  # each GET /v1/models: the key sent
        self.invalid: list[str] = []  # requests refused as malformed (400), and why
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        """The base URL a client is given: .../v1 for the OpenAI APIs; the bare root for Anthropic
        and Gemini (their SDKs add /v1 and /v1beta themselves)."""
        host, port = self.server.server_address[:2]
        root = f"http://{host}:{port}"
        return root + "/v1" if self.kind in ("openai", "responses") else root

    def next_step(self, body: dict[str, Any]) -> Say | Fault:
        with self.lock:
            step = self.script.pop(0) if self.script else self.default
        if step is None:
            return Fault("500")
        return step(body) if callable(step) else step

    # -- HTTP --------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _sent_key(self) -> str:
                key = (self.headers.get("authorization", "") or self.headers.get("x-api-key", "")
                       or self.headers.get("x-goog-api-key", ""))
                return key.removeprefix("Bearer ").strip()

            def do_GET(self) -> None:  # /v1/models (OpenAI's shape; Anthropic's adds paging fields)
                with fake.lock:
                    fake.listings.append(self._sent_key())
                if fake.key is not None and self._sent_key() != fake.key:
                    return self._fault(Fault("401"))
                if fake.list_fault is not None:
                    return self._fault(fake.list_fault)
                data = [{"id": m, "object": "model", "type": "model", "display_name": m,
                         "created_at": "2025-01-01T00:00:00Z", "created": 0, "owned_by": "fake"} for m in fake.listed]
                self._send(200, {"object": "list", "data": data, "has_more": False,
                                 "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                with fake.lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                          "time": time.monotonic()})
                path = urlsplit(self.path).path
                if fake.key is not None and self._sent_key() != fake.key:
                    return self._fault(Fault("401"))
                if fake.kind == "gemini" and path.endswith(":countTokens"):  # not a model turn
                    return self._send(200, {"totalTokens": len(raw) // 4})
                problem = CHECKS[fake.kind](body) or (check_thinking(body) if fake.thinking else "")
                if problem and path.endswith(("/chat/completions", "/messages", "/responses",
                                              ":generateContent", ":streamGenerateContent")):
                    fake.invalid.append(problem)
                    return self._send(400, error_body(fake.kind, "invalid_request_error", problem))
                step = fake.next_step(body)
                if isinstance(step, Fault):
                    return self._fault(step)
                if fake.kind == "anthropic":
                    if body.get("stream"):
                        return self._raw(200, anthropic_stream(step, fake.model), "text/event-stream")
                    reply = anthropic_reply(step, fake.model)
                    if fake.thinking:
                        reply["content"].insert(0, {"type": "thinking", "thinking": f"step {len(body['messages'])}",
                                                    "signature": thinking_signature(body, len(body["messages"]))})
                    return self._send(200, reply)
                if fake.kind == "responses":
                    if body.get("stream"):
                        return self._raw(200, responses_stream(step, body.get("model") or fake.model),
                                         "text/event-stream")
                    return self._send(200, responses_reply(step, body.get("model") or fake.model))
                if fake.kind == "gemini":
                    model = path.rsplit("/", 1)[-1].split(":")[0] or fake.model
                    if path.endswith(":streamGenerateContent"):
                        return self._raw(200, gemini_stream(step, model), "text/event-stream")
                    return self._send(200, gemini_reply(step, model))
                if body.get("stream"):
                    return self._stream(step, fake.model)
                return self._send(200, openai_reply(step, fake.model))

            def _fault(self, f: Fault) -> None:
                if f.kind == "hang":
                    time.sleep(f.seconds)
                    return self._send(500, error_body(fake.kind, "api_error", "slow"))
                if f.kind == "trickle":
                    try:
                        self.send_response(200)
                        self.send_header("content-type", "application/json")
                        self.send_header("content-length", "100000")
                        self.end_headers()
                        until = time.monotonic() + f.seconds
                        while time.monotonic() < until:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(0.5)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return None
                if f.kind == "malformed":
                    return self._raw(200, b'{"id": "x", "choices": [ {"message": ', "application/json")
                if f.kind == "bad-shape":
                    return self._send(200, {"id": "x", "object": "surprise"})
                if f.kind in ("no-choices", "no-choices-odd"):  # (a router's upstream failure, billed all the same)
                    usage = ({"prompt_tokens": 500, "completion_tokens": 7, "total_tokens": 507} if f.kind == "no-choices"
                             else {"prompt_tokens": "500", "completion_tokens": [7], "total_tokens": -1})
                    return self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": fake.model,
                                            "choices": [], "usage": usage})
                if f.kind == "401":
                    key = self._sent_key()
                    return self._send(401, error_body(fake.kind, "authentication_error",
                                                      f.message or f"Incorrect API key provided: {key}"))
                status = int(f.kind)
                headers = {"retry-after": f"{f.retry_after:g}"} if f.retry_after is not None else {}
                kind = {429: "rate_limit_error", 400: "invalid_request_error",
                        422: "invalid_request_error"}.get(status, "api_error")
                self._send(status, error_body(fake.kind, kind, f.message or f"scripted {status}", f.code), headers)

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                self._raw(status, json.dumps(payload).encode(), "application/json", headers)

            def _raw(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", ctype)
                    self.send_header("content-length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _stream(self, step: Say, model: str) -> None:
                def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> dict[str, Any]:
                    return {"id": "c1", "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                            **more}
                chunks = [chunk({"role": "assistant", "content": step.text})]
                for i, (name, args) in enumerate(step.calls):  # a call's arguments arrive in two pieces
                    text = json.dumps(args)
                    chunks.append(chunk({"tool_calls": [{"index": i, "id": f"call_{uuid.uuid4().hex[:8]}",
                                                         "type": "function",
                                                         "function": {"name": name, "arguments": text[:5]}}]}))
                    chunks.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": text[5:]}}]}))
                chunks.append(chunk({}, "tool_calls" if step.calls else "stop",
                                    usage={"prompt_tokens": step.tokens_in, "completion_tokens": step.tokens_out,
                                           "total_tokens": step.tokens_in + step.tokens_out}))
                data = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
                self._raw(200, data, "text/event-stream")

        return Handler


GOOGLE_STATUS = {"invalid_request_error": (400, "INVALID_ARGUMENT"), "authentication_error": (401, "UNAUTHENTICATED"),
                 "rate_limit_error": (429, "RESOURCE_EXHAUSTED"), "api_error": (500, "INTERNAL")}


def error_body(kind: str, etype: str, message: str, code: str | None = None) -> dict[str, Any]:
    if kind == "anthropic":
        return {"type": "error", "error": {"type": etype, "message": message}}
    if kind == "gemini":  # google.rpc.Status
        code, status = GOOGLE_STATUS.get(etype, (500, "INTERNAL"))
        return {"error": {"code": code, "message": message, "status": status}}
    return {"error": {"message": message, "type": etype, "code": code}}


def openai_reply(step: Say, model: str) -> dict[str, Any]:
    calls = [{"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
              "function": {"name": n, "arguments": a if step.odd_args else json.dumps(a)}} for n, a in step.calls]
    message: dict[str, Any] = {"role": "assistant", "content": step.text or None}
    if calls:
        message["tool_calls"] = calls
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": step.stop or ("tool_calls" if calls else "stop")}],
            "usage": {"prompt_tokens": step.tokens_in, "completion_tokens": step.tokens_out,
                      "total_tokens": step.tokens_in + step.tokens_out}}


def anthropic_reply(step: Say, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": step.text}] if step.text else []
    content += [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:8]}", "name": n,
                 "input": json.dumps(a) if step.odd_args else a} for n, a in step.calls]
    return {"id": f"msg_{uuid.uuid4().hex[:8]}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": step.stop or ("tool_use" if step.calls else "end_turn"),
            "stop_sequence": None,
            "usage": {"input_tokens": step.tokens_in, "output_tokens": step.tokens_out}}


def check_openai(body: dict[str, Any]) -> str:
    """Why the real chat-completions API would refuse this request ('' if it would not)."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs or not body.get("model"):
        return "messages and model are required"
    pending: set[str] = set()
    for i, m in enumerate(msgs):
        role = m.get("role")
        if role == "tool":
            if m.get("tool_call_id") not in pending:
                return f"messages[{i}]: a tool message must answer a preceding tool_call"
            pending.discard(m["tool_call_id"])
            continue
        if pending:
            return f"messages[{i}]: tool_calls {sorted(pending)} were not answered"
        if role not in ("system", "user", "assistant", "developer"):
            return f"messages[{i}]: bad role {role!r}"
        if role == "assistant":
            pending = {c["id"] for c in m.get("tool_calls") or []}
            if m.get("content") is None and not pending:
                return f"messages[{i}]: Invalid value for 'content': expected a string, got null."
    return ""


def check_anthropic(body: dict[str, Any]) -> str:
    """Why the real messages API would refuse this request ('' if it would not)."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs or not body.get("model") or not body.get("max_tokens"):
        return "messages, model and max_tokens are required"
    expect, pending = "user", set()
    for i, m in enumerate(msgs):
        if m.get("role") == "system":  # Claude Code interleaves system notes; they do not count
            continue
        if m.get("role") != expect:
            return f"messages[{i}]: roles must alternate user/assistant, starting with user"
        blocks = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        if expect == "user":
            results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
            if set(results) != pending:
                return f"messages[{i}]: tool_use ids {sorted(pending)} need tool_result blocks"
            if results and blocks[0].get("type") != "tool_result":
                return f"messages[{i}]: tool_result blocks must come first"
        else:
            pending = {b["id"] for b in blocks if b.get("type") == "tool_use"}
            if any(b.get("type") == "text" and not b.get("text") for b in blocks):
                return f"messages[{i}]: text content blocks must be non-empty"
            texts = [str(b.get("text")) for b in blocks if b.get("type") == "text"]
            if texts and not any(x.strip() for x in texts):
                return f"messages[{i}]: text content blocks must contain non-whitespace text"
        expect = "assistant" if expect == "user" else "user"
    return "" if expect == "assistant" else "the last message must be from the user"


def _uncached(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _uncached(v) for k, v in value.items() if k != "cache_control"}
    return [_uncached(v) for v in value] if isinstance(value, list) else value


def thinking_signature(body: dict[str, Any], at: int) -> str:
    """The signature of a thinking block at messages[at]: bound, as the API binds it, to the
    system prompt, the tools and every message before it (cache_control markers aside)."""
    prefix = {"system": body.get("system"), "tools": body.get("tools"), "messages": body["messages"][:at]}
    return hashlib.sha256(json.dumps(_uncached(prefix), sort_keys=True).encode()).hexdigest()


def check_thinking(body: dict[str, Any]) -> str:
    """Why the messages API would refuse this request to a model that thinks: a thinking block
    whose conversation before it changed, or one left out of the turn the tool results answer
    while others were sent (a turn echoed without its thinking, all of it gone, is taken)."""
    msgs = body.get("messages") or []
    turns = [i for i, m in enumerate(msgs) if m.get("role") == "assistant" and isinstance(m.get("content"), list)]
    seen = False
    for i in turns:
        for j, b in enumerate(msgs[i]["content"]):
            if b.get("type") == "thinking":
                seen = True
                if b.get("signature") != thinking_signature(body, i):
                    return (f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block. The block is "
                            "bound to a different conversation.")
    if seen and turns and msgs[turns[-1]]["content"][0].get("type") != "thinking":
        first = msgs[turns[-1]]["content"][0].get("type")
        return f"messages.{turns[-1]}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`"
    return ""


def anthropic_stream(step: Say, model: str) -> bytes:
    """The reply as the messages API streams it (server-sent events)."""
    msg = anthropic_reply(step, model)
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": {
        **msg, "content": [], "stop_reason": None,
        "usage": {"input_tokens": step.tokens_in, "output_tokens": 1}}})]
    for i, block in enumerate(msg["content"]):
        if block["type"] == "text":
            start, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}),
                   ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}),
                   ("content_block_stop", {"type": "content_block_stop", "index": i})]
    events += [("message_delta", {"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"],
                                                                    "stop_sequence": None},
                                  "usage": {"output_tokens": step.tokens_out}}),
               ("message_stop", {"type": "message_stop"})]
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)



# ---------------------------------------------------------------------------
# the OpenAI Responses API (POST /v1/responses)


def _responses_items(step: Say) -> list[dict[str, Any]]:
    """The reply's output items: a message with the text (if any), then one function_call per call."""
    items: list[dict[str, Any]] = []
    if step.text:
        items.append({"type": "message", "id": f"msg_{uuid.uuid4().hex[:12]}", "status": "completed",
                      "role": "assistant",
                      "content": [{"type": "output_text", "text": step.text, "annotations": []}]})
    for name, args in step.calls:
        items.append({"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:12]}",
                      "call_id": f"call_{uuid.uuid4().hex[:12]}", "name": name,
                      "arguments": json.dumps(args), "status": "completed"})
    return items


def _responses_usage(step: Say) -> dict[str, Any]:
    return {"input_tokens": step.tokens_in, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": step.tokens_out, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": step.tokens_in + step.tokens_out}


def responses_reply(step: Say, model: str, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The response object, as POST /v1/responses returns it (and response.completed carries it)."""
    return {"id": f"resp_{uuid.uuid4().hex[:12]}", "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": model, "error": None, "incomplete_details": None,
            "output": _responses_items(step) if items is None else items, "parallel_tool_calls": True,
            "usage": _responses_usage(step)}


def responses_stream(step: Say, model: str) -> bytes:
    """The reply as the Responses API streams it: typed server-sent events, each output item
    added, filled by deltas (text in two pieces, a call's arguments in two pieces) and done,
    then response.completed with the whole response and its usage."""
    items = _responses_items(step)
    final = responses_reply(step, model, items)
    start = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any]] = [{"type": "response.created", "response": start},
                                    {"type": "response.in_progress", "response": start}]
    for i, item in enumerate(items):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            where = {"item_id": item["id"], "output_index": i, "content_index": 0}
            empty = {"type": "output_text", "text": "", "annotations": []}
            events += [{"type": "response.output_item.added", "output_index": i,
                        "item": {**item, "status": "in_progress", "content": []}},
                       {"type": "response.content_part.added", **where, "part": empty},
                       {"type": "response.output_text.delta", **where, "delta": text[:5]},
                       {"type": "response.output_text.delta", **where, "delta": text[5:]},
                       {"type": "response.output_text.done", **where, "text": text},
                       {"type": "response.content_part.done", **where, "part": item["content"][0]},
                       {"type": "response.output_item.done", "output_index": i, "item": item}]
        else:
            args = item["arguments"]
            where = {"item_id": item["id"], "output_index": i}
            events += [{"type": "response.output_item.added", "output_index": i,
                        "item": {**item, "arguments": "", "status": "in_progress"}},
                       {"type": "response.function_call_arguments.delta", **where, "delta": args[:5]},
                       {"type": "response.function_call_arguments.delta", **where, "delta": args[5:]},
                       {"type": "response.function_call_arguments.done", **where, "arguments": args},
                       {"type": "response.output_item.done", "output_index": i, "item": item}]
    events.append({"type": "response.completed", "response": final})
    return b"".join(f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': n})}\n\n".encode()
                    for n, e in enumerate(events))


CALLS = {"function_call": "function_call_output", "custom_tool_call": "custom_tool_call_output",
         "local_shell_call": "local_shell_call_output"}


def check_responses(body: dict[str, Any]) -> str:
    """Why the real Responses API would refuse this request ('' if it would not): a model and an
    input are required; every tool call is answered by an output with its call_id, and every
    output answers a call made before it."""
    items = body.get("input")
    if not body.get("model") or not (isinstance(items, str) and items or isinstance(items, list) and items):
        return "model and input are required"
    if isinstance(items, str):
        return ""
    made: dict[str, str] = {}
    answered: set[str] = set()
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") not in ("user", "assistant", "system", "developer"):
            return f"input[{i}]: bad role {item.get('role')!r}"
        if kind in CALLS:
            if not item.get("call_id"):
                return f"input[{i}]: a {kind} needs a call_id"
            made[item["call_id"]] = kind
        elif kind in CALLS.values():
            if CALLS.get(made.get(item.get("call_id", ""), "")) != kind:
                return f"input[{i}]: no tool call found for {kind} with call_id {item.get('call_id')}"
            answered.add(item["call_id"])
    missing = sorted(set(made) - answered)
    return f"No tool output found for function call {missing[0]}." if missing else ""


# ---------------------------------------------------------------------------
# Google's Generative Language API (POST /v1beta/models/NAME:generateContent, :streamGenerateContent)


def _gemini_usage(step: Say) -> dict[str, Any]:
    return {"promptTokenCount": step.tokens_in, "candidatesTokenCount": step.tokens_out,
            "totalTokenCount": step.tokens_in + step.tokens_out}


def gemini_reply(step: Say, model: str) -> dict[str, Any]:
    """A GenerateContentResponse: one candidate whose parts are the text and the function calls."""
    parts: list[dict[str, Any]] = [{"text": step.text}] if step.text else []
    parts += [{"functionCall": {"name": n, "args": a}} for n, a in step.calls]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": _gemini_usage(step), "modelVersion": model,
            "responseId": uuid.uuid4().hex[:16]}


def gemini_stream(step: Say, model: str) -> bytes:
    """The reply as :streamGenerateContent?alt=sse sends it: GenerateContentResponse chunks as
    `data:` events (the text in two pieces, then the calls), the last one with finishReason and
    the usage."""
    whole = gemini_reply(step, model)
    parts = whole["candidates"][0]["content"]["parts"]
    pieces: list[list[dict[str, Any]]] = []
    if step.text:
        pieces += [[{"text": step.text[:5]}], [{"text": step.text[5:]}]]
    calls = [p for p in parts if "functionCall" in p]
    if calls:
        pieces.append(calls)
    pieces = pieces or [[{"text": ""}]]
    chunks = []
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": piece}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        chunks.append({"candidates": [candidate], "modelVersion": model, "responseId": whole["responseId"],
                       "usageMetadata": _gemini_usage(step) if last else
                       {"promptTokenCount": step.tokens_in, "totalTokenCount": step.tokens_in}})
    return b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)


def check_gemini(body: dict[str, Any]) -> str:
    """Why the real Generative Language API would refuse this request ('' if it would not): roles
    are user or model, every turn has parts, and a model turn's function calls are answered by
    the same number of function responses, with the same names, in the next (user) turn."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    pending: list[str] = []
    for i, c in enumerate(contents):
        role, parts = c.get("role", "user"), c.get("parts")
        if role not in ("user", "model"):
            return f"contents[{i}]: please use a valid role: user, model"
        if not isinstance(parts, list) or not parts:
            return f"contents[{i}].parts: contents.parts must not be empty"
        answers = [(p["functionResponse"].get("name"), p["functionResponse"].get("id"))
                   for p in parts if isinstance(p.get("functionResponse"), dict)]
        if pending or answers:
            if role != "user" or len(answers) != len(pending):
                return ("Please ensure that the number of function response parts is equal to the number "
                        f"of function call parts of the function call turn (contents[{i}])")
            if sorted(map(str, answers)) != sorted(map(str, pending)):
                return f"contents[{i}]: function responses {answers} do not answer the calls {pending}"
        pending = [(p["functionCall"].get("name"), p["functionCall"].get("id")) for p in parts
                   if role == "model" and isinstance(p.get("functionCall"), dict)]
    return ""


CHECKS = {"openai": check_openai, "anthropic": check_anthropic, "responses": check_responses,
          "gemini": check_gemini}
