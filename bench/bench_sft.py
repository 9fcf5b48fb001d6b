"""SFT throughput against TRL's SFTTrainer with its defaults (target ≥ 1.3x), and peak memory of full, LoRA and QLoRA.

Same model (SmolLM2-135M-Instruct, packaged), same demonstrations (one epoch over the same
examples), same LoRA (r=16 on every linear layer), batch 8, max length 256, same learning rate,
CPU fp32. Both runs train on the reply tokens only and are scored by one function
(`rlhf.sft.held_out_loss`, token-weighted NLL of the reply) on the same held-out examples, so the
speed is compared at (nearly) equal held-out loss.

The anchor is `trl.SFTTrainer` as documented for prompt-completion data: its defaults
(activation checkpointing on, batches in random order padded to their longest row), only made to
run on this CPU in fp32 (`bf16=False`; its default bf16 autocast is ~20x slower here) and to
report nothing. Ours is `rlhf.sft.train_sft`, which is the same SFTTrainer with these settings,
each chosen because it is free of approximation:
- no activation checkpointing on CPU: checkpointing recomputes every layer's forward pass in the
  backward pass to save memory; a 135M model's activations fit easily;
- length-grouped batches: examples of similar length share a batch, so fewer pad tokens are
  computed (the order within an epoch changes, not what is learnt);
- fp32 compute (as the anchor here);
- the LM head applied only at the reply positions that carry loss (`rlhf.sft.reply_token_loss`):
  TRL's fused head compacts to those positions only on Triton devices, so on CPU it projects
  every prompt and pad position onto the 49k-token vocabulary (and computes its entropy), forward
  and backward; the loss and gradients are the same (tests/test_sft_reply_loss.py, to 1e-5).
Packing / padding-free is not used: on CPU it needs a block-diagonal attention mask over the
whole flattened batch (quadratic in batch x length) and TRL documents it for FlashAttention only.

Each run happens in its own subprocess (fair timing, own peak RSS). Tokens/s = every token of
the training examples (prompt + reply, no padding) / wall time of `trainer.train()`.

Sizes: BENCH_SFT_STEPS optimiser steps (default 6; --quick 2), BENCH_SFT_REPEATS alternated
anchor / ours runs whose best times are compared (default 2; --quick 1), BENCH_SFT_MEMORY_STEPS for the
memory runs (default 2; 0 skips them), BENCH_SFT_TEST examples held out (default 32; --quick 8). The machine is
shared and noisy: single runs moved between 1.2x and 2.6x here, hence the best of alternated runs.
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
LEARNING_RATE = 2e-4
SEED = 0

TOPIC = "garden bicycle budget recipe interview travel python laptop sleep music language exercise meeting email coffee moving".split()
FILLER = "the a of to and in for with on that this it is was be as by at from your you can will about more some".split()
OPENERS = ["Sure, here is a clear answer.", "Good question.", "Here is what I would do.", "Let me explain step by step."]


def synthetic_demonstrations(n: int, seed: int) -> list[dict]:
    """Prompts of varied length and a polite on-topic reply of varied length, as conversational prompt-completion rows."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic = rng.choice(TOPIC)
        prompt = f"Question about my {topic}: " + " ".join(rng.choice(FILLER + TOPIC) for _ in range(rng.randint(4, 50))) + "?"
        body = " ".join(rng.choice(FILLER + [topic]) for _ in range(rng.randint(8, 120)))
        reply = f"{rng.choice(OPENERS)} About your {topic}: {body}. First, check the basics; then try again."
        rows.append({"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": reply}]})
    return rows


def prepare_data(directory: Path, n_train: int, n_test: int) -> tuple[Path, int]:
    """An SFT export (JSONL, prompt-completion, split) whose examples all fit in MAX_LENGTH tokens; returns it and its train tokens."""
    from rlhf.models import PACKAGED_SMOLLM2, load_tokenizer
    from rlhf.sft import encode_examples, parse_sft_record

    tokenizer = load_tokenizer(PACKAGED_SMOLLM2, padding_side="right")
    fitting, tokens = [], []
    for row in synthetic_demonstrations(4 * (n_train + n_test), SEED):
        encoded = encode_examples(tokenizer, [parse_sft_record(row, "bench")], max_length=10**6, use_chat_template=True)
        length = len(encoded.input_ids[0])
        if length <= MAX_LENGTH - 2:  # TRL's rendering adds the template's newline after the end token
            fitting.append(row)
            tokens.append(length)
        if len(fitting) == n_train + n_test:
            break
    path = directory / "demos.jsonl"
    with open(path, "w") as handle:
        for index, row in enumerate(fitting):
            handle.write(json.dumps(row | {"split": "train" if index < n_train else "test"}) + "\n")
    return path, sum(tokens[:n_train])


def _test_tokens(data: Path):
    from rlhf.models import PACKAGED_SMOLLM2, load_tokenizer
    from rlhf.sft import encode_examples, read_sft_rows

    tokenizer = load_tokenizer(PACKAGED_SMOLLM2, padding_side="right")
    test = [e for e in read_sft_rows(data) if e.split == "test"]
    return encode_examples(tokenizer, test, max_length=MAX_LENGTH, use_chat_template=True), tokenizer.pad_token_id


# --------------------------------------------------------------------------- children


