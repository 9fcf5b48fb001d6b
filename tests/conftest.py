"""Shared fixtures: every test that takes `engine` runs on SQLite and on PostgreSQL.

PostgreSQL isolation: each test gets its own schema in the `test` database (search_path in
the URL), dropped afterwards, so parallel workers and sessions never see each other's rows.
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest

POSTGRES_ADMIN_URL = os.environ.get("RLHF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""Every test taking `db_url` (or `engine`) runs on both; `-m "not postgres"` leaves the server out."""


def _postgres_available() -> str | None:
    """None when the server answers, else the reason it does not."""
    from sqlalchemy import text

    from rlhf.db import make_engine

    engine = make_engine(POSTGRES_ADMIN_URL, pool_size=1)
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the answer
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc.__class__.__name__}"
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_status() -> str | None:
    return _postgres_available()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path, postgres_status):
    """A fresh, empty database URL: a SQLite file in tmp_path, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    if postgres_status is not None:
        if os.environ.get("RLHF_TESTS_ALLOW_NO_POSTGRES") == "1":
            pytest.skip(postgres_status)
        pytest.fail(postgres_status + " (start it, or set RLHF_TESTS_ALLOW_NO_POSTGRES=1)")
    from sqlalchemy import text

    from rlhf.db import make_engine

    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = make_engine(POSTGRES_ADMIN_URL, pool_size=1)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(db_url):
    """An engine on a database migrated to head (SQLite and PostgreSQL)."""
    from rlhf.db import init_database, make_engine

    eng = make_engine(db_url)
    init_database(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    """A migrated SQLite database only, for tests whose logic does not depend on the backend."""
    from rlhf.db import init_database, make_engine

    eng = make_engine(f"sqlite:///{tmp_path / 'single.db'}")
    init_database(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama causal LM + word-level tokenizer saved once per session."""
    from tiny_models import save_tiny_causal_lm

    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test reaches a model hub: an unknown id must fail fast with our error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _main_module_restored():
    """Streamlit's AppTest installs the script it ran as `sys.modules["__main__"]` and leaves it there;
    a later test in the same worker that starts a process with multiprocessing's "spawn" would make the
    child re-run that page script first. Put the worker's own `__main__` back after every test."""
    main_module = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main_module


@pytest.fixture
def one_torch_thread():
    """Tiny-model training on one torch thread (faster than two for such sizes, and kinder to parallel workers)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
