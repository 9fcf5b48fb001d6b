"""Accepted record shapes, detected by their keys, each normalised into one `PromptIn`.

(a) `responses`: one record per prompt with a list of responses
    `{"prompt": str | [{role, content}, ...], "category"?, "meta"?, "responses": [{"text", "model", "meta"?}]}`
(b) `rows`: one row per (prompt, response, model): `prompt`, `response` (or `text`), `model`,
    optional `category` and `meta`; any other column is a generation parameter.
(c) `preferences`: TRL preference rows `prompt`/`chosen`/`rejected`, plain strings or
    conversational (chosen/rejected are message lists whose last turn is the assistant's),
    optional `margin`, `chosen_model`, `rejected_model`, `category`.

Validation happens here, before anything is hashed or written: every string must be UTF-8
encodable (no lone surrogates) and free of NUL characters (PostgreSQL text refuses them),
texts non-empty, JSON values finite and JSON-representable. Errors carry the field; the
reader adds the file and line.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from rlhf.hashing import content_hash
from rlhf.importer.errors import ImportFormatError

SHAPE_RESPONSES = "responses"
SHAPE_ROWS = "rows"
SHAPE_PREFERENCES = "preferences"
SHAPE_PROMPTS = "prompts"

MODEL_NAME_MAX_LENGTH = 300
CATEGORY_MAX_LENGTH = 100
MAX_JSON_DEPTH = 64
UNKNOWN_MODEL = "unknown"

_SHAPES_HELP = (
    "expected (a) prompt + responses, (b) prompt + response (or text) + model, "
    "(c) prompt + chosen + rejected, or (d) prompt (+ category, meta) alone, for write tasks"
)


@dataclass
class ResponseIn:
    """A validated response: its text, provenance and content hash (of text and model)."""

    text: str
    model_name: str
    generation_params: dict | None
    meta: dict | None
    content_hash: str
    encoded_json: tuple[str | None, str | None] | None = None
    """`json.dumps` of (generation_params, meta), None for an absent one; filled by a reader
    process (`rlhf.importer.stream`) so the writer does not encode them again."""

    def __reduce__(self):
        # Rebuilt from a tuple of fields: a third cheaper to unpickle than the default (measured),
        # and a reader process sends hundreds of thousands of these.
        return (ResponseIn, (self.text, self.model_name, self.generation_params, self.meta, self.content_hash, self.encoded_json))


@dataclass
class PromptIn:
    """A validated prompt with the responses and compared pairs one record brought for it.

    `pairs` holds (chosen hash, rejected hash) for preference rows: the comparison the source
    made, stored as a label with `--as-labels`.
    """

    content_hash: str
    text: str
    messages: list[dict[str, str]] | None
    category: str | None
    meta: dict | None
    responses: list[ResponseIn] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    task_plan: tuple[list, int] | None = None
    """Its tasks as a prompt new to the project, planned ahead by a reader process
    (`rlhf.importer.pairing.plan_new_prompt_tasks`); None: the writer plans them when needed."""
    rankings: list = field(default_factory=list)
    """`rlhf.importer.ranked.RankedIn` of records that ranked their responses (stored with `--as-labels`)."""
    wants_write: bool = False
    """A prompts-only record asked for this prompt: it gets a write task even when another record of the
    file brought responses for it (the task then starts from the first of them)."""

    def __reduce__(self):
        return (
            PromptIn,
            (self.content_hash, self.text, self.messages, self.category, self.meta, self.responses, self.pairs, self.task_plan, self.rankings, self.wants_write),
        )


_json_string = json.JSONEncoder(ensure_ascii=False).encode
"""A str as the JSON literal `canonical_json` writes for it (one encoder, built once)."""


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_hash(text: str, messages: list[dict[str, str]] | None) -> str:
    """Identity of a prompt: `content_hash({"messages": messages})` for chat prompts, else
    `content_hash({"text": text})`."""
    if messages is not None:
        return content_hash({"messages": messages})
    # The canonical JSON of {"text": text}, written directly: content_hash builds a JSON
    # encoder per call, which cost more than the hashing at 100,000s of records (tested equal).
    return _sha256_text('{"text":' + _json_string(text) + "}")


def response_hash(text: str, model_name: str) -> str:
    """Identity of a response within its prompt: `content_hash({"model": model_name, "text": text})`."""
    return _sha256_text('{"model":' + _json_string(model_name) + ',"text":' + _json_string(text) + "}")


def flatten_messages(messages: list[dict[str, str]]) -> str:
    """The flat text of a chat: `role: content` turns separated by blank lines."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


