"""The end-to-end report: PNG plots (matplotlib, Agg) and report.md from the run's summary.

Every function takes plain data (the summary dict, small frames) and a directory, writes one
file and returns its path, so a failed plot never hides the figures: `write_report` records a
plot that could not be drawn as a note in the markdown instead of failing the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import pandas as pd

KL_LIMIT = 6.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_agreement(agreement: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Krippendorff's alpha per rubric dimension and for the preferences, with 95% bootstrap intervals."""
    plt = _pyplot()
    names = list(agreement)
    alphas = [agreement[n].get("alpha") for n in names]
    values = [a if a is not None else math.nan for a in alphas]
    lows = [v - (agreement[n].get("ci") or [v, v])[0] if agreement[n].get("ci") else 0 for n, v in zip(names, values)]
    highs = [(agreement[n].get("ci") or [v, v])[1] - v if agreement[n].get("ci") else 0 for n, v in zip(names, values)]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.bar(names, values, yerr=[lows, highs], capsize=4, color=["#4c72b0"] * (len(names) - 1) + ["#dd8452"] if names else None)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("Krippendorff's alpha")
    ax.set_title("Agreement per dimension (simulated annotators, round 0)")
    return _save(fig, path)


def plot_annotators(rows: pd.DataFrame, path: Path, *, spammer_skill: float = 0.1) -> Path:
    """Per simulated annotator: DS skill, left share, length tilt — coloured by planted trait, flagged ones outlined."""
    plt = _pyplot()
    rows = rows.sort_values("username").reset_index(drop=True)
    x = range(len(rows))
    flags = rows["flags"].fillna("").astype(str)
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    panels = [
        ("ds_skill", "planted_spammer", "spammer", "Dawid–Skene skill\n(ratings and\npreferences)", spammer_skill, "spammer flag below"),
        ("left_share", "planted_position_bias", "position_bias", "share picking the left side", 0.5, "no bias"),
        ("length_tilt", "planted_length_bias", "length_bias", "length tilt beyond the\ncrowd's (logits per\ndoubling of length)", 0.0, "judges length like the crowd"),
    ]
    for ax, (column, trait, flag, label, line, line_label) in zip(axes, panels):
        planted = rows[trait].astype(float) > 0
        colours = ["#c44e52" if p else "#4c72b0" for p in planted]
        edges = ["black" if flag in f.split(",") else "none" for f in flags]
        ax.bar(x, rows[column].astype(float), color=colours, edgecolor=edges, linewidth=2)
        if line is not None:
            ax.axhline(line, color="grey", linestyle="--", linewidth=1, label=line_label)
        ax.set_ylabel(label, fontsize=8)
        ax.set_title(f"red: planted {flag.replace('_', ' ')}; black outline: flagged {flag.replace('_', ' ')}", fontsize=9)
    axes[-1].set_xticks(list(x))
    axes[-1].set_xticklabels(rows["username"], rotation=70, fontsize=7)
    return _save(fig, path)


