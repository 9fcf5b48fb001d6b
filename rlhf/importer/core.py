"""The import entry points: `import_file` (any supported format) and `import_records` (parsed shape-(a) records).

Both run the whole source in one write transaction: all of it is imported, or (on any error)
none of it, not even the project it would have created. A second import of the same content
adds no rows (only a new ImportRecord saying so).

That transaction skips the per-row foreign-key checks (`rlhf.db.session_scope`): the writer
takes every id it writes from rows it created or read back in the same transaction, so the
checks cannot fail, and they were about half the database's work of inserting tasks. SQLite
always skips them; PostgreSQL where the role may set `session_replication_role` (a superuser,
or `GRANT SET ON PARAMETER session_replication_role`), and checks them otherwise (tested both
ways: the same writer passes every check).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from rlhf.db import run_transaction
from rlhf.hashing import canonical_json
from rlhf.importer.errors import ImportFormatError
from rlhf.importer.readers import detect_format, source_hash, source_size
from rlhf.importer.shapes import PromptIn, check_name, normalise_responses_record
from rlhf.importer.pairing import TaskPlanning
from rlhf.importer.stream import Chunk, chunked, file_chunks, use_reader_process
from rlhf.importer.writer import ChunkWriter, ImportOptions, ImportSummary
from rlhf.progress import Reporter, check_stop
from rlhf.projects import ProjectValidationError, get_or_create_project_in
from rlhf.roles import SYSTEM, Actor, check_admin
from rlhf.schema import ImportRecord, User, utcnow

DEFAULT_MAX_BYTES = 1 << 30
"""1 GiB: the default upper bound on an imported file (the upload page passes a smaller one)."""
SOURCE_MAX_LENGTH = 1000
USERNAME_MAX_LENGTH = 150
RETRY_ATTEMPTS = 8
SQLITE_IMPORT_CACHE_KIB = 64 * 1024


def import_file(
    engine: Engine,
    path: str | Path,
    project: str,
    *,
    as_labels: str | None = None,
    round: int = 0,
    pair_against_round: int | None = None,
    max_pairs_per_prompt: int = 6,
    make_rating_tasks: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    actor: Actor = SYSTEM,
    reporter: Reporter | None = None,
    chunk_prompts: int | None = None,
) -> ImportSummary:
    """Import a JSONL / CSV / Parquet / Arrow file or a `datasets` directory into `project`
    (created if missing), streaming, in one transaction.

    The shape is detected from the keys or columns (see `rlhf.importer.shapes`). With
    `as_labels=SOURCE`, preference rows are also stored as labels from the external user SOURCE.
    Raises ImportFormatError (path, line, field) for bad input, PermissionDenied for non-admins,
    Cancelled when `reporter` asks to stop; in each case nothing is written.
    """
    options = _options(round, pair_against_round, max_pairs_per_prompt, make_rating_tasks, as_labels, chunk_prompts)
    path = Path(path)
    fmt = detect_format(path)
    size = source_size(path)
    if size > max_bytes:
        raise ImportFormatError(f"{size:,} bytes is over the import limit of {max_bytes:,} bytes", path=str(path))
    digest = source_hash(path)

    reader_process = use_reader_process(size)

    def work(session: Session) -> ImportSummary:
        with ExitStack() as stack:

            def chunks_for(seed: int) -> Iterator[Chunk]:
                planning = None
                if options.pair_against_round is None:
                    planning = TaskPlanning(seed, options.round, options.max_pairs_per_prompt, options.make_rating_tasks)
                return stack.enter_context(file_chunks(path, fmt, options.chunk_prompts, planning, reader_process=reader_process))

            return _import_stream(
                session, chunks_for, project, options, source=str(path), file_hash=lambda: digest, actor=actor, reporter=reporter, require_records=True
            )

    return run_transaction(engine, work, foreign_key_checks=False)


def import_records(
    engine: Engine,
    records: Iterable[dict],
    project: str,
    *,
    round: int = 0,
    pair_against_round: int | None = None,
    max_pairs_per_prompt: int = 6,
    make_rating_tasks: bool = True,
    actor: Actor = SYSTEM,
    source_name: str = "<records>",
    reporter: Reporter | None = None,
    chunk_prompts: int | None = None,
) -> ImportSummary:
    """Import already-parsed shape-(a) records (`{"prompt", "responses": [{"text", "model", "meta"?}], ...}`).

    Used by generation rounds: `round=N, pair_against_round=N-1` pairs each prompt's new
    responses with its round N-1 responses. Errors name `source_name` and the record's 1-based
    index. A list or tuple is retried on lock contention; another iterable is consumed once.
    """
    options = _options(round, pair_against_round, max_pairs_per_prompt, make_rating_tasks, None, chunk_prompts)
    attempts = RETRY_ATTEMPTS if isinstance(records, (list, tuple)) else 1

    def work(session: Session) -> ImportSummary:
        digest = hashlib.sha256()

        def prompts() -> Iterator[PromptIn]:
            for index, record in enumerate(records, 1):
                try:
                    prompt = normalise_responses_record(record)
                except ImportFormatError as exc:
                    raise exc.located(path=source_name, line=index) from None
                digest.update(canonical_json(record).encode("utf-8") + b"\n")
                yield prompt

        return _import_stream(
            session, lambda seed: chunked(prompts(), options.chunk_prompts), project, options, source=source_name, file_hash=digest.hexdigest, actor=actor, reporter=reporter, require_records=False
        )

    return run_transaction(engine, work, attempts=attempts, foreign_key_checks=False)


def _options(round, pair_against_round, max_pairs_per_prompt, make_rating_tasks, as_labels, chunk_prompts) -> ImportOptions:
    options = ImportOptions(
        round=round,
        pair_against_round=pair_against_round,
        max_pairs_per_prompt=max_pairs_per_prompt,
        make_rating_tasks=bool(make_rating_tasks),
        as_labels=None if as_labels is None else check_name(as_labels, "as_labels", USERNAME_MAX_LENGTH),
    )
    if chunk_prompts is not None:
        options.chunk_prompts = chunk_prompts
    options.validate()
    return options


def _collect_project_kinds(options: ImportOptions, task_kinds: list[str] | None) -> None:
    """Make only the tasks the project collects (`Project.task_kinds`: rate, compare, write).

    Labelled pairs (`--as-labels`) still get their pairwise task: the label needs one.
    """
    kinds = set(task_kinds or ("rate", "compare"))
    if "rate" not in kinds:
        options.make_rating_tasks = False
    if "compare" not in kinds:
        options.max_pairs_per_prompt = 0
    options.make_write_tasks = "write" in kinds


def _label_source_user(session: Session, username: str) -> int:
    """The id of the external user `username` (created if missing); a human account is refused."""
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        user = User(username=username, role="external", password_hash=None)
        session.add(user)
        session.flush()
    elif user.role != "external":
        raise ImportFormatError(
            f"user {username!r} exists with role {user.role!r}; labels can only come from an external user", field="as_labels"
        )
    return int(user.id)


def _import_stream(
    session: Session,
    chunks_for: Callable[[int], Iterable[Chunk]],
    project_name: str,
    options: ImportOptions,
    *,
    source: str,
    file_hash,
    actor: Actor,
    reporter: Reporter | None,
    require_records: bool,
) -> ImportSummary:
    """Write the chunks `chunks_for(project seed)` gives into the project within the caller's transaction; record the import."""
    # Checked here, in the import's own transaction, so both entry points re-read the caller's role.
    check_admin(session, actor, "import data")
    try:
        project, created = get_or_create_project_in(session, project_name)
    except ProjectValidationError as exc:
        raise ImportFormatError(exc.message, field="project") from None
    label_user_id = _label_source_user(session, options.as_labels) if options.as_labels else None
    _collect_project_kinds(options, project.task_kinds)
    if project.rank_k_min is not None and project.rank_k_max is not None:
        options.rank_range = (int(project.rank_k_min), int(project.rank_k_max))  # the project collects rankings
    summary = ImportSummary(project=project.name, project_id=int(project.id), source=source, project_created=created)
    writer = ChunkWriter(
        session.connection(),
        project_id=int(project.id),
        project_seed=int(project.seed),
        options=options,
        label_user_id=label_user_id,
        summary=summary,
        now=utcnow(),
    )
    with _import_settings(session.connection()):
        for records, prompts in chunks_for(int(project.seed)):
            summary.records += records
            writer.write(prompts)
            _report(reporter, summary)
    if require_records and summary.records == 0:
        raise ImportFormatError("no records found", path=source)
    if summary.records == 0:
        _report(reporter, summary)  # an empty record list still reports (and may be cancelled)
    summary.file_hash = file_hash()
    record = ImportRecord(
        project_id=int(project.id),
        source=source[-SOURCE_MAX_LENGTH:],
        file_hash=summary.file_hash,
        counts=summary.counts(),
        created_by=getattr(actor, "id", None),
    )
    session.add(record)
    session.flush()
    summary.import_id = record.id
    return summary


