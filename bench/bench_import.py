"""Import throughput and memory: synthetic JSONL (N prompts × 4 responses) into SQLite and PostgreSQL.

Targets (issue "Foundation"): 100,000 prompts × 4 responses in ≤ 30 s on SQLite and ≤ 60 s on
PostgreSQL, with peak memory flat in file size; `rlhf --help` in ≤ 1 s.

What is measured:
- each import runs in its own subprocess (fresh SQLite file / fresh PostgreSQL schema), so its
  peak RSS is its own; timed from just before `import_file` to just after;
- memory flatness: the same import at a quarter of the size, peak RSS compared;
- anchor: a naive importer (one ORM `session.add` per row, a flush per prompt) on a subset of
  the same file, extrapolated linearly to the full size;
- `rlhf --help`, best of 3, as a subprocess.
The importer process's own CPU seconds are in the note: on a shared machine they move less
than wall time (the database server's CPU is not in them). A file of 16 MB or more is read by a
reader process beside the writer (`rlhf.importer.stream`); its peak RSS is in the note too.

Sizes: `RLHF_BENCH_IMPORT_PROMPTS` (default 100000; `--quick`: 4000) and
`RLHF_BENCH_IMPORT_BACKENDS` (default "sqlite,postgres").
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import REPO_ROOT, BenchRow, main, speedup

RESPONSES_PER_PROMPT = 4
NAIVE_SUBSET = 1000
POSTGRES_URL = os.environ.get("RLHF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_WORDS = (
    "the model answer question reward policy human label compare better worse because which there "
    "helpful honest harmless rating prompt response train data sample token layer"
).split()

CHILD = r"""
import json, os, resource, sys, time
from rlhf.db import init_database, make_engine
from rlhf.importer import import_file
url, path = sys.argv[1], sys.argv[2]
engine = make_engine(url)
init_database(engine)
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
os.sync()  # the generated files' pages go to disk now, not while the import is timed
start, cpu_start = time.perf_counter(), cpu()
summary = import_file(engine, path, "bench")
seconds, cpu_seconds = time.perf_counter() - start, cpu() - cpu_start
rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
reader_rss_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the reader process of a large file
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "rows": summary.rows_added, "rss_before_mb": rss_before, "rss_peak_mb": rss_peak, "reader_rss_peak_mb": reader_rss_peak}))
"""

NAIVE_CHILD = r"""
import json, sys, time
from sqlmodel import Session
from rlhf.db import init_database, make_engine
from rlhf.importer.pairing import pairwise_task_hash, rating_task_hash, task_draw, within_pairs
from rlhf.importer.readers import open_source
from rlhf.importer.shapes import normalise_responses_record
from rlhf.schema import Project, Prompt, Response, Task
url, path, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = make_engine(url)
init_database(engine)
start = time.perf_counter()
rows = 0
with Session(engine) as session, open_source(__import__("pathlib").Path(path)) as source:
    project = Project(name="naive")
    session.add(project)
    session.flush()
    for index, row in enumerate(source.rows):
        if index == limit:
            break
        record = normalise_responses_record(row.data)
        prompt = Prompt(project_id=project.id, content_hash=record.content_hash, text=record.text, messages=record.messages, category=record.category, meta=record.meta)
        session.add(prompt)
        session.flush()
        ids = {}
        for response in record.responses:
            item = Response(prompt_id=prompt.id, content_hash=response.content_hash, text=response.text, model_name=response.model_name, generation_params=response.generation_params)
            session.add(item)
            session.flush()
            ids[response.content_hash] = item.id
            digest = rating_task_hash(record.content_hash, response.content_hash)
            session.add(Task(project_id=project.id, kind="rating", prompt_id=prompt.id, response_a_id=item.id, content_hash=digest, shuffle_key=task_draw(0, digest)[0]))
        for a, b in within_pairs(list(ids)):
            digest = pairwise_task_hash(record.content_hash, a, b)
            session.add(Task(project_id=project.id, kind="pairwise", prompt_id=prompt.id, response_a_id=ids[a], response_b_id=ids[b], content_hash=digest, shuffle_key=task_draw(0, digest)[0]))
        session.flush()
        rows += 1 + len(ids) * 2 + len(ids) * (len(ids) - 1) // 2
    session.commit()
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows}))
"""


def write_synthetic_jsonl(path: Path, prompts: int, seed: int = 0) -> Path:
    """`prompts` shape-(a) records, 4 responses each (~60 words), streamed to `path`."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(prompts):
            record = {
                "prompt": f"Prompt {i}: " + " ".join(rng.choices(_WORDS, k=20)),
                "category": f"category-{i % 7}",
                "responses": [
                    {"text": f"Response {j} to prompt {i}: " + " ".join(rng.choices(_WORDS, k=60)), "model": f"model-{j}", "meta": {"temperature": 0.7, "seed": j}}
                    for j in range(RESPONSES_PER_PROMPT)
                ],
            }
            handle.write(json.dumps(record) + "\n")
    return path


