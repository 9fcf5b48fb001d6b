"""Writing validated prompts into a project: Core bulk inserts in chunks, inside one transaction.

Each chunk (a few thousand prompts) goes through the same numbered steps:
1. prompts: look up the chunk's hashes, insert the new ones (ON CONFLICT DO NOTHING), read ids back;
2. responses: the same, per prompt;
3. tasks: one rating task per response; pairwise tasks chosen per prompt (seeded, capped);
   labelled pairs (`--as-labels`) always get their task;
4. labels: one Preference per labelled pair from the external source user.

Idempotence: every row is unique by content hash within its parent, so running an import
again finds everything present and inserts nothing. The caller owns the transaction, so an
error anywhere leaves the database as it was.

Speed: rows go straight to the DBAPI as tuples (SQLite: executemany; PostgreSQL: one
`unnest` statement of column arrays per chunk), with the column types' conversions applied by
hand (JSON once per value, the timestamp once per import), because SQLAlchemy's per-row
parameter processing cost more than the database's own work (profiled: ~40% of an import).
"""

from __future__ import annotations

import json

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import JSON, Table, select
from sqlalchemy.engine import Connection

from rlhf.importer.errors import ImportFormatError
from rlhf.importer.pairing import (
    TaskPlanning,
    cross_pairs,
    orient_pair,
    pair_rng_key,
    pairwise_task_hash,
    rating_task_hash,
    select_pairs,
    task_draw,
    within_pairs,
    write_task_hash,
)
from rlhf.importer.shapes import PromptIn, ResponseIn
from rlhf.schema import Preference, Prompt, Response, Task

PROMPT_T: Table = Prompt.__table__  # type: ignore[attr-defined]
RESPONSE_T: Table = Response.__table__  # type: ignore[attr-defined]
TASK_T: Table = Task.__table__  # type: ignore[attr-defined]
PREFERENCE_T: Table = Preference.__table__  # type: ignore[attr-defined]

PROMPT_COLUMNS = ("project_id", "content_hash", "text", "messages", "category", "meta", "created_at")
RESPONSE_COLUMNS = ("prompt_id", "content_hash", "text", "model_name", "generation_params", "round", "meta", "created_at")
TASK_COLUMNS = (
    "project_id", "kind", "prompt_id", "response_a_id", "response_b_id", "content_hash",
    "shuffle_key", "annotation_count", "target_overlap", "is_gold", "gold_answer", "created_at",
)  # fmt: skip
PREFERENCE_COLUMNS = (
    "task_id", "user_id", "choice", "strength", "shown_left", "comment", "time_spent_s", "revision", "created_at", "updated_at",
)  # fmt: skip

DEFAULT_CHUNK_PROMPTS = 2000
IN_LIST_BATCH = 5000
"""Bound parameters per IN (...) list: far below SQLite's 32,766 variable limit."""
LABEL_STRENGTH = 1
"""An imported preference says which response won, not by how much: strength 1 ("better")."""


@dataclass
class ImportOptions:
    """How an import turns responses into tasks and labels."""

    round: int = 0
    """Round stored on the new responses (0 for imported data; N for the policy's Nth round)."""
    pair_against_round: int | None = None
    """When set, pairwise tasks pair this round's responses with that round's (same prompt)
    instead of pairing responses within this round."""
    max_pairs_per_prompt: int = 6
    """Cap on pairwise tasks per prompt (in the pairing scheme above); 0 = no pairwise tasks
    except those carrying an imported label."""
    make_rating_tasks: bool = True
    """One rating task per imported response."""
    as_labels: str | None = None
    """Name of the external user that imported preference rows are stored as labels from;
    None = import the responses only."""
    chunk_prompts: int = DEFAULT_CHUNK_PROMPTS
    """Prompts written per batch of bulk inserts (memory is bounded by a chunk)."""
    make_write_tasks: bool = False
    """One write task per prompt (pre-filled with its first response); prompts that come
    without any response get one whatever this says (there is nothing else to do with them)."""
    rank_range: tuple[int, int] | None = None
    """The project's range of K when it collects rankings (one ranking task per prompt); else None."""

    def validate(self) -> None:
        """Raise ImportFormatError naming the option when a value is out of range."""
        checks = (
            ("round", isinstance(self.round, int) and self.round >= 0, "must be an integer ≥ 0"),
            (
                "pair_against_round",
                self.pair_against_round is None
                or (isinstance(self.pair_against_round, int) and self.pair_against_round >= 0 and self.pair_against_round != self.round),
                "must be an integer ≥ 0 other than round",
            ),
            ("max_pairs_per_prompt", isinstance(self.max_pairs_per_prompt, int) and self.max_pairs_per_prompt >= 0, "must be an integer ≥ 0"),
            ("chunk_prompts", isinstance(self.chunk_prompts, int) and self.chunk_prompts >= 1, "must be an integer ≥ 1"),
        )
        for name, ok, message in checks:
            if not ok or isinstance(getattr(self, name), bool):
                raise ImportFormatError(message, field=name)


