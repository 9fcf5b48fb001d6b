"""The endpoint client against a real OpenAI-compatible HTTP server started here (`rlhf serve` on a tiny model).

Real requests over real sockets: concurrency (the server batches what arrives together), a wrong
key, an unreachable endpoint, replies that do not parse, and a judge run through the endpoint.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from sqlmodel import Session, select

from engine_fixtures import build_project
from rlhf.judge.backends import EndpointJudge
from rlhf.judge.client import ChatClient, ClientConfig, EndpointError, chat_url, read_api_key
from rlhf.judge.run import JudgeOptions, judge_project
from rlhf.roles import SYSTEM
from rlhf.schema import Judgment

KEY = "sk-test-0123456789abcdef"
pytestmark = pytest.mark.slow


def _serve(model_dir, batch_wait_ms: int):
    """`rlhf serve` on 127.0.0.1 (any free port) with a key; yields its /v1 URL."""
    env = {**os.environ, "RLHF_TEST_SERVE_KEY": KEY, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "from rlhf.cli import main; main()", "serve", "--model", str(model_dir), "--model-name", "tiny",
               "--port", "0", "--api-key-env", "RLHF_TEST_SERVE_KEY", "--device", "cpu", "--batch-wait-ms", str(batch_wait_ms)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
    assert match, f"the server did not start: {line!r}"
    yield match.group(1)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    yield from _serve(tiny_model_dir, batch_wait_ms=30)


@pytest.fixture(scope="module")
def patient_server(tiny_model_dir):
    """A server whose gathering window is long (5 s) but still closes as soon as a full batch (16) is in:
    on a loaded machine the client's 16 threads can start more than the usual 30-50 ms apart, and the
    test is about gathering, not about how fast threads start."""
    yield from _serve(tiny_model_dir, batch_wait_ms=5000)


def conversation(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"hello world {i} which answer is better"}]


def test_completions_over_http_in_order_and_concurrently(server):
    client = ChatClient(server, "tiny", api_key=KEY, config=ClientConfig(concurrency=8))
    replies = client.complete_many([conversation(i) for i in range(16)], max_tokens=5)
    assert len(replies) == 16 and all(r.text is not None and r.error is None for r in replies)
    sequential = ChatClient(server, "tiny", api_key=KEY, config=ClientConfig(concurrency=1))
    assert [r.text for r in sequential.complete_many([conversation(i) for i in range(16)], max_tokens=5)] == [r.text for r in replies]


def test_concurrent_requests_are_gathered_into_one_batch(patient_server):
    """16 requests sent at once are generated together (the server's /stats lists every batch's size)."""
    import json
    import urllib.request

    def batches() -> list[int]:
        with urllib.request.urlopen(patient_server.removesuffix("/v1") + "/stats", timeout=10) as answer:
            return json.loads(answer.read())["batches"]

    before = len(batches())
    client = ChatClient(patient_server, "tiny", api_key=KEY, config=ClientConfig(concurrency=16))
    assert all(r.text is not None for r in client.complete_many([conversation(i) for i in range(16)], max_tokens=4))
    gathered = batches()[before:]
    assert gathered == [16], gathered


def test_concurrency_is_bounded(server):
    """At most `concurrency` requests are open at once, counted by a proxy in front of the server."""
    host, port = re.match(r"http://([\d.]+):(\d+)", server).groups()
    open_now, peak, lock = [0], [0], threading.Lock()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def pipe(a, b, on_first_data=None):
        try:
            while data := a.recv(65536):
                if on_first_data is not None:  # before relaying it: the client cannot have the reply yet
                    on_first_data()
                    on_first_data = None
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle(conn):
        # A request counts as open from its connection until its reply starts coming back. The reply is relayed
        # only after the count drops, so a worker's next request can never overlap its last in the count, however
        # slowly the proxy's threads notice closing sockets (counting whole sockets saw 6 of 3 on a loaded machine).
        counted = [True]

        def uncount():
            with lock:
                if counted[0]:
                    open_now[0] -= 1
                    counted[0] = False

        with lock:
            open_now[0] += 1
            peak[0] = max(peak[0], open_now[0])
        upstream = socket.create_connection((host, int(port)))
        back = threading.Thread(target=pipe, args=(upstream, conn, uncount))
        back.start()
        pipe(conn, upstream)
        back.join()
        uncount()  # a connection closed without a reply

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    proxy = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    client = ChatClient(proxy, "tiny", api_key=KEY, config=ClientConfig(concurrency=3))
    replies = client.complete_many([conversation(i) for i in range(12)], max_tokens=4)
    listener.close()
    assert all(r.text is not None for r in replies)
    assert 2 <= peak[0] <= 3


def test_a_wrong_key_stops_the_run_without_showing_the_key(server):
    client = ChatClient(server, "tiny", api_key="sk-wrong-key-42", config=ClientConfig(retries=3))
    with pytest.raises(EndpointError) as caught:
        client.complete_many([conversation(i) for i in range(4)], max_tokens=4)
    assert "HTTP 401" in str(caught.value) and "--api-key-env" in str(caught.value)
    assert "sk-wrong-key-42" not in str(caught.value) and KEY not in str(caught.value)
    with pytest.raises(EndpointError, match="401"):
        ChatClient(server, "tiny").complete(conversation(0))  # no key at all


def test_an_unreachable_endpoint_is_retried_with_backoff_then_fails():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    waits = []
    client = ChatClient(f"http://127.0.0.1:{port}", "m", config=ClientConfig(retries=3, backoff_s=0.2, timeout_s=2), sleep=waits.append)
    with pytest.raises(EndpointError, match="cannot reach the server.*after 4 tries"):
        client.complete(conversation(0))
    assert len(waits) == 3 and waits[0] < waits[2]  # exponential backoff


def test_an_unknown_model_and_a_bad_request(server):
    with pytest.raises(EndpointError, match="404"):
        ChatClient(server, "no-such-model", api_key=KEY).complete(conversation(0))
    reply = ChatClient(server, "tiny", api_key=KEY).complete([{"role": "user", "content": "x"}], max_tokens=0)
    assert reply.text is None and "HTTP 400" in reply.error and "max_tokens" in reply.error


def test_rate_limit_spaces_request_starts(server):
    client = ChatClient(server, "tiny", api_key=KEY, config=ClientConfig(concurrency=4, rate_limit=10))
    started = time.monotonic()
    client.complete_many([conversation(i) for i in range(6)], max_tokens=2)
    assert time.monotonic() - started >= 0.5  # six starts at most 10 per second: the last at >= 0.5 s


def test_a_judge_run_through_the_endpoint_stores_unparsed_replies_with_their_text(server, sqlite_engine, monkeypatch):
    """The tiny random model answers gibberish: every verdict is unparsed, its raw text kept; the key is not in the lineage."""
    build_project(sqlite_engine, n_pairwise=4, n_rating=2, name="served")
    monkeypatch.setenv("MY_JUDGE_KEY", KEY)
    client = ChatClient(server, "tiny", api_key=read_api_key("MY_JUDGE_KEY"), config=ClientConfig(concurrency=4))
    summary = judge_project(sqlite_engine, SYSTEM, "served", EndpointJudge(client), JudgeOptions(name="served", pair_max_tokens=4, rating_max_tokens=4))
    assert summary.judged == 6 and summary.requests == 10
    with Session(sqlite_engine) as session:
        rows = list(session.exec(select(Judgment)))
    assert len(rows) == 6
    for row in rows:
        assert row.model["backend"] == "endpoint" and row.model["endpoint"] == chat_url(server) and row.model["model"] == "tiny"
        assert KEY not in str(row.model) and all(isinstance(r["text"], str) for r in row.raw)
        if row.status == "unparsed":
            assert row.raw[0]["text"] is not None


def test_a_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(EndpointError, match="NOT_SET_ANYWHERE.*not set"):
        read_api_key("NOT_SET_ANYWHERE")
    assert chat_url("http://h:1") == "http://h:1/v1/chat/completions" and chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"


def test_generate_samples_a_file_and_a_round_from_the_endpoint(server, db_url, tmp_path, monkeypatch):
    """`rlhf generate --endpoint URL --model NAME`: a prompts file, then a round imported with the endpoint in its lineage."""
    import json

    from typer.testing import CliRunner

    from rlhf.cli import app
    from rlhf.db import init_database, make_engine
    from rlhf.importer import import_records
    from rlhf.schema import Artifact, Response

    monkeypatch.setenv("GEN_KEY", KEY)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"hello world {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "round0.jsonl"
    runner = CliRunner()
    common = ["--endpoint", server, "--model", "tiny", "--api-key-env", "GEN_KEY", "--max-new-tokens", "5", "--n", "2"]
    result = runner.invoke(app, ["generate", *common, "--prompts", str(prompts), "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(len(r["responses"]) == 2 for r in records)
    assert records[0]["responses"][0]["model"] == "tiny" and KEY not in out.read_text()

    engine = make_engine(db_url)
    init_database(engine)
    import_records(engine, [{"prompt": f"hello world {i}", "responses": [{"text": f"the answer {i}", "model": "m0"}]} for i in range(3)], "gen")
    result = runner.invoke(app, ["generate", *common, "--project", "gen", "--round", "1", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    with Session(engine) as session:
        artifact = session.exec(select(Artifact).where(Artifact.kind == "generation")).one()
        assert artifact.lineage["policy_kind"] == "endpoint" and artifact.lineage["endpoint"] == chat_url(server)
        assert KEY not in json.dumps(artifact.lineage)
        assert session.exec(select(Response).where(Response.round == 1)).first() is not None
    result = runner.invoke(app, ["generate", "--endpoint", server, "--model", "tiny", "--prompts", str(prompts), "--out", str(out)])
    assert result.exit_code == 2 and "401" in result.output  # no key
    engine.dispose()
