"""K-way rankings: statistics on a million rankings, and listwise against pairwise reward training.

1. Kendall's W (per task, tie-corrected) and Plackett–Luce (model leaderboard, and per prompt)
   on 1,000,000 rankings of K = 4 (250,000 tasks × 4 annotators, 12 models, ~10% of rankings
   with a tie); targets ≤ 2 s each. Anchor for W: scipy's tie-corrected Friedman statistic per
   task in a Python loop (W = χ² / (m (n − 1))) on 5,000 tasks, scaled to all tasks. Anchor for
   the leaderboard: our own MM fit without collapsing identical rankings (`np.unique`), on the
   same rankings. The arrays are built directly; reading a project's rows into them
   (`rank_arrays` on 4,000,000 long rows) is timed on its own line.
2. Reward-model training on K = 4 groups, the same pairs both ways: pairwise (TRL's loss,
   each pair's two replies encoded: 12 sequences per group) against listwise
   (`rlhf.reward.listwise`: 4 sequences per group); pairs learned per second over the same
   number of steps with the same pairs per step, and the held-out accuracy of each (target
   ≥ 2× at equal accuracy); since equal steps need not give equal accuracy, listwise is also run
   with twice the steps and with as many steps as fit in the pairwise run's wall time. A random 4-layer Llama (hidden 256, word-level vocabulary) built
   offline, CPU fp32, one torch thread; replies of 30–80 words.

3. The Rank page in headless Chromium with 1,000,000 rankings stored (333,333 full tasks and a
   few open ones): per task, B A D C typed, then Enter timed from the key press to the next task
   painted (`bench_app.timed`); target p95 ≤ 300 ms.

Sizes: --quick shrinks all three (100,000 rankings; fewer steps; 30,000 stored rankings). One
part alone: `bench_rank.py statistics|training|page [--quick]`. The machine is shared: figures
move with other load; the ratios come from the same run.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench._common import BenchRow, main, speedup, throughput_ratio, time_call  # noqa: E402

K = 4
N_MODELS = 12
SEED = 0


# ------------------------------------------------------------------------------------ 1. statistics


def synthetic_rankings(n_rankings: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """task (N,), model_of (N, K), level (N, K): 4 annotators per task, a Gumbel-noised quality order, ~10% with one tie."""
    rng = np.random.default_rng(seed)
    per_task = 4
    n_tasks = n_rankings // per_task
    quality = np.linspace(2.0, -2.0, N_MODELS)
    task_models = np.argsort(rng.random((n_tasks, N_MODELS)), axis=1)[:, :K]  # (T, K) distinct models per task
    task = np.repeat(np.arange(n_tasks), per_task)
    model_of = task_models[task]  # (N, K)
    noisy = quality[model_of] + rng.gumbel(size=model_of.shape)
    order = np.argsort(-noisy, axis=1)
    level = np.empty_like(order)
    np.put_along_axis(level, order, np.arange(K)[None, :], axis=1)
    tie = rng.random(len(task)) < 0.1  # the 2nd and 3rd places tied
    level = np.where(tie[:, None] & (level >= 2), level - 1, level)
    return {"task": task, "model_of": model_of, "level": level, "n_tasks": n_tasks}


def bench_statistics(quick: bool) -> list[BenchRow]:
    import pandas as pd
    from scipy import stats

    from rlhf.ranking_stats import PlackettLuce, kendalls_w_by_task, plackett_luce_models, rank_arrays, ranks_from_levels

    n = 100_000 if quick else 1_000_000
    data = synthetic_rankings(n)
    task, level, n_tasks = data["task"], data["level"], data["n_tasks"]
    rows = []

    rank = ranks_from_levels(level)
    w_s = time_call(lambda: kendalls_w_by_task(task, ranks_from_levels(level), n_tasks), repeat=2)
    w = kendalls_w_by_task(task, rank, n_tasks)
    subset = 5000
    per_task = rank[: subset * 4].reshape(subset, 4, K)

    def scipy_loop():
        return [stats.friedmanchisquare(*block.T).statistic / (4 * (K - 1)) for block in per_task]

    loop_s = time_call(scipy_loop) * (n_tasks / subset)
    check = np.allclose(scipy_loop()[:200], w[:200], equal_nan=True)
    rows.append(BenchRow(f"Kendall's W per task ({n:,} rankings, K={K})", w_s, "s", loop_s, f"scipy Friedman per task, {subset:,} tasks scaled",
                         speedup(w_s, loop_s), "≤ 2 s", f"mean W {np.nanmean(w):.3f}; equals scipy on the first 200 tasks: {check}"))  # fmt: skip

    pl_s = time_call(lambda: plackett_luce_models(data["model_of"], level, N_MODELS), repeat=2)
    fit = plackett_luce_models(data["model_of"], level, N_MODELS)
    plain_s = time_call(lambda: PlackettLuce().fit(data["model_of"], level, N_MODELS))
    in_order = bool((np.diff(fit.worth_) < 0).all())  # models were made best-first
    rows.append(BenchRow(f"Plackett–Luce leaderboard ({n:,} rankings, {N_MODELS} models)", pl_s, "s", plain_s, "same MM without collapsing identical rankings",
                         speedup(pl_s, plain_s), "≤ 2 s", f"{fit.n_iter_} iterations; planted order recovered: {in_order}"))  # fmt: skip

    items = task[:, None] * K + np.arange(K)[None, :]
    group = np.repeat(np.arange(n_tasks), K)
    prompt_s = time_call(lambda: PlackettLuce(max_iter=50).fit(items, level, n_tasks * K, group=group))
    rows.append(BenchRow(f"Plackett–Luce per prompt ({n_tasks:,} prompts, 50 MM iterations)", prompt_s, "s", target="-",
                         note="one fit over every (task, card): the tasks are independent"))  # fmt: skip

    frame_rows = len(task) * K
    frame = pd.DataFrame({
        "task_id": np.repeat(task, K), "annotator_id": np.repeat(np.tile(np.arange(4), n_tasks), K), "card": np.tile(np.arange(K), len(task)),
        "rank": rank.ravel(), "level": level.ravel(), "position": np.tile(np.arange(K), len(task)),
    })  # fmt: skip
    pack_s = time_call(lambda: rank_arrays(frame))
    rows.append(BenchRow(f"long rows → arrays ({frame_rows:,} rows)", pack_s, "s", target="-", note="rank_arrays: what a project's statistics add before the fits"))
    return rows


# ------------------------------------------------------------------------------------ 2. training

QUALITY = ["bad unsafe worse", "no not very clear", "maybe simple", "good helpful honest"]
WORDS = "the a is to of and in it this that yes please thanks hello world cat dog tree sky blue green red write poem story answer question".split()


def ranking_rows(n_groups: int, seed: int, test_every: int = 5) -> list[dict]:
    """Export-shaped rows: per prompt K replies (30–80 words, ending in a quality phrase), all C(K,2) pairs, one group each."""
    import itertools

    rng = random.Random(seed)
    rows = []
    for g in range(n_groups):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
        replies = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 80))) + " " + QUALITY[q] for q in range(K)]
        for worse, better in itertools.combinations(range(K), 2):
            rows.append({"prompt": prompt, "chosen": replies[better], "rejected": replies[worse], "margin": 0.0, "agreement": 1.0,
                         "group_id": f"rank-{g}-0", "split": "test" if g % test_every == 0 else "train"})  # fmt: skip
    return rows


def _model_dir(root: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import build_causal_lm, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_causal_lm(tokenizer, hidden_size=256, layers=4, seed=SEED)
    directory = root / "model"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def bench_training(quick: bool) -> list[BenchRow]:
    import torch

    from rlhf.reward import RewardConfig, train_reward_model

    # One thread: on this shared 2-core machine two torch threads wait on each other whenever the
    # other is descheduled, and a step's time then stops tracking its work (16 sequences took
    # 19 s against 48 in 27 s; with one thread 3.4 s against 10 s, measured).
    torch.set_num_threads(1)
    groups_per_step, steps = (2, 6) if quick else (4, 24)
    n_groups = groups_per_step * steps * 5 // 4 + 8  # train groups cover the steps once; a fifth held out
    with tempfile.TemporaryDirectory(prefix="bench-rank-") as tmp:
        root = Path(tmp)
        model = _model_dir(root)
        data = root / "ranked.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in ranking_rows(n_groups, SEED)))
        pairs_per_group = K * (K - 1) // 2
        results = {}
        runs = (("pairwise", False, groups_per_step * pairs_per_group, steps), ("listwise", True, groups_per_step, steps),
                ("listwise-2x", True, groups_per_step, 2 * steps))  # fmt: skip
        for name, listwise, batch, n_steps in runs:
            config = RewardConfig(base_model=str(model), max_steps=n_steps, batch_size=batch, learning_rate=1e-3, lora_r=8, max_length=256,
                                  device="cpu", save_steps=10_000, logging_steps=max(1, steps // 4), listwise=listwise, group_by_length=False)  # fmt: skip
            started = time.perf_counter()
            result = train_reward_model(config, root / f"rm-{name}", data=data)
            results[name] = {
                "train_s": result.timings["train_s"],
                "pairs": n_steps * groups_per_step * pairs_per_group,
                "accuracy": result.metrics["held_out"]["accuracy"],
                "total_s": time.perf_counter() - started,
            }
        # Equal wall time: listwise gets as many steps as fit in the pairwise run's training time
        # (measured above), so the accuracies compare at the same cost, not the same step count.
        equal_steps = max(steps, round(steps * results["pairwise"]["train_s"] / results["listwise"]["train_s"]))
        config = RewardConfig(base_model=str(model), max_steps=equal_steps, batch_size=groups_per_step, learning_rate=1e-3, lora_r=8, max_length=256,
                              device="cpu", save_steps=10_000, logging_steps=max(1, steps // 4), listwise=True, group_by_length=False)  # fmt: skip
        result = train_reward_model(config, root / "rm-listwise-equal-time", data=data)
        results["listwise-equal-time"] = {"train_s": result.timings["train_s"], "pairs": equal_steps * groups_per_step * pairs_per_group,
                                          "accuracy": result.metrics["held_out"]["accuracy"], "steps": equal_steps}  # fmt: skip
        # Time to the same accuracy: the fewest listwise steps on a fixed ladder (1.25x, 1.5x, 1.75x,
        # 2x the pairwise steps, tried in order, every try reported) whose held-out accuracy reaches
        # the pairwise run's; its training time against the pairwise run's is the speed-up at equal accuracy.
        ladder = []
        for factor in (1.25, 1.5, 1.75, 2.0):
            n_steps = round(steps * factor)
            config = RewardConfig(base_model=str(model), max_steps=n_steps, batch_size=groups_per_step, learning_rate=1e-3, lora_r=8, max_length=256,
                                  device="cpu", save_steps=10_000, logging_steps=max(1, steps // 4), listwise=True, group_by_length=False)  # fmt: skip
            result = train_reward_model(config, root / f"rm-listwise-ladder-{n_steps}", data=data)
            ladder.append({"steps": n_steps, "train_s": result.timings["train_s"], "accuracy": result.metrics["held_out"]["accuracy"]})
            if ladder[-1]["accuracy"] >= results["pairwise"]["accuracy"]:
                break
        step_listwise, step_pairwise = interleaved_step_times(model, data, groups_per_step, repeats=3 if quick else 5)
    pairwise, listwise = results["pairwise"], results["listwise"]
    ours = listwise["pairs"] / listwise["train_s"]
    anchor = pairwise["pairs"] / pairwise["train_s"]
    return [
        BenchRow(f"reward training on K={K} groups ({steps} steps × {groups_per_step * pairs_per_group} pairs)", ours, "pairs/s", anchor,
                 "pairwise trainer, same pairs and steps", throughput_ratio(ours, anchor), "≥ 2x at equal held-out accuracy",
                 f"held-out accuracy listwise {listwise['accuracy']:.3f} vs pairwise {pairwise['accuracy']:.3f}"),
        BenchRow(f"listwise with twice the steps ({2 * steps}): held-out accuracy", results["listwise-2x"]["accuracy"], "acc",
                 pairwise["accuracy"], "pairwise, one pass", results["listwise-2x"]["accuracy"] / max(pairwise["accuracy"], 1e-9), "equal accuracy",
                 f"in {results['listwise-2x']['train_s']:.0f} s of training against the pairwise {pairwise['train_s']:.0f} s"),
        BenchRow(f"listwise at the pairwise run's wall time ({results['listwise-equal-time']['steps']} steps): held-out accuracy",
                 results["listwise-equal-time"]["accuracy"], "acc", pairwise["accuracy"], "pairwise, one pass",
                 results["listwise-equal-time"]["accuracy"] / max(pairwise["accuracy"], 1e-9), "equal accuracy",
                 f"{results['listwise-equal-time']['train_s']:.0f} s of training against the pairwise {pairwise['train_s']:.0f} s"),
        _equal_accuracy_row(ladder, pairwise),
        BenchRow(f"one step's forward + backward, {groups_per_step} groups, interleaved (median of repeats)", step_listwise, "s", step_pairwise,
                 "the same pairs as 2 sequences each", speedup(step_listwise, step_pairwise), "-", "alternating runs: robust to the machine's load drifting"),
    ]  # fmt: skip


def _equal_accuracy_row(ladder: list[dict], pairwise: dict) -> BenchRow:
    """The ladder's first listwise run reaching the pairwise accuracy: training time against the pairwise run's."""
    tries = "; ".join(f"{t['steps']} steps {t['accuracy']:.3f} in {t['train_s']:.0f} s" for t in ladder)
    reached = ladder[-1] if ladder and ladder[-1]["accuracy"] >= pairwise["accuracy"] else None
    if reached is None:
        return BenchRow("listwise time to the pairwise held-out accuracy", float("nan"), "s", pairwise["train_s"], "pairwise, one pass", None,
                        "≥ 2x at equal held-out accuracy", f"not reached within 2x the steps ({tries})")  # fmt: skip
    return BenchRow(f"listwise time to the pairwise held-out accuracy ({reached['steps']} steps)", reached["train_s"], "s", pairwise["train_s"],
                    "pairwise, one pass", speedup(reached["train_s"], pairwise["train_s"]), "≥ 2x at equal held-out accuracy",
                    f"pairwise {pairwise['accuracy']:.3f}; tries: {tries}")  # fmt: skip


def interleaved_step_times(model_dir: Path, data: Path, groups: int, repeats: int) -> tuple[float, float]:
    """Median seconds of one training step's forward + backward, listwise then pairwise in turn, same model and pairs."""
    import statistics

    import pandas as pd
    import torch

    from rlhf.models import load_sequence_classifier, load_tokenizer
    from rlhf.reward import RewardConfig
    from rlhf.reward.data import encode_pairs
    from rlhf.reward.listwise import collate_groups, listwise_dataset, listwise_loss
    from rlhf.reward.scorer import pad_right, pooled_rewards

    tokenizer = load_tokenizer(str(model_dir), padding_side="right")
    model = load_sequence_classifier(str(model_dir), device="cpu", pad_token_id=tokenizer.pad_token_id)
    rows = pd.read_json(data, lines=True)
    rows = rows[rows["group_id"].isin(rows["group_id"].unique()[:groups])]
    dataset, _ = listwise_dataset(rows, tokenizer, RewardConfig(max_length=256), False)
    batch = collate_groups([dataset[i] for i in range(len(dataset))], tokenizer.pad_token_id)
    chosen = encode_pairs(tokenizer, rows["prompt"].tolist(), rows["chosen"].tolist(), max_length=256, use_chat_template=False).ids
    rejected = encode_pairs(tokenizer, rows["prompt"].tolist(), rows["rejected"].tolist(), max_length=256, use_chat_template=False).ids
    ids, mask = pad_right(chosen + rejected, tokenizer.pad_token_id)
    listwise_s, pairwise_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        rewards = pooled_rewards(model, batch["input_ids"], batch["attention_mask"])
        listwise_loss(rewards, batch["chosen"], batch["rejected"], batch["margin"], batch["group"]).backward()
        listwise_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        rewards = pooled_rewards(model, ids, mask)
        (-torch.nn.functional.logsigmoid(rewards[: len(chosen)] - rewards[len(chosen) :])).mean().backward()
        pairwise_s.append(time.perf_counter() - start)
        model.zero_grad()
    return statistics.median(listwise_s), statistics.median(pairwise_s)


