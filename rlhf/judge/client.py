"""A client for OpenAI-compatible chat-completions servers (vLLM, llama.cpp's server, TGI, hosted APIs).

`ChatClient.complete_many` sends one request per conversation with at most `concurrency` in flight
(threads; the standard library's HTTP client, no extra dependency), starts at most `rate_limit`
requests per second (a shared schedule of start times), gives each request `timeout_s`, and
retries connection errors, timeouts, 429 and 5xx answers `retries` times with exponential backoff
and jitter (a `Retry-After` header is honoured).

What fails the whole run, raised at once as `EndpointError` (the caller has stored every verdict
finished before): a wrong key (401 / 403, never retried), an unreachable endpoint or one that keeps
answering 429 / 5xx after the retries, an unknown model (404). Anything else wrong with one request
(a 400 for that prompt, a body that is not a completion) is that request's `ChatReply.error`, which
the judge stores as an `unparsed` record with the text.

The key is read from the environment variable the caller names (`--api-key-env`), sent only in the
Authorization header, and never part of an error, a log line or a stored record (`rlhf.redact`).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from rlhf.redact import redact_text, redact_url

Messages = list[dict[str, str]]


class EndpointError(RuntimeError):
    """The endpoint cannot serve this run: unreachable, wrong key, unknown model, or failing after retries."""


@dataclass(frozen=True)
class ChatReply:
    """One completion: its text, or why there is none (this request only)."""

    text: Optional[str]
    error: Optional[str] = None
    finish_reason: Optional[str] = None
    seconds: float = 0.0
    tokens: Optional[int] = None
    """Completion tokens, when the server reports usage."""


@dataclass
class ClientConfig:
    """How the client talks to the server."""

    concurrency: int = 8
    """Requests in flight at once."""
    timeout_s: float = 60.0
    """Seconds one request may take (connect + answer)."""
    retries: int = 3
    """Extra tries of a request after a connection error, timeout, 429 or 5xx."""
    backoff_s: float = 0.5
    """First retry waits about this long (with jitter); each later one twice as long."""
    rate_limit: float = 0.0
    """Requests started per second at most (0 = no limit)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff_s < 0 or self.rate_limit < 0:
            raise ValueError("backoff_s and rate_limit must be >= 0")


def chat_url(url: str) -> str:
    """The chat-completions URL of a server given as its root, its `/v1`, or the full path."""
    base = url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def read_api_key(env_name: Optional[str], environ: Optional[dict[str, str]] = None) -> Optional[str]:
    """The key from environment variable `env_name` (None when no name is given); EndpointError when it is unset."""
    if not env_name:
        return None
    value = (environ if environ is not None else os.environ).get(env_name)
    if not value:
        raise EndpointError(f"--api-key-env {env_name}: the environment variable is not set")
    return value


class _Stopped(EndpointError):
    """A request not sent because another one already failed the run."""