class _PostgresSchema:
    """A fresh schema in the test database (search_path in the URL), dropped on exit."""

    def __enter__(self) -> str:
        from sqlalchemy import text

        from rlhf.db import make_engine

        self.name = f"bench_{uuid.uuid4().hex[:12]}"
        self.admin = make_engine(POSTGRES_URL, pool_size=1)
        with self.admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{self.name}"'))
        return f"{POSTGRES_URL}?options=-csearch_path%3D{self.name}"

    def __exit__(self, *exc) -> None:
        from sqlalchemy import text

        with self.admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
        self.admin.dispose()


def _child(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _database(backend: str, directory: Path, tag: str):
    """(url, context manager) for a fresh database of `backend`."""
    if backend == "sqlite":
        from contextlib import nullcontext

        return nullcontext(f"sqlite:///{directory / f'{tag}.db'}")
    return _PostgresSchema()


def measure_import(backend: str, path: Path, directory: Path, tag: str) -> dict:
    with _database(backend, directory, tag) as url:
        return _child(CHILD, url, str(path))


def measure_naive(backend: str, path: Path, directory: Path, prompts: int) -> dict:
    with _database(backend, directory, "naive") as url:
        return _child(NAIVE_CHILD, url, str(path), str(prompts))


def measure_help(repeat: int = 3) -> float:
    """Best wall time of `rlhf --help` in a fresh interpreter."""
    script = Path(sys.executable).with_name("rlhf")
    command = [str(script), "--help"] if script.exists() else [sys.executable, "-m", "rlhf.cli", "--help"]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, cwd=REPO_ROOT)
        best = min(best, time.perf_counter() - start)
    return best


def run(quick: bool = False) -> list[BenchRow]:
    prompts = int(os.environ.get("RLHF_BENCH_IMPORT_PROMPTS", 4000 if quick else 100_000))
    backends = [b.strip() for b in os.environ.get("RLHF_BENCH_IMPORT_BACKENDS", "sqlite,postgres").split(",") if b.strip()]
    small = max(prompts // 4, 1)
    naive_prompts = min(NAIVE_SUBSET if not quick else 200, prompts)
    rows: list[BenchRow] = []
    directory = Path(tempfile.mkdtemp(prefix="rlhf-bench-import-"))
    try:
        big_file = write_synthetic_jsonl(directory / "big.jsonl", prompts)
        small_file = write_synthetic_jsonl(directory / "small.jsonl", small)
        size_mb = big_file.stat().st_size / 1e6
        for backend in backends:
            target = "≤ 30 s" if backend == "sqlite" else "≤ 60 s"
            big = measure_import(backend, big_file, directory, "big")
            little = measure_import(backend, small_file, directory, "small")
            naive = measure_naive(backend, big_file, directory, naive_prompts)
            naive_full = naive["seconds"] * prompts / naive_prompts
            rows.append(
                BenchRow(
                    work=f"import {prompts:,}×{RESPONSES_PER_PROMPT} JSONL ({size_mb:.0f} MB) → {backend}",
                    ours=big["seconds"],
                    unit="s",
                    anchor=naive_full,
                    anchor_name=f"ORM add+flush per prompt, {naive_prompts:,} prompts extrapolated",
                    ratio=speedup(big["seconds"], naive_full),
                    target=target if prompts >= 100_000 else f"{target} at 100k (reduced size)",
                    note=f"{big['rows'] / big['seconds']:,.0f} rows/s, {big['rows']:,} rows, importer CPU {big['cpu_seconds']:.1f} s",
                )
            )
            rows.append(
                BenchRow(
                    work=f"peak RSS of that import → {backend}",
                    ours=big["rss_peak_mb"],
                    unit="MB",
                    anchor=little["rss_peak_mb"],
                    anchor_name=f"same import at {small:,} prompts",
                    ratio=little["rss_peak_mb"] / big["rss_peak_mb"],
                    target="flat in file size (ratio ≈ 1)",
                    note=(
                        f"growth during import {big['rss_peak_mb'] - big['rss_before_mb']:.0f} MB vs {little['rss_peak_mb'] - little['rss_before_mb']:.0f} MB; "
                        f"reader process peak {big['reader_rss_peak_mb']:.0f} vs {little['reader_rss_peak_mb']:.0f} MB"
                    ),
                )
            )
        rows.append(BenchRow(work="rlhf --help", ours=measure_help(), unit="s", target="≤ 1 s", note="best of 3, fresh interpreter"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main(run)