def child_anchor(data: Path, out: Path) -> dict:
    """TRL SFTTrainer with its defaults on the prompt-completion rows (completion-only loss by default), CPU fp32."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from rlhf.models import PACKAGED_SMOLLM2, lora_config, resolve_model
    from rlhf.sft import held_out_loss

    base = resolve_model(PACKAGED_SMOLLM2).path
    dataset = load_dataset("json", data_files=str(data), split="train")
    train = dataset.filter(lambda row: row["split"] == "train").remove_columns(["split"])
    args = SFTConfig(
        output_dir=str(out), per_device_train_batch_size=BATCH, max_length=MAX_LENGTH, num_train_epochs=1, seed=SEED,
        learning_rate=LEARNING_RATE, bf16=False, use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
    )
    trainer = SFTTrainer(model=base, args=args, train_dataset=train, peft_config=lora_config("CAUSAL_LM", r=LORA_R))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    test, pad_id = _test_tokens(data)
    after = held_out_loss(trainer.model, test.input_ids, test.completion_mask, pad_id=pad_id, batch_size=BATCH, device="cpu")
    return {"train_s": seconds, "held_out_loss": after["loss"], "steps": trainer.state.global_step,
            "gradient_checkpointing": bool(args.gradient_checkpointing)}


def child_ours(data: Path, out: Path, method: str, max_steps: int) -> dict:
    from rlhf.models import PACKAGED_SMOLLM2
    from rlhf.sft import SFTRunConfig, train_sft

    config = SFTRunConfig(
        data=str(data), out=str(out / "sft"), method=method, policy=PACKAGED_SMOLLM2, device="cpu", lora_r=LORA_R,
        lora_alpha=2 * LORA_R, batch_size=BATCH, max_length=MAX_LENGTH, learning_rate=LEARNING_RATE if method != "full" else 2e-5,
        num_epochs=1, max_steps=max_steps, save_steps=10**6, eval_batch_size=BATCH, seed=SEED,
    )
    result = train_sft(config)
    return {
        "train_s": result.metrics["timings"]["train_s"], "held_out_loss": result.metrics["held_out"]["after"]["loss"],
        "held_out_loss_before": result.metrics["held_out"]["before"]["loss"], "steps": result.steps,
        "memory": result.metrics["memory"]["measured"],
    }


def _run_child(*args: str) -> dict:
    return run_child(__file__, "bench_sft", *args)


def _child_main(argv: list[str]) -> None:
    kind, rest = argv[0], argv[1:]
    if kind == "anchor":
        result = child_anchor(Path(rest[0]), Path(rest[1]))
    else:
        result = child_ours(Path(rest[0]), Path(rest[1]), rest[2], int(rest[3]))
    print_child_result(result)


# --------------------------------------------------------------------------- the bench


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f}"


def run(quick: bool = False) -> list[BenchRow]:
    steps = int(os.environ.get("BENCH_SFT_STEPS", 2 if quick else 6))
    memory_steps = int(os.environ.get("BENCH_SFT_MEMORY_STEPS", 2))
    n_test = int(os.environ.get("BENCH_SFT_TEST", 8 if quick else 32))
    repeats = int(os.environ.get("BENCH_SFT_REPEATS", 1 if quick else 2))
    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        work = Path(tmp)
        data, train_tokens = prepare_data(work, steps * BATCH, n_test)
        # Alternate the two, best time of each: load from the other users of this machine hits both alike.
        anchors, ours_runs = [], []
        for repeat in range(repeats):
            anchors.append(_run_child("anchor", str(data), str(work / f"anchor{repeat}")))
            ours_runs.append(_run_child("ours", str(data), str(work / f"ours{repeat}"), "lora", "-1"))
        anchor, ours = min(anchors, key=lambda r: r["train_s"]), min(ours_runs, key=lambda r: r["train_s"])
        methods = ("full", "lora", "qlora") if memory_steps > 0 else ()
        memory = {method: _run_child("ours", str(data), str(work / f"mem-{method}"), method, str(memory_steps)) for method in methods}
    ours_rate, anchor_rate = train_tokens / ours["train_s"], train_tokens / anchor["train_s"]
    rows = [
        BenchRow(
            work=f"SFT, SmolLM2-135M LoRA r{LORA_R}, batch {BATCH}, len ≤ {MAX_LENGTH}, CPU fp32, {steps} steps (1 epoch)",
            ours=ours_rate,
            unit="tokens/s",
            anchor=anchor_rate,
            anchor_name="TRL SFTTrainer defaults (bf16 off)",
            ratio=throughput_ratio(ours_rate, anchor_rate),
            target="≥ 1.3x",
            note=f"{train_tokens} tokens, best of {repeats} alternated runs; anchor activation checkpointing "
            f"{anchor['gradient_checkpointing']}; peak RSS ours {ours['peak_rss_mb']:.0f} MB, anchor {anchor['peak_rss_mb']:.0f} MB "
            "(no checkpointing keeps the activations); shared 2-core machine, noisy",
        ),
        BenchRow(
            work=f"held-out loss on the reply after training ({n_test} examples; before: {ours['held_out_loss_before']:.3f})",
            ours=ours["held_out_loss"],
            unit="nats/token",
            anchor=anchor["held_out_loss"],
            anchor_name="TRL SFTTrainer",
            ratio=anchor["held_out_loss"] / ours["held_out_loss"],
            target="equal (≈ 1.00x)",
        ),
    ]
    for method, result in memory.items():
        measured = result["memory"]
        rows.append(
            BenchRow(
                work=f"peak RSS, SFT --method {method} ({memory_steps} steps, batch {BATCH})",
                ours=result["peak_rss_mb"],
                unit="MB",
                note=f"weights {_mib(measured['weights'])} MiB, gradients {_mib(measured['gradients'])} MiB, "
                f"optimiser state {_mib(measured['optimizer_state'])} MiB ({measured['trainable_parameters']:,} trainable)",
            )
        )
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2:])
    else:
        main(run)
