"""PPO tensor functions against naive Python loops (hypothesis draws the shapes and masks)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf.ppo import core

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def batches(draw, min_rows=1, max_rows=5, max_len=7):
    """(values (B, T), prefix mask (B, T) with ≥ 1 real token per row)."""
    rows = draw(st.integers(min_rows, max_rows))
    length = draw(st.integers(1, max_len))
    lengths = [draw(st.integers(1, length)) for _ in range(rows)]
    floats = st.floats(-5, 5, allow_nan=False, width=32)
    values = torch.tensor([[draw(floats) for _ in range(length)] for _ in range(rows)], dtype=torch.float64)
    mask = torch.tensor([[t < n for t in range(length)] for n in lengths])
    return values, mask


def _masked_items(values, mask):
    return [values[i, t].item() for i in range(values.size(0)) for t in range(values.size(1)) if mask[i, t]]


# --------------------------------------------------------------------------- statistics


@SETTINGS
@given(batches())
def test_masked_mean_and_var_match_loops(batch):
    values, mask = batch
    items = _masked_items(values, mask)
    mean = sum(items) / len(items)
    assert core.masked_mean(values, mask).item() == pytest.approx(mean, abs=1e-9)
    if len(items) > 1:
        var = sum((x - mean) ** 2 for x in items) / (len(items) - 1)
        assert core.masked_var(values, mask).item() == pytest.approx(var, rel=1e-6, abs=1e-9)
    row_means = core.masked_mean(values, mask, dim=1)
    for i in range(values.size(0)):
        row = [values[i, t].item() for t in range(values.size(1)) if mask[i, t]]
        assert row_means[i].item() == pytest.approx(sum(row) / len(row), abs=1e-9)


@SETTINGS
@given(batches(min_rows=2))
def test_masked_whiten_gives_zero_mean_unit_variance_and_zeros_outside(batch):
    values, mask = batch
    items = _masked_items(values, mask)
    mean = sum(items) / len(items)
    var = sum((x - mean) ** 2 for x in items) / max(1, len(items) - 1)
    whitened = core.masked_whiten(values, mask)
    for i in range(values.size(0)):
        for t in range(values.size(1)):
            expected = (values[i, t].item() - mean) / math.sqrt(var + 1e-8) if mask[i, t] else 0.0
            assert whitened[i, t].item() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # without shifting, the original mean is added back (used to whiten rewards)
    kept = core.masked_whiten(values, mask, shift_mean=False)
    assert core.masked_mean(kept, mask).item() == pytest.approx(mean, rel=1e-5, abs=1e-6)


def test_masked_mean_of_nothing_is_zero_not_nan():
    assert core.masked_mean(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0


# --------------------------------------------------------------------------- EOS handling


@SETTINGS
@given(st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=8), min_size=1, max_size=5).filter(lambda r: len({len(x) for x in r}) == 1))
def test_first_true_and_truncation_match_loops(rows):
    eos, pad = 2, 2  # pad IS eos, as in SmolLM2
    responses = torch.tensor(rows)
    first = core.first_true_indices(responses == eos)
    out = core.truncate_after_eos(responses, eos, pad)
    for i, row in enumerate(rows):
        expected_first = next((t for t, tok in enumerate(row) if tok == eos), len(row))
        assert first[i].item() == expected_first
        has_eos = expected_first < len(row)
        length = expected_first + 1 if has_eos else len(row)
        assert out.has_eos[i].item() == has_eos
        assert out.lengths[i].item() == length
        assert out.mask[i].tolist() == [t < length for t in range(len(row))]
        assert out.tokens[i].tolist() == row[:length] + [pad] * (len(row) - length)


def test_truncation_keeps_eos_as_real_token_when_pad_is_eos():
    responses = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9]])
    out = core.truncate_after_eos(responses, eos_token_id=2, pad_token_id=2)
    assert out.lengths.tolist() == [3, 5]
    assert out.mask[0].tolist() == [True, True, True, False, False]  # the EOS is real; what follows is not
    assert out.tokens[0].tolist() == [5, 6, 2, 2, 2]
    assert out.has_eos.tolist() == [True, False]


def test_missing_eos_penalty_only_hits_unfinished_responses():
    scores = torch.tensor([1.0, 1.0])
    has_eos = torch.tensor([True, False])
    assert core.penalise_missing_eos(scores, has_eos, 0.5).tolist() == [1.0, 0.5]
    assert core.penalise_missing_eos(scores, has_eos, None).tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------- log-probs and KL


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 4), st.integers(2, 6), st.floats(0.3, 2.0), st.integers(0, 10_000))
def test_logprobs_with_temperature_match_softmax_loop(rows, length, vocab, temperature, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, length, vocab, generator=generator, dtype=torch.float64) * 3
    tokens = torch.randint(0, vocab, (rows, length), generator=generator)
    got = core.logprobs_from_logits(logits, tokens, temperature)
    entropy = core.entropy_from_logits(logits, temperature)
    for i in range(rows):
        for t in range(length):
            scaled = [x / temperature for x in logits[i, t].tolist()]
            log_z = math.log(sum(math.exp(x) for x in scaled))
            assert got[i, t].item() == pytest.approx(scaled[tokens[i, t]] - log_z, abs=1e-5)
            probs = [math.exp(x - log_z) for x in scaled]
            assert entropy[i, t].item() == pytest.approx(-sum(p * math.log(p) for p in probs if p > 0), abs=1e-5)


def test_logprobs_ignore_temperature_is_wrong():
    """The temperature changes the log-probs: leaving it out is a real bug the self-check must see."""
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    tokens = torch.tensor([[0]])
    assert not torch.allclose(core.logprobs_from_logits(logits, tokens, 0.7), core.logprobs_from_logits(logits, tokens, 1.0))


@SETTINGS
@given(batches(), batches())
def test_kl_estimators_match_formulas(a, b):
    logp, _ = a
    logq, _ = b
    if logp.shape != logq.shape:
        logq = torch.zeros_like(logp)
    estimates = core.kl_estimators(logp, logq)
    for i in range(logp.size(0)):
        for t in range(logp.size(1)):
            log_ratio = logp[i, t].item() - logq[i, t].item()
            assert estimates.k1[i, t].item() == pytest.approx(log_ratio, abs=1e-9)
            assert estimates.k3[i, t].item() == pytest.approx(math.exp(-log_ratio) - 1 + log_ratio, rel=1e-6, abs=1e-9)
            assert estimates.k3[i, t].item() >= -1e-12


# --------------------------------------------------------------------------- rewards and GAE


@SETTINGS
@given(batches(), st.floats(0.0, 0.5))
def test_score_lands_on_last_real_token(batch, kl_coef):
    kl, mask = batch
    lengths = mask.sum(1)
    scores = torch.arange(1, kl.size(0) + 1, dtype=kl.dtype)
    rewards, non_score = core.per_token_rewards(scores, kl, kl_coef, mask, lengths)
    for i in range(kl.size(0)):
        for t in range(kl.size(1)):
            expected = -kl_coef * kl[i, t].item() if mask[i, t] else 0.0
            assert non_score[i, t].item() == pytest.approx(expected, abs=1e-9)
            if t == lengths[i].item() - 1:
                expected += scores[i].item()
            assert rewards[i, t].item() == pytest.approx(expected, abs=1e-9)


def _naive_gae(rewards, values, lengths, gamma, lam):
    rows, width = len(rewards), len(rewards[0])
    adv = [[0.0] * width for _ in range(rows)]
    for i in range(rows):
        last = 0.0
        n = lengths[i]
        for t in reversed(range(n)):
            next_value = values[i][t + 1] if t + 1 < n else 0.0
            delta = rewards[i][t] + gamma * next_value - values[i][t]
            last = delta + gamma * lam * last
            adv[i][t] = last
    returns = [[adv[i][t] + values[i][t] if t < lengths[i] else 0.0 for t in range(width)] for i in range(rows)]
    return adv, returns


@SETTINGS
@given(batches(), st.floats(0.5, 1.0), st.floats(0.0, 1.0), st.integers(0, 1000))
def test_gae_matches_naive_loop_and_stops_at_episode_end(batch, gamma, lam, seed):
    rewards, mask = batch
    values = torch.randn(rewards.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    lengths = mask.sum(1).tolist()
    advantages, returns = core.compute_gae(rewards, values, mask, gamma, lam)
    expected_adv, expected_ret = _naive_gae(rewards.tolist(), values.tolist(), lengths, gamma, lam)
    for i in range(rewards.size(0)):
        for t in range(rewards.size(1)):
            assert advantages[i, t].item() == pytest.approx(expected_adv[i][t], abs=1e-9)
            assert returns[i, t].item() == pytest.approx(expected_ret[i][t], abs=1e-9)


# --------------------------------------------------------------------------- losses


@SETTINGS
@given(batches(), st.floats(0.05, 0.5), st.integers(0, 1000))
def test_policy_loss_matches_loop(a, clip, seed):
    advantages, mask = a
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(advantages.shape, generator=generator, dtype=torch.float64)
    new = old + 0.5 * torch.randn(advantages.shape, generator=generator, dtype=torch.float64)
    out = core.policy_loss(new, old, advantages, mask, clip)
    losses, clipped, sq = [], [], []
    for i in range(mask.size(0)):
        for t in range(mask.size(1)):
            if not mask[i, t]:
                continue
            r = math.exp(new[i, t].item() - old[i, t].item())
            a_ = advantages[i, t].item()
            l1, l2 = -a_ * r, -a_ * min(max(r, 1 - clip), 1 + clip)
            losses.append(max(l1, l2))
            clipped.append(1.0 if l2 > l1 else 0.0)
            sq.append((new[i, t].item() - old[i, t].item()) ** 2)
    assert out.loss.item() == pytest.approx(sum(losses) / len(losses), rel=1e-6, abs=1e-9)
    assert out.clipfrac.item() == pytest.approx(sum(clipped) / len(clipped), abs=1e-6)
    assert out.approx_kl.item() == pytest.approx(0.5 * sum(sq) / len(sq), rel=1e-6, abs=1e-12)


@SETTINGS
@given(batches(), st.floats(0.05, 0.5), st.integers(0, 1000))
def test_value_loss_matches_loop(batch, clip, seed):
    returns, mask = batch
    generator = torch.Generator().manual_seed(seed)
    old = torch.randn(returns.shape, generator=generator, dtype=torch.float64)
    new = old + torch.randn(returns.shape, generator=generator, dtype=torch.float64)
    out = core.value_loss(new, old, returns, mask, clip)
    losses, clipped = [], []
    for i in range(mask.size(0)):
        for t in range(mask.size(1)):
            if not mask[i, t]:
                continue
            v, v_old, r = new[i, t].item(), old[i, t].item(), returns[i, t].item()
            v_clip = v_old + min(max(v - v_old, -clip), clip)
            l1, l2 = (v - r) ** 2, (v_clip - r) ** 2
            losses.append(max(l1, l2))
            clipped.append(1.0 if l2 > l1 else 0.0)
    assert out.loss.item() == pytest.approx(0.5 * sum(losses) / len(losses), rel=1e-6, abs=1e-9)
    assert out.clipfrac.item() == pytest.approx(sum(clipped) / len(clipped), abs=1e-6)


def test_policy_loss_gradient_is_zero_once_clipped():
    """A positive advantage with the ratio past 1+eps gets no gradient (PPO's trust region)."""
    old = torch.zeros(1, 1, dtype=torch.float64)
    new = torch.full((1, 1), math.log(1.5), dtype=torch.float64, requires_grad=True)
    out = core.policy_loss(new, old, torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool), 0.2)
    out.loss.backward()
    assert new.grad.item() == 0.0 and out.clipfrac.item() == 1.0