# ------------------------------------------------------------------------------------ 3. the Rank page


def seed_rank_project(url: str, n_rankings: int, open_tasks: int) -> int:
    """A SQLite database with `n_rankings` stored rankings (K = 4, overlap 3) and `open_tasks` tasks still to rank; the project id."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from engine_fixtures import add_annotators, create_project
    from ranking_fixtures import add_ranking_tasks, seed_rankings_in_sql

    from rlhf.auth import create_user
    from rlhf.db import init_database, make_engine
    from rlhf.roles import SYSTEM

    engine = make_engine(url)
    init_database(engine)
    project = create_project(engine, name="bench-rank", overlap=3, max_overlap=3, rank_k_min=K, rank_k_max=K)
    full = n_rankings // 3
    add_ranking_tasks(engine, project.id, full, K, tag="full", annotation_counts=[3] * full)
    add_ranking_tasks(engine, project.id, open_tasks, K, tag="open")
    users = add_annotators(engine, 6, prefix="seeded")
    stored = seed_rankings_in_sql(engine, project.id, [u.id for u in users], K)
    assert stored == full * 3, stored
    create_user(engine, SYSTEM, "bench-ranker", "benchmark the rank page", "annotator")
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")
        connection.commit()
    engine.dispose()
    return project.id


def bench_rank_page(quick: bool) -> list[BenchRow]:
    """Submit (Enter) → the next task painted on the Rank page, in headless Chromium, with the rankings stored."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_app imports its siblings by name
    from playwright.sync_api import sync_playwright

    from bench_app import INSTALL_STAMP_JS, timed
    from harness import launch_chromium, open_page, sign_in, start_app, wait_loaded, wait_text

    from bench._common import percentile

    n_rankings, submissions = (30_000, 8) if quick else (1_000_000, 30)
    with tempfile.TemporaryDirectory(prefix="bench-rank-page-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'rank.db'}"
        started = time.perf_counter()
        seed_rank_project(url, n_rankings, open_tasks=submissions + 20)
        seed_s = time.perf_counter() - started
        server = start_app(url, Path(tmp) / "streamlit.log")
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                sign_in(page, server.url, "bench-ranker", "benchmark the rank page")
                wait_text(page, "Rate a response")
                open_page(page, "Rank")
                wait_text(page, "Rank the replies")
                wait_loaded(page)
                page.evaluate(INSTALL_STAMP_JS)
                latencies = []
                for i in range(1, submissions + 1):
                    for key in ("B", "A", "D", "C"):
                        page.keyboard.press(key)
                        timed(page, None)
                    page.keyboard.press("Enter")
                    latencies.append(timed(page, f"{i} submitted in this session"))
                browser.close()
        finally:
            server.stop()
    p95 = percentile(latencies, 95)
    return [BenchRow(f"Rank page submit → next painted, p95 ({n_rankings:,} rankings stored, {submissions} submits)", p95 * 1000, "ms",
                     target="p95 ≤ 300 ms", note=f"median {percentile(latencies, 50) * 1000:.0f} ms; seeding took {seed_s:.0f} s")]  # fmt: skip


def run(quick: bool = False, parts: tuple[str, ...] = ("statistics", "training", "page")) -> list[BenchRow]:
    rows: list[BenchRow] = []
    if "statistics" in parts:
        rows += bench_statistics(quick)
    if "training" in parts:
        rows += bench_training(quick)
    if "page" in parts:
        rows += bench_rank_page(quick)
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("statistics", "training", "page"):  # one part: bench_rank.py page [--quick]
        from bench._common import emit

        emit(run(quick="--quick" in sys.argv, parts=(sys.argv[1],)))
    else:
        main(run)
