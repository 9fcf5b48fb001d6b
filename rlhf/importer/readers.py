"""File formats read as a stream of rows: JSON lines, CSV, Parquet, Arrow, and `datasets` directories.

Memory does not grow with file size: JSON lines are read line by line, CSV through the csv
module, Parquet with `iter_batches`, Arrow files (alone or inside a directory written by
`datasets.Dataset.save_to_disk`) record batch by record batch from a plain file handle (not a
memory map, whose touched pages would count toward resident memory). Every row comes with its
place (`path`, 1-based `line` or row) so errors can name it.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.hashing import content_hash, file_sha256
from rlhf.importer.errors import ImportFormatError

FORMAT_JSONL = "jsonl"
FORMAT_CSV = "csv"
FORMAT_PARQUET = "parquet"
FORMAT_ARROW = "arrow"
FORMAT_DATASETS = "datasets"

SUFFIX_FORMATS = {
    ".jsonl": FORMAT_JSONL,
    ".json": FORMAT_JSONL,
    ".ndjson": FORMAT_JSONL,
    ".csv": FORMAT_CSV,
    ".parquet": FORMAT_PARQUET,
    ".pq": FORMAT_PARQUET,
    ".arrow": FORMAT_ARROW,
}
SUPPORTED = "JSON lines (.jsonl, .json), CSV (.csv), Parquet (.parquet), Arrow (.arrow), or a `datasets` directory (save_to_disk)"
BATCH_ROWS = 1024
CSV_FIELD_LIMIT = 2**31 - 1
"""The csv module refuses cells over 128 KiB by default; long responses exceed that."""


@dataclass
class SourceRow:
    """One record and where it came from."""

    path: str
    line: int
    data: dict


@dataclass
class Source:
    """An opened source: its format, its columns when the format has a header, its rows.

    `text_cells` is True for CSV, whose cells are all strings.
    """

    path: str
    format: str
    columns: list[str] | None
    text_cells: bool
    rows: Iterator[SourceRow]


def detect_format(path: Path) -> str:
    """The format of `path` from its suffix, or `datasets` for a directory written by save_to_disk."""
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return FORMAT_DATASETS
        raise ImportFormatError(f"a directory that is not a `datasets` directory (no state.json or dataset_dict.json); supported: {SUPPORTED}", path=str(path))
    if not path.exists():
        raise ImportFormatError("no such file", path=str(path))
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImportFormatError(f"unsupported format {path.suffix or '(no suffix)'!r}; supported: {SUPPORTED}", path=str(path))
    return fmt


def source_size(path: Path) -> int:
    """Bytes of a file, or of every file under a directory."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def source_hash(path: Path) -> str:
    """SHA-256 of a file's bytes; for a directory, a hash over (relative path, file hash) pairs."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return content_hash([[str(p.relative_to(path)), file_sha256(p)] for p in files])
    return file_sha256(path)


@contextmanager
def open_source(path: Path, fmt: str | None = None) -> Iterator[Source]:
    """Open `path` for streaming; files are closed when the block ends."""
    fmt = fmt or detect_format(path)
    label = str(path)
    with ExitStack() as stack:
        if fmt == FORMAT_JSONL:
            yield Source(label, fmt, None, False, _jsonl_rows(path, label))
        elif fmt == FORMAT_CSV:
            handle = stack.enter_context(open(path, newline="", encoding="utf-8-sig"))
            columns, rows = _csv_rows(handle, label)
            yield Source(label, fmt, columns, True, rows)
        elif fmt == FORMAT_PARQUET:
            columns, rows = _parquet_rows(path, label, stack)
            yield Source(label, fmt, columns, False, rows)
        elif fmt == FORMAT_ARROW:
            columns, rows = _arrow_file_rows([path], label, stack)
            yield Source(label, fmt, columns, False, rows)
        elif fmt == FORMAT_DATASETS:
            columns, rows = _datasets_rows(path, stack)
            yield Source(label, fmt, columns, False, rows)
        else:
            raise ImportFormatError(f"unsupported format {fmt!r}; supported: {SUPPORTED}", path=label)


# ---------------------------------------------------------------- JSON lines


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_line(text: str) -> dict:
    """One JSON-lines record: a JSON object (NaN and Infinity refused). ImportFormatError otherwise.

    A malformed line is reported at its column within the line: the line's own terminator is
    left out before parsing, else a line cut short failed at the newline, which `json` counts
    as column 1 of a second line (issue 16, item 13).
    """
    text = text.rstrip("\r\n")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        hint = "; a JSON array file is not supported, write one object per line" if text.lstrip().startswith("[") else ""
        if exc.pos >= len(text) and text.strip():
            hint += "; the line ends there (cut off?)"
        raise ImportFormatError(f"malformed JSON: {exc.msg} (column {exc.colno}){hint}") from None
    except RecursionError:
        raise ImportFormatError("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # NaN / Infinity, integers with too many digits
        raise ImportFormatError(f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        kind = "an array; write one object per line" if isinstance(value, list) else type(value).__name__
        raise ImportFormatError(f"expected a JSON object, got {kind}")
    return value


def _jsonl_rows(path: Path, label: str) -> Iterator[SourceRow]:
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ImportFormatError(f"not valid UTF-8 (byte {exc.start + 1})", path=label, line=line_no) from None
            if not text.strip():
                continue
            try:
                record = parse_json_line(text)
            except ImportFormatError as exc:
                raise exc.located(path=label, line=line_no) from None
            yield SourceRow(label, line_no, record)


# ---------------------------------------------------------------- CSV


def _csv_rows(handle, label: str) -> tuple[list[str], Iterator[SourceRow]]:
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.reader(handle)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ImportFormatError(f"malformed CSV header: {exc}", path=label, line=1) from None
    if header is None:
        return [], iter(())
    columns = [name.strip() for name in header]
    for index, name in enumerate(columns):
        if not name:
            raise ImportFormatError(f"column {index + 1} of the header has no name", path=label, line=1)
        if "\x00" in name:
            raise ImportFormatError(f"column {index + 1} of the header contains a NUL character", path=label, line=1)
        if columns.index(name) != index:
            raise ImportFormatError(f"column {name!r} appears twice in the header", path=label, line=1)

    def rows() -> Iterator[SourceRow]:
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise ImportFormatError(f"malformed CSV: {exc}", path=label, line=reader.line_num + 1) from None
            if not cells:  # a blank line
                continue
            if len(cells) != len(columns):
                raise ImportFormatError(
                    f"{len(cells)} cells, but the header has {len(columns)} columns", path=label, line=reader.line_num
                )
            yield SourceRow(label, reader.line_num, dict(zip(columns, cells)))

    return columns, rows()


# ---------------------------------------------------------------- Parquet and Arrow


def _arrow_errors():
    import pyarrow as pa

    return (pa.ArrowException, OSError, ValueError)


def _parquet_rows(path: Path, label: str, stack: ExitStack) -> tuple[list[str], Iterator[SourceRow]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(str(path))
    except _arrow_errors() as exc:
        raise ImportFormatError(f"not a readable Parquet file: {exc}", path=label) from None
    stack.callback(parquet.close)
    columns = list(parquet.schema_arrow.names)
    return columns, _numbered_rows([parquet.iter_batches(batch_size=BATCH_ROWS)], label, "Parquet")


def _numbered_rows(batch_streams, label: str, what: str) -> Iterator[SourceRow]:
    """Rows of record batches from one or more streams, numbered from 1 across all of them;
    a read error becomes an ImportFormatError at the row where it happened."""
    index = 0
    for batches in batch_streams:
        while True:
            try:
                records = next(batches).to_pylist()
            except StopIteration:
                break
            except _arrow_errors() as exc:
                raise ImportFormatError(f"unreadable {what} data: {exc}", path=label, line=index + 1) from None
            for record in records:
                index += 1
                yield SourceRow(label, index, record)


def _open_arrow(path: Path, label: str, stack: ExitStack):
    """A record batch iterator over an Arrow IPC stream (what `datasets` writes) or IPC file."""
    import pyarrow as pa

    try:
        handle = stack.enter_context(pa.OSFile(str(path), "rb"))
        try:
            return pa.ipc.open_stream(handle)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(str(path))
            return (reader.get_batch(i) for i in range(reader.num_record_batches))
    except _arrow_errors() as exc:
        raise ImportFormatError(f"not a readable Arrow file: {exc}", path=label) from None


def _arrow_schema_names(path: Path, label: str) -> list[str]:
    import pyarrow as pa

    try:
        with pa.OSFile(str(path), "rb") as handle:
            try:
                return list(pa.ipc.open_stream(handle).schema.names)
            except pa.ArrowInvalid:
                return list(pa.ipc.open_file(str(path)).schema.names)
    except _arrow_errors() as exc:
        raise ImportFormatError(f"not a readable Arrow file: {exc}", path=label) from None


def _arrow_file_rows(paths: list[Path], label: str, stack: ExitStack) -> tuple[list[str], Iterator[SourceRow]]:
    columns = _arrow_schema_names(paths[0], label) if paths else []
    batch_streams = (iter(_open_arrow(path, label, stack)) for path in paths)  # opened one by one
    return columns, _numbered_rows(batch_streams, label, "Arrow")


def _read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImportFormatError(f"unreadable `datasets` metadata: {exc}", path=str(path)) from None


def _dataset_arrow_files(directory: Path) -> list[Path]:
    """The arrow shards of one saved Dataset, in order, from its state.json."""
    state = _read_json_file(directory / "state.json")
    files = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("filename"), str) for f in files):
        raise ImportFormatError("state.json lists no `_data_files`", path=str(directory / "state.json"))
    paths = []
    for entry in files:
        shard = (directory / entry["filename"]).resolve()
        if directory.resolve() not in shard.parents or not shard.is_file():
            raise ImportFormatError(f"data file {entry['filename']!r} is missing", path=str(directory))
        paths.append(shard)
    return paths


def _datasets_rows(path: Path, stack: ExitStack) -> tuple[list[str], Iterator[SourceRow]]:
    """Rows of a saved Dataset, or of every split of a saved DatasetDict in its listed order."""
    if (path / "dataset_dict.json").is_file():
        info = _read_json_file(path / "dataset_dict.json")
        splits = info.get("splits") if isinstance(info, dict) else None
        if not isinstance(splits, list) or not splits or not all(isinstance(s, str) and s and os.sep not in s for s in splits):
            raise ImportFormatError("dataset_dict.json lists no splits", path=str(path / "dataset_dict.json"))
        parts = [(f"{path}/{split}", _dataset_arrow_files(path / split)) for split in splits]
    else:
        parts = [(str(path), _dataset_arrow_files(path))]
    columns: list[str] | None = None
    iterators = []
    for label, files in parts:
        split_columns, rows = _arrow_file_rows(files, label, stack)
        columns = split_columns if columns is None else columns
        iterators.append(rows)

    def rows() -> Iterator[SourceRow]:
        for iterator in iterators:
            yield from iterator

    return columns or [], rows()