@dataclass
class ImportSummary:
    """What one import did. `*_skipped` count rows that were already present (a re-import skips all).

    `tasks_skipped` counts rating tasks and labelled pairwise tasks already present;
    `identical_pairs` counts source comparisons whose two sides were the same response (no task).
    """

    project: str
    project_id: int
    source: str
    file_hash: str = ""
    project_created: bool = False
    records: int = 0
    prompts_added: int = 0
    prompts_skipped: int = 0
    responses_added: int = 0
    responses_skipped: int = 0
    rating_tasks_added: int = 0
    pairwise_tasks_added: int = 0
    write_tasks_added: int = 0
    tasks_skipped: int = 0
    labels_added: int = 0
    labels_skipped: int = 0
    identical_pairs: int = 0
    ranking_tasks_added: int = 0
    ranking_prompts_out_of_range: int = 0
    """Prompts with two or more replies but a K outside the project's range: no ranking task."""
    import_id: int | None = None

    @property
    def tasks_added(self) -> int:
        return self.rating_tasks_added + self.pairwise_tasks_added + self.write_tasks_added + self.ranking_tasks_added

    @property
    def rows_added(self) -> int:
        return self.prompts_added + self.responses_added + self.tasks_added + self.labels_added

    def counts(self) -> dict[str, int]:
        """The counters alone (what ImportRecord.counts stores)."""
        skip = {"project", "project_id", "source", "file_hash", "project_created", "import_id"}
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def line(self) -> str:
        """A one-line human summary."""
        text = (
            f"{self.source} → project {self.project!r}: {self.records} records; added {self.prompts_added} prompts, "
            f"{self.responses_added} responses, {self.rating_tasks_added} rating + {self.pairwise_tasks_added} pairwise tasks"
        )
        if self.write_tasks_added:
            text += f" + {self.write_tasks_added} write tasks"
        if self.ranking_tasks_added:
            text += f" + {self.ranking_tasks_added} ranking tasks"
        if self.labels_added or self.labels_skipped:
            text += f", {self.labels_added} labels"
        already = self.prompts_skipped + self.responses_skipped + self.tasks_skipped + self.labels_skipped
        if already:
            text += f"; {already} rows already present"
        return text


@dataclass
class _PromptState:
    """What the database holds for one prompt of the chunk: response hash → (id, round), pairs."""

    prompt_id: int
    responses: dict[str, tuple[int, int]] = field(default_factory=dict)
    pairs: list[tuple[int, int]] = field(default_factory=list)
    """(response A id, response B id) of every pairwise task, present or added in this chunk."""


def _bind_processor(column, dialect):
    """The column type's own parameter conversion for `dialect` (identity when it has none)."""
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor if processor is not None else (lambda value: value)


