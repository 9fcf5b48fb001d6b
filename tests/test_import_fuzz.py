"""Fuzzing the import parsers: random bytes, random JSON, random CSV either import or raise
ImportFormatError — never another exception, and never a half-written import."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf.importer import ImportFormatError, import_file
from rlhf.importer.readers import parse_json_line
from rlhf.importer.shapes import SHAPE_PREFERENCES, SHAPE_RESPONSES, SHAPE_ROWS, PromptIn, normaliser
from test_importer import table_counts

KEYS = [
    "prompt", "responses", "text", "model", "meta", "category", "response",
    "chosen", "rejected", "margin", "chosen_model", "rejected_model", "role", "content",
]  # fmt: skip
# Any code point, surrogates included: lone surrogates must be refused before they reach a database.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | ANY_TEXT, children, max_size=5),
    max_leaves=25,
)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", ""]) | SCALARS, "content": ANY_TEXT | SCALARS})
NEAR_VALID_RESPONSES = st.fixed_dictionaries(
    {
        "prompt": ANY_TEXT | st.lists(MESSAGE, max_size=3),
        "responses": st.lists(st.fixed_dictionaries({"text": ANY_TEXT, "model": ANY_TEXT}, optional={"meta": JSON_VALUES}), max_size=4),
    },
    optional={"category": ANY_TEXT | SCALARS, "meta": JSON_VALUES},
)
NEAR_VALID_PREFERENCES = st.fixed_dictionaries(
    {
        "prompt": ANY_TEXT | st.lists(MESSAGE, max_size=3),
        "chosen": ANY_TEXT | st.lists(MESSAGE, max_size=2),
        "rejected": ANY_TEXT | st.lists(MESSAGE, max_size=2),
    },
    optional={"margin": SCALARS, "chosen_model": ANY_TEXT},
)
RECORDS = st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=6) | NEAR_VALID_RESPONSES | NEAR_VALID_PREFERENCES
DB_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def import_or_refuse(engine, name: str, content: bytes) -> None:
    """Import `content` as file `name`: success, or ImportFormatError with every table unchanged."""
    before = table_counts(engine)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_bytes(content)
        try:
            import_file(engine, path, "fuzz", as_labels="fuzz-source", max_pairs_per_prompt=2)
        except ImportFormatError:
            assert table_counts(engine) == before


def jsonl_bytes(records: list) -> bytes:
    # allow_nan: NaN / Infinity tokens are part of what the parser must refuse.
    return "".join(json.dumps(r, allow_nan=True) + "\n" for r in records).encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------- parsers alone (fast, many examples)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_json_line_parser_returns_an_object_or_refuses(raw):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return  # the reader refuses undecodable lines before parsing
    try:
        assert isinstance(parse_json_line(text), dict)
    except ImportFormatError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([SHAPE_RESPONSES, SHAPE_ROWS, SHAPE_PREFERENCES]), RECORDS, st.booleans())
def test_normalisers_return_a_prompt_or_refuse(shape, record, text_cells):
    try:
        prompt = normaliser(shape, text_cells=text_cells)(record)
    except ImportFormatError:
        return
    assert isinstance(prompt, PromptIn) and prompt.text.strip()
    for text in [prompt.text, *(r.text for r in prompt.responses), *(r.model_name for r in prompt.responses)]:
        text.encode("utf-8")  # storable: no lone surrogates
        assert "\x00" not in text


# ---------------------------------------------------------------- whole imports into a database


@DB_SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_as_jsonl(sqlite_engine, content):
    import_or_refuse(sqlite_engine, "random.jsonl", content)


@DB_SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_as_csv_and_parquet(sqlite_engine, content):
    import_or_refuse(sqlite_engine, "random.csv", content)
    import_or_refuse(sqlite_engine, "random.parquet", content)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(RECORDS, min_size=1, max_size=4))
def test_random_json_records(engine, records):
    import_or_refuse(engine, "records.jsonl", jsonl_bytes(records))


CSV_HEADERS = st.lists(st.sampled_from(["prompt", "response", "text", "model", "category", "meta", "temperature", "chosen", "rejected", "margin", ""]), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(CSV_HEADERS, st.lists(st.lists(ANY_TEXT, min_size=0, max_size=7), max_size=4))
def test_random_csv(engine, header, cells):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(cells)
    import_or_refuse(engine, "table.csv", buffer.getvalue().encode("utf-8", "surrogatepass"))



# Any Unicode text a person could type: no lone surrogates, no NUL, not blank.
VALID_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=12).filter(str.strip)
VALID_RECORDS = st.fixed_dictionaries(
    {
        "prompt": VALID_TEXT | st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user"]), "content": VALID_TEXT}), min_size=1, max_size=3),
        "responses": st.lists(st.fixed_dictionaries({"text": VALID_TEXT, "model": st.sampled_from(["a", "b", "c"])}), max_size=5),
    },
    optional={"category": VALID_TEXT, "meta": st.dictionaries(VALID_TEXT, st.integers() | VALID_TEXT, max_size=3)},
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(VALID_RECORDS, min_size=1, max_size=5))
def test_valid_records_always_import_and_reimport_adds_nothing(engine, records):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "valid.jsonl"
        path.write_bytes(jsonl_bytes(records))
        import_file(engine, path, "valid", max_pairs_per_prompt=3)
        before = table_counts(engine)
        again = import_file(engine, path, "valid", max_pairs_per_prompt=3)
    assert again.rows_added == 0
    after = table_counts(engine)
    assert after.pop("importrecord") == before.pop("importrecord") + 1 and after == before


@settings(max_examples=300, deadline=None)
@given(VALID_TEXT | ANY_TEXT.filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)), VALID_TEXT)
def test_fast_hashes_equal_content_hash(text, model):
    from rlhf.hashing import content_hash
    from rlhf.importer.shapes import prompt_hash, response_hash

    assert prompt_hash(text, None) == content_hash({"text": text})
    assert response_hash(text, model) == content_hash({"model": model, "text": text})
