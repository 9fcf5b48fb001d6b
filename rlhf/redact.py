"""Credentials out of everything we record: URLs with a password, `password=...`, tokens and keys.

Lineage files, metrics, checkpoints, job rows (params, log lines, errors, tracebacks) and
artifact rows are read by everyone who can see a project, copied with the model and pasted
into bug reports; a database URL such as `postgresql+psycopg://rlhf:s3cret@db/rlhf` must not
reach them (issue 16, item 4). Every writer passes what it records through `redact`.

What is hidden (replaced by `***`, as SQLAlchemy's `render_as_string(hide_password=True)` does):
- the password of a URL's userinfo (`scheme://user:***@host`); the user name stays, it says
  which account without opening it;
- the value after a secret-named key in text: `password=...`, `token: ...`, `api_key=...`,
  `?password=...&` in a query string, libpq's `password=...`, `Bearer ...`;
- the value of a secret-named key in a mapping (`{"hf_token": ...}`).
Model text (samples, exported rows) is data, not a record of how we ran: it is never redacted.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

REDACTED = "***"

_SECRET_WORDS = (
    r"pass(?:word|wd)?|pwd|secret|secret[_-]?key|api[_-]?key|apikey|access[_-]?key|private[_-]?key|client[_-]?secret"
    r"|authorization|credentials?"
)
"""Names that are a secret whatever prefix they carry (`db_password`, `OPENAI_API_KEY`)."""
_CREDENTIAL_TOKEN = r"(?:access|auth|refresh|session|hf|hub|github|bearer|api)[_-]?token"
"""A token with a credential prefix, or `token` alone: `pad_token` and `eos_token` are tokenizer settings, not secrets."""

_SECRET_KEY = re.compile(rf"(?:^|[_-])(?:{_SECRET_WORDS}|{_CREDENTIAL_TOKEN})$|^token$", re.IGNORECASE)
"""A mapping key that names a secret."""

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:@/\s'\"]*):(?P<password>[^\s'\"]*)@")
"""`scheme://user:password@`: up to the last `@` before a blank or quote (an unescaped `@` in a password too)."""

_KEY_VALUE = re.compile(
    rf"(?P<key>(?<![A-Za-z0-9_-])(?:(?:[A-Za-z0-9]+[_-])*(?:{_SECRET_WORDS}|{_CREDENTIAL_TOKEN})|token))"
    r"(?P<sep>[\"']?\s*[=:]\s*[\"']?)"
    r"(?P<value>[^\s&'\",;)}\]]+)",
    re.IGNORECASE,
)
"""`key=value` / `key: value` / `"key": "value"` with a secret-named key; the value ends at a blank, `&`, quote or bracket."""

_BEARER = re.compile(r"(?P<key>\bBearer\s+)(?P<value>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)


def is_secret_key(key: Any) -> bool:
    """Whether a mapping key names a secret (`password`, `api_key`, `hf_token`, ...; not `max_new_tokens`)."""
    return isinstance(key, str) and bool(_SECRET_KEY.search(key))


def redact_text(text: str) -> str:
    """`text` with URL passwords and secret-named `key=value` values replaced by `***`."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    text = _BEARER.sub(lambda m: m["key"] + REDACTED, text)  # before `authorization: Bearer ...` takes only the word Bearer
    return _KEY_VALUE.sub(lambda m: m["key"] + m["sep"] + REDACTED, text)


def redact_url(url: Any) -> str:
    """A database (or any) URL as text without its password; SQLAlchemy renders what it can parse."""
    text = str(url)
    try:
        text = make_url(text).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        pass
    return redact_text(text)  # also a password given in the query string, which SQLAlchemy shows


def redact(value: Any) -> Any:
    """A copy of `value` (nested dicts, lists, tuples, strings) with every credential replaced by `***`.

    Other values (numbers, None, paths as strings are strings) come back unchanged; a
    secret-named key keeps an empty or None value, so "no token" still reads as such.
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            key: (REDACTED if is_secret_key(key) and item not in (None, "") else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item) for item in value)
    return value
