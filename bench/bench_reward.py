"""Reward-model training throughput against TRL's RewardTrainer with its defaults (target ≥ 1.3x).

Same model (SmolLM2-135M-Instruct, packaged), same pairs, same LoRA (r=16 on all linear
layers, score head trained), batch 8, max length 256, CPU fp32. The anchor is
`trl.RewardTrainer` as documented, only made to run on this CPU (bf16 off) and to report
nothing. Ours is `rlhf.reward.train_reward_model`. Each run happens in its own subprocess; the
first step is a warm-up and is not timed; both train on exactly the same pairs (all of them
fit in 256 tokens, so TRL's silent length filter drops none) and are then scored on the same
held-out pairs.

Also: peak memory (RSS) of our training with a 4-bit NF4 base vs the fp32 base, each in a
subprocess, and the 4-bit base's weights as a share of fp32's (`weights_footprint_bytes`,
target ≤ 40%).

Sizes: BENCH_REWARD_STEPS timed steps (default 8; --quick 2), BENCH_REWARD_MEMORY_STEPS for
the memory runs (default 1). BENCH_REWARD_DATA may name a TRL export to use instead of the
synthetic pairs.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import BenchRow, main, print_child_result, run_child, throughput_ratio  # noqa: E402

BATCH = 8
MAX_LENGTH = 256
LORA_R = 16
SEED = 0

POLITE = "Sure, here is a clear answer. First, check the basics. Then, try the simple fix. Finally, test it again carefully and ask if anything is unclear.".split()
RUDE = "No. Figure it out yourself, this question is boring and I will not help you with it at all, go away.".split()
TOPIC = "garden bicycle budget recipe interview travel python laptop sleep music language exercise meeting email coffee moving".split()
FILLER = "the a of to and in for with on that this it is was be as by at from your you can will about more some".split()


def synthetic_pairs(n: int, seed: int) -> list[dict]:
    """Prompts of varied length; the chosen answer is polite and on topic, the rejected one curt or rude."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic = rng.choice(TOPIC)
        prompt = f"Question about my {topic}: " + " ".join(rng.choice(FILLER + TOPIC) for _ in range(rng.randint(5, 60))) + "?"
        body = " ".join(rng.choice(FILLER + [topic]) for _ in range(rng.randint(5, 90)))
        chosen = " ".join(POLITE[: rng.randint(6, len(POLITE))]) + f" About your {topic}: {body}."
        rejected = " ".join(RUDE[: rng.randint(4, len(RUDE))]) + f" {body}."
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "agreement": 1.0})
    return rows


def prepare_data(directory: Path, n_train: int, n_test: int) -> tuple[Path, int]:
    """Write train + test pairs (export-shaped JSONL) whose sequences all fit in MAX_LENGTH tokens."""
    from rlhf.models import PACKAGED_SMOLLM2, load_tokenizer
    from rlhf.reward.data import encode_pairs, read_preference_pairs

    tokenizer = load_tokenizer(PACKAGED_SMOLLM2, padding_side="right")
    source = os.environ.get("BENCH_REWARD_DATA")
    if source:
        frame, _ = read_preference_pairs(source)
        candidates = frame[["prompt", "chosen", "rejected"]].to_dict("records")
    else:
        candidates = synthetic_pairs(4 * (n_train + n_test), SEED)
    fitting = []
    for row in candidates:
        lengths = [
            len(encode_pairs(tokenizer, [row["prompt"]], [row[side]], max_length=10**6, use_chat_template=True).ids[0])
            for side in ("chosen", "rejected")
        ]
        if max(lengths) <= MAX_LENGTH:
            fitting.append(row | {"agreement": row.get("agreement", 1.0)})
        if len(fitting) == n_train + n_test:
            break
    if len(fitting) < n_train + n_test:
        raise SystemExit(f"only {len(fitting)} pairs fit in {MAX_LENGTH} tokens; need {n_train + n_test}")
    path = directory / "pairs.jsonl"
    with open(path, "w") as handle:
        for index, row in enumerate(fitting):
            handle.write(json.dumps(row | {"split": "train" if index < n_train else "test"}) + "\n")
    return path, n_train


# --------------------------------------------------------------------------- children


def _step_times_callback(times: list[float]):
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    return StepTimes()


def _throughput(times: list[float]) -> float:
    """Pairs per second over the steps after the first (warm-up) one."""
    if len(times) < 2:
        return float("nan")
    return (len(times) - 1) * BATCH / (times[-1] - times[0])


def child_anchor(data: Path, steps: int, out: Path) -> dict:
    """TRL RewardTrainer with its defaults (gradient checkpointing, TRL's collator and filter), CPU fp32."""
    from datasets import load_dataset
    from trl import RewardConfig, RewardTrainer

    from rlhf.models import PACKAGED_SMOLLM2, lora_config, resolve_model

    base = resolve_model(PACKAGED_SMOLLM2).path
    dataset = load_dataset("json", data_files=str(data), split="train")
    train = dataset.filter(lambda row: row["split"] == "train").remove_columns(["split", "agreement"])
    test = dataset.filter(lambda row: row["split"] == "test").remove_columns(["split", "agreement"])
    times: list[float] = []
    args = RewardConfig(
        output_dir=str(out), per_device_train_batch_size=BATCH, max_length=MAX_LENGTH, max_steps=steps + 1, seed=SEED,
        bf16=False, use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, per_device_eval_batch_size=BATCH,
    )
    trainer = RewardTrainer(
        model=base, args=args, train_dataset=train, eval_dataset=test,
        peft_config=lora_config("SEQ_CLS", r=LORA_R, modules_to_save=["score"]), callbacks=[_step_times_callback(times)],
    )
    trainer.train()
    evaluation = trainer.evaluate()
    return {"pairs_per_s": _throughput(times), "held_out_accuracy": evaluation["eval_accuracy"], "train_pairs": len(train)}


