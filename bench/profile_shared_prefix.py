"""Where a batch of judge prompts spends its time in shared-prefix generation (issue 19): segments, suffixes, decode steps.

    .venv/bin/python bench/profile_shared_prefix.py [--rows 16] [--new-tokens 24] [--variants flat,segments] [--threads N]

The rows are the sample project's first pairs in both orders, as `rlhf serve` batches 16
concurrent judge requests; the packaged SmolLM2-135M on the CPU. The batch's common prefix is in
the prefix cache beforehand (the server's steady state). Each model forward is timed and named by
its input: a batch of group segments, the rows' suffixes, or a decode step (one column). `flat`
prefills every row's whole suffix; `segments` prefills each group's shared segment once first.
Run it under `flock /tmp/bench.lock` on the shared machine.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT  # noqa: F401 - puts the repo on sys.path

MODEL = "smollm2-135m-instruct"


def judge_sequences(rows: int) -> list[list[int]]:
    """Token ids of the first `rows` judge prompts (pairs in task order, both orders) of the sample project."""
    from rlhf.db import init_database, make_engine, session_scope
    from rlhf.judge.run import _pending, _requests
    from rlhf.judge.templates import JudgeTemplates
    from rlhf.projects import find_project
    from rlhf.seed import seed_sample_project

    with tempfile.TemporaryDirectory(prefix="profile-prefix-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'judge.db'}")
        init_database(engine)
        seed_sample_project(engine)
        with session_scope(engine) as session:
            project = find_project(session, "sample")
            project_id, guidelines = int(project.id), project.guidelines or ""
        tasks = _pending(engine, project_id, -1, ("pairwise",), (rows + 1) // 2)
        engine.dispose()
    return [list(r.messages) for task in tasks for r in _requests(task, JudgeTemplates(), guidelines, [])][:rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--variants", default="flat,segments")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from rlhf.generate import encode_prompt, load_model_for_generation, stop_token_ids
    from rlhf.judge.shared_prefix import PrefixCache, common_prefix_length, greedy_shared_prefix, plan_segments

    model, tokenizer, _ = load_model_for_generation(MODEL, device="cpu")
    model.eval()
    sequences = [encode_prompt(tokenizer, chat) for chat in judge_sequences(args.rows)]
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    prefix_len = min(common_prefix_length(sequences), min(len(s) for s in sequences) - 1)
    plan = plan_segments(sequences, prefix_len)
    print(f"{len(sequences)} rows of {min(map(len, sequences))}-{max(map(len, sequences))} tokens, prefix {prefix_len}; torch threads "
          f"{torch.get_num_threads()}; plan: {len(plan.cuts)} groups × {plan.segment_width(prefix_len)} segment columns + "
          f"{len(sequences)} rows × {plan.suffix_width([len(s) for s in sequences])} suffix columns "
          f"(flat: {len(sequences)} × {max(len(s) for s in sequences) - prefix_len})", flush=True)

    forward, calls = model.forward, []

    @functools.wraps(forward)  # the generator reads the cache argument's name from the signature
    def timed(*a, **kw):
        started = time.perf_counter()
        out = forward(*a, **kw)
        calls.append((tuple(kw["input_ids"].shape), time.perf_counter() - started))
        return out

    model.forward = timed
    outputs = {}
    for variant in args.variants.split(","):
        cache = PrefixCache()
        cache.prefix_layers(model, sequences[0][:prefix_len])
        calls.clear()
        started = time.perf_counter()
        outputs[variant] = greedy_shared_prefix(model, sequences, max_new_tokens=args.new_tokens, stop_ids=stops, pad_id=pad_id,
                                                prefix_cache=cache, segments=variant == "segments")
        total = time.perf_counter() - started
        prefill = [(shape, seconds) for shape, seconds in calls if shape[1] > 1]
        decode = [seconds for shape, seconds in calls if shape[1] == 1]
        print(f"[{variant}] {total:.2f}s: prefill " + ", ".join(f"{b}×{w} columns {s:.2f}s" for (b, w), s in prefill)
              + f"; decode {len(decode)} steps {sum(decode):.2f}s ({sum(decode) / max(len(decode), 1) * 1000:.0f} ms a step, rows "
              + f"{[shape[0] for shape, _ in calls if shape[1] == 1][-1:]} at the end); other {total - sum(s for _, s in calls):.2f}s; "
              + f"new tokens {sorted(len(o) for o in outputs[variant])}", flush=True)
    names = list(outputs)
    print("identical tokens across variants:", all(outputs[n] == outputs[names[0]] for n in names))


if __name__ == "__main__":
    main()