class _RateLimiter:
    """Start times at least 1/rate apart, shared by the worker threads."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        if start > now:
            time.sleep(start - now)


class _Retry(Exception):
    def __init__(self, message: str, after: Optional[float] = None) -> None:
        super().__init__(message)
        self.after = after


@dataclass
class ChatClient:
    """Chat completions from one model on one OpenAI-compatible server."""

    url: str
    model: str
    api_key: Optional[str] = field(default=None, repr=False)
    config: ClientConfig = field(default_factory=ClientConfig)
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self.endpoint = chat_url(self.url)
        self._limiter = _RateLimiter(self.config.rate_limit)
        self._abort = threading.Event()

    @property
    def where(self) -> str:
        """The endpoint as it may be shown and stored (no credentials)."""
        return redact_url(self.endpoint)

    def identity(self) -> dict[str, Any]:
        """What a judgment records about this judge: endpoint (redacted), model, client settings (no key)."""
        return {"backend": "endpoint", "endpoint": self.where, "model": self.model,
                "concurrency": self.config.concurrency, "timeout_s": self.config.timeout_s}

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as answer:
                payload = answer.read()
        except urllib.error.HTTPError as exc:
            detail = self._detail(exc)
            if exc.code in (401, 403):
                raise EndpointError(f"{self.where}: the server refused the key (HTTP {exc.code}{detail}); check --api-key-env") from None
            if exc.code == 404:
                raise EndpointError(f"{self.where}: not found (HTTP 404{detail}); is this an OpenAI-compatible server serving model {self.model!r}?") from None
            if exc.code == 429 or exc.code >= 500:
                after = exc.headers.get("Retry-After") if exc.headers else None
                raise _Retry(f"HTTP {exc.code}{detail}", float(after) if after and after.replace(".", "", 1).isdigit() else None) from None
            raise ValueError(f"HTTP {exc.code}{detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retry(f"cannot reach the server ({redact_text(str(reason))})") from None
        try:
            return json.loads(payload)
        except ValueError:
            raise ValueError(f"the answer is not JSON: {payload[:200]!r}") from None

    def _detail(self, exc: urllib.error.HTTPError) -> str:
        try:
            text = exc.read(300).decode("utf-8", "replace").strip()
        except Exception:  # noqa: BLE001 - only decoration of the error
            text = ""
        text = redact_text(text.replace(self.api_key, "***") if self.api_key else text)
        return f": {text}" if text else ""

    def complete(self, messages: Messages, *, max_tokens: int = 64, temperature: float = 0.0, seed: Optional[int] = None,
                 top_p: Optional[float] = None) -> ChatReply:
        """One completion; EndpointError when the run cannot go on, else a ChatReply (text or error)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        if top_p is not None:
            body["top_p"] = top_p
        started = time.monotonic()
        last = ""
        for attempt in range(self.config.retries + 1):
            if self._abort.is_set():
                raise _Stopped(f"{self.where}: run stopped after an earlier request failed")
            self._limiter.wait()
            try:
                answer = self._post(body)
            except _Retry as exc:
                last = str(exc)
                if attempt == self.config.retries:
                    break
                delay = exc.after if exc.after is not None else self.config.backoff_s * 2**attempt * random.uniform(0.5, 1.5)
                self.sleep(delay)
                continue
            except ValueError as exc:
                return ChatReply(text=None, error=str(exc), seconds=time.monotonic() - started)
            try:
                choice = answer["choices"][0]
                text = choice["message"]["content"]
                if not isinstance(text, str):
                    raise TypeError
            except (KeyError, IndexError, TypeError):
                return ChatReply(text=None, error=f"not a chat completion: {json.dumps(answer)[:200]}", seconds=time.monotonic() - started)
            usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
            tokens = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else None
            return ChatReply(text=text, finish_reason=choice.get("finish_reason"), seconds=time.monotonic() - started, tokens=tokens)
        raise EndpointError(f"{self.where}: {last} after {self.config.retries + 1} tries")

    def complete_many(self, conversations: Sequence[Messages], *, seeds: Optional[Sequence[Optional[int]]] = None, **options: Any) -> list[ChatReply]:
        """Completions in the order given, `concurrency` at a time (`seeds`: one per conversation, else `options`' seed);
        the first EndpointError stops the rest and is raised."""
        if not conversations:
            return []
        self._abort.clear()
        per_request = [dict(options, **({} if seeds is None else {"seed": seeds[i]})) for i in range(len(conversations))]
        if self.config.concurrency == 1 or len(conversations) == 1:
            return [self.complete(c, **o) for c, o in zip(conversations, per_request)]

        def one(conversation: Messages, request_options: dict[str, Any]) -> ChatReply:
            try:
                return self.complete(conversation, **request_options)
            except EndpointError:
                self._abort.set()
                raise

        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(conversations))) as pool:
            futures = [pool.submit(one, c, o) for c, o in zip(conversations, per_request)]
            replies, failure = [], None
            for future in futures:
                try:
                    replies.append(future.result())
                except _Stopped as exc:
                    failure = failure or exc
                except EndpointError as exc:
                    failure = exc if failure is None or isinstance(failure, _Stopped) else failure
        if failure is not None:
            raise failure
        return replies
