"""Database engines, sessions, write transactions with retry, and migrations to head.

No module-level engine: callers build one with `make_engine(url)` and pass it in.

SQLite: WAL (readers never block the writer), foreign keys on, a busy timeout, and write
transactions opened with BEGIN IMMEDIATE so two writers never both read under a shared lock
and then deadlock upgrading it. PostgreSQL: the same code through psycopg 3.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine

T = TypeVar("T")

DATABASE_URL_ENV = "RLHF_DATABASE_URL"
DATA_DIR_ENV = "RLHF_DATA_DIR"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_FOREIGN_KEYS_OFF = "rlhf_foreign_keys_off"


def data_dir(env: dict[str, str] | None = None) -> Path:
    """Where the SQLite file and artifacts live by default: `$RLHF_DATA_DIR`, else `./data`."""
    env = os.environ if env is None else env
    return Path(env.get(DATA_DIR_ENV, "data"))


def database_url(env: dict[str, str] | None = None) -> str:
    """`$RLHF_DATABASE_URL`, else a SQLite file `rlhf.db` in the data directory."""
    env = os.environ if env is None else env
    url = env.get(DATABASE_URL_ENV)
    if url:
        return url
    return f"sqlite:///{data_dir(env) / 'rlhf.db'}"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str | None = None, *, echo: bool = False, pool_size: int = 10) -> Engine:
    """An engine for `url` (default `database_url()`), configured for concurrent annotators."""
    url = url or database_url()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, echo=echo)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        # psycopg 3 is the driver we ship; plain postgresql:// would look for psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=2 * pool_size,
        pool_pre_ping=True,
    )


def _sqlite_engine(url: str, *, echo: bool) -> Engine:
    parsed = make_url(url)
    in_memory = parsed.database in (None, "", ":memory:")
    if not in_memory:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {"connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    if in_memory:
        # One shared connection, or every new connection would see an empty database.
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, echo=echo, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control from the sqlite3 module so BEGIN is ours (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        options = conn.get_execution_options()
        if options.get("sqlite_foreign_keys") is False:
            # A bulk import whose every id it read back in the same transaction (see
            # rlhf.importer.core): SQLite's per-row parent lookups cost ~17% of inserting a million
            # tasks. The pragma only takes effect outside a transaction, so it is set here, and
            # turned back on when the connection returns to the pool (_on_checkin).
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.connection.info[_FOREIGN_KEYS_OFF] = True
        mode = options.get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection, record):
        if record.info.pop(_FOREIGN_KEYS_OFF, False):
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

    return engine


@contextmanager
def session_scope(engine: Engine, *, write: bool = False, foreign_key_checks: bool = True) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    `write=True` opens the transaction with BEGIN IMMEDIATE on SQLite, taking the write lock
    up front; use it for read-then-write transactions (assignment, submit, import).
    `foreign_key_checks=False` skips the per-row foreign-key checks of this transaction only:
    for bulk writers that take every id they write from rows read in the same transaction (the
    importer). SQLite turns them off for the transaction; PostgreSQL skips them through
    `session_replication_role` where the role may set it (superusers, or roles granted SET on
    it), and checks as usual otherwise. Unique constraints are checked either way.
    """
    bind = engine
    if write and is_sqlite(engine):
        bind = engine.execution_options(sqlite_begin="IMMEDIATE", **({} if foreign_key_checks else {"sqlite_foreign_keys": False}))
    with Session(bind, expire_on_commit=False) as session:
        try:
            if not foreign_key_checks and engine.dialect.name == "postgresql":
                _skip_postgres_foreign_key_checks(session)
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _skip_postgres_foreign_key_checks(session: Session) -> None:
    """Skip PostgreSQL's foreign-key triggers until this transaction ends, if the role may.

    PostgreSQL checks each foreign key with a per-row trigger: about half the server's time of
    inserting a million tasks (measured). `SET LOCAL` ends with the transaction, so the pooled
    connection checks again afterwards.
    """
    connection = session.connection()
    allowed = connection.exec_driver_sql(
        "SELECT has_parameter_privilege('session_replication_role', 'SET') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
        if connection.dialect.server_version_info >= (15,)
        else "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).scalar()
    if allowed:
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")


_TRANSIENT_PG_CODES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available


def is_transient(exc: BaseException) -> bool:
    """True for errors that a retry of the whole transaction can cure (lock contention)."""
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower() if getattr(exc, "orig", None) is not None else str(exc).lower()
        if "database is locked" in text or "database table is locked" in text or "busy" in text:
            return True
    if isinstance(exc, DBAPIError) and getattr(exc, "orig", None) is not None:
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if code in _TRANSIENT_PG_CODES:
            return True
    return False


def run_transaction(
    engine: Engine,
    work: Callable[[Session], T],
    *,
    write: bool = True,
    attempts: int = 8,
    base_delay_s: float = 0.005,
    foreign_key_checks: bool = True,
) -> T:
    """Run `work(session)` in one transaction, retrying the whole of it on lock contention.

    `work` must be safe to run again from scratch (it sees a fresh session each attempt).
    Non-transient errors propagate at once; the last transient one propagates after `attempts`.
    """
    for attempt in range(attempts):
        try:
            with session_scope(engine, write=write, foreign_key_checks=foreign_key_checks) as session:
                return work(session)
        except DBAPIError as exc:
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            # Full jitter: spread the retries of the racing writers apart.
            time.sleep(random.uniform(0, base_delay_s * 2**attempt))
    raise AssertionError("unreachable")


def _alembic_config(engine: Engine):
    from alembic.config import Config

    migrations = Path(__file__).with_name("migrations")
    config = Config()
    config.set_main_option("script_location", str(migrations))
    # configparser treats % as interpolation: escape it (URL-encoded options contain %).
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def init_database(engine: Engine) -> str:
    """Bring the database (empty or older) to the newest migration; returns the head revision."""
    from alembic import command
    from alembic.script import ScriptDirectory

    config = _alembic_config(engine)
    # Foreign keys off on SQLite while migrating: a batch migration copies a table and drops the
    # old one, and with the keys on that DROP would cascade into every row referencing it.
    with engine.connect().execution_options(sqlite_foreign_keys=False) as connection, connection.begin():
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None for a database never initialised."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