class ChunkWriter:
    """Writes chunks of PromptIn into one project through `connection` (the caller's transaction)."""

    def __init__(
        self,
        connection: Connection,
        *,
        project_id: int,
        project_seed: int,
        options: ImportOptions,
        label_user_id: int | None,
        summary: ImportSummary,
        now: datetime,
    ) -> None:
        self.connection = connection
        self.project_id = project_id
        self.seed = project_seed
        self.options = options
        self.label_user_id = label_user_id
        self.summary = summary
        self.planning = TaskPlanning(project_seed, options.round, options.max_pairs_per_prompt, options.make_rating_tasks)
        dialect = connection.dialect
        self._statements: dict[str, str] = {}
        if dialect.name == "postgresql":
            to_json = json.dumps  # arrays of JSON text, cast by the statement (see _insert_statement)
        else:
            to_json = _bind_processor(PROMPT_T.c.meta, dialect)
        json_null = to_json(None)  # most JSON cells are empty: encode "null" once, not per row
        self._json = lambda value: json_null if value is None else to_json(value)
        # JSON a reader process encoded ahead is used only when this dialect would write the same text.
        probe = {"k": [1, 2.5, "é", None]}
        self._takes_encoded_json = to_json(probe) == json.dumps(probe)
        self._json_null = json_null
        self._now = _bind_processor(TASK_T.c.created_at, dialect)(now)
        self._false = _bind_processor(TASK_T.c.is_gold, dialect)(False)

    # ------------------------------------------------------------ helpers

    def _insert_statement(self, table: Table, columns: Sequence[str]) -> str:
        """The bulk insert for `table`, skipping rows that would break a unique constraint.

        SQLite: `INSERT ... VALUES (?, ...) ON CONFLICT DO NOTHING`, run with executemany (no
        network: the per-row cost is the B-tree work). PostgreSQL: one statement per chunk,
        `INSERT ... SELECT ... FROM unnest(%s::type[], ...) ON CONFLICT DO NOTHING`, one array per
        column, because executemany pays a protocol round per row and multi-row VALUES pays
        psycopg's placeholder parsing (both profiled: 5-10x slower).
        """
        dialect = self.connection.dialect
        quote = dialect.identifier_preparer
        names = [quote.quote(c) for c in columns]
        target = f"INSERT INTO {quote.format_table(table)} ({', '.join(names)})"
        if dialect.name != "postgresql":
            return f"{target} VALUES ({', '.join(['?'] * len(columns))}) ON CONFLICT DO NOTHING"
        # %b: the arrays travel in binary format; in text format psycopg quotes every element
        # with a regular expression, which cost as much as the server's insert (profiled).
        arrays, selected = [], []
        for name, column in zip(names, columns):
            if isinstance(table.c[column].type, JSON):
                arrays.append("%b::text[]")  # JSON arrives as text; cast per value
                selected.append(f"{name}::json")
            else:
                arrays.append(f"%b::{table.c[column].type.compile(dialect)}[]")
                selected.append(name)
        return f"{target} SELECT {', '.join(selected)} FROM unnest({', '.join(arrays)}) AS rows({', '.join(names)}) ON CONFLICT DO NOTHING"

    def _insert_ignoring_duplicates(self, table: Table, columns: Sequence[str], rows: list[tuple]) -> None:
        """Insert `rows` (tuples in `columns` order); rows clashing with a unique constraint are skipped."""
        if not rows:
            return
        key = table.name
        if key not in self._statements:
            self._statements[key] = self._insert_statement(table, columns)
        if self.connection.dialect.name != "postgresql":
            self.connection.exec_driver_sql(self._statements[key], rows)
            return
        with self.connection.connection.driver_connection.cursor() as cursor:
            cursor.execute(self._statements[key], [list(values) for values in zip(*rows)])

    def _select_in(self, columns: Sequence, in_column, values: Sequence, *where) -> list:
        """Rows of `select(*columns).where(in_column IN values, *where)`, in bounded IN lists."""
        out: list = []
        values = list(values)
        for start in range(0, len(values), IN_LIST_BATCH):
            batch = values[start : start + IN_LIST_BATCH]
            out.extend(self.connection.execute(select(*columns).where(in_column.in_(batch), *where)).all())
        return out

    def _in_scheme(self, round_a: int, round_b: int) -> bool:
        """Whether a pair of responses with these rounds belongs to this import's pairing scheme."""
        current, against = self.options.round, self.options.pair_against_round
        if against is None:
            return round_a == current and round_b == current
        return {round_a, round_b} == {current, against}

    # ------------------------------------------------------------ the chunk

    def write(self, chunk: Iterable[PromptIn]) -> None:
        """Write one chunk of prompts (unique hashes) with their responses, tasks and labels."""
        groups = list(chunk)
        states, previously_present = self._write_prompts(groups)
        self._write_responses(groups, states, previously_present)
        labels = self._write_tasks(groups, states, previously_present)
        if self.options.rank_range is not None or self.label_user_id is not None:
            from rlhf.importer.ranking_tasks import write_ranking_tasks

            write_ranking_tasks(self, groups, states, self.options.rank_range)
        if labels:
            self._write_labels(labels, states)

    def _prompt_ids(self, hashes: list[str]) -> dict[str, int]:
        rows = self._select_in((PROMPT_T.c.content_hash, PROMPT_T.c.id), PROMPT_T.c.content_hash, hashes, PROMPT_T.c.project_id == self.project_id)
        return dict(rows)  # type: ignore[arg-type]

    def _write_prompts(self, groups: list[PromptIn]) -> tuple[dict[str, _PromptState], set[int]]:
        """Step 1. Returns the state per prompt hash and the ids of prompts present before."""
        ids = self._prompt_ids([g.content_hash for g in groups])
        previously_present = set(ids.values())
        new = [g for g in groups if g.content_hash not in ids]
        to_json = self._json
        self._insert_ignoring_duplicates(
            PROMPT_T,
            PROMPT_COLUMNS,
            [(self.project_id, g.content_hash, g.text, to_json(g.messages), g.category, to_json(g.meta), self._now) for g in new],
        )
        if new:
            ids.update(self._prompt_ids([g.content_hash for g in new]))
        self.summary.prompts_added += len(new)
        self.summary.prompts_skipped += len(groups) - len(new)
        return {h: _PromptState(prompt_id=i) for h, i in ids.items()}, previously_present

    def _load_responses(self, states_by_id: dict[int, _PromptState], prompt_ids: Iterable[int]) -> None:
        rows = self._select_in(
            (RESPONSE_T.c.id, RESPONSE_T.c.prompt_id, RESPONSE_T.c.content_hash, RESPONSE_T.c.round), RESPONSE_T.c.prompt_id, list(prompt_ids)
        )
        for response_id, prompt_id, digest, round_ in rows:
            states_by_id[prompt_id].responses[digest] = (response_id, round_)

    def _write_responses(self, groups: list[PromptIn], states: dict[str, _PromptState], previously_present: set[int]) -> None:
        """Step 2. Afterwards every state knows all responses of its prompt (any round)."""
        states_by_id = {s.prompt_id: s for s in states.values()}
        if previously_present:
            self._load_responses(states_by_id, previously_present)
        rows = []
        touched: set[int] = set()
        for group in groups:
            state = states[group.content_hash]
            pending: set[str] = set()
            for response in group.responses:
                if response.content_hash in state.responses or response.content_hash in pending:
                    self.summary.responses_skipped += 1
                    continue
                pending.add(response.content_hash)
                touched.add(state.prompt_id)
                rows.append(self._response_row(state.prompt_id, response))
        self._insert_ignoring_duplicates(RESPONSE_T, RESPONSE_COLUMNS, rows)
        self.summary.responses_added += len(rows)
        if touched:
            self._load_responses(states_by_id, touched)

    def _response_row(self, prompt_id: int, response: ResponseIn) -> tuple:
        if response.encoded_json is not None and self._takes_encoded_json:
            params, meta = response.encoded_json
            params, meta = params or self._json_null, meta or self._json_null
        else:
            params, meta = self._json(response.generation_params), self._json(response.meta)
        return (prompt_id, response.content_hash, response.text, response.model_name, params, self.options.round, meta, self._now)

    def _task_row(self, kind: str, prompt_id: int, digest: str, shuffle_key: int, a_id: int, b_id: int | None) -> tuple:
        return (self.project_id, kind, prompt_id, a_id, b_id, digest, shuffle_key, 0, None, self._false, self._json_null, self._now)

    def _write_tasks(
        self, groups: list[PromptIn], states: dict[str, _PromptState], previously_present: set[int]
    ) -> list[tuple[str, str, str]]:
        """Step 3. Returns the labels to store: (prompt hash, pairwise task hash, chosen response hash)."""
        present: set[str] = set()
        if previously_present:
            states_by_id = {s.prompt_id: s for s in states.values()}
            rows = self._select_in(
                (TASK_T.c.content_hash, TASK_T.c.kind, TASK_T.c.prompt_id, TASK_T.c.response_a_id, TASK_T.c.response_b_id),
                TASK_T.c.prompt_id,
                list(previously_present),
                TASK_T.c.project_id == self.project_id,
            )
            for digest, kind, prompt_id, a_id, b_id in rows:
                present.add(digest)
                if kind == "pairwise" and b_id is not None:
                    states_by_id[prompt_id].pairs.append((a_id, b_id))
        new_rows: list[tuple] = []
        labels: list[tuple[str, str, str]] = []
        plain_pairing = self.options.pair_against_round is None
        for group in groups:
            state = states[group.content_hash]
            if plain_pairing and not group.pairs and state.prompt_id not in previously_present:
                self._add_planned_tasks(group, state, new_rows)  # the common case: a prompt new to the project
                continue
            if self.options.make_rating_tasks:
                self._add_rating_tasks(group, state, present, new_rows)
            labels.extend(self._add_pairwise_tasks(group, state, present, new_rows))
        self._add_write_tasks(groups, states, present, new_rows)
        self._insert_ignoring_duplicates(TASK_T, TASK_COLUMNS, new_rows)
        return labels

    def _add_planned_tasks(self, group: PromptIn, state: _PromptState, new_rows: list) -> None:
        """A new prompt's tasks, from the plan a reader process made ahead or made here now.

        The rows are `_task_row`'s, written inline: this loop runs once per task of an import."""
        if group.task_plan is not None:
            tasks, repeats = group.task_plan
        else:
            tasks, repeats = self.planning.plan(group.content_hash, [r.content_hash for r in group.responses])
        ids, prompt_id = state.responses, state.prompt_id
        project_id, false, null, now = self.project_id, self._false, self._json_null, self._now
        ratings = 0
        for kind, digest, shuffle_key, a_hash, b_hash in tasks:
            b_id = None if b_hash is None else ids[b_hash][0]
            ratings += b_id is None
            new_rows.append((project_id, kind, prompt_id, ids[a_hash][0], b_id, digest, shuffle_key, 0, None, false, null, now))
        self.summary.rating_tasks_added += ratings
        self.summary.pairwise_tasks_added += len(tasks) - ratings
        self.summary.tasks_skipped += repeats

    def _add_write_tasks(self, groups: list[PromptIn], states: dict[str, _PromptState], present: set[str], new_rows: list) -> None:
        """One write task per prompt: with `make_write_tasks`, for a prompt that came without responses, or for
        one a prompts-only record asked for (`wants_write`).

        The task starts from the prompt's first response of this record (None: from scratch).
        """
        for group in groups:
            if not (self.options.make_write_tasks or not group.responses or group.wants_write):
                continue
            digest = write_task_hash(group.content_hash)
            if digest in present:
                self.summary.tasks_skipped += 1
                continue
            present.add(digest)
            state = states[group.content_hash]
            a_id = state.responses[group.responses[0].content_hash][0] if group.responses else None
            new_rows.append(self._task_row("write", state.prompt_id, digest, task_draw(self.seed, digest)[0], a_id, None))
            self.summary.write_tasks_added += 1

    def _add_rating_tasks(self, group: PromptIn, state: _PromptState, present: set[str], new_rows: list) -> None:
        for response in group.responses:
            digest = rating_task_hash(group.content_hash, response.content_hash)
            if digest in present:
                self.summary.tasks_skipped += 1
                continue
            present.add(digest)
            shuffle_key, _ = task_draw(self.seed, digest)
            new_rows.append(self._task_row("rating", state.prompt_id, digest, shuffle_key, state.responses[response.content_hash][0], None))
            self.summary.rating_tasks_added += 1

    def _add_pair(self, state: _PromptState, pair: tuple[str, str], digest: str, present: set[str], new_rows: list) -> None:
        present.add(digest)
        shuffle_key, swap = task_draw(self.seed, digest)
        a_hash, b_hash = orient_pair(swap, *pair)
        a_id, b_id = state.responses[a_hash][0], state.responses[b_hash][0]
        new_rows.append(self._task_row("pairwise", state.prompt_id, digest, shuffle_key, a_id, b_id))
        state.pairs.append((a_id, b_id))
        self.summary.pairwise_tasks_added += 1

    def _add_pairwise_tasks(self, group: PromptIn, state: _PromptState, present: set[str], new_rows: list) -> list[tuple[str, str, str]]:
        """Labelled pairs first (always), then seeded, balanced pairs up to the per-prompt cap."""
        labels: list[tuple[str, str, str]] = []
        natural: list[tuple[str, str]] = []
        for chosen, rejected in group.pairs:
            if chosen == rejected:
                self.summary.identical_pairs += 1
                continue
            if self.label_user_id is None:
                natural.append(tuple(sorted((chosen, rejected))))  # type: ignore[arg-type]
                continue
            digest = pairwise_task_hash(group.content_hash, chosen, rejected)
            labels.append((group.content_hash, digest, chosen))
            if digest in present:
                self.summary.tasks_skipped += 1
                continue
            self._add_pair(state, (chosen, rejected), digest, present, new_rows)

        if len(state.responses) < 2:
            return labels
        round_of_id = {i: r for i, r in state.responses.values()}
        in_scheme = [(a, b) for a, b in state.pairs if self._in_scheme(round_of_id[a], round_of_id[b])]
        budget = self.options.max_pairs_per_prompt - len(in_scheme)
        if budget <= 0:
            return labels
        digests = {pair: pairwise_task_hash(group.content_hash, *pair) for pair in self._candidate_pairs(state)}
        candidates = [pair for pair, digest in digests.items() if digest not in present]
        if budget >= len(candidates):
            chosen_pairs = candidates  # the common case (4 responses, cap 6): every pair, no draw needed
        else:
            hash_of_id = {i: h for h, (i, _) in state.responses.items()}
            usage = Counter(hash_of_id[i] for pair in in_scheme for i in pair)
            rng_key = pair_rng_key(self.seed, group.content_hash, self.options.round, self.options.pair_against_round)
            chosen_pairs = select_pairs(candidates, budget, rng_key, preferred=natural, usage=usage)
        for pair in chosen_pairs:
            self._add_pair(state, pair, digests[pair], present, new_rows)
        return labels

    def _candidate_pairs(self, state: _PromptState) -> list[tuple[str, str]]:
        current, against = self.options.round, self.options.pair_against_round
        new = [h for h, (_, r) in state.responses.items() if r == current]
        if against is None:
            return within_pairs(new)
        return cross_pairs(new, [h for h, (_, r) in state.responses.items() if r == against])

    def _write_labels(self, labels: list[tuple[str, str, str]], states: dict[str, _PromptState]) -> None:
        """Step 4. One Preference per labelled pair and source (the first label of a pair wins)."""
        rows = self._select_in(
            (TASK_T.c.content_hash, TASK_T.c.id, TASK_T.c.response_a_id),
            TASK_T.c.content_hash,
            sorted({digest for _, digest, _ in labels}),
            TASK_T.c.project_id == self.project_id,
        )
        tasks = {digest: (task_id, a_id) for digest, task_id, a_id in rows}
        labelled = {
            row[0]
            for row in self._select_in(
                (PREFERENCE_T.c.task_id,), PREFERENCE_T.c.task_id, [t for t, _ in tasks.values()], PREFERENCE_T.c.user_id == self.label_user_id
            )
        }
        new_rows = []
        for prompt_digest, digest, chosen in labels:
            task_id, a_id = tasks[digest]
            if task_id in labelled:
                self.summary.labels_skipped += 1
                continue
            labelled.add(task_id)
            chosen_id = states[prompt_digest].responses[chosen][0]
            choice = "a" if chosen_id == a_id else "b"
            new_rows.append((task_id, self.label_user_id, choice, LABEL_STRENGTH, "a", "", None, 1, self._now, self._now))
        self._insert_ignoring_duplicates(PREFERENCE_T, PREFERENCE_COLUMNS, new_rows)
        self.summary.labels_added += len(new_rows)
