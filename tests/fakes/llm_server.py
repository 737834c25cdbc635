"""Fake LLM APIs for tests: real HTTP servers on 127.0.0.1 with scripted replies and faults.

`FakeLLM(kind)` serves the OpenAI chat-completions API (kind="openai": POST /v1/chat/completions,
GET /v1/models) or the Anthropic messages API (kind="anthropic": POST /v1/messages), as JSON or,
when the request asks for it, as a stream of server-sent events. Each request
takes the next step of `script`; when the script runs out, `default` (if set) answers. A step is:

- a `Say(text, calls, tokens_in, tokens_out)`: an assistant reply, with tool calls
  `[(name, {args}), ...]`;
- a `Fault(kind, ...)`: "429" (with retry-after), "500", "401" (whose message quotes the key
  the client sent, as some providers do), "hang" (sleeps `seconds` before answering),
  "malformed" (a 200 whose body is not JSON), "bad-shape" (JSON without choices/content);
- a callable taking the request's JSON and returning a step (for replies that depend on what
  the client sent, e.g. aider's edit format).

Requests are checked as the real APIs check them (roles in order, every tool call answered by
its id, nothing else in between); a bad one gets a 400 and its reason goes to `invalid`.
Every request is kept in `requests` (path, headers, body, arrival time) for assertions about
what was sent.
"""

from __future__ import annotations

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


@dataclass
class Fault:
    kind: str  # 429 | 500 | 401 | hang | malformed | bad-shape
    retry_after: float | None = None
    seconds: float = 5.0


Step = Say | Fault | Callable[[dict[str, Any]], "Say | Fault"]


class FakeLLM:
    def __init__(self, kind: str = "openai", script: list[Step] | None = None,
                 default: Step | None = None, model: str = "fake-model") -> None:
        self.kind = kind
        self.script = list(script or [])
        self.default = default
        self.model = model
        self.requests: list[dict[str, Any]] = []
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
        host, port = self.server.server_address[:2]
        root = f"http://{host}:{port}"
        return root + "/v1" if self.kind == "openai" else root

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

            def do_GET(self) -> None:  # /v1/models
                self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})

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
                problem = check_openai(body) if fake.kind == "openai" else check_anthropic(body)
                if problem and path.endswith(("/chat/completions", "/messages")):
                    fake.invalid.append(problem)
                    return self._send(400, error_body(fake.kind, "invalid_request_error", problem))
                step = fake.next_step(body)
                if isinstance(step, Fault):
                    return self._fault(step)
                if fake.kind == "anthropic":
                    if body.get("stream"):
                        return self._raw(200, anthropic_stream(step, fake.model), "text/event-stream")
                    return self._send(200, anthropic_reply(step, fake.model))
                if body.get("stream"):
                    return self._stream(step, fake.model)
                return self._send(200, openai_reply(step, fake.model))

            def _fault(self, f: Fault) -> None:
                if f.kind == "hang":
                    time.sleep(f.seconds)
                    return self._send(500, error_body(fake.kind, "api_error", "slow"))
                if f.kind == "malformed":
                    return self._raw(200, b'{"id": "x", "choices": [ {"message": ', "application/json")
                if f.kind == "bad-shape":
                    return self._send(200, {"id": "x", "object": "surprise"})
                if f.kind == "401":
                    key = self.headers.get("authorization", "") or self.headers.get("x-api-key", "")
                    key = key.removeprefix("Bearer ").strip()
                    return self._send(401, error_body(fake.kind, "authentication_error",
                                                      f"Incorrect API key provided: {key}"))
                status = int(f.kind)
                headers = {"retry-after": f"{f.retry_after:g}"} if f.retry_after is not None else {}
                kind = "rate_limit_error" if status == 429 else "api_error"
                self._send(status, error_body(fake.kind, kind, f"scripted {status}"), headers)

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


def error_body(kind: str, etype: str, message: str) -> dict[str, Any]:
    if kind == "anthropic":
        return {"type": "error", "error": {"type": etype, "message": message}}
    return {"error": {"message": message, "type": etype, "code": None}}


def openai_reply(step: Say, model: str) -> dict[str, Any]:
    calls = [{"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
              "function": {"name": n, "arguments": json.dumps(a)}} for n, a in step.calls]
    message: dict[str, Any] = {"role": "assistant", "content": step.text or None}
    if calls:
        message["tool_calls"] = calls
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": step.tokens_in, "completion_tokens": step.tokens_out,
                      "total_tokens": step.tokens_in + step.tokens_out}}


def anthropic_reply(step: Say, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": step.text}] if step.text else []
    content += [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:8]}", "name": n, "input": a}
                for n, a in step.calls]
    return {"id": f"msg_{uuid.uuid4().hex[:8]}", "type": "message", "role": "assistant",
            "model": model, "content": content, "stop_reason": "tool_use" if step.calls else "end_turn",
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
        expect = "assistant" if expect == "user" else "user"
    return "" if expect == "assistant" else "the last message must be from the user"


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