def plot_reward(reward: Mapping[str, Any], path: Path) -> Path:
    """Reward-model accuracy against gold next to the ceiling the noise allows, and the labels' own accuracy."""
    plt = _pyplot()
    items = [
        ("RM vs gold", reward.get("accuracy_vs_gold"), "#4c72b0"),
        ("best achievable\n(noise ceiling)", reward.get("best_achievable"), "#55a868"),
        ("majority labels\nvs gold", reward.get("majority_labels_vs_gold", reward.get("labels_vs_gold")), "#8172b2"),
        ("RM vs held-out\nlabels", reward.get("accuracy_vs_labels"), "#937860"),
    ]
    if reward.get("aggregate", "majority") != "majority":
        items.insert(3, (f"{reward['aggregate']} labels\nvs gold\n(trained on)", reward.get("labels_vs_gold"), "#c44e52"))
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    values = [v if v is not None else math.nan for _, v, _ in items]
    ax.bar([name for name, _, _ in items], values, color=[color for _, _, color in items])
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    if reward.get("best_achievable") is not None:
        ax.axhline(reward["best_achievable"] - 0.05, color="#55a868", linestyle=":", linewidth=1, label="ceiling − 5 points")
        ax.legend(fontsize=8)
    for i, v in enumerate(values):
        if not math.isnan(v):
            ax.text(i, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy on held-out pairs")
    ax.set_title(f"Reward model ({reward.get('test_pairs', '?')} held-out pairs)")
    return _save(fig, path)


def plot_ppo(history: Sequence[Mapping[str, float]], path: Path) -> Path:
    """Reward-model score and KL(policy || reference) per PPO iteration, with the KL limit."""
    plt = _pyplot()
    steps = list(range(1, len(history) + 1))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(steps, [h.get("objective/score", math.nan) for h in history], marker="o", markersize=3)
    left.set_xlabel("iteration")
    left.set_ylabel("reward-model score (normalised)")
    left.set_title("PPO: score of sampled responses")
    right.plot(steps, [h.get("objective/kl", math.nan) for h in history], marker="o", markersize=3, color="#c44e52")
    right.axhline(KL_LIMIT, color="grey", linestyle="--", linewidth=1, label=f"{KL_LIMIT:g} nats")
    right.set_xlabel("iteration")
    right.set_ylabel("KL per response (nats)")
    right.set_title("PPO: KL from the reference")
    right.legend(fontsize=8)
    return _save(fig, path)


def plot_leaderboard(board: pd.DataFrame, preference: Mapping[str, Any], path: Path) -> Path:
    """Elo of each model with its bootstrap interval, and the share of votes for the new round."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [2, 1]})
    if len(board):
        board = board.sort_values("elo")
        y = range(len(board))
        left.errorbar(board["elo"], list(y), xerr=[board["elo"] - board["elo_low"], board["elo_high"] - board["elo"]], fmt="o", capsize=4)
        left.set_yticks(list(y))
        left.set_yticklabels(board["model"], fontsize=8)
        left.set_xlabel("Elo (Bradley–Terry, 95% bootstrap interval)")
    left.set_title("Leaderboard of rounds")
    shares = [("all votes", preference.get("vote_share")), ("unflagged\nannotators", preference.get("vote_share_unflagged")), ("gold judge", preference.get("gold_win_rate")), ("gold, untrained\npolicy", preference.get("control_gold_win_rate"))]
    values = [v if v is not None else math.nan for _, v in shares]
    right.bar([n for n, _ in shares], values, color=["#4c72b0", "#4c72b0", "#55a868", "#bbbbbb"])
    right.axhline(0.6, color="grey", linestyle="--", linewidth=1)
    right.axhline(0.5, color="black", linewidth=0.6)
    right.set_ylim(0, 1)
    right.set_title("Round 1 preferred over round 0", fontsize=9)
    right.tick_params(axis="x", labelsize=7)
    return _save(fig, path)


# --------------------------------------------------------------------------- markdown


def _aggregate_name(aggregate: str) -> str:
    return {"majority": "majority vote", "dawid-skene": "Dawid–Skene labels"}.get(aggregate, aggregate)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def targets_table(targets: Sequence[Mapping[str, Any]]) -> str:
    lines = ["| target | value | goal | met |", "|---|---|---|---|"]
    for t in targets:
        met = "n/a" if t.get("passed") is None else ("yes" if t["passed"] else "**no**")
        lines.append(f"| {t['name']} | {_fmt(t.get('value'))} | {t['goal']} | {met} |")
    return "\n".join(lines)


def frame_table(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    columns = [c for c in columns if c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame[columns].itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def write_markdown(
    out_dir: Path, summary: Mapping[str, Any], annotators: pd.DataFrame, board: pd.DataFrame, plots: Mapping[str, Optional[str]], notes: Sequence[str],
    *, active_dir: Optional[Path] = None,
) -> Path:
    """report.md: targets first, the gold table of the four policies when the run has one, then each step with its figure
    and table (the classic loop's only when it ran: `annotators` and `board` may be None otherwise); the active-selection
    section when bench/bench_active.py has left its output in `active_dir` (default: its own default)."""
    s = summary
    timings = s.get("timings_s", {})
    classic = "ppo" in s
    head = [
        f"# RLHF Studio end to end — {s.get('started_at', '')}{' (quick)' if s.get('config', {}).get('quick') else ''}",
        "",
        f"Total {_fmt(timings.get('total', 0) / 60, 1)} minutes on {s.get('machine', {}).get('device', 'cpu')} "
        f"({s.get('machine', {}).get('cpus', '?')} CPUs, {s.get('machine', {}).get('torch_threads', '?')} torch threads). "
        f"Data: {s.get('data', {}).get('prompts', '?')} prompts, {s.get('data', {}).get('responses', '?')} responses "
        f"({s.get('data', {}).get('source', '')}).",
        "",
        "## Targets",
        "",
        targets_table(s.get("targets", [])),
        "",
        *gold_section(s),
        "## What the simulated annotators want (the gold)",
        "",
        "Each simulated annotator judges with `rlhf.simulation.gold.gold_score` (a weighted sum: finished sentence 0.30, "
        "length within 4–60 words 0.25, no repeated trigrams 0.15, the prompt's key terms 0.15, refusing unsafe requests "
        "0.15), blurred by its planted Bradley–Terry noise and biases. It rewards surface quality, not correctness. "
        "A 135M policy can realistically move the first two within a few dozen PPO iterations (stop sooner, end on a "
        "full stop); the others move little. The figures below measure exactly that, no more.",
        "",
        *instructgpt_section(s),
    ]
    parts = head + (classic_sections(s, annotators, board, plots) if classic else []) + [
        "## Timings (seconds)",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {name} | {_fmt(float(sec), 1)} |" for name, sec in timings.items()],
        "",
    ]
    parts += active_selection_section(out_dir, active_dir if active_dir is not None else default_active_dir())
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def classic_sections(s: Mapping[str, Any], annotators: pd.DataFrame, board: pd.DataFrame, plots: Mapping[str, Optional[str]]) -> list[str]:
    """The classic loop's sections: agreement, annotator flags, reward model, PPO, round 1, head to head, leaderboard."""
    reward, ppo, pref = s.get("reward", {}), s.get("ppo", {}), s.get("preference_for_new_round", {})
    timings = s.get("timings_s", {})

    def image(name: str, alt: str) -> str:
        return f"![{alt}]({plots[name]})" if plots.get(name) else f"_({alt}: plot not drawn)_"

    return [
        "## Agreement (round 0)",
        "",
        image("agreement", "agreement per dimension"),
        "",
        "## Annotator quality against the planted truth",
        "",
        image("annotators", "annotator flags against planted traits"),
        "",
        "| flag | planted | flagged | true positives | precision | recall |",
        "|---|---|---|---|---|---|",
        *[
            f"| {name} | {r['planted']} | {r['flagged']} | {r['true_positives']} | {_fmt(r['precision'])} | {_fmt(r['recall'])} |"
            for name, r in s.get("annotator_recovery", {}).items()
        ],
        "",
        "After round 1 (more judgments per annotator):",
        "",
        "| flag | precision | recall |",
        "|---|---|---|",
        *[f"| {name} | {_fmt(r['precision'])} | {_fmt(r['recall'])} |" for name, r in s.get("annotator_recovery_final", {}).items()],
        "",
        frame_table(annotators, ["username", "planted_spammer", "planted_noise", "planted_position_bias", "planted_length_bias", "n_annotations", "ds_skill", "left_share", "longer_share", "length_tilt", "median_time_s", "flags"]),
        "",
        "## Reward model",
        "",
        f"Export: {s.get('export', {}).get('rows', '?')} pairs ({_aggregate_name(s.get('export', {}).get('aggregate', 'majority'))}), split by prompt: {s.get('export', {}).get('split_counts', {})}. "
        f"Reward model: {reward.get('base', '')}, LoRA on {reward.get('lora_scope', '')}, {reward.get('steps', '?')} steps "
        f"of {reward.get('batch_size', '?')} pairs, {_fmt(timings.get('reward', 0) / 60, 1)} minutes.",
        "",
        "Best achievable = the expected agreement of a noiseless gold judge with the majority label of the planted annotator pool "
        "(`rlhf.simulation.best_achievable_accuracy`): what the labels themselves get right against gold, and what even a perfect "
        "model would score against held-out labels.",
        "",
        image("reward", "reward model accuracy"),
        "",
        *component_table(reward.get("by_gold_component") or {}),
        "## PPO",
        "",
        f"{ppo.get('iterations_done', '?')} of {ppo.get('iterations_planned', '?')} iterations"
        f"{' (stopped by the time budget)' if ppo.get('stopped_by_budget') else ''}; score {_fmt(ppo.get('score_first'))} → "
        f"{_fmt(ppo.get('score_last'))}; KL last {_fmt(ppo.get('kl_last'))} nats, max {_fmt(ppo.get('kl_max'))}, "
        f"mean of the last five iterations {_fmt(ppo.get('kl_last5_mean'))}; "
        f"{_fmt(timings.get('ppo', 0) / 60, 1)} minutes.",
        "",
        image("ppo", "PPO score and KL"),
        "",
        "## Round 1 against round 0",
        "",
        f"Round 1: {s.get('round1', {}).get('responses', '?')} responses from the PPO policy, {s.get('round1', {}).get('pairwise_tasks', '?')} "
        f"pairwise tasks against round 0. Share of decisive votes for round 1: {_fmt(pref.get('vote_share'))} "
        f"({pref.get('n_votes', '?')} votes; {_fmt(pref.get('vote_share_unflagged'))} without flagged spammers; "
        f"tasks won {_fmt(pref.get('task_share'))}). A noiseless gold judge prefers round 1 in {_fmt(pref.get('gold_win_rate'))} of the pairs; "
        f"the untrained policy sampled the same way would win {_fmt(pref.get('control_gold_win_rate'))} (control).",
        "",
        f"Round 0 vs round 1 responses: finished {_fmt(s.get('round0', {}).get('finished_share'))} → {_fmt(s.get('round1', {}).get('finished_share'))}, "
        f"mean words {_fmt(s.get('round0', {}).get('mean_words'), 1)} → {_fmt(s.get('round1', {}).get('mean_words'), 1)}, "
        f"mean gold {_fmt(s.get('round0', {}).get('mean_gold'))} → {_fmt(s.get('round1', {}).get('mean_gold'))} "
        f"(untrained policy: {_fmt(s.get('control', {}).get('mean_gold'))}).",
        "",
        "## PPO against the control (head to head)",
        "",
        _head_to_head_line(s.get("head_to_head") or {}),
        "",
        image("leaderboard", "leaderboard of rounds"),
        "",
        frame_table(board, ["rank", "model", "elo", "elo_low", "elo_high", "wins", "losses", "ties", "n_comparisons"]),
        "",
    ]


GOLD_ROWS = {
    "base": "base (the starting policy)",
    "sft": "SFT (LoRA on the demonstrations)",
    "ppo_base": "PPO from base (classic: reward model on the base's samples)",
    "ppo_sft": "PPO from SFT (InstructGPT: reward model on the SFT samples, SFT as reference)",
}


def gold_section(s: Mapping[str, Any]) -> list[str]:
    """The gold table (every policy of the run sampled alike on the held-out prompts) and the two target lines; none without it."""
    gold = s.get("gold") or {}
    if not gold:
        return []
    verdicts = s.get("gold_targets") or {}
    config = s.get("config", {})
    n = max((len(g.get("scores", [])) for g in gold.values()), default=0)
    lines = [
        "## Gold of fresh samples (held-out prompts)",
        "",
        f"Each policy sampled once per held-out prompt ({n} prompts no training stage saw: no demonstration, comparison or PPO prompt), "
        f"alike: seed {config.get('seed', '?')}, temperature {config.get('round_temperature', '?')}, at most {config.get('round_max_new_tokens', '?')} new tokens; "
        "scored by `rlhf.simulation.gold_score`.",
        "",
        "| policy | mean gold | finished | mean words | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, label in GOLD_ROWS.items():
        g = gold.get(name)
        lines.append(
            f"| {label} | {_fmt(g.get('mean_gold'))} | {_fmt(g.get('finished_share'), 2)} | {_fmt(g.get('mean_words'), 1)} | {_fmt(g.get('seconds'), 0)} |"
            if g else f"| {label} | not run | | | |"
        )
    lines.append("")
    gain, diff = verdicts.get("sft_gain", {}), verdicts.get("ppo_sft_vs_ppo_base", {})
    lines.append(f"- SFT − base: {_signed(gain.get('value'))} (target {gain.get('goal', '≥ +0.05')}: {_met(gain.get('met'))})")
    lines.append(f"- PPO from SFT − PPO from base: {_signed(diff.get('value'))} (target {diff.get('goal', '≥ 0')}: {_met(diff.get('met'))})")
    lines.append("")
    return lines


def instructgpt_section(s: Mapping[str, Any]) -> list[str]:
    """What the InstructGPT order did: demonstrations, SFT, comparisons of its samples, its reward model, PPO from SFT, next round."""
    i = s.get("instructgpt") or {}
    if not i:
        return []
    demos, sft, comp, reward, ppo, round1 = (i.get(k) or {} for k in ("demonstrations", "sft", "comparisons", "reward", "ppo", "round1"))
    held = sft.get("held_out") or {}
    before, after = (held.get("before") or {}).get("loss"), (held.get("after") or {}).get("loss")
    sloppy = sum(1 for w in demos.get("writers", []) if w.get("sloppy"))
    return [
        "## InstructGPT order (demonstrations → SFT → comparisons of SFT samples → reward model → PPO from SFT)",
        "",
        f"Demonstrations: {demos.get('n', '?')} written in {demos.get('write_tasks', '?')} write tasks of project `{demos.get('project', '?')}` by "
        f"{len(demos.get('writers', []))} simulated writers ({sloppy} sloppy); gold of the replies shown {_fmt(demos.get('gold_shown'))} → written "
        f"{_fmt(demos.get('gold_written'))}. SFT: {sft.get('steps', '?')} steps, held-out loss {_fmt(before)} → {_fmt(after)}, {_fmt((sft.get('seconds') or 0) / 60, 1)} minutes.",
        "",
        f"Comparisons: {comp.get('samples', '?')} SFT samples, {comp.get('pairwise_tasks', '?')} pairs, {comp.get('preferences', '?')} judgments. "
        f"Reward model: {reward.get('steps', '?')} steps on {reward.get('train_pairs', '?')} pairs, accuracy against gold {_fmt(reward.get('accuracy_vs_gold'))} "
        f"(best achievable {_fmt(reward.get('best_achievable'))}).",
        "",
        f"PPO from SFT: {ppo.get('iterations_done', '?')} of {ppo.get('iterations_planned', '?')} iterations"
        f"{' (stopped by the time budget)' if ppo.get('stopped_by_budget') else ''}; score {_fmt(ppo.get('score_first'))} → {_fmt(ppo.get('score_last'))}; "
        f"KL last {_fmt(ppo.get('kl_last'))} nats. Next round: {round1.get('pairwise_tasks', '?')} pairs against the SFT samples, share of decisive "
        f"votes for PPO from SFT {_fmt(round1.get('vote_share'))} ({round1.get('n_votes', '?')} votes).",
        "",
    ]


def component_table(by_component: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Held-out pairs grouped by the gold component that decides them: where the reward model fails to generalise."""
    if not by_component:
        return []
    return [
        "Held-out pairs by the gold component that decides them (its weighted difference is the largest): the reward model's "
        "accuracy against gold beside the exported labels'.",
        "",
        "| deciding component | pairs | reward model | labels |",
        "|---|---|---|---|",
        *[f"| {name} | {row.get('pairs', '?')} | {_fmt(row.get('model'))} | {_fmt(row.get('labels'))} |" for name, row in by_component.items()],
        "",
    ]


def _signed(value: Any) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _met(met: Optional[bool]) -> str:
    return "not measured" if met is None else ("met" if met else "NOT met")


def _head_to_head_line(head: Mapping[str, Any]) -> str:
    if not head:
        return "_Not run (no control sample)._"
    return (
        f"Each prompt's round-1 reply (PPO) against the starting policy's reply sampled the same way (the control), judged by the same "
        f"simulated people in a project of their own ({head.get('pairs', '?')} pairs): share of decisive votes for PPO {_fmt(head.get('vote_share'))} "
        f"({head.get('n_votes', '?')} votes; {_fmt(head.get('vote_share_unflagged'))} without flagged spammers; tasks won {_fmt(head.get('task_share'))}). "
        "This is the gain of the policy itself: the sampler is the same on both sides."
    )


def draw(plots: dict[str, Optional[str]], notes: list[str], name: str, make: Callable[[Path], Path], out_dir: Path) -> None:
    """Draw one plot into `out_dir/<name>.png`; on failure record a note instead of raising."""
    try:
        plots[name] = make(out_dir / f"{name}.png").name
    except Exception as exc:  # noqa: BLE001 - a plot must never cost the figures
        plots[name] = None
        notes.append(f"plot {name} not drawn: {exc.__class__.__name__}: {exc}")


# --------------------------------------------------------------------------- active selection


ACTIVE_STRATEGIES = ("random", "uncertainty", "disagreement", "mixed")


def default_active_dir() -> Path:
    """Where bench/bench_active.py writes (its $BENCH_ACTIVE_OUT, else reports/active-selection/)."""
    import os

    return Path(os.environ.get("BENCH_ACTIVE_OUT", Path(__file__).resolve().parents[1] / "reports" / "active-selection"))


def active_selection_section(out_dir: Path, active_dir: Path) -> list[str]:
    """Markdown lines for the labels-vs-accuracy measurement of the selection strategies; none without its summary.

    The curve (PNG and SVG) is copied next to report.md so the report's links hold wherever it is moved.
    """
    import json
    import shutil

    summary_path = Path(active_dir) / "summary.json"
    if not summary_path.is_file():
        return []
    active = json.loads(summary_path.read_text(encoding="utf-8"))
    strategies = active.get("strategies", {})
    lines = [
        "## Active selection against random (bench/bench_active.py)",
        "",
        f"{len(active.get('config', {}).get('seeds', []))} seeds, {active.get('pairs', '?')} pairs; target per seed = 90% of the held-out accuracy "
        "of the head trained on one label for every pool pair. Labels to reach it, and the seconds each strategy spends scoring per run (its compute).",
        "",
    ]
    for suffix in ("png", "svg"):
        curve = Path(active_dir) / f"active_selection.{suffix}"
        if curve.is_file() and Path(out_dir).resolve() != Path(active_dir).resolve():
            shutil.copyfile(curve, Path(out_dir) / curve.name)
    if (Path(out_dir) / "active_selection.png").is_file():
        svg = " ([SVG](active_selection.svg))" if (Path(out_dir) / "active_selection.svg").is_file() else ""
        lines += ["![reward-model accuracy against labels used, per strategy](active_selection.png)" + svg, ""]
    else:
        lines += ["_(accuracy against labels: plot not drawn)_", ""]
    lines += [
        "| strategy | mean labels to 90% | per seed | mean accuracy over the curve | against random (seeds better / worse) | accuracy at pool size | final accuracy | scoring s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ACTIVE_STRATEGIES:
        r = strategies.get(name)
        if r is None:
            continue
        lines.append(
            f"| {name} | {_labels_needed(r)} | {r.get('labels_to_90pct')} | {_fmt(r.get('curve_mean_accuracy'))} | {_curve_gain(name, r)} | "
            f"{_fmt(r.get('accuracy_at_pool_size'))} | {_fmt(r.get('final_accuracy'))} | {_fmt(r.get('scoring_seconds_per_run'), 2)} |"
        )
    lines += [
        "",
        "A seed that never reaches the target counts at its whole budget (≥: a lower bound). The mean accuracy over the curve "
        "(every point up to one label per pool pair) weighs the whole curve rather than one crossing of it; it is paired by seed.",
        "",
        active_verdict(strategies),
        "",
    ]
    return lines


def _labels_needed(r: Mapping[str, Any]) -> str:
    """The mean labels to the target; with censored seeds the lower bound, marked ≥."""
    if r.get("mean_labels_to_90pct") is not None:
        return _fmt(r["mean_labels_to_90pct"], 1)
    if r.get("mean_labels_to_90pct_censored") is not None:
        return f"≥ {_fmt(r['mean_labels_to_90pct_censored'], 1)} ({r.get('seeds_not_reached', '?')} not reached)"
    return _fmt(None)


def _curve_gain(name: str, r: Mapping[str, Any]) -> str:
    if name == "random" or r.get("curve_gain_vs_random") is None:
        return "—"
    return f"{r['curve_gain_vs_random']:+.3f} ({r.get('seeds_better_than_random', '?')} / {r.get('seeds_worse_than_random', '?')})"


def active_verdict(strategies: Mapping[str, Mapping[str, Any]]) -> str:
    """One sentence: which strategy needed fewest labels, and whether any beat random (None = a seed never reached the target)."""
    needed = {name: r.get("mean_labels_to_90pct") for name, r in strategies.items()}
    base = needed.get("random")
    better = {n: v for n, v in needed.items() if n != "random" and v is not None and (base is None or v < base)}
    if base is None and not better:
        return "No strategy reached the target on every seed."
    if not better:
        return f"Active selection does not beat random here (random: {_fmt(base, 1)} labels); least-annotated with its random tie-break stays the default."
    best = min(better, key=better.get)
    saving = "" if base is None else f", {_fmt(100 * (1 - better[best] / base), 0)}% fewer than random's {_fmt(base, 1)}"
    return f"Fewest labels: {best} ({_fmt(better[best], 1)}{saving}), at the scoring cost in the table."