# --------------------------------------------------------------------------- KL controller and positions


def test_fixed_kl_controller_never_moves():
    controller = core.KLController(0.05)
    assert controller.update(100.0, 64) == 0.05


def test_adaptive_kl_controller_follows_ziegler():
    controller = core.KLController(0.1, adaptive=True, target=6.0, horizon=10000)
    # KL far above target: the error clips at +0.2 → beta *= 1 + 0.2 * 64 / 10000
    assert controller.update(60.0, 64) == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000))
    before = controller.value
    # KL at 3 (half the target): error -0.5 clips to -0.2
    assert controller.update(3.0, 100) == pytest.approx(before * (1 - 0.2 * 100 / 10000))
    restored = core.KLController(1.0)
    restored.load_state_dict(controller.state_dict())
    assert restored == controller


def test_position_ids_count_from_each_rows_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert core.position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_policy_loss_ignores_huge_log_ratios_outside_the_mask():
    """Post-EOS padding can have wildly different log-probs; they must not turn the loss into NaN."""
    new = torch.tensor([[-1.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -200.0]])  # exp(200) overflows float32
    mask = torch.tensor([[True, False]])
    out = core.policy_loss(new, old, torch.tensor([[1.0, 0.0]]), mask, 0.2)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(new.grad).all() and new.grad[0, 1] == 0