def child_ours(data: Path, steps: int, out: Path, load_in_4bit: bool, checkpointing: bool = False) -> dict:
    from rlhf.models import PACKAGED_SMOLLM2
    from rlhf.progress import NullReporter
    from rlhf.reward import RewardConfig, train_reward_model

    times: list[float] = []

    class Timing(NullReporter):
        def progress(self, done, total=None, message=""):
            times.append(time.perf_counter())

    config = RewardConfig(
        base_model=PACKAGED_SMOLLM2, load_in_4bit=load_in_4bit, max_length=MAX_LENGTH, lora_r=LORA_R, batch_size=BATCH,
        max_steps=steps + 1, seed=SEED, device="cpu", save_steps=10**6, use_margin=False, gradient_checkpointing=checkpointing,
    )
    result = train_reward_model(config, out / "rm", data=data, reporter=Timing())
    return {"pairs_per_s": _throughput(times), "held_out_accuracy": result.metrics["held_out"]["accuracy"]}


def child_footprint() -> dict:
    from rlhf.models import PACKAGED_SMOLLM2, load_sequence_classifier, weights_footprint_bytes

    fp32 = weights_footprint_bytes(load_sequence_classifier(PACKAGED_SMOLLM2, device="cpu"))
    nf4 = weights_footprint_bytes(load_sequence_classifier(PACKAGED_SMOLLM2, device="cpu", load_in_4bit=True))
    return {"fp32_bytes": fp32, "nf4_bytes": nf4}


def _run_child(*args: str) -> dict:
    return run_child(__file__, "bench_reward", *args)


def _child_main(argv: list[str]) -> None:
    kind, rest = argv[0], argv[1:]
    if kind == "anchor":
        result = child_anchor(Path(rest[0]), int(rest[1]), Path(rest[2]))
    elif kind == "ours":
        result = child_ours(Path(rest[0]), int(rest[1]), Path(rest[2]), load_in_4bit=rest[3] == "4bit", checkpointing="checkpointing" in rest[4:])
    else:
        result = child_footprint()
    print_child_result(result)


# --------------------------------------------------------------------------- the bench


def run(quick: bool = False) -> list[BenchRow]:
    steps = int(os.environ.get("BENCH_REWARD_STEPS", 2 if quick else 8))
    memory_steps = int(os.environ.get("BENCH_REWARD_MEMORY_STEPS", 1))
    n_test = int(os.environ.get("BENCH_REWARD_TEST_PAIRS", 16 if quick else 48))
    with tempfile.TemporaryDirectory(prefix="bench-reward-") as tmp:
        work = Path(tmp)
        data, n_train = prepare_data(work, (steps + 1) * BATCH, n_test)
        anchor = _run_child("anchor", str(data), str(steps), str(work / "anchor"))
        ours = _run_child("ours", str(data), str(steps), str(work / "ours"), "fp32")
        footprint = _run_child("footprint")
        # With activation checkpointing, as one would train when memory is short: otherwise the
        # activations of 16 x 256 tokens (~6 GB) hide the base weights' share of the peak.
        mem_fp32 = _run_child("ours", str(data), str(memory_steps), str(work / "mem32"), "fp32", "checkpointing")
        mem_nf4 = _run_child("ours", str(data), str(memory_steps), str(work / "mem4"), "4bit", "checkpointing")
    share = footprint["nf4_bytes"] / footprint["fp32_bytes"]
    return [
        BenchRow(
            work=f"reward training, SmolLM2-135M LoRA r{LORA_R}, batch {BATCH}, len {MAX_LENGTH}, CPU fp32",
            ours=ours["pairs_per_s"],
            unit="pairs/s",
            anchor=anchor["pairs_per_s"],
            anchor_name="TRL RewardTrainer defaults",
            ratio=throughput_ratio(ours["pairs_per_s"], anchor["pairs_per_s"]),
            target="≥ 1.3x",
            note=f"{steps} timed steps after 1 warm-up, {n_train} pairs",
        ),
        BenchRow(
            work=f"held-out accuracy after {steps + 1} steps ({n_test} pairs)",
            ours=ours["held_out_accuracy"],
            unit="acc",
            anchor=anchor["held_out_accuracy"],
            anchor_name="TRL RewardTrainer",
            ratio=ours["held_out_accuracy"] / anchor["held_out_accuracy"] if anchor["held_out_accuracy"] else None,
            target="no worse",
        ),
        BenchRow(
            work="peak RSS training with activation checkpointing, 4-bit NF4 base vs fp32 base",
            ours=mem_nf4["peak_rss_mb"],
            unit="MB",
            anchor=mem_fp32["peak_rss_mb"],
            anchor_name="fp32 base",
            ratio=mem_fp32["peak_rss_mb"] / mem_nf4["peak_rss_mb"],
            note=f"4-bit {mem_nf4['pairs_per_s']:.3g} pairs/s vs fp32 {mem_fp32['pairs_per_s']:.3g} ({memory_steps} timed steps); "
            f"without checkpointing our fp32 run peaked at {ours['peak_rss_mb']:.0f} MB, TRL's (checkpointing) at {anchor['peak_rss_mb']:.0f} MB",
        ),
        BenchRow(
            work="base weights, 4-bit NF4 vs fp32 (weights_footprint_bytes)",
            ours=footprint["nf4_bytes"] / 2**20,
            unit="MiB",
            anchor=footprint["fp32_bytes"] / 2**20,
            anchor_name="fp32",
            ratio=1 / share,
            target="4-bit ≤ 40% of fp32",
            note=f"{share:.0%} of fp32",
        ),
    ]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2:])
    else:
        main(run)