# ---------------------------------------------------------------- shape detection


def detect_shape(keys: Any) -> str:
    """The shape that the record keys / table columns fit; ImportFormatError naming what is missing."""
    keys = set(keys)
    shown = ", ".join(sorted(map(str, keys))) or "none"
    if "prompt" not in keys:
        raise ImportFormatError(f"missing column; found [{shown}]; {_SHAPES_HELP}", field="prompt")
    if "responses" in keys:
        # Shape (a) keeps unknown fields in `meta`: a pair or a single response beside the list would be
        # silently stored as metadata, so a record carrying two shapes is refused.
        other = sorted(keys & {"chosen", "rejected", "response"})
        if other:
            raise ImportFormatError(
                f"carries both 'responses' (prompt + responses) and {', '.join(map(repr, other))} (another shape); "
                "one record is one shape: split it into two records",
                field=other[0],
            )
        return SHAPE_RESPONSES
    if "chosen" in keys or "rejected" in keys:
        for needed in ("chosen", "rejected"):
            if needed not in keys:
                raise ImportFormatError(f"missing column for preference rows; found [{shown}]", field=needed)
        return SHAPE_PREFERENCES
    if "response" in keys or "text" in keys or "model" in keys:
        if "response" not in keys and "text" not in keys:
            raise ImportFormatError(f"missing column for one-response-per-row data; found [{shown}]", field="response")
        if "model" not in keys:
            raise ImportFormatError(f"missing column for one-response-per-row data; found [{shown}]", field="model")
        return SHAPE_ROWS
    if keys <= _PROMPT_ONLY_KEYS:
        return SHAPE_PROMPTS
    raise ImportFormatError(f"no known shape fits the columns [{shown}]; {_SHAPES_HELP}")


def normaliser(shape: str, *, text_cells: bool = False) -> Callable[[dict], PromptIn]:
    """The function turning one record of `shape` into a PromptIn.

    `text_cells`: values come from CSV cells (all strings), so JSON-valued fields (`responses`,
    `meta`) are parsed from text and extra columns are read as numbers where they look like one.
    """
    if shape == SHAPE_RESPONSES:
        return lambda record: normalise_responses_record(record, text_cells=text_cells)
    if shape == SHAPE_ROWS:
        return lambda record: normalise_row(record, text_cells=text_cells)
    if shape == SHAPE_PREFERENCES:
        return lambda record: normalise_preference(record, text_cells=text_cells)
    if shape == SHAPE_PROMPTS:
        return lambda record: normalise_prompt_only(record, text_cells=text_cells)
    raise ValueError(f"unknown shape {shape!r}")


# ---------------------------------------------------------------- value checks


