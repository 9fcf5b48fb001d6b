"""Export throughput: a million pairwise annotations to TRL preference pairs (target ≤ 10 s).

Seeds a SQLite file with bulk Core inserts (prompts with three responses, two pair tasks per
prompt, three votes per task from a pool of annotators, plus an external judge's votes), then
times `export_project(format="trl")` to JSONL end to end: reading, aggregation (majority
vote), texts, grouped split, content hash, atomic write, artifact row.

Anchor, measured in the same run: a naive export walking the ORM row by row (each
preference's task, responses, prompt and user loaded one query at a time), majority vote in
Python dicts, JSONL written line by line — on a subset, extrapolated linearly to the full size.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import BenchRow, main, speedup  # noqa: E402

VOTES_PER_TASK = 3
TASKS_PER_PROMPT = 2
ANNOTATORS = 60
WORDS = "the a model answer explains why how steps first then finally because simple clear helpful careful short long".split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def seed_database(url: str, n_annotations: int, seed: int = 0) -> dict[str, int]:
    """Bulk-insert a project with `n_annotations` pairwise judgments (Core executemany in chunks)."""
    import sqlalchemy as sa

    from rlhf.db import init_database, make_engine
    from rlhf.schema import Preference, Project, Prompt, Response, Task, User

    engine = make_engine(url)
    init_database(engine)
    rng = random.Random(seed)
    n_tasks = n_annotations // VOTES_PER_TASK
    n_prompts = max(1, n_tasks // TASKS_PER_PROMPT)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    chunk = 50_000

    def insert(table, rows):
        with engine.begin() as connection:
            for start in range(0, len(rows), chunk):
                connection.execute(table.__table__.insert(), rows[start : start + chunk])

    insert(Project, [{"id": 1, "name": "bench", "description": "", "guidelines": "", "rubric": [], "tags": [], "overlap": 3, "max_overlap": 3,
                      "gold_rate": 0.0, "visibility": "blind", "lease_minutes": 10, "seed": 0, "active": True, "created_at": now}])
    users = [{"id": i + 1, "username": f"user{i}", "role": "annotator" if i < ANNOTATORS else "external", "active": True,
              "must_change_password": False, "created_at": now} for i in range(ANNOTATORS + 1)]
    insert(User, users)
    prompts = [{"id": p + 1, "project_id": 1, "content_hash": f"p{p}", "text": _text(rng, 14), "created_at": now} for p in range(n_prompts)]
    insert(Prompt, prompts)
    responses = [
        {"id": 3 * p + r + 1, "prompt_id": p + 1, "content_hash": f"r{p}-{r}", "text": _text(rng, 28), "model_name": f"model-{r}", "round": 0, "created_at": now}
        for p in range(n_prompts)
        for r in range(3)
    ]
    insert(Response, responses)
    del responses
    tasks, preferences = [], []
    choices = ("a", "a", "a", "b", "b", "tie", "both_bad")
    for t in range(n_tasks):
        p = t // TASKS_PER_PROMPT % n_prompts
        a, b = (3 * p + 1, 3 * p + 2) if t % 2 == 0 else (3 * p + 3, 3 * p + 2)
        tasks.append({"id": t + 1, "project_id": 1, "kind": "pairwise", "prompt_id": p + 1, "response_a_id": a, "response_b_id": b,
                      "content_hash": f"t{t}", "shuffle_key": t, "annotation_count": VOTES_PER_TASK, "is_gold": False, "created_at": now})
        for user in rng.sample(range(1, ANNOTATORS + 1), VOTES_PER_TASK):
            choice = rng.choice(choices)
            preferences.append({"task_id": t + 1, "user_id": user, "choice": choice, "strength": rng.choice((1, 2)) if choice in "ab" else 0,
                                "shown_left": rng.choice("ab"), "comment": "", "time_spent_s": 5.0, "revision": 1,
                                "created_at": now + timedelta(seconds=len(preferences)), "updated_at": now})
    insert(Task, tasks)
    insert(Preference, preferences)
    engine.dispose()
    return {"prompts": n_prompts, "tasks": n_tasks, "annotations": len(preferences)}


def naive_export(url: str, out: Path, limit: int) -> int:
    """The anchor: ORM objects row by row, one query per related row, majority vote in Python."""
    from sqlmodel import Session, select

    from rlhf.db import make_engine
    from rlhf.schema import Preference, Prompt, Response, Task, User

    engine = make_engine(url)
    votes: dict[int, list[str]] = defaultdict(list)
    texts: dict[int, tuple[str, str, str]] = {}
    with Session(engine) as session:
        for preference in session.exec(select(Preference).order_by(Preference.id).limit(limit)):
            task = session.get(Task, preference.task_id)
            user = session.get(User, preference.user_id)
            if user.role == "external":
                continue
            prompt = session.get(Prompt, task.prompt_id)
            response_a = session.get(Response, task.response_a_id)
            response_b = session.get(Response, task.response_b_id)
            session.expunge_all()  # what a naive loop does to keep memory flat: every lookup is a query again
            votes[task.id].append(preference.choice)
            texts[task.id] = (prompt.text, response_a.text, response_b.text)
    rows = 0
    with open(out, "w", encoding="utf-8") as handle:
        for task_id, choices in votes.items():
            label, count = Counter(choices).most_common(1)[0]
            if label not in ("a", "b"):
                continue
            prompt, a, b = texts[task_id]
            chosen, rejected = (a, b) if label == "a" else (b, a)
            handle.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected, "votes": len(choices), "agreement": count / len(choices)}) + "\n")
            rows += 1
    engine.dispose()
    return rows


def time_export(url: str, out: Path) -> tuple[float, int]:
    from rlhf.db import make_engine
    from rlhf.export import ExportOptions, export_project
    from rlhf.roles import SYSTEM

    engine = make_engine(url)
    start = time.perf_counter()
    manifest = export_project(engine, SYSTEM, "bench", format="trl", out=out, options=ExportOptions())
    elapsed = time.perf_counter() - start
    engine.dispose()
    return elapsed, manifest.rows


def _postgres_schema_url(base_url: str):
    """A fresh schema on the PostgreSQL server at `base_url`: (url using it, drop function)."""
    import uuid

    import sqlalchemy as sa

    from rlhf.db import make_engine

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base_url, pool_size=1)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options=-csearch_path%3D{schema}", drop


def _measure(url: str, work: Path, n_annotations: int, anchor_subset: int, backend: str) -> BenchRow:
    seeded_at = time.perf_counter()
    counts = seed_database(url, n_annotations)
    seed_s = time.perf_counter() - seeded_at
    cpu_start = time.process_time()
    ours_s, rows = time_export(url, work / f"prefs-{backend}.jsonl")
    ours_cpu = time.process_time() - cpu_start
    naive_start = time.perf_counter()
    naive_export(url, work / f"naive-{backend}.jsonl", anchor_subset)
    naive_s = (time.perf_counter() - naive_start) * counts["annotations"] / anchor_subset
    return BenchRow(
        work=f"export trl, {counts['annotations']:,} annotations ({backend})",
        ours=ours_s,
        unit="s",
        anchor=naive_s,
        anchor_name="naive ORM row-by-row",
        ratio=speedup(ours_s, naive_s),
        target="≤ 10 s at 1M",
        note=f"→ {rows:,} pairs; {ours_cpu:.1f} s CPU; seeded in {seed_s:.0f} s; anchor on {anchor_subset:,}, extrapolated",
    )


def run(quick: bool = False) -> list[BenchRow]:
    """SQLite always; PostgreSQL too when BENCH_EXPORT_POSTGRES_URL names a server (a scratch schema is used)."""
    n_annotations = int(os.environ.get("BENCH_EXPORT_ANNOTATIONS", 60_000 if quick else 1_000_000))
    anchor_subset = int(os.environ.get("BENCH_EXPORT_ANCHOR_SUBSET", 5_000 if quick else 30_000))
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    rows = []
    try:
        rows.append(_measure(f"sqlite:///{work / 'bench.db'}", work, n_annotations, anchor_subset, "SQLite"))
        postgres = os.environ.get("BENCH_EXPORT_POSTGRES_URL")
        if postgres:
            url, drop = _postgres_schema_url(postgres)
            try:
                rows.append(_measure(url, work, n_annotations, anchor_subset, "PostgreSQL"))
            finally:
                drop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main(run)