@contextmanager
def _import_settings(connection: Connection) -> Iterator[None]:
    """Connection settings for a bulk import, restored afterwards.

    SQLite: a larger page cache. The default 2 MB cache spills dirty index pages to the WAL
    long before a large import commits; 64 MB cut the CPU of inserting 100,000 tasks by ~30%
    (measured). The cap keeps memory bounded whatever the file size.

    PostgreSQL: no server-side prepared statements. psycopg prepares a query after its fifth
    run, and the generic plan of the id lookups (`content_hash IN (...)` over rows this very
    transaction inserted, which the statistics do not know) made each lookup ~80x slower:
    32 s of a 40,000-prompt import instead of 0.4 s (measured).
    """
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        previous = driver.prepare_threshold
        driver.prepare_threshold = None
        try:
            yield
        finally:
            driver.prepare_threshold = previous
        return
    if connection.dialect.name != "sqlite":
        yield
        return
    previous = connection.exec_driver_sql("PRAGMA cache_size").scalar()
    connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        try:
            connection.exec_driver_sql(f"PRAGMA cache_size={int(previous)}")
        except DBAPIError:  # a broken connection: never hide the error that broke it
            pass


def _report(reporter: Reporter | None, summary: ImportSummary) -> None:
    if reporter is None:
        return
    reporter.progress(summary.records, None, f"{summary.prompts_added} prompts, {summary.responses_added} responses added")
    check_stop(reporter)
