"""Scores and last-layer features of (prompt, response) pairs from a trained reward model, read-only.

The features are what the reward model's linear head reads (its input), captured by a forward
hook while `RewardModel.score` runs; the raw score is that head applied to them. The uncertainty
strategy refits only this last layer (rlhf.selection.ensemble), so it needs these two things
and nothing else from the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def reward_scores_and_features(model, prompts: Sequence, responses: Sequence[str], *, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores (N,) and head inputs (N, H) of each pair, in input order.

    `model`: an `rlhf.reward.scorer.RewardModel`. `score` batches longest-first with a stable
    sort; handing it the pairs already in that order makes its batches come back in our order,
    so the captured feature rows line up. The head applied to the features must give the scores
    back (checked), so a misalignment cannot pass silently.
    """
    import torch

    from rlhf.reward.scorer import score_head_module

    n = len(prompts)
    if n == 0:
        return np.zeros(0), np.zeros((0, 0))
    lengths = [len(ids) for ids in model.encode(prompts, responses)]
    order = sorted(range(n), key=lambda i: -lengths[i])
    head = score_head_module(model.model)
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0].detach().float().cpu()))
    try:
        raw = model.score([prompts[i] for i in order], [responses[i] for i in order], batch_size=batch_size, normalize=False)
    finally:
        handle.remove()
    features = torch.cat(captured)  # (N, H) in `order`
    with torch.inference_mode():
        weight = head.weight.detach().float().cpu()
        bias = head.bias.detach().float().cpu() if getattr(head, "bias", None) is not None else 0.0
        check = (features @ weight.T)[:, 0] + bias
    if not torch.allclose(check, raw, atol=1e-3, rtol=1e-3):
        raise RuntimeError("reward features do not reproduce the reward model's scores (batch order changed?)")
    inverse = np.empty(n, dtype=np.int64)
    inverse[np.asarray(order)] = np.arange(n)
    return raw.numpy()[inverse].astype(np.float64), features.numpy()[inverse].astype(np.float64)
