"""Submit + next task latency with 1,000,000 annotations stored and 32 concurrent annotators.

What is measured, per backend (SQLite file, PostgreSQL when reachable):
1. seed: a project with 360,000 rating tasks, 1,000,000 ratings by 200 annotators (bulk Core
   inserts, the ratings by one INSERT ... SELECT; 300k tasks full, 40k with 2 annotations,
   20k with 1), counts in step with the rows;
2. single annotator: one annotator alone submits back to back (no queueing: the round trips and
   the planning of each call); closed loop: 32 annotator threads submit back to back (each call = submit + the next task,
   one transaction) — the saturation figure: latency here is mostly queueing behind the other 31;
3. paced loop: 32 annotator threads each submit every 1–2 s, as people do — the figure an
   annotator feels (target p95 ≤ 20 ms);
4. anchor: one bare committed INSERT on the same database through the driver (the physical
   floor: on PostgreSQL an fsync of the WAL, on SQLite a WAL append); ratios are floor / ours;
5. profile: statements per submit + next, and EXPLAIN of the queue pick at full size;
6. active selection (issue 21): for each strategy (uncertainty, disagreement, mixed) the project
   switched to it with its score table over every open task in place (synthetic scores written
   by `rlhf.selection.scores.store_order`, timed), then the paced loop again: its p95 against
   the least-annotated paced p95 of the same run. The pick walks the same index whatever the
   strategy; each is measured so a regression in any one shows.

Sizes scale with `--quick` (50,000 annotations). `RLHF_TEST_POSTGRES_URL` names the server.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from _common import REPO_ROOT, BenchRow, main, percentile, speedup, throughput_ratio

sys.path.insert(0, str(REPO_ROOT / "tests"))  # the row builders shared with the engine tests

POSTGRES_URL = os.environ.get("RLHF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one run."""

    annotations: int = 1_000_000
    """Ratings stored before measuring."""
    seeded_annotators: int = 200
    """Annotators the stored ratings come from (the measured ones are 32 of them)."""
    threads: int = 32
    """Concurrent annotators."""
    closed_submits_per_thread: int = 40
    """Back-to-back submits per annotator in the closed loop."""
    paced_seconds: float = 30.0
    """Length of the paced loop."""
    pace_s: tuple[float, float] = (1.0, 2.0)
    """Each paced annotator waits uniformly in this range between submits."""
    floor_inserts: int = 200
    """Committed INSERTs timed for the anchor."""
    single_submits: int = 200
    """Back-to-back submits of one annotator alone (the latency without queueing: round trips and planning)."""


FULL = BenchConfig()
QUICK = BenchConfig(annotations=50_000, closed_submits_per_thread=10, paced_seconds=8.0, floor_inserts=50, single_submits=50)


# ------------------------------------------------------------------------------------- seeding


def task_layout(annotations: int) -> dict[int, int]:
    """Tasks per existing-annotation count: 90% of annotations on full tasks, 8% on 2s, 2% on 1s."""
    full = int(annotations * 0.90) // 3
    twos = int(annotations * 0.08) // 2
    ones = annotations - 3 * full - 2 * twos
    return {3: full, 2: twos, 1: ones}


def seed(engine, config: BenchConfig):
    """The project, its annotators (User rows), and the seconds seeding took.

    Tasks are inserted with their final counts and the ratings made by one INSERT ... SELECT,
    so the counts are in step with the rows from the start (and PostgreSQL has no dead index
    entries from a second pass over the tasks).
    """
    from engine_fixtures import add_annotators, add_tasks, create_project, seed_ratings_in_sql

    start = time.perf_counter()
    project = create_project(engine, name="bench", overlap=3, max_overlap=3)
    counts = [n for n, how_many in task_layout(config.annotations).items() for _ in range(how_many)]
    add_tasks(engine, project.id, len(counts), "rating", distinct_prompts=1000, annotation_counts=counts)
    users = add_annotators(engine, config.seeded_annotators, prefix="seeded")
    stored = seed_ratings_in_sql(engine, project.id, [u.id for u in users])
    assert stored == config.annotations, (stored, config.annotations)
    with engine.connect() as conn:  # fresh statistics, as autovacuum / a periodic ANALYZE would leave them
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return project, users, time.perf_counter() - start


# ------------------------------------------------------------------------------------- loops


def _annotator(engine, user, project_id, latencies, stop, rng, *, submits=None, pace=None):
    """One annotator: next task, then submit (which returns the next) until told to stop."""
    from engine_fixtures import random_submit
    from rlhf.assign import next_task

    view = next_task(engine, user, project_id, "rating")
    done = 0
    while view is not None and not stop.is_set() and (submits is None or done < submits):
        if pace is not None:
            if stop.wait(rng.uniform(*pace)):
                break
        start = time.perf_counter()
        result = random_submit(engine, user, view, rng)
        latencies.append(time.perf_counter() - start)
        view = result.next_task
        done += 1