def _is_missing(value: Any) -> bool:
    """None, or a float NaN (how Parquet/pandas mark an empty optional cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


def check_string(value: Any, field: str) -> str:
    """`value` as a storable string: a str, UTF-8 encodable, without NUL characters."""
    if type(value) is not str and not isinstance(value, str):
        raise ImportFormatError(f"expected a string, got {_type_name(value)}", field=field)
    if not value.isascii():  # ASCII text (the common case) has no surrogates to find
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ImportFormatError("not valid Unicode text (lone surrogate)", field=field) from None
    if "\x00" in value:
        raise ImportFormatError("contains a NUL character", field=field)
    return value


def check_text(value: Any, field: str) -> str:
    """A non-empty (not only whitespace) storable string."""
    if value is None or (type(value) is float and math.isnan(value)):
        raise ImportFormatError("missing", field=field)
    text = check_string(value, field)
    if text.isspace() or not text:
        raise ImportFormatError("empty text", field=field)
    return text


def check_name(value: Any, field: str, max_length: int) -> str:
    """A non-empty string of at most `max_length` characters, surrounding whitespace removed."""
    name = check_text(value, field).strip()
    if len(name) > max_length:
        raise ImportFormatError(f"longer than {max_length} characters", field=field)
    return name


def optional_name(value: Any, field: str, max_length: int) -> str | None:
    if _is_missing(value) or value == "":
        return None
    return check_name(value, field, max_length)


def json_value(value: Any, field: str, depth: int = 0) -> Any:
    """`value` made JSON-storable: finite numbers, valid strings, string keys; dates become ISO text."""
    if depth > MAX_JSON_DEPTH:
        raise ImportFormatError(f"nested deeper than {MAX_JSON_DEPTH} levels", field=field)
    kind = type(value)
    # Exact-type checks first: this runs for every metadata value of every record.
    if kind is str:
        return check_string(value, field)
    if value is None or kind is bool or kind is int:
        return value
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise ImportFormatError("object keys must be strings", field=f"{field}.{key}")
            key_field = f"{field}.{key}"
            out[check_string(key, key_field)] = json_value(item, key_field, depth + 1)
        return out
    if kind is list or kind is tuple:
        return [json_value(item, f"{field}[{index}]", depth + 1) for index, item in enumerate(value)]
    if isinstance(value, (float, Decimal)):
        number = float(value)
        if not math.isfinite(number):
            raise ImportFormatError("not a finite number", field=field)
        return number
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (str, int, dict, list, tuple)):  # subclasses (e.g. a bool-like int)
        return json_value(_plain(value), field, depth)
    raise ImportFormatError(f"not a JSON value ({type(value).__name__})", field=field)


def _plain(value: Any) -> Any:
    """A subclass instance of a JSON type (an IntEnum, an OrderedDict...) as the plain type."""
    for plain in (bool, int, str, dict, list):
        if isinstance(value, plain):
            return plain(value)
    return list(value)


def parse_json_cell(value: Any, field: str) -> Any:
    """A CSV cell holding JSON (e.g. `meta`, `responses`) decoded; NaN/Infinity are refused."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ImportFormatError(f"not valid JSON ({exc.__class__.__name__}: {str(exc)[:80]})", field=field) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def optional_object(value: Any, field: str, *, text_cells: bool) -> dict | None:
    """An optional JSON object (`meta`): None when absent, else a validated dict."""
    if _is_missing(value) or (text_cells and value == ""):
        return None
    if text_cells:
        value = parse_json_cell(value, field)
    if not isinstance(value, dict):
        raise ImportFormatError(f"expected an object, got {_type_name(value)}", field=field)
    return json_value(value, field)


