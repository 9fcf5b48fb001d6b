"""The import entry points: `import_file` (any supported format) and `import_records` (parsed shape-(a) records).

Both run the whole source in one write transaction: all of it is imported, or (on any error)
none of it, not even the project it would have created. A second import of the same content
adds no rows (only a new ImportRecord saying so).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from rlhf.db import run_transaction
from rlhf.hashing import canonical_json
from rlhf.importer.errors import ImportFormatError
from rlhf.importer.readers import Source, detect_format, open_source, source_hash, source_size
from rlhf.importer.shapes import PromptIn, check_name, detect_shape, normalise_responses_record, normaliser
from rlhf.importer.writer import ChunkWriter, ImportOptions, ImportSummary
from rlhf.progress import Reporter, check_stop
from rlhf.projects import ProjectValidationError, get_or_create_project_in
from rlhf.roles import SYSTEM, Actor, require_admin
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
    require_admin(actor, "import data")
    options = _options(round, pair_against_round, max_pairs_per_prompt, make_rating_tasks, as_labels, chunk_prompts)
    path = Path(path)
    fmt = detect_format(path)
    size = source_size(path)
    if size > max_bytes:
        raise ImportFormatError(f"{size:,} bytes is over the import limit of {max_bytes:,} bytes", path=str(path))
    digest = source_hash(path)

    def work(session: Session) -> ImportSummary:
        with open_source(path, fmt) as source:
            return _import_stream(
                session, _source_prompts(source), project, options, source=str(path), file_hash=lambda: digest, actor=actor, reporter=reporter, require_records=True
            )

    return run_transaction(engine, work)


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
    require_admin(actor, "import data")
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
            session, prompts(), project, options, source=source_name, file_hash=digest.hexdigest, actor=actor, reporter=reporter, require_records=False
        )

    return run_transaction(engine, work, attempts=attempts)


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


def _source_prompts(source: Source) -> Iterator[PromptIn]:
    """Validated prompts of a source, its shape detected from the header or the first record."""
    rows = iter(source.rows)
    if source.columns is not None:
        if not source.columns:
            raise ImportFormatError("empty file: no header and no records", path=source.path)
        first = None
        try:
            shape = detect_shape(source.columns)
        except ImportFormatError as exc:
            raise exc.located(path=source.path, line=1 if source.text_cells else None) from None
    else:
        first = next(rows, None)
        if first is None:
            return
        try:
            shape = detect_shape(first.data.keys())
        except ImportFormatError as exc:
            raise exc.located(path=first.path, line=first.line) from None
    normalise = normaliser(shape, text_cells=source.text_cells)
    head = [first] if first is not None else []
    for row in itertools.chain(head, rows):
        try:
            yield normalise(row.data)
        except ImportFormatError as exc:
            raise exc.located(path=row.path, line=row.line) from None


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
    prompts: Iterator[PromptIn],
    project_name: str,
    options: ImportOptions,
    *,
    source: str,
    file_hash,
    actor: Actor,
    reporter: Reporter | None,
    require_records: bool,
) -> ImportSummary:
    """Write `prompts` into the project in chunks within the caller's transaction; record the import."""
    try:
        project, created = get_or_create_project_in(session, project_name)
    except ProjectValidationError as exc:
        raise ImportFormatError(exc.message, field="project") from None
    label_user_id = _label_source_user(session, options.as_labels) if options.as_labels else None
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
    chunk: dict[str, PromptIn] = {}
    with _import_page_cache(session.connection()):
        for prompt in prompts:
            summary.records += 1
            _merge_into(chunk, prompt)
            if len(chunk) >= options.chunk_prompts:
                writer.write(chunk.values())
                chunk = {}
                _report(reporter, summary)
        if chunk:
            writer.write(chunk.values())
    if require_records and summary.records == 0:
        raise ImportFormatError("no records found", path=source)
    _report(reporter, summary)
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
def _import_page_cache(connection: Connection) -> Iterator[None]:
    """On SQLite, a larger page cache while importing, restored afterwards.

    The default 2 MB cache spills dirty index pages to the WAL long before a large import
    commits; 64 MB cut the CPU of inserting 100,000 tasks by ~30% (measured). The cap keeps
    memory bounded whatever the file size.
    """
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


def _merge_into(chunk: dict[str, PromptIn], prompt: PromptIn) -> None:
    """Add `prompt` to the chunk, merging with an earlier record of the same prompt (first metadata wins)."""
    present = chunk.get(prompt.content_hash)
    if present is None:
        chunk[prompt.content_hash] = prompt
        return
    present.responses.extend(prompt.responses)
    present.pairs.extend(prompt.pairs)


def _report(reporter: Reporter | None, summary: ImportSummary) -> None:
    if reporter is None:
        return
    reporter.progress(summary.records, None, f"{summary.prompts_added} prompts, {summary.responses_added} responses added")
    check_stop(reporter)