def run_loop(engine, users, project_id, config: BenchConfig, *, paced: bool) -> tuple[list[float], float]:
    """Per-call latencies (s) and wall time of the loop."""
    latencies: list[float] = []
    stop = threading.Event()
    threads = []
    for i, user in enumerate(users[: config.threads]):
        kwargs = {"pace": config.pace_s} if paced else {"submits": config.closed_submits_per_thread}
        threads.append(threading.Thread(target=_annotator, args=(engine, user, project_id, latencies, stop, random.Random(i)), kwargs=kwargs))
    start = time.perf_counter()
    for t in threads:
        t.start()
    if paced:
        time.sleep(config.paced_seconds)
        stop.set()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - start


SCORED_STRATEGIES = ("uncertainty", "disagreement", "mixed")
"""The strategies whose stored order the paced loop is measured on (least-annotated is the baseline)."""


def paced_with_scores(engine, users, project_id, config: BenchConfig, strategy: str) -> tuple[list[float], float, int]:
    """Switch the project to `strategy`, rank every open task (synthetic scores), run the paced loop again.

    Returns the paced latencies, the seconds the score table took to write, and the tasks ranked.
    """
    import numpy as np
    from sqlalchemy import update

    from rlhf.schema import Project, utcnow
    from rlhf.selection import strategies
    from rlhf.selection.scores import open_tasks, store_order

    with engine.begin() as conn:
        conn.execute(update(Project.__table__).where(Project.__table__.c.id == project_id).values(selection=strategy))
    ids = open_tasks(engine, project_id)["task_id"].to_numpy()
    scores = np.random.default_rng(0).random(ids.size)
    share = strategies.RANDOM_SHARE if strategy == strategies.MIXED else 0.0
    start = time.perf_counter()
    store_order(engine, project_id, strategy, strategies.order(ids, scores, random_share=share), utcnow())
    store_s = time.perf_counter() - start
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    latencies, _ = run_loop(engine, users, project_id, config, paced=True)
    return latencies, store_s, int(ids.size)


def floor_insert_latencies(engine, n: int) -> list[float]:
    """One bare INSERT + COMMIT at a time, through the driver (no SQLAlchemy), on the same database."""
    table = f"bench_floor_{uuid.uuid4().hex[:8]}"
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v INTEGER)")
        raw.commit()
        placeholder = "?" if engine.dialect.name == "sqlite" else "%s"
        latencies = []
        for i in range(n):
            start = time.perf_counter()
            if engine.dialect.name == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")  # the engine's connections manage transactions themselves
            cursor.execute(f"INSERT INTO {table} (id, v) VALUES ({placeholder}, {placeholder})", (i + 1, i))
            raw.commit() if engine.dialect.name != "sqlite" else cursor.execute("COMMIT")
            latencies.append(time.perf_counter() - start)
        cursor.execute(f"DROP TABLE {table}")
        raw.commit()
    finally:
        raw.close()
    return latencies