def cell_value(value: Any, field: str, *, text_cells: bool) -> Any:
    """An extra column's value: from CSV, numbers and booleans are recognised; else kept as is."""
    if text_cells and isinstance(value, str):
        try:
            parsed = json.loads(value, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            return check_string(value, field)
        if isinstance(parsed, (int, float, bool)):
            return json_value(parsed, field)
        return check_string(value, field)
    return json_value(value, field)


def check_messages(value: Any, field: str) -> list[dict[str, str]]:
    """A non-empty list of `{role, content}` messages (other keys dropped), roles non-empty."""
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        raise ImportFormatError("expected a non-empty list of {role, content} messages", field=field)
    messages = []
    for index, message in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(message, dict):
            raise ImportFormatError(f"expected a {{role, content}} object, got {_type_name(message)}", field=where)
        if "role" not in message or _is_missing(message.get("role")):
            raise ImportFormatError("missing", field=f"{where}.role")
        if "content" not in message or message.get("content") is None:
            raise ImportFormatError("missing", field=f"{where}.content")
        role = check_name(message["role"], f"{where}.role", 64)
        content = check_string(message["content"], f"{where}.content")
        messages.append({"role": role, "content": content})
    return messages


def prompt_fields(value: Any, field: str, *, text_cells: bool) -> tuple[str, list[dict[str, str]] | None]:
    """(flat text, messages or None) of a prompt given as text or as a chat message list."""
    if isinstance(value, (list, tuple)) and not text_cells:
        messages = check_messages(value, field)
        text = flatten_messages(messages)
        if not any(m["content"].strip() for m in messages):
            raise ImportFormatError("empty text", field=field)
        return text, messages
    if _is_missing(value):
        raise ImportFormatError("missing", field=field)
    if not isinstance(value, str):
        raise ImportFormatError(f"expected a string or a list of {{role, content}} messages, got {_type_name(value)}", field=field)
    return check_text(value, field), None


def _require(record: dict, key: str) -> Any:
    if key not in record:
        raise ImportFormatError("missing", field=key)
    return record[key]


def _prompt_in(record: dict, *, text_cells: bool, meta: dict | None) -> PromptIn:
    text, messages = prompt_fields(_require(record, "prompt"), "prompt", text_cells=text_cells)
    return PromptIn(
        content_hash=prompt_hash(text, messages),
        text=text,
        messages=messages,
        category=optional_name(record.get("category"), "category", CATEGORY_MAX_LENGTH),
        meta=meta,
    )


def _response_in(text: str, model_name: str, generation_params: dict | None, meta: dict | None) -> ResponseIn:
    return ResponseIn(
        text=text,
        model_name=model_name,
        generation_params=generation_params or None,
        meta=meta or None,
        content_hash=response_hash(text, model_name),
    )


# ---------------------------------------------------------------- the three shapes


_RESPONSES_KEYS = {"prompt", "responses", "category", "meta", "ranking", "rank"}
_RESPONSE_ITEM_KEYS = {"text", "model", "meta", "rank", "tied_with_previous"}


def normalise_responses_record(record: dict, *, text_cells: bool = False) -> PromptIn:
    """Shape (a). Unknown record keys are kept in the prompt's `meta`; unknown response keys in
    the response's `meta`; a response's `meta` becomes its `generation_params`."""
    if not isinstance(record, dict):
        raise ImportFormatError(f"expected an object, got {_type_name(record)}")
    meta = optional_object(record.get("meta"), "meta", text_cells=text_cells)
    extras = {k: v for k, v in record.items() if k not in _RESPONSES_KEYS}
    if extras:
        meta = {**json_value(extras, "record"), **(meta or {})}
    prompt = _prompt_in(record, text_cells=text_cells, meta=meta)
    responses = _require(record, "responses")
    if text_cells:
        responses = parse_json_cell(responses, "responses")
    if not isinstance(responses, (list, tuple)):
        raise ImportFormatError(f"expected a list of responses, got {_type_name(responses)}", field="responses")
    for index, item in enumerate(responses):
        where = f"responses[{index}]"
        if not isinstance(item, dict):
            raise ImportFormatError(f"expected an object with text and model, got {_type_name(item)}", field=where)
        if "text" not in item:
            raise ImportFormatError("missing", field=f"{where}.text")
        if "model" not in item:
            raise ImportFormatError("missing", field=f"{where}.model")
        text = check_text(item["text"], f"{where}.text")
        model = check_name(item["model"], f"{where}.model", MODEL_NAME_MAX_LENGTH)
        params = optional_object(item.get("meta"), f"{where}.meta", text_cells=False)
        extra = {k: v for k, v in item.items() if k not in _RESPONSE_ITEM_KEYS and not _is_missing(v)}
        prompt.responses.append(_response_in(text, model, params, json_value(extra, where) if extra else None))
    from rlhf.importer.ranked import ranked_in

    ranked = ranked_in(record, responses, prompt.responses, text_cells=text_cells)
    if ranked is not None:
        prompt.rankings.append(ranked)
    return prompt


_ROW_KEYS = {"prompt", "response", "model", "category", "meta"}


def normalise_row(record: dict, *, text_cells: bool = False) -> PromptIn:
    """Shape (b). The response is in `response` (or `text` when there is no `response`); every
    other column is a generation parameter, merged with `meta`."""
    text_key = "response" if "response" in record else "text"
    if text_key not in record:
        raise ImportFormatError("missing", field="response")
    if "model" not in record:
        raise ImportFormatError("missing", field="model")
    prompt = _prompt_in(record, text_cells=text_cells, meta=None)
    text = check_text(record[text_key], text_key)
    model = check_name(record["model"], "model", MODEL_NAME_MAX_LENGTH)
    params: dict[str, Any] = {}
    for key, value in record.items():
        if key in _ROW_KEYS or key == text_key or _is_missing(value) or (text_cells and value == ""):
            continue
        params[check_string(str(key), key)] = cell_value(value, key, text_cells=text_cells)
    meta = optional_object(record.get("meta"), "meta", text_cells=text_cells)
    params.update(meta or {})
    prompt.responses.append(_response_in(text, model, params, None))
    return prompt


_PREFERENCE_KEYS = {"prompt", "chosen", "rejected", "margin", "chosen_model", "rejected_model", "category"}


def completion_text(value: Any, field: str, *, text_cells: bool) -> str:
    """A chosen/rejected completion: a string, or a message list whose last turn is the assistant's."""
    if isinstance(value, (list, tuple)) and not text_cells:
        messages = check_messages(value, field)
        last = messages[-1]
        if last["role"] != "assistant":
            raise ImportFormatError(f"last turn must be the assistant's, got role {last['role']!r}", field=f"{field}[{len(messages) - 1}].role")
        return check_text(last["content"], f"{field}[{len(messages) - 1}].content")
    if _is_missing(value):
        raise ImportFormatError("missing", field=field)
    if not isinstance(value, str):
        raise ImportFormatError(f"expected a string or a list of messages, got {_type_name(value)}", field=field)
    return check_text(value, field)


def optional_margin(value: Any, *, text_cells: bool) -> float | None:
    if _is_missing(value) or (text_cells and value == ""):
        return None
    if text_cells:
        value = parse_json_cell(value, "margin")
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ImportFormatError(f"expected a number, got {_type_name(value)}", field="margin")
    try:
        margin = float(value)
    except OverflowError:
        raise ImportFormatError("not a finite number", field="margin") from None
    if not math.isfinite(margin):
        raise ImportFormatError("not a finite number", field="margin")
    return margin


def normalise_preference(record: dict, *, text_cells: bool = False) -> PromptIn:
    """Shape (c). Both completions become responses (model from `chosen_model`/`rejected_model`,
    else "unknown"); the pair is kept as (chosen, rejected). Extra columns go to the prompt's meta."""
    extras = {k: v for k, v in record.items() if k not in _PREFERENCE_KEYS and not _is_missing(v)}
    prompt = _prompt_in(record, text_cells=text_cells, meta=json_value(extras, "record") if extras else None)
    hashes = []
    for side in ("chosen", "rejected"):
        text = completion_text(_require(record, side), side, text_cells=text_cells)
        model = optional_name(record.get(f"{side}_model"), f"{side}_model", MODEL_NAME_MAX_LENGTH) or UNKNOWN_MODEL
        response = _response_in(text, model, None, None)
        prompt.responses.append(response)
        hashes.append(response.content_hash)
    # The margin is checked (a malformed one is bad input) but not stored: a Preference row has
    # no margin column; exports derive margins from the annotation strength.
    optional_margin(record.get("margin"), text_cells=text_cells)
    prompt.pairs.append((hashes[0], hashes[1]))
    return prompt


_PROMPT_ONLY_KEYS = {"prompt", "category", "meta"}


def normalise_prompt_only(record: dict, *, text_cells: bool = False) -> PromptIn:
    """Shape (d): a prompt with no responses, to be answered by annotators (a write task).

    A chat prompt needs a user turn (there is nothing to reply to otherwise). A later record
    that brings `responses` is read as shape (a) (a prompts file may carry replies for some
    prompts, to be edited); any other unknown field is refused, as the shape detection does.
    """
    if not isinstance(record, dict):
        raise ImportFormatError(f"expected an object, got {_type_name(record)}")
    if "responses" in record and not text_cells:
        return normalise_responses_record(record)
    for key in record:
        if key not in _PROMPT_ONLY_KEYS:
            raise ImportFormatError(f"unexpected field in a prompts-only record ({_SHAPES_HELP})", field=str(key))
    meta = optional_object(record.get("meta"), "meta", text_cells=text_cells)
    prompt = _prompt_in(record, text_cells=text_cells, meta=meta)
    if prompt.messages is not None and not any(m["role"] == "user" for m in prompt.messages):
        raise ImportFormatError("has no user turn: there is nothing for the assistant to reply to", field="prompt")
    prompt.wants_write = True
    return prompt
