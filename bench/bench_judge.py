"""Judge benchmarks (issue 19): local batching, endpoint concurrency, kill -9 and resume, and how well the packaged SmolLM2 judges.

    .venv/bin/python bench/bench_judge.py [--quick] [--pairs N] [--parts local,endpoint,kill,simulated]

1. Local judge (packaged SmolLM2-135M-Instruct, CPU, greedy): pairs judged per second, both
   orders, batched (`--batch-size 16`, the prompts' shared prefix prefilled once) against a naive
   loop that calls `model.generate` on one conversation at a time with its full prompt, on the same
   pairs of the sample project; the two must give identical replies. Target ≥ 3×.
2. Endpoint judge: `rlhf serve` (the packaged model, batching concurrent requests, prefix cache
   on) on 127.0.0.1; 16 concurrent requests against sequential ones to the same server. Target ≥ 4×.
   A second row: the same concurrent run against sequential requests to `rlhf serve
   --no-prefix-cache` (every prompt prefilled in full), for context.
3. kill -9 mid-run: `rlhf judge --endpoint ...` is SIGKILLed after some batches, rerun; every task
   must hold exactly one Judgment (none lost, none twice).
4. Agreement of the packaged SmolLM2 judge with the simulation's gold and with simulated people
   (reported as is: a 135M model judges poorly; the point is that the tool measures it).
5. Simulated judges with planted position and length bias (and a fair one) on the simulated
   sample project: the dashboard's flags must name exactly the planted bias (`--parts simulated`).
The machine is shared (2 cores, other work running): figures are noisy; ratios are from one run.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, BenchRow, format_table, throughput_ratio  # noqa: F401 - REPO_ROOT puts the repo on sys.path

MODEL = "smollm2-135m-instruct"


def _project(root: Path, annotators: int = 0):
    from rlhf.db import init_database, make_engine
    from rlhf.seed import seed_sample_project

    url = f"sqlite:///{root / 'judge.db'}"
    engine = make_engine(url)
    init_database(engine)
    seed_sample_project(engine)
    if annotators:
        from rlhf.simulation import SimulationConfig, simulate

        simulate(engine, "sample", SimulationConfig(annotators=annotators, kind="pairwise", seed=0))
    return engine, url


def _judge(engine, judge, name: str, pairs: int, **options):
    from rlhf.judge.run import JudgeOptions, judge_project
    from rlhf.roles import SYSTEM

    started = time.perf_counter()
    summary = judge_project(engine, SYSTEM, "sample", judge, JudgeOptions(name=name, kinds=("pairwise",), limit=pairs, batch_tasks=pairs, **options))
    return summary, time.perf_counter() - started


def local_rows(engine, pairs: int) -> list[BenchRow]:
    from rlhf.judge.backends import LocalJudge

    judge = LocalJudge(MODEL, batch_size=16, device="cpu")
    _judge(engine, judge, "warmup", 1)
    batched, batched_s = _judge(engine, judge, "smollm2-batched", pairs)
    # The anchor: what a user would write — model.generate on each conversation alone, full prompt each time.
    judge.batch_size, judge.shared_prefix = 1, False
    naive, naive_s = _judge(engine, judge, "smollm2-naive", pairs)
    same = _same_replies(engine, "judge:smollm2-batched", "judge:smollm2-naive")
    ours, anchor = pairs / batched_s, pairs / naive_s
    print(f"[local] {pairs} pairs (both orders): batched with the shared prefix {batched_s:.1f}s, one at a time {naive_s:.1f}s; "
          f"identical replies {same}", flush=True)
    return [BenchRow(f"local judge, {pairs} pairs both orders (SmolLM2-135M, CPU)", ours, "pairs/s", anchor, "one conversation at a time",
                     throughput_ratio(ours, anchor), "≥ 3×", f"batch 16, shared prefix prefilled once; identical replies {same}; {batched.counts}")]


def _same_replies(engine, first: str, second: str) -> str:
    """How many tasks the two judges answered with identical raw replies and verdicts, as 'k/n'."""
    from sqlalchemy import select
    from sqlmodel import Session

    from rlhf.schema import Judgment, User

    with Session(engine) as session:
        rows = {name: {task: (raw, verdict) for task, raw, verdict in session.execute(
            select(Judgment.task_id, Judgment.raw, Judgment.verdict).join(User, User.id == Judgment.user_id).where(User.username == name)).all()}
            for name in (first, second)}
    tasks = sorted(rows[first].keys() & rows[second].keys())
    return f"{sum(rows[first][t] == rows[second][t] for t in tasks)}/{len(tasks)}"


def start_server(extra_env: dict | None = None, extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, **(extra_env or {})}
    command = [sys.executable, "-c", "from rlhf.cli import main; main()", "serve", "--model", MODEL, "--model-name", "smollm2",
               "--port", "0", "--device", "cpu", "--max-batch", "16", "--batch-wait-ms", "50", *extra_args]
    if extra_env and "BENCH_SERVE_KEY" in extra_env:
        command += ["--api-key-env", "BENCH_SERVE_KEY"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"rlhf serve did not start: {line!r}")
    return process, match.group(1)


def endpoint_rows(engine, url: str, pairs: int) -> list[BenchRow]:
    from rlhf.judge.backends import EndpointJudge
    from rlhf.judge.client import ChatClient, ClientConfig

    concurrent = EndpointJudge(ChatClient(url, "smollm2", config=ClientConfig(concurrency=16, timeout_s=600)))
    sequential = EndpointJudge(ChatClient(url, "smollm2", config=ClientConfig(concurrency=1, timeout_s=600)))
    _judge(engine, sequential, "endpoint-warmup", 1)
    before = len(_server_batches(url))
    fast, fast_s = _judge(engine, concurrent, "endpoint-16", pairs)
    gathered = _server_batches(url)[before:]
    slow, slow_s = _judge(engine, sequential, "endpoint-1", pairs)
    print(f"[endpoint] {pairs} pairs: 16 concurrent {fast_s:.1f}s (server batches {gathered}), sequential {slow_s:.1f}s", flush=True)
    ours, anchor = pairs / fast_s, pairs / slow_s
    rows = [BenchRow(f"endpoint judge, {pairs} pairs both orders (rlhf serve, SmolLM2)", ours, "pairs/s", anchor, "sequential requests",
                     throughput_ratio(ours, anchor), "≥ 4×", f"same server (prefix cache on for both), same pairs; server batches {gathered}")]
    # A second anchor: sequential requests to the server as it was before the prefix cache (each
    # prompt prefilled in full), i.e. the gain of concurrency and the prefix cache together.
    plain, plain_url = start_server(extra_args=("--no-prefix-cache",))
    try:
        plain_judge = EndpointJudge(ChatClient(plain_url, "smollm2", config=ClientConfig(concurrency=1, timeout_s=600)))
        _judge(engine, plain_judge, "endpoint-plain-warmup", 1)
        plain_run, plain_s = _judge(engine, plain_judge, "endpoint-1-plain", pairs)
    finally:
        stop_server(plain)
    same = _same_replies(engine, "judge:endpoint-16", "judge:endpoint-1-plain")
    print(f"[endpoint] sequential to a server without the prefix cache {plain_s:.1f}s; identical replies to the 16-concurrent run {same}", flush=True)
    rows.append(BenchRow(f"endpoint judge, {pairs} pairs: 16 concurrent vs sequential to rlhf serve --no-prefix-cache", ours, "pairs/s",
                         pairs / plain_s, "sequential, full prompts", throughput_ratio(ours, pairs / plain_s), "(context)",
                         f"identical replies {same}"))
    return rows


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()


def _server_batches(url: str) -> list[int]:
    """The sizes of the batches `rlhf serve` generated so far (its /stats route)."""
    import json
    import urllib.request

    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=10) as answer:
        return list(json.loads(answer.read())["batches"])


def kill_rows(url_db: str, endpoint: str, pairs: int) -> list[BenchRow]:
    from sqlalchemy import func, select
    from sqlmodel import Session

    from rlhf.db import make_engine
    from rlhf.schema import Judgment, User

    command = [sys.executable, "-c", "from rlhf.cli import main; main()", "judge", "--project", "sample", "--endpoint", endpoint, "--model", "smollm2",
               "--name", "killed", "--kinds", "pairwise", "--limit", str(pairs), "--batch-tasks", "2", "--concurrency", "4", "--database-url", url_db]
    engine = make_engine(url_db)

    def stored() -> list[int]:
        with Session(engine) as session:
            return list(session.execute(select(Judgment.task_id).join(User, User.id == Judgment.user_id).where(User.username == "judge:killed")).scalars())

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and len(stored()) < 2 and process.poll() is None:
        time.sleep(0.1)
    # The kill counts only if it lands mid-run: the process still running and some tasks left to judge.
    landed = process.poll() is None and len(stored()) < pairs
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the run ended on its own between the poll and the kill
        landed = False
    process.wait()
    before = stored()
    # --limit counts the tasks a run judges, so the rerun asks for what the killed run left of `pairs`.
    rerun = [*command[:command.index("--limit") + 1], str(pairs - len(set(before))), *command[command.index("--limit") + 2:]]
    subprocess.run(rerun, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
    after = stored()
    duplicates = len(after) - len(set(after))
    lost = len(set(before) - set(after))
    with Session(engine) as session:
        total = session.execute(select(func.count()).select_from(Judgment).join(User, User.id == Judgment.user_id).where(User.username == "judge:killed")).scalar_one()
    ok = landed and duplicates == 0 and lost == 0 and total == pairs == len(set(after))
    print(f"[kill -9] landed mid-run: {landed}; stored before the kill {len(before)}, after the rerun {len(after)} of {pairs}; duplicates {duplicates}, lost {lost}", flush=True)
    engine.dispose()
    return [BenchRow("kill -9 mid-run, then rerun", float(ok), "ok", None, "", None, "none lost, none twice",
                     f"landed mid-run {landed}; {len(before)} stored before the kill, {len(after)}/{pairs} after; duplicates {duplicates}, lost {lost}")]


def agreement_rows(engine) -> list[BenchRow]:
    """The SmolLM2 judgments made above, against gold and the simulated people."""
    from sqlalchemy import select
    from sqlmodel import Session

    from rlhf.judge.metrics import judge_report
    from rlhf.schema import Judgment, Prompt, Response, Task, User
    from rlhf.simulation.gold import gold_score

    report = judge_report(engine, "sample")
    entry = report["judges"].get("judge:smollm2-batched")
    if entry is None:
        return []
    with Session(engine) as session:
        rows = session.execute(
            select(Judgment.verdict, Judgment.status, Task.response_a_id, Task.response_b_id, Prompt.text, Prompt.category)
            .join(Task, Task.id == Judgment.task_id).join(Prompt, Prompt.id == Task.prompt_id).join(User, User.id == Judgment.user_id)
            .where(User.username == "judge:smollm2-batched")
        ).all()
        texts = dict(session.execute(select(Response.id, Response.text)).all())
    hits = n = 0
    for verdict, status, a, b, prompt, category in rows:
        if status != "parsed" or verdict["choice"] not in ("a", "b"):
            continue
        ga, gb = gold_score(prompt, texts[a], category), gold_score(prompt, texts[b], category)
        if ga != gb:
            n += 1
            hits += (verdict["choice"] == "a") == (ga > gb)
    gold = hits / n if n else float("nan")
    human = report["human"]
    note = (f"{entry['pairs']} pairs: {entry['status']}; position consistency {entry['position_consistency']}; first-shown share "
            f"{entry['first_share']}; vs consensus {entry['agreement_with_consensus']} (n={entry['consensus_n']}), people's own "
            f"{human['loo_consensus_agreement']:.3f}; vs each person {entry['mean_agreement_with_humans']}, human-human {human['human_human_agreement']:.3f}; flags {entry['flags']}")
    print(f"[agreement] gold {hits}/{n}; {note}", flush=True)
    return [BenchRow("SmolLM2-135M judge: agreement with gold (decisive, consistent verdicts)", gold, "share", None, "", None,
                     "report honestly", note)]


def simulated_rows(engine) -> list[BenchRow]:
    """Planted biases against what the dashboard flags: a fair judge, a first-shown one, a longer-preferring one."""
    from rlhf.judge.metrics import judge_report
    from rlhf.judge.run import JudgeOptions, judge_project
    from rlhf.roles import SYSTEM
    from rlhf.simulation.judge import SimulatedJudge

    planted = {"sim-fair": (SimulatedJudge(seed=1), []), "sim-first": (SimulatedJudge(position_bias=0.4, seed=2), ["position_bias"]),
               "sim-longer": (SimulatedJudge(length_bias=2.0, seed=3), ["length_bias"])}
    for name, (judge, _) in planted.items():
        judge_project(engine, SYSTEM, "sample", judge, JudgeOptions(name=name, kinds=("pairwise",)))
    report = judge_report(engine, "sample")
    rows = []
    for name, (_, expected) in planted.items():
        entry = report["judges"][f"judge:{name}"]
        right = entry["flags"] == expected
        note = (f"flags {entry['flags']} (planted {expected}); position consistency {entry['position_consistency']}, first-shown share "
                f"{entry['first_share']}, length tilt {entry['length_tilt']}; vs consensus {entry['agreement_with_consensus']}")
        print(f"[simulated] {name}: {'right' if right else 'WRONG'}; {note}", flush=True)
        rows.append(BenchRow(f"simulated judge {name}: flags", float(right), "right", None, "", None, "flags right, no false flag", note))
    return rows


PARTS = ("local", "endpoint", "kill", "simulated")


def run(quick: bool = False, pairs: int | None = None, parts: tuple[str, ...] = PARTS) -> list[BenchRow]:
    """`parts` of the benchmark (the agreement rows come with `local`, whose judgments they read), on `pairs` pairs."""
    pairs = pairs or (6 if quick else 24)
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="bench-judge-") as tmp:
        engine, url = _project(Path(tmp), annotators=5)
        if "local" in parts:
            rows += local_rows(engine, pairs)
            print(format_table(rows), flush=True)
            rows += agreement_rows(engine)
        if "simulated" in parts:
            rows += simulated_rows(engine)
        if not {"endpoint", "kill"} & set(parts):
            engine.dispose()
            return rows
        server, endpoint = start_server()
        try:
            if "endpoint" in parts:
                rows += endpoint_rows(engine, endpoint, pairs)
            if "kill" in parts:
                rows += kill_rows(url, endpoint, 8 if quick else pairs)
        finally:
            stop_server(server)
        engine.dispose()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pairs", type=int, default=None, help="Pairs judged in each part (default 24; 6 with --quick).")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"Comma list of {', '.join(PARTS)} (on a shared machine, run them apart).")
    args = parser.parse_args()
    chosen = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if not chosen or set(chosen) - set(PARTS):
        parser.error(f"--parts: choose from {', '.join(PARTS)}")
    print(format_table(run(quick=args.quick, pairs=args.pairs, parts=chosen)))
