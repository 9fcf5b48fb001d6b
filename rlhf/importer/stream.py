"""From a source to chunks of validated prompts, in this process or in a reader process beside it.

An import is two kinds of work: reading (decoding lines, validating every field, hashing
content, planning each new prompt's tasks) and writing (looking ids up, inserting rows). Both are
Python-bound, so for a large file on a machine with more than one core the reading runs in a
second process while this one writes: a 100,000-prompt JSONL spent ~45% of its time reading
(profiled), and the two halves overlap. Small sources, one-core machines and record
iterables stay in process (a process costs ~0.7 s to start).

The reader process only reads the file: it never touches the database, so the one-transaction
guarantee is the writer's as before. It sends pickled chunks through a pipe, then "done" — or
the ImportFormatError that stopped it, which the writer raises as its own, so the transaction
rolls back. The pipe holds at most a chunk or so: the reader waits for the writer, and memory
stays bounded.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from rlhf.importer.errors import ImportFormatError
from rlhf.importer.pairing import TaskPlanning
from rlhf.importer.readers import Source, open_source
from rlhf.importer.shapes import PromptIn, detect_shape, normaliser

READER_PROCESS_MIN_BYTES = 16 << 20
"""Sources at least this large are read in a reader process (when there is a second core)."""
_FRAME_HEADER = struct.Struct("<Q")

Chunk = tuple[int, list[PromptIn]]
"""(records read, the distinct prompts they make, duplicates within the chunk merged)."""


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_reader_process(size_bytes: int) -> bool:
    """Whether a source of this size is worth a reader process here."""
    return size_bytes >= READER_PROCESS_MIN_BYTES and available_cpus() > 1


def source_prompts(source: Source) -> Iterator[PromptIn]:
    """Validated prompts of a source: a table's shape detected once from its header, a record's from its own keys.

    Records of different shapes may share a file (prompts alone for write tasks beside prompts
    with responses, say); a record that fits no shape, or two, is refused naming its line.
    """
    rows = iter(source.rows)
    table_normalise = None
    if source.columns is not None:
        if not source.columns:
            raise ImportFormatError("empty file: no header and no records", path=source.path)
        try:
            table_normalise = normaliser(detect_shape(source.columns), text_cells=source.text_cells)
        except ImportFormatError as exc:
            raise exc.located(path=source.path, line=1 if source.text_cells else None) from None
    by_shape: dict[str, Callable[[dict], PromptIn]] = {}
    for row in rows:
        try:
            normalise = table_normalise
            if normalise is None:
                shape = detect_shape(row.data.keys())
                normalise = by_shape.get(shape) or by_shape.setdefault(shape, normaliser(shape, text_cells=source.text_cells))
            prompt = normalise(row.data)
        except ImportFormatError as exc:
            raise exc.located(path=row.path, line=row.line) from None
        for ranked in prompt.rankings:  # a ranking found wrong when written still names its line
            ranked.path, ranked.line = row.path, row.line
        yield prompt


def merge_into(chunk: dict[str, PromptIn], prompt: PromptIn) -> None:
    """Add `prompt` to the chunk, merging with an earlier record of the same prompt (first metadata wins)."""
    present = chunk.get(prompt.content_hash)
    if present is None:
        chunk[prompt.content_hash] = prompt
        return
    present.responses.extend(prompt.responses)
    present.pairs.extend(prompt.pairs)
    present.rankings.extend(prompt.rankings)
    present.wants_write = present.wants_write or prompt.wants_write


def chunked(prompts: Iterable[PromptIn], chunk_prompts: int) -> Iterator[Chunk]:
    """Prompts grouped into chunks of at most `chunk_prompts` distinct prompts."""
    chunk: dict[str, PromptIn] = {}
    records = 0
    for prompt in prompts:
        records += 1
        merge_into(chunk, prompt)
        if len(chunk) >= chunk_prompts:
            yield records, list(chunk.values())
            chunk, records = {}, 0
    if records:
        yield records, list(chunk.values())


def _encoded(value) -> str | None:
    return None if value is None else json.dumps(value)


def prepare_for_writer(prompt: PromptIn, planning: TaskPlanning | None) -> None:
    """Do ahead, in the reader process, what the writer would otherwise do: encode each
    response's JSON (`encoded_json`) and, with `planning`, plan the prompt's tasks as a prompt
    new to the project (`task_plan`; the writer ignores it for a prompt it already has).

    Pure functions of the values, content hashes and seed (`rlhf.importer.pairing`), so the
    writer gets exactly what it would compute itself, only from the other process.
    """
    for response in prompt.responses:
        response.encoded_json = (_encoded(response.generation_params), _encoded(response.meta))
    if planning is not None and not prompt.pairs:
        prompt.task_plan = planning.plan(prompt.content_hash, [r.content_hash for r in prompt.responses])


def read_chunks(source: Source, chunk_prompts: int, planning: TaskPlanning | None = None, *, prepare: bool = False) -> Iterator[Chunk]:
    """Chunks of a source; with `prepare`, each prompt is also prepared for the writer (`prepare_for_writer`)."""
    for records, prompts in chunked(source_prompts(source), chunk_prompts):
        if prepare:
            for prompt in prompts:
                prepare_for_writer(prompt, planning)
        yield records, prompts


def reader_main() -> None:
    """The reader process (`python -c "...; reader_main()" PATH FORMAT CHUNK_PROMPTS PLANNING_JSON`):
    each chunk as a pickled frame on stdout, then ("done",) or the error that stopped it."""
    path, fmt, chunk_prompts = sys.argv[1], sys.argv[2], int(sys.argv[3])
    planning_fields = json.loads(sys.argv[4])
    planning = TaskPlanning(**planning_fields) if planning_fields else None
    out = sys.stdout.buffer

    def send(item) -> None:
        frame = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_FRAME_HEADER.pack(len(frame)))
        out.write(frame)

    try:
        with open_source(Path(path), fmt) as source:
            for records, prompts in read_chunks(source, chunk_prompts, planning, prepare=True):
                send(("chunk", records, prompts))
        send(("done",))
    except ImportFormatError as exc:
        send(("error", exc.message, exc.path, exc.line, exc.field))
    except BrokenPipeError:  # the writer stopped reading (it failed or was cancelled)
        return
    except BaseException as exc:  # noqa: BLE001 - reported to the writer, which raises it
        send(("crash", f"{type(exc).__name__}: {exc}"))
    out.flush()


class ReaderProcessError(RuntimeError):
    """The reader process failed in a way that is not bad input (it crashed or was killed)."""


@contextmanager
def file_chunks(
    path: Path, fmt: str, chunk_prompts: int, planning: TaskPlanning | None, *, reader_process: bool
) -> Iterator[Iterator[Chunk]]:
    """The chunks of the file at `path`, read here or by a reader process (stopped when the block ends);
    the reader process also prepares them for the writer (`prepare_for_writer`)."""
    if not reader_process:
        with open_source(path, fmt) as source:
            yield read_chunks(source, chunk_prompts)
        return
    # A plain subprocess rather than multiprocessing: it never re-imports the caller's main
    # module (scripts without a __main__ guard, Streamlit) and the pipe's buffer is the bound
    # on how far the reader runs ahead.
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-c", "from rlhf.importer.stream import reader_main; reader_main()", str(path), fmt, str(chunk_prompts),
         json.dumps(asdict(planning) if planning else None)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        yield _received(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def _read_exactly(stream, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def _received(process) -> Iterator[Chunk]:
    while True:
        header = _read_exactly(process.stdout, _FRAME_HEADER.size)
        frame = None if header is None else _read_exactly(process.stdout, _FRAME_HEADER.unpack(header)[0])
        if frame is None:
            process.wait()
            detail = process.stderr.read().decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise ReaderProcessError(f"the import's reader process stopped unexpectedly (exit code {process.returncode}) {detail[0]}".rstrip())
        item = pickle.loads(frame)
        kind = item[0]
        if kind == "chunk":
            yield item[1], item[2]
        elif kind == "done":
            return
        elif kind == "error":
            _, message, path, line, field = item
            raise ImportFormatError(message, path=path, line=line, field=field)
        else:
            raise ReaderProcessError(f"the import's reader process failed: {item[1]}")