def statements_per_submit(engine, user, project_id) -> int:
    """SQL statements one submit + next task sends (BEGIN and COMMIT included)."""
    from sqlalchemy import event

    from engine_fixtures import random_submit
    from rlhf.assign import next_task

    view = next_task(engine, user, project_id, "rating")
    seen = []

    def count(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        random_submit(engine, user, view, random.Random(0))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # BEGIN (explicit on SQLite, implicit in psycopg) and COMMIT are round trips too.
    return len(seen) + (1 if engine.dialect.name == "postgresql" else 0) + 1


def explain_pick(engine, user, project_id) -> str:
    """The plan of the queue pick at full size (what `next_task` runs)."""
    from sqlalchemy import event

    from rlhf.assign import next_task

    captured = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if "ORDER BY task.annotation_count" in statement:
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        next_task(engine, user, project_id, "rating")
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    if not captured:
        return "(held lease: no pick ran)"
    statement, parameters = captured[0]
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            return " | ".join(r[-1] for r in rows)
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
        conn.rollback()
        return "\n".join(r[0] for r in rows)


# ------------------------------------------------------------------------------------- driver


def bench_backend(name: str, url: str, config: BenchConfig) -> list[BenchRow]:
    from rlhf.db import init_database, make_engine

    engine = make_engine(url, pool_size=config.threads)
    init_database(engine)
    project, users, seed_s = seed(engine, config)
    print(f"[{name}] seeded {config.annotations:,} annotations in {seed_s:.1f} s", flush=True)
    measured = users[: config.threads]

    statements = statements_per_submit(engine, measured[0], project.id)
    plan = explain_pick(engine, measured[1], project.id)
    print(f"[{name}] statements per submit+next: {statements}\n[{name}] queue pick plan:\n{plan}", flush=True)

    floor = floor_insert_latencies(engine, config.floor_inserts)
    floor_p50 = statistics.median(floor)
    single, _ = run_loop(engine, measured, project.id, replace(config, threads=1, closed_submits_per_thread=config.single_submits), paced=False)
    closed, closed_wall = run_loop(engine, measured, project.id, config, paced=False)
    paced, paced_wall = run_loop(engine, measured, project.id, config, paced=True)
    selected = {strategy: paced_with_scores(engine, measured, project.id, config, strategy) for strategy in SCORED_STRATEGIES}
    plan = explain_pick(engine, users[config.threads], project.id)  # holds no lease: the pick runs
    print(f"[{name}] ranked pick plan (selection={SCORED_STRATEGIES[-1]}, {selected[SCORED_STRATEGIES[-1]][2]:,} scored tasks):\n{plan}", flush=True)
    engine.dispose()

    ms = 1000.0
    floor_rate = 1.0 / floor_p50
    closed_rate = len(closed) / closed_wall
    paced_rate = len(paced) / paced_wall
    size = f"{config.annotations:,} stored"
    anchor = "bare INSERT+COMMIT p50"
    rows = [
        BenchRow(f"{name}: single annotator p50 (alone, back to back)", percentile(single, 50) * ms, "ms", floor_p50 * ms, anchor, speedup(percentile(single, 50), floor_p50), "", f"{len(single)} submits; p95 {percentile(single, 95) * ms:.2f} ms"),
        BenchRow(f"{name}: closed loop p50 (32 threads back to back)", percentile(closed, 50) * ms, "ms", floor_p50 * ms, anchor, speedup(percentile(closed, 50), floor_p50), "", size),
        BenchRow(f"{name}: closed loop p95", percentile(closed, 95) * ms, "ms", floor_p50 * ms, anchor, speedup(percentile(closed, 95), floor_p50), "", "queueing behind 31 others"),
        BenchRow(f"{name}: closed loop throughput", closed_rate, "annotations/s", floor_rate, "bare INSERT+COMMIT, 1 thread", throughput_ratio(closed_rate, floor_rate), "", f"{len(closed)} submits"),
        BenchRow(f"{name}: paced p50 (32 annotators, one submit per 1-2 s)", percentile(paced, 50) * ms, "ms", floor_p50 * ms, anchor, speedup(percentile(paced, 50), floor_p50), "", f"{len(paced)} submits"),
        BenchRow(f"{name}: paced p95", percentile(paced, 95) * ms, "ms", floor_p50 * ms, anchor, speedup(percentile(paced, 95), floor_p50), "p95 <= 20 ms", ""),
        BenchRow(f"{name}: paced throughput", paced_rate, "annotations/s", None, "", None, "", "offered load ~21/s"),
        BenchRow(f"{name}: statements per submit+next", float(statements), "stmts", None, "", None, "small, index-backed", "BEGIN/COMMIT included"),
    ]
    for strategy, (latencies, store_s, scored) in selected.items():
        rows += [
            BenchRow(
                f"{name}: paced p95, selection={strategy} with its score table", percentile(latencies, 95) * ms, "ms", percentile(paced, 95) * ms,
                "paced p95, least-annotated (same run)", speedup(percentile(latencies, 95), percentile(paced, 95)), "p95 <= 20 ms",
                f"{len(latencies)} submits; p50 {percentile(latencies, 50) * ms:.2f} ms",
            ),
            BenchRow(f"{name}: score table write ({strategy})", store_s, "s", None, "", None, "", f"{scored:,} open tasks ranked"),
        ]
    return rows


def _postgres_schema_url() -> tuple[str, str] | None:
    """A fresh schema on the PostgreSQL server, or None when it is not reachable."""
    from sqlalchemy import text

    from rlhf.db import make_engine

    admin = make_engine(POSTGRES_URL, pool_size=1)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001 - no server: skip the backend, say why
        print(f"PostgreSQL skipped: {exc.__class__.__name__}", flush=True)
        return None
    finally:
        admin.dispose()
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", schema


def _drop_schema(schema: str) -> None:
    from sqlalchemy import text

    from rlhf.db import make_engine

    admin = make_engine(POSTGRES_URL, pool_size=1)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def run(quick: bool = False) -> list[BenchRow]:
    config = QUICK if quick else FULL
    rows: list[BenchRow] = []
    backends = os.environ.get("BENCH_SUBMIT_BACKENDS", "sqlite,postgres").split(",")
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as tmp:
            rows += bench_backend("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", config)
    if "postgres" in backends:
        target = _postgres_schema_url()
        if target is not None:
            url, schema = target
            try:
                rows += bench_backend("PostgreSQL", url, config)
            finally:
                _drop_schema(schema)
    return rows


if __name__ == "__main__":
    main(run)
