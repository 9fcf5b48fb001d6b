"""Rankings against pairwise comparisons at equal simulated annotator time: which reward model is closer to gold?

The end-to-end simulation's people (its planted noise, position and length biases, spammers) label
the same replies twice, in two projects of one database:

- `pairs`: every pair of each prompt's K = 4 replies is a comparison task (C(4, 2) = 6 per prompt);
- `ranks`: each prompt's 4 replies are one ranking task.

Annotator time is counted in units: one per reply read, plus one per decision (a task). A comparison
costs 2 + 1 = 3 units, a ranking of K = 4 replies 4 + 1 = 5. Both projects get the same budget
(`--budget` units; by default what 3 rankings of every prompt cost, the project's usual overlap),
spent through the annotation engine's own assignment until it is used up. Each export (Dawid-Skene
labels for the comparisons; every ranking's C(4, 2) pairs with its group for the rankings) trains the
packaged MiniLM reward model for the same number of epochs over its own training pairs (`--epochs`,
default 4 as in the end-to-end run; pairwise trainer for the comparisons, listwise for the rankings). Both are measured on the same held-out prompts (the export's grouped split is by prompt,
the same in both projects): on every pair of those prompts' replies with a gold preference, the share
the reward model orders as the gold does. Reported whichever wins.

    .venv/bin/python bench/bench_rank_time.py [--quick] [--epochs E] [--budget UNITS] [--seed S]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import BenchRow, emit  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
K = 4
READ_UNITS = 1
"""Simulated time to read one reply."""
DECISION_UNITS = 1
"""Simulated time to decide one task (a comparison or a whole ranking)."""


def task_cost(replies: int) -> int:
    """Annotator time of one task showing `replies` replies."""
    return replies * READ_UNITS + DECISION_UNITS


def records_with_k_replies(limit: int | None) -> list[dict]:
    """The sample project's prompts, each with its first K replies (the sample's three, then the extra round-0 ones)."""
    def read(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    extra = {r["prompt"] if isinstance(r["prompt"], str) else json.dumps(r["prompt"]): r["responses"] for r in read(REPO_ROOT / "data" / "e2e_round0_extra.jsonl")}
    records = []
    for record in read(REPO_ROOT / "data" / "sample_project.jsonl"):
        key = record["prompt"] if isinstance(record["prompt"], str) else json.dumps(record["prompt"])
        replies = (record["responses"] + extra.get(key, []))[:K]
        if len(replies) == K:
            records.append({**record, "responses": replies})
    return records[:limit] if limit else records


def label(engine, project: str, kind: str, budget_units: int, e2e_config) -> dict:
    """Simulated people label `project`'s `kind` tasks until the budget is spent."""
    import dataclasses

    import e2e
    from rlhf.simulation import simulate

    per_task = task_cost(K if kind == "ranking" else 2)
    config = dataclasses.replace(e2e.simulation_config(e2e_config, kind), max_annotations=budget_units // per_task)
    result = simulate(engine, project, config)
    return {"tasks_done": result.rankings if kind == "ranking" else result.preferences, "units_per_task": per_task, "seconds": round(result.seconds, 1)}


def held_out_gold_pairs(engine, project: str, test_prompts: set[str]) -> list[dict]:
    """Every pair of a held-out prompt's replies that the gold score orders (chosen = gold's better one)."""
    from e2e import _prompt_input
    from rlhf.frames import response_frame
    from rlhf.simulation import gold_score

    responses = response_frame(engine, project)
    pairs = []
    for _, group in responses.groupby("prompt_id"):
        first = group.iloc[0]
        if first["prompt_text"] not in test_prompts:
            continue
        prompt = _prompt_input(first["prompt_text"], first["prompt_messages"])
        scored = [(gold_score(prompt, text, first["prompt_category"]), text) for text in group["response_text"]]
        for (g1, t1), (g2, t2) in itertools.combinations(scored, 2):
            if g1 != g2:
                (gc, tc), (gr, tr) = ((g1, t1), (g2, t2)) if g1 > g2 else ((g2, t2), (g1, t1))
                pairs.append({"prompt": prompt, "chosen": tc, "rejected": tr})
    return pairs


def train_and_measure(export_path: Path, out: Path, listwise: bool, epochs: float, train_rows: int, pairs_per_step: int, gold_pairs: list[dict], seed: int) -> dict:
    import math

    from rlhf.reward import RewardConfig, RewardModel, train_reward_model

    steps = max(1, math.ceil(epochs * train_rows / pairs_per_step))
    batch = max(1, pairs_per_step // (K * (K - 1) // 2)) if listwise else pairs_per_step
    config = RewardConfig(
        base_model="all-minilm-l6-v2", max_steps=steps, batch_size=batch, max_length=384, learning_rate=3e-4, eval_fraction=0.1, seed=seed,
        device="cpu", warmup_ratio=0.1, logging_steps=10, save_steps=steps, normalization_samples=256, listwise=listwise,
    )
    started = time.perf_counter()
    result = train_reward_model(config, out, data=export_path)
    train_s = time.perf_counter() - started
    model = RewardModel.load(out, device="cpu")
    prompts = [p["prompt"] for p in gold_pairs]
    chosen = model.score(prompts, [p["chosen"] for p in gold_pairs]).tolist()
    rejected = model.score(prompts, [p["rejected"] for p in gold_pairs]).tolist()
    right = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected))
    return {"accuracy_vs_gold": right / len(gold_pairs) if gold_pairs else None, "steps": result.global_step, "train_s": round(train_s, 1),
            "held_out_vs_labels": result.metrics.get("held_out", {}).get("accuracy")}  # fmt: skip


def run(quick: bool = False) -> list[BenchRow]:
    """The table's rows (bench/run_all.py calls this)."""
    return measure(quick=quick)[0]


def measure(quick: bool = False, epochs: float | None = None, budget: int | None = None, seed: int = 0) -> tuple[list[BenchRow], dict]:
    """Label, export, train and measure both ways; the rows and every figure."""
    import e2e
    from rlhf.db import init_database, make_engine
    from rlhf.export import ExportOptions, export_project, read_export_rows
    from rlhf.importer import import_records
    from rlhf.projects import create_project
    from rlhf.roles import SYSTEM

    records = records_with_k_replies(12 if quick else None)
    epochs = epochs or (0.2 if quick else 4.0)
    pairs_per_step = 12 if quick else 24
    budget = budget or len(records) * 3 * task_cost(K)
    e2e_config = e2e.E2EConfig(seed=seed, progress=False)
    if quick:
        e2e_config = e2e.E2EConfig(seed=seed, progress=False, annotators=6, spammers=1)
    figures: dict = {"prompts": len(records), "k": K, "budget_units": budget, "read_units": READ_UNITS, "decision_units": DECISION_UNITS, "epochs": epochs}
    with tempfile.TemporaryDirectory(prefix="bench-rank-time-") as tmp:
        root = Path(tmp)
        engine = make_engine(f"sqlite:///{root / 'rank-time.db'}")
        init_database(engine)
        create_project(engine, SYSTEM, "pairs", task_kinds=["compare"])
        import_records(engine, records, "pairs", max_pairs_per_prompt=K * (K - 1) // 2, make_rating_tasks=False, source_name="pairs")
        create_project(engine, SYSTEM, "ranks", task_kinds=["compare"], rank_k_min=K, rank_k_max=K)
        import_records(engine, records, "ranks", max_pairs_per_prompt=0, make_rating_tasks=False, source_name="ranks")
        figures["pairs_labelled"] = label(engine, "pairs", "pairwise", budget, e2e_config)
        figures["ranks_labelled"] = label(engine, "ranks", "ranking", budget, e2e_config)
        options = ExportOptions(test_size=0.2, seed=seed, aggregate="dawid-skene")
        exports = {}
        for project in ("pairs", "ranks"):
            path = root / f"{project}.jsonl"
            export_project(engine, SYSTEM, project, format="trl", out=path, options=options)
            exports[project] = read_export_rows(path)
        # The export's own split is drawn within each export, so the two would hold out different
        # prompts: here one draw per prompt text decides for both, and only training rows are kept.
        all_prompts = {_prompt_key(r["prompt"]) for r in records}
        test_prompts = {key for key in all_prompts if held_out(key, seed)}
        for project, rows in exports.items():
            keep = ~rows["prompt"].map(_prompt_key).isin(test_prompts)
            rows[keep].drop(columns=["split"], errors="ignore").to_json(root / f"{project}-train.jsonl", orient="records", lines=True, force_ascii=False)
            exports[project] = rows[keep]
        gold_pairs = held_out_gold_pairs(engine, "pairs", test_prompts)
        figures["held_out_gold_pairs"] = len(gold_pairs)
        for project, listwise in (("pairs", False), ("ranks", True)):
            train_rows = len(exports[project])
            figures[project] = {"train_rows": train_rows,
                                **train_and_measure(root / f"{project}-train.jsonl", root / f"rm-{project}", listwise, epochs, train_rows, pairs_per_step, gold_pairs, seed)}  # fmt: skip
        engine.dispose()
    pairs, ranks = figures["pairs"], figures["ranks"]
    rows = [
        BenchRow(
            f"reward model vs gold, K={K} rankings at equal annotator time ({budget} units)", ranks["accuracy_vs_gold"], "acc", pairs["accuracy_vs_gold"],
            "pairwise comparisons, same budget", ranks["accuracy_vs_gold"] / max(pairs["accuracy_vs_gold"], 1e-9), "report (whichever wins)",
            f"{figures['ranks_labelled']['tasks_done']} rankings ({ranks['train_rows']} train pairs) vs {figures['pairs_labelled']['tasks_done']} comparisons "
            f"({pairs['train_rows']} train pairs); {epochs:g} epochs ({ranks['steps']} vs {pairs['steps']} steps, {ranks['train_s']:.0f} vs {pairs['train_s']:.0f} s); "
            f"{len(gold_pairs)} held-out gold pairs",
        ),
    ]  # fmt: skip
    return rows, figures


def held_out(prompt_key: str, seed: int, share: float = 0.2) -> bool:
    """Whether a prompt is held out: a fixed draw from its text and the seed, the same in both projects."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{prompt_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _prompt_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=float, default=None, help="reward-model epochs over each export's training pairs (default 4)")
    parser.add_argument("--budget", type=int, default=None, help="annotator time units for each (default: 3 rankings of every prompt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here too")
    args = parser.parse_args()
    bench_rows, all_figures = measure(quick=args.quick, epochs=args.epochs, budget=args.budget, seed=args.seed)
    print(json.dumps(all_figures, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(all_figures, indent=2, default=str))
    emit(bench_rows)
