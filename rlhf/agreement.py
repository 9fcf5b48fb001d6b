"""Inter-annotator agreement from long-format rows (item, annotator, value), without dense matrices.

Every statistic here starts from the same encoding (`encode_ratings`): integer codes for
items, annotators and values, and the per-item value counts n_uc (how many annotators gave
value c to item u), kept as sparse (item, value, count) cells. Nothing is ever laid out as
an item × annotator matrix, so a million ratings by a thousand annotators cost O(ratings).

One quantity carries most of the work: the within-item disagreement

    Q_u = sum_{c,k} n_uc n_uk d(c, k)

for a distance d between values (nominal, |x_c - x_k|, (x_c - x_k)^2, or any function).
Krippendorff's alpha, Gwet's AC1/AC2 and percent agreement are all simple functions of
Q_u, of the counts m_u = sum_c n_uc, and of the pooled counts n_c. The squared and absolute
distances have O(cells) closed forms (no V x V matrix either), so interval data with many
distinct values is as cheap as a 7-point scale.

References
- K. Krippendorff (2011). Computing Krippendorff's Alpha-Reliability. Annenberg School for
  Communication, University of Pennsylvania. (Worked example: 4 coders x 12 units.)
- J. L. Fleiss (1971). Measuring nominal scale agreement among many raters. Psychological
  Bulletin 76(5), 378-382.
- J. Cohen (1960) A coefficient of agreement for nominal scales; J. Cohen (1968) Weighted
  kappa. Psychological Bulletin 70(4), 213-220.
- K. L. Gwet (2008). Computing inter-rater reliability and its variance in the presence of
  high agreement. BJMSP 61, 29-48; K. L. Gwet (2014) Handbook of Inter-Rater Reliability,
  4th ed., chapters 2-4 (AC1/AC2 with missing ratings, as in the irrCAC package).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

Level = Literal["nominal", "ordinal", "interval", "ratio"]
LEVELS: tuple[str, ...] = ("nominal", "ordinal", "interval", "ratio")
GwetWeights = Literal["identity", "linear", "quadratic", "ordinal", "ratio"]
GWET_WEIGHTS: tuple[str, ...] = ("identity", "linear", "quadratic", "ordinal", "ratio")
LONG_COLUMNS = ("item", "annotator", "value")

DEFAULT_MIN_OVERLAP = 10
"""Shared items a pair of annotators needs before its Cohen's kappa is reported."""


class AgreementUndefined(ValueError):
    """The statistic has no value for this data (e.g. no item has two ratings); the message says why."""


class DuplicateRating(ValueError):
    """The same annotator rated the same item twice in data that must have one rating per pair."""


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class EncodedRatings:
    """Long-format ratings as integer codes: the input every statistic here works from.

    Rows with a missing value are dropped at encoding; (item, annotator) pairs are unique.

    item: (n,) int64 codes 0..n_items-1, into `item_labels`.
    annotator: (n,) int64 codes 0..n_annotators-1, into `annotator_labels`.
    value: (n,) int64 codes 0..V-1, into `domain` (sorted for ordered levels).
    domain: (V,) the values, in order (numbers, or labels for nominal / ordered labels).
    positions: (V,) float64 positions on the scale used for value distances: the values
        themselves when numeric, the rank 1..V for ordered labels; None for nominal labels.
    level: the level of measurement the data was encoded for.
    """

    item: np.ndarray
    annotator: np.ndarray
    value: np.ndarray
    domain: np.ndarray
    positions: np.ndarray | None
    level: str
    item_labels: pd.Index
    annotator_labels: pd.Index
    _cells: list = field(default_factory=list, repr=False, compare=False)

    @property
    def n_annotations(self) -> int:
        return int(self.item.size)

    @property
    def n_items(self) -> int:
        return len(self.item_labels)

    @property
    def n_annotators(self) -> int:
        return len(self.annotator_labels)

    @property
    def n_values(self) -> int:
        return int(self.domain.size)

    def cells(self) -> ValueCells:
        """The per-item value counts (computed once, then cached)."""
        if not self._cells:
            self._cells.append(value_cells(self.item, self.value, self.n_items, self.n_values))
        return self._cells[0]


def _column(data: Any, name: str) -> np.ndarray:
    try:
        column = data[name]
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"missing column {name!r}: long-format data needs columns item, annotator, value") from None
    return column.to_numpy() if isinstance(column, (pd.Series, pd.Index)) else np.asarray(column)


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "fc":
        return np.isnan(values)
    if values.dtype.kind in "iub":
        return np.zeros(values.shape, dtype=bool)
    return pd.isna(values)


def encode_ratings(
    data: pd.DataFrame | Mapping[str, Sequence[Any] | np.ndarray] | EncodedRatings,
    level: Level | str = "nominal",
    *,
    value_domain: Sequence[Any] | None = None,
) -> EncodedRatings:
    """Encode long-format rows `data[item], data[annotator], data[value]` (a DataFrame or a mapping of arrays).

    Missing values (NaN / None) are dropped: "annotator did not rate this item". Levels other
    than nominal need numbers, or labels with an ordered `value_domain` (ordinal only).
    `value_domain` may list scale points nobody used (they matter for Gwet's chance term);
    values outside it are an error. Raises ValueError (DuplicateRating for a repeated
    (item, annotator) pair) naming the offending row.
    """
    if isinstance(data, EncodedRatings):
        return data
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    items = _column(data, "item")
    annotators = _column(data, "annotator")
    values = _column(data, "value")
    if not (items.shape == annotators.shape == values.shape) or items.ndim != 1:
        raise ValueError("columns item, annotator and value must be one-dimensional and of equal length")
    keep = ~_missing(values)
    for name, column in (("item", items), ("annotator", annotators)):
        bad = _missing(column)
        if bad.any():
            raise ValueError(f"row {int(np.flatnonzero(bad)[0])}: missing {name}")
    row_index = np.flatnonzero(keep) if not keep.all() else None
    if row_index is not None:
        items, annotators, values = items[keep], annotators[keep], values[keep]

    value_codes, domain, positions = _encode_values(values, level, value_domain, row_index)
    item_codes, item_labels = _factorize(items)
    annotator_codes, annotator_labels = _factorize(annotators)
    _check_unique_pairs(item_codes, annotator_codes, len(annotator_labels), item_labels, annotator_labels, row_index)
    return EncodedRatings(
        item=item_codes,
        annotator=annotator_codes,
        value=value_codes,
        domain=domain,
        positions=positions,
        level=str(level),
        item_labels=pd.Index(item_labels),
        annotator_labels=pd.Index(annotator_labels),
    )


def _factorize(values: np.ndarray, sort: bool = False) -> tuple[np.ndarray, Any]:
    """(int64 codes, labels) of `values`. Integers in a range not much wider than the data
    (ids, scale points) are coded through a presence table — two linear passes, no hashing —
    with labels in ascending order; anything else goes through pandas' hash factorize."""
    if values.dtype.kind in "iu" and values.size:
        low, high = int(values.min()), int(values.max())
        if high - low <= max(4 * values.size, 1 << 16):
            offset = values - low
            present = np.bincount(offset) > 0
            code_of = np.cumsum(present) - 1
            labels = np.flatnonzero(present) + low
            return code_of[offset].astype(np.int64, copy=False), labels.astype(values.dtype)
    codes, labels = pd.factorize(values, sort=sort)
    return codes.astype(np.int64, copy=False), labels


def _encode_values(values: np.ndarray, level: str, value_domain: Sequence[Any] | None, row_index: np.ndarray | None):
    """(codes, domain, positions) for the values; see EncodedRatings for the contract."""
    numeric = values.dtype.kind in "iuf" or (values.dtype == object and _all_numbers(values))
    if value_domain is not None:
        domain = np.asarray(list(value_domain))
        if domain.size != len(set(domain.tolist())):
            raise ValueError("value_domain lists a value twice")
        domain_numeric = domain.dtype.kind in "iuf"
        if domain_numeric:
            domain = np.sort(domain.astype(np.float64))
        if domain_numeric and numeric:
            # Binary search in the sorted scale (a hash lookup costs more for short scales).
            floats = values.astype(np.float64)
            position = np.minimum(np.searchsorted(domain, floats), max(domain.size - 1, 0))
            codes = np.where(domain[position] == floats, position, -1) if domain.size else np.full(floats.size, -1)
        else:
            codes = pd.Index(domain).get_indexer(values)
        outside = codes < 0
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            row = int(row_index[first]) if row_index is not None else first
            raise ValueError(f"row {row}: value {_plain(values[first])!r} is not in the value domain")
        if domain_numeric:
            positions = domain.astype(np.float64)
        elif level == "nominal":
            positions = None
        else:
            # Ordered labels: the order given is the scale, at equally spaced ranks.
            positions = np.arange(1, domain.size + 1, dtype=np.float64)
        _check_level(level, positions, domain)
        return codes.astype(np.int64), domain, positions
    if numeric:
        if values.dtype.kind in "iu":
            # Integers keep their type as labels (MajorityVote returns 3, not 3.0).
            codes, domain = _factorize(values, sort=True)
            domain = np.asarray(domain)
        else:
            codes, domain = pd.factorize(values.astype(np.float64), sort=True)
            domain = np.asarray(domain, dtype=np.float64)
        positions = domain.astype(np.float64)
        _check_level(level, positions, domain)
        return codes.astype(np.int64), domain, positions
    if level != "nominal":
        raise ValueError(
            f"level {level!r} needs numeric values, or labels with an ordered value_domain (ordinal); got {_plain(values[0])!r}"
        )
    try:
        codes, domain = pd.factorize(values, sort=True)
    except TypeError:  # labels of mixed, unorderable types: first-seen order
        codes, domain = pd.factorize(values)
    return codes.astype(np.int64), np.asarray(domain, dtype=object), None


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value (for readable error messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _all_numbers(values: np.ndarray) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values)


def _check_level(level: str, positions: np.ndarray | None, domain: np.ndarray) -> None:
    if positions is None:
        return
    if not np.all(np.isfinite(positions)):
        raise ValueError("values must be finite numbers")
    if level == "ratio" and positions.size and positions.min() < 0:
        raise ValueError(f"ratio level needs values >= 0 (a meaningful zero); got {_plain(positions.min())!r}")


def _check_unique_pairs(item, annotator, n_annotators, item_labels, annotator_labels, row_index) -> None:
    key = item * max(n_annotators, 1) + annotator
    # A sort and one comparison of neighbours is cheaper than hashing a million keys; the
    # offending rows are looked up only when there is a duplicate.
    ordered = np.sort(key)
    if not bool(np.any(ordered[1:] == ordered[:-1])):
        return
    duplicated = pd.Index(key).duplicated()
    if duplicated.any():
        second = int(np.flatnonzero(duplicated)[0])
        first = int(np.flatnonzero(key == key[second])[0])
        rows = [int(row_index[i]) if row_index is not None else i for i in (first, second)]
        raise DuplicateRating(
            f"rows {rows[0]} and {rows[1]}: annotator {_plain(annotator_labels[annotator[second]])!r} rated item "
            f"{_plain(item_labels[item[second]])!r} twice (one rating per item and annotator)"
        )


# --------------------------------------------------------------------------- value cells


@dataclass(frozen=True)
class ValueCells:
    """Per-item value counts as sparse cells: n_uc for every (u, c) with n_uc > 0.

    item, value: (t,) int64 codes, sorted by item then value.
    count: (t,) float64 n_uc.
    per_item: (I,) float64 m_u = sum_c n_uc (0 for items without ratings).
    row_cell: (n,) for each encoded rating, the index of its cell (or None when not tracked).
    """

    item: np.ndarray
    value: np.ndarray
    count: np.ndarray
    per_item: np.ndarray
    n_values: int
    row_cell: np.ndarray | None = None

    def subset(self, keep: np.ndarray) -> ValueCells:
        """The cells where `keep` (t,) is true; per_item is left as is (callers filter whole items)."""
        return ValueCells(self.item[keep], self.value[keep], self.count[keep], self.per_item, self.n_values)


def value_cells(item: np.ndarray, value: np.ndarray, n_items: int, n_values: int, *, track_rows: bool = True) -> ValueCells:
    """Count ratings per (item, value) without an item x annotator matrix.

    Dense bincount over item*V + value when that table is not much larger than the data
    (the common case: a short scale), a sort otherwise (many distinct values).
    `track_rows=False` skips `row_cell` (only the per-annotator measures need it).
    """
    n_items, n_values = max(int(n_items), 0), max(int(n_values), 1)
    key = item * n_values + value
    size = n_items * n_values
    if size <= max(4 * key.size, 1 << 20):
        table = np.bincount(key, minlength=size)
        present = table > 0
        cell_of_key = np.cumsum(present) - 1 if track_rows else None
        keys = np.flatnonzero(present)
        count = table[keys].astype(np.float64)
        row_cell = cell_of_key[key] if track_rows else None
    else:
        keys, row_cell, counts = np.unique(key, return_inverse=True, return_counts=True)
        count = counts.astype(np.float64)
    cell_item = keys // n_values
    cell_value = keys % n_values
    per_item = np.bincount(cell_item, weights=count, minlength=n_items).astype(np.float64)
    return ValueCells(cell_item, cell_value, count, per_item, n_values, row_cell)


def counts_to_cells(value_counts: np.ndarray) -> ValueCells:
    """ValueCells from a dense (items, V) table of counts, e.g. the `value_counts` the krippendorff package takes."""
    table = np.asarray(value_counts, dtype=np.float64)
    if table.ndim != 2:
        raise ValueError("value_counts must be a 2-D (items, values) table")
    item, value = np.nonzero(table)
    count = table[item, value]
    return ValueCells(item.astype(np.int64), value.astype(np.int64), count, table.sum(axis=1), table.shape[1])


# --------------------------------------------------------------------------- distances


@dataclass(frozen=True)
class Distance:
    """A distance d(c, k) >= 0 between value codes, with d(c, c) = 0.

    kind: "nominal" (d = [c != k]), "squared" ((x_c - x_k)^2), "absolute" (|x_c - x_k|), or
    "function" (fn(x_c, x_k), evaluated only on pairs that occur).
    x: (V,) positions, ascending in the code order (required for squared/absolute/function).
    """

    kind: str
    x: np.ndarray | None = None
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def between(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """d for code arrays a, b of equal shape."""
        if self.kind == "nominal":
            return (a != b).astype(np.float64)
        xa, xb = self.x[a], self.x[b]
        if self.kind == "squared":
            return (xa - xb) ** 2
        if self.kind == "absolute":
            return np.abs(xa - xb)
        return self.fn(xa, xb)


def _ratio_distance(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Krippendorff's ratio metric ((x_a - x_b) / (x_a + x_b))^2, 0 where both are 0."""
    total = xa + xb
    out = np.zeros(np.broadcast(xa, xb).shape)
    np.divide(xa - xb, total, out=out, where=total != 0)
    return out**2


def _gwet_ordinal_distance(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """Gwet's ordinal disagreement between ranks: C(|r_a - r_b| + 1, 2)."""
    gap = np.abs(ra - rb)
    return gap * (gap + 1) / 2


def within_item_disagreement(cells: ValueCells, distance: Distance, n_items: int) -> np.ndarray:
    """Q_u = sum_{c,k} n_uc n_uk d(c, k) for every item u: (n_items,) float64.

    nominal: m_u^2 - sum_c n_uc^2. squared: 2 m_u sum_c n_uc (x_c - mean_u)^2 (centred, so no
    cancellation). absolute: 2 sum_c n_uc x_c (before_c - after_c), with before/after the
    counts of smaller/larger values in the item (cells are sorted by value within an item).
    function: 2 sum over pairs of distinct cells, generated within items (never V x V).
    """
    item, count = cells.item, cells.count
    per_item = np.bincount(item, weights=count, minlength=n_items)
    if distance.kind == "nominal":
        return per_item**2 - np.bincount(item, weights=count**2, minlength=n_items)
    x = distance.x[cells.value]
    if distance.kind == "squared":
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(item, weights=count * x, minlength=n_items) / per_item
        spread = np.bincount(item, weights=count * (x - mean[item]) ** 2, minlength=n_items)
        return 2 * per_item * spread
    if distance.kind == "absolute":
        running = np.cumsum(count)
        item_start = np.zeros(n_items + 1)
        np.cumsum(per_item, out=item_start[1:])
        before = running - count - item_start[item]
        after = per_item[item] - before - count
        return 2 * np.bincount(item, weights=count * x * (before - after), minlength=n_items)
    n_values = cells.n_values
    if n_values <= 64 and n_items * n_values <= (1 << 24):
        # Short scale: dense (items, V) counts times the V x V distance matrix.
        table = np.zeros((n_items, n_values))
        table[item, cells.value] = count
        codes = np.arange(n_values)
        matrix = distance.between(codes[:, None], codes[None, :])
        return np.einsum("uc,uc->u", table, table @ matrix)
    left, right = _pairs_within_groups(item)
    d = distance.between(cells.value[left], cells.value[right])
    return 2 * np.bincount(item[left], weights=count[left] * count[right] * d, minlength=n_items)


def _single_item_cells(totals: np.ndarray) -> ValueCells:
    """Pooled counts n_c as the cells of one item, so the same Q formulas give n^T D n."""
    value = np.flatnonzero(totals > 0)
    count = totals[value].astype(np.float64)
    return ValueCells(np.zeros(value.size, dtype=np.int64), value, count, np.array([count.sum()]), totals.size)


def pooled_disagreement(totals: np.ndarray, distance: Distance) -> float:
    """sum_{c,k} n_c n_k d(c, k) for pooled counts `totals` (V,)."""
    return float(within_item_disagreement(_single_item_cells(totals), distance, 1)[0])


def _group_order(key: np.ndarray) -> np.ndarray:
    """A permutation sorting `key` (any order among equal keys); the identity when already sorted."""
    if key.size < 2 or bool(np.all(key[1:] >= key[:-1])):
        return np.arange(key.size)
    return np.argsort(key, kind="quicksort")


def _pairs_within_groups(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (i, j), i < j, of rows with the same group code; `group` must be sorted.

    O(number of pairs), without a Python loop over groups: groups of equal size s share one
    template of the s (s - 1) / 2 offset pairs, added to every such group's start by
    broadcasting (one pass per distinct group size). Pairs come out ordered by group size,
    then group, then template. Indices are int32 when they fit.
    """
    n = group.size
    index_type = np.int32 if n < (1 << 31) else np.int64
    if n == 0:
        return np.zeros(0, dtype=index_type), np.zeros(0, dtype=index_type)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]).astype(index_type)
    sizes = np.diff(np.r_[starts, n]).astype(index_type)
    lefts, rights = [], []
    for size in np.unique(sizes):
        if size < 2:
            continue
        first, second = np.triu_indices(int(size), k=1)
        group_starts = starts[sizes == size][:, None]
        lefts.append((group_starts + first.astype(index_type)).ravel())
        rights.append((group_starts + second.astype(index_type)).ravel())
    if not lefts:
        return np.zeros(0, dtype=index_type), np.zeros(0, dtype=index_type)
    return np.concatenate(lefts), np.concatenate(rights)


# --------------------------------------------------------------------------- Krippendorff's alpha


def _alpha_distance(level: str, positions: np.ndarray | None, pooled: np.ndarray) -> Distance:
    """Krippendorff's difference function for `level`.

    Ordinal: d(c, k) = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2, which equals the squared
    difference of mid-ranks a_g = N_g - n_g / 2 (N_g the cumulative pooled count), so it
    is the interval metric on mid-ranks.
    """
    if level == "nominal":
        return Distance("nominal")
    if positions is None:
        raise ValueError(f"level {level!r} needs ordered values")
    if level == "ordinal":
        midranks = np.cumsum(pooled) - pooled / 2.0
        return Distance("squared", x=midranks)
    if level == "interval":
        return Distance("squared", x=positions - positions.mean())
    return Distance("function", x=positions, fn=_ratio_distance)


def _pairable(cells: ValueCells) -> tuple[ValueCells, np.ndarray, np.ndarray]:
    """Cells of items with two or more ratings, their pooled counts n_c, and weights 1 / (m_u - 1)."""
    per_item = cells.per_item
    pairable_items = per_item >= 2
    sub = cells.subset(pairable_items[cells.item])
    pooled = np.bincount(sub.value, weights=sub.count, minlength=cells.n_values)
    weight = np.zeros(per_item.shape, dtype=np.float64)
    np.divide(1.0, per_item - 1, out=weight, where=pairable_items)
    return sub, pooled, weight


def alpha_from_cells(cells: ValueCells, level: Level | str, positions: np.ndarray | None = None) -> float:
    """Krippendorff's alpha from per-item value counts.

        alpha = 1 - D_o / D_e,  D_o = sum_u Q_u / (m_u - 1) / n,  D_e = sum_{c,k} n_c n_k d(c,k) / (n (n - 1))

    over items with m_u >= 2 (n = number of pairable values). `positions` (V,) are the
    values on the scale (interval, ratio) and give their order (ordinal); nominal ignores it.
    Raises AgreementUndefined when no item has two ratings or all pairable values are equal.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    sub, pooled, weight = _pairable(cells)
    n = pooled.sum()
    if n == 0:
        raise AgreementUndefined("no item has two or more ratings")
    if np.count_nonzero(pooled) < 2:
        raise AgreementUndefined("every pairable rating has the same value: expected disagreement is 0")
    if positions is None and level != "nominal":
        positions = np.arange(cells.n_values, dtype=np.float64)
    distance = _alpha_distance(str(level), positions, pooled)
    n_items = cells.per_item.size
    observed = float(np.dot(weight, within_item_disagreement(sub, distance, n_items)))
    expected = pooled_disagreement(pooled, distance)
    if expected <= 0:
        raise AgreementUndefined("expected disagreement is 0 (all pairable values at distance 0)")
    return float(1.0 - (n - 1) * observed / expected)


def krippendorff_alpha(data, level: Level | str = "nominal", *, value_domain: Sequence[Any] | None = None) -> float:
    """Krippendorff's alpha of long-format `data` (see `encode_ratings`) at `level`.

    Matches `krippendorff.alpha` (value_counts or reliability_data) to 1e-9. Raises
    AgreementUndefined when it has no value (no item with two ratings, one value only).
    """
    enc = encode_ratings(data, level, value_domain=value_domain)
    cells = enc._cells[0] if enc._cells else value_cells(enc.item, enc.value, enc.n_items, enc.n_values, track_rows=False)
    return alpha_from_cells(cells, enc.level, enc.positions)


@dataclass(frozen=True)
class ConfidenceInterval:
    """A bootstrap percentile interval: `low`, `high` at `confidence`, from `n_bootstrap` replicates.

    `n_valid` counts replicates where the statistic was defined (others are left out).
    """

    low: float
    high: float
    confidence: float
    n_bootstrap: int
    n_valid: int


def alpha_bootstrap(
    data,
    level: Level | str = "nominal",
    *,
    value_domain: Sequence[Any] | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap interval for Krippendorff's alpha, resampling items with replacement.

    Vectorised: replicates are drawn in blocks as item multiplicities K (block x items), and
    every replicate's alpha comes from K @ (per-item quantities) — no loop over replicates or
    items in Python. For interval and ratio data the per-item disagreement Q_u is fixed, so a
    replicate needs only sum_u K_bu Q_u / (m_u - 1) and its pooled counts; ordinal distances
    depend on the pooled counts, so its Q_u are recomputed per replicate from K @ N and N @ a_b.
    (Hayes & Krippendorff (2007) resample pairs of values instead; resampling items keeps the
    dependence between ratings of one item, which is what the dashboard's interval is about.)
    """
    enc = encode_ratings(data, level, value_domain=value_domain)
    return _alpha_bootstrap_cells(enc.cells(), enc.level, enc.positions, n_bootstrap, confidence, seed)


def _alpha_bootstrap_cells(cells, level, positions, n_bootstrap, confidence, seed) -> ConfidenceInterval:
    from scipy import sparse

    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    sub, pooled, weight = _pairable(cells)
    if pooled.sum() == 0:
        raise AgreementUndefined("no item has two or more ratings")
    patterns = _item_patterns(sub)
    n_values = cells.n_values
    counts = sparse.csr_matrix((patterns.count, (patterns.item, patterns.value)), shape=(patterns.size, n_values))
    per_pattern = patterns.per_item
    pattern_weight = 1.0 / (per_pattern - 1)
    if positions is None and level != "nominal":
        positions = np.arange(n_values, dtype=np.float64)
    fixed_distance = None if level == "ordinal" else _alpha_distance(level, positions, pooled)
    fixed_weighted_q = None
    if fixed_distance is not None:
        fixed_weighted_q = pattern_weight * within_item_disagreement(patterns, fixed_distance, patterns.size)

    rng = np.random.default_rng(seed)
    n_pairable = int(patterns.frequency.sum())
    shares = patterns.frequency / n_pairable
    block = int(max(1, min(n_bootstrap, (1 << 22) // max(patterns.size, 1))))
    alphas = np.empty(n_bootstrap)
    done = 0
    while done < n_bootstrap:
        size = min(block, n_bootstrap - done)
        # Resampling n items with replacement = a multinomial draw over the distinct item patterns.
        multiplicity = rng.multinomial(n_pairable, shares, size=size).astype(np.float64)  # (size, U)
        pooled_b = np.asarray((counts.T @ multiplicity.T).T)  # (size, V)
        if fixed_distance is not None:
            observed = multiplicity @ fixed_weighted_q
            expected = _pooled_replicates(pooled_b, fixed_distance)
        else:
            observed, expected = _ordinal_replicates(counts, per_pattern, pattern_weight, multiplicity, pooled_b)
        n_b = pooled_b.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            alphas[done : done + size] = np.where(expected > 0, 1.0 - (n_b - 1) * observed / expected, np.nan)
        done += size
    valid = alphas[np.isfinite(alphas)]
    if valid.size == 0:
        raise AgreementUndefined("alpha is undefined in every bootstrap replicate")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(valid, [tail, 100 - tail])
    return ConfidenceInterval(float(low), float(high), confidence, n_bootstrap, int(valid.size))


@dataclass(frozen=True)
class _Patterns(ValueCells):
    """Distinct per-item value-count patterns as cells (item = pattern id), with how many items share each."""

    frequency: np.ndarray = None  # type: ignore[assignment]

    @property
    def size(self) -> int:
        return int(self.per_item.size)


def _item_patterns(sub: ValueCells) -> _Patterns:
    """Group items whose value counts are identical: a 10-rater, 7-point item has at most C(16, 6)
    = 8008 possible patterns, so 100,000 items compress to a few thousand and a bootstrap
    replicate costs O(patterns), not O(items). Without compression (many distinct values)
    every item is its own pattern."""
    items, local = np.unique(sub.item, return_inverse=True)
    n_items, n_values = items.size, sub.n_values
    if n_values <= 64 and n_items * n_values <= (1 << 24):
        table = np.zeros((n_items, n_values), dtype=np.int64)
        table[local, sub.value] = sub.count.astype(np.int64)
        rows = np.ascontiguousarray(table).view(np.dtype((np.void, table.dtype.itemsize * n_values))).ravel()
        _, first, frequency = np.unique(rows, return_index=True, return_counts=True)
        unique_table = table[first].astype(np.float64)
        pattern, value = np.nonzero(unique_table)
        count = unique_table[pattern, value]
        per = unique_table.sum(axis=1)
        return _Patterns(pattern.astype(np.int64), value.astype(np.int64), count, per, n_values, None, frequency.astype(np.float64))
    per = np.bincount(local, weights=sub.count, minlength=n_items)
    return _Patterns(local.astype(np.int64), sub.value, sub.count, per, n_values, None, np.ones(n_items))


def _pooled_replicates(pooled_b: np.ndarray, distance: Distance) -> np.ndarray:
    """sum_{c,k} n_c n_k d(c,k) for each row of pooled counts (B, V)."""
    if distance.kind == "function":
        n_values = pooled_b.shape[1]
        if n_values > 2048:
            return np.array([pooled_disagreement(row, distance) for row in pooled_b])
        codes = np.arange(n_values)
        matrix = distance.between(codes[:, None], codes[None, :])  # (V, V)
        return ((pooled_b @ matrix) * pooled_b).sum(axis=1)
    if distance.kind == "nominal":
        return pooled_b.sum(axis=1) ** 2 - (pooled_b**2).sum(axis=1)
    x = distance.x
    total = pooled_b.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (pooled_b @ x) / total
    spread = (pooled_b * (x[None, :] - mean[:, None]) ** 2).sum(axis=1)
    return 2 * total * spread


def _ordinal_replicates(counts, per_item, weight, multiplicity, pooled_b):
    """Observed and expected ordinal disagreement per replicate (mid-ranks move with the pooled counts).

    With a_b the replicate's mid-ranks: Q_ub = 2 m_u sum_c n_uc a_c^2 - 2 (sum_c n_uc a_c)^2.
    """
    midranks = np.cumsum(pooled_b, axis=1) - pooled_b / 2.0  # (B, V)
    first = counts @ (midranks**2).T  # (P, B): sum_c n_uc a_c^2
    second = counts @ midranks.T  # (P, B): sum_c n_uc a_c
    q = 2 * per_item[:, None] * first - 2 * second**2  # (P, B)
    observed = np.einsum("bp,p,pb->b", multiplicity, weight, q)
    total = pooled_b.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (pooled_b * midranks).sum(axis=1) / total
    expected = 2 * total * (pooled_b * (midranks - mean[:, None]) ** 2).sum(axis=1)
    return observed, expected


# --------------------------------------------------------------------------- Fleiss, Gwet, percent agreement


@dataclass(frozen=True)
class FleissKappa:
    """Fleiss' kappa, or `value=None` with the `reason` it does not apply.

    p_observed: mean pairwise agreement P-bar; p_expected: sum_c p_c^2; raters_per_item: m.
    """

    value: float | None
    reason: str | None = None
    p_observed: float | None = None
    p_expected: float | None = None
    raters_per_item: int | None = None


def fleiss_from_cells(cells: ValueCells) -> FleissKappa:
    """Fleiss (1971) kappa for items that all have the same number m >= 2 of ratings.

        P_u = (sum_c n_uc^2 - m) / (m (m - 1)),  P-bar = mean_u P_u,
        p_c = sum_u n_uc / (N m),  P_e = sum_c p_c^2,  kappa = (P-bar - P_e) / (1 - P_e)
    """
    per_item = cells.per_item[cells.per_item > 0]
    if per_item.size == 0:
        return FleissKappa(None, "no ratings")
    low, high = int(per_item.min()), int(per_item.max())
    if low != high:
        return FleissKappa(
            None,
            f"items have between {low} and {high} ratings; Fleiss' kappa needs the same number of raters per item "
            "(Krippendorff's alpha and Gwet's AC1 allow missing ratings)",
        )
    m = low
    if m < 2:
        return FleissKappa(None, "every item has a single rating", raters_per_item=m)
    n_items = per_item.size
    squares = float(np.sum(cells.count**2))
    p_observed = (squares - n_items * m) / (n_items * m * (m - 1))
    shares = np.bincount(cells.value, weights=cells.count, minlength=cells.n_values) / (n_items * m)
    p_expected = float(np.sum(shares**2))
    if p_expected >= 1.0:
        return FleissKappa(None, "all ratings are in one category", p_observed, p_expected, m)
    value = (p_observed - p_expected) / (1 - p_expected)
    return FleissKappa(float(value), None, float(p_observed), p_expected, m)


def fleiss_kappa(data, *, value_domain: Sequence[Any] | None = None) -> FleissKappa:
    """Fleiss' kappa of long-format `data` (nominal); `value=None` with a reason when it does not apply."""
    return fleiss_from_cells(encode_ratings(data, "nominal", value_domain=value_domain).cells())


@dataclass(frozen=True)
class GwetAC:
    """Gwet's AC1 (identity weights) or AC2 (other weights): (p_a - p_e) / (1 - p_e)."""

    value: float
    p_observed: float
    p_expected: float
    weights: str
    n_categories: int


def _gwet_distance(weights: str, x: np.ndarray) -> tuple[Distance, float]:
    """Gwet's disagreement d and its maximum over the categories, so agreement weights are 1 - d / d_max.

    The weights are irrCAC's / the Handbook's: linear 1 - |x_k - x_l| / (x_max - x_min),
    quadratic 1 - (x_k - x_l)^2 / (x_max - x_min)^2, ordinal 1 - C(|r_k - r_l| + 1, 2) / C(q, 2)
    on ranks r, ratio 1 - ((x_k - x_l)/(x_k + x_l))^2 / ((x_max - x_min)/(x_max + x_min))^2.
    """
    q = x.size
    if weights == "identity":
        return Distance("nominal"), 1.0
    span = float(x.max() - x.min())
    if weights == "linear":
        return Distance("absolute", x=x), span
    if weights == "quadratic":
        centred = x - x.mean()
        return Distance("squared", x=centred), span**2
    if weights == "ordinal":
        return Distance("function", x=np.arange(1, q + 1, dtype=np.float64), fn=_gwet_ordinal_distance), q * (q - 1) / 2
    if weights == "ratio":
        if x.min() <= 0:
            raise ValueError("Gwet's ratio weights need categories > 0")
        return Distance("function", x=x, fn=_ratio_distance), float(((x.max() - x.min()) / (x.max() + x.min())) ** 2)
    raise ValueError(f"weights must be one of {', '.join(GWET_WEIGHTS)}, not {weights!r}")


def gwet_from_cells(cells: ValueCells, weights: GwetWeights | str = "identity", positions: np.ndarray | None = None) -> GwetAC:
    """Gwet's AC1/AC2 with missing ratings (Handbook, 4th ed., ch. 4; irrCAC `gwet.ac1.raw`).

        p_a = mean over items with r_u >= 2 of sum_k r_uk (r*_uk - 1) / (r_u (r_u - 1)),  r*_uk = sum_l w_kl r_ul
        pi_k = mean over items with r_u >= 1 of r_uk / r_u
        p_e = T_w / (q (q - 1)) * sum_k pi_k (1 - pi_k),  T_w = sum_{k,l} w_kl

    q is the number of categories: all of `cells.n_values` (the encoding's value domain),
    including scale points nobody used. With w = 1 - d / d_max the numerator reduces to
    r_u^2 - r_u - Q_u / d_max, so no q x q product per item is formed.
    """
    q = cells.n_values
    if q < 2:
        raise AgreementUndefined("Gwet's AC needs at least two categories")
    if weights != "identity" and positions is None:
        positions = np.arange(1, q + 1, dtype=np.float64)
    distance, d_max = _gwet_distance(str(weights), positions if positions is not None else np.arange(q, dtype=np.float64))
    if d_max <= 0:
        raise AgreementUndefined("all categories are at distance 0")
    n_items = cells.per_item.size
    per_item = cells.per_item
    rated = per_item > 0
    pairable = per_item >= 2
    if not pairable.any():
        raise AgreementUndefined("no item has two or more ratings")
    q_u = within_item_disagreement(cells, distance, n_items)
    with np.errstate(invalid="ignore", divide="ignore"):
        pa_u = 1.0 - q_u / (d_max * per_item * (per_item - 1))
    p_observed = float(pa_u[pairable].mean())
    shares = np.bincount(cells.value, weights=cells.count / per_item[cells.item], minlength=q) / rated.sum()
    total_weight = q * q - pooled_disagreement(np.ones(q), distance) / d_max
    p_expected = float(total_weight / (q * (q - 1)) * np.sum(shares * (1 - shares)))
    if p_expected >= 1.0:
        raise AgreementUndefined("chance agreement is 1")
    value = (p_observed - p_expected) / (1 - p_expected)
    return GwetAC(float(value), p_observed, p_expected, str(weights), q)


def gwet_ac(
    data,
    weights: GwetWeights | str = "identity",
    *,
    value_domain: Sequence[Any] | None = None,
) -> GwetAC:
    """Gwet's AC1 (weights="identity") or AC2 of long-format `data`; categories = `value_domain` or the values seen."""
    level = "nominal" if weights == "identity" else "interval"
    enc = encode_ratings(data, level, value_domain=value_domain)
    return gwet_from_cells(enc.cells(), weights, enc.positions)


def percent_agreement_from_cells(cells: ValueCells) -> float:
    """Mean over items with two or more ratings of the share of agreeing rating pairs:
    sum_c n_uc (n_uc - 1) / (m_u (m_u - 1))."""
    pairable = cells.per_item >= 2
    if not pairable.any():
        raise AgreementUndefined("no item has two or more ratings")
    agreeing = np.bincount(cells.item, weights=cells.count * (cells.count - 1), minlength=cells.per_item.size)
    m = cells.per_item[pairable]
    return float(np.mean(agreeing[pairable] / (m * (m - 1))))


def percent_agreement(data) -> float:
    """Pairwise percent agreement of long-format `data` (exact value matches)."""
    return percent_agreement_from_cells(encode_ratings(data, "nominal").cells())


# --------------------------------------------------------------------------- Cohen's kappa per pair

PAIR_COLUMNS = [
    "annotator_a",
    "annotator_b",
    "n_items",
    "percent_agreement",
    "kappa",
    "kappa_linear",
    "kappa_quadratic",
]


def pairwise_cohen(enc: EncodedRatings, *, min_overlap: int = DEFAULT_MIN_OVERLAP, weighted: bool | None = None) -> pd.DataFrame:
    """Cohen's kappa for every annotator pair sharing at least `min_overlap` items.

    Columns: annotator_a, annotator_b (labels, a's code < b's), n_items, percent_agreement,
    kappa (unweighted), kappa_linear, kappa_quadratic. Weighted kappas are

        kappa_w = 1 - sum_{c,k} d(c,k) o_ck / sum_{c,k} d(c,k) p^a_c p^b_k

    with d the VALUE distance |x_c - x_k| or (x_c - x_k)^2 on the scale, not the distance
    between label indices: scikit-learn's `cohen_kappa_score(weights=...)` uses indices into
    the labels seen, which shrinks distances when a scale point is unused and ignores unequal
    spacing. Weighted columns are NaN for nominal data (or `weighted=False`). A pair whose
    expected disagreement is 0 (both constant and equal) gets NaN.

    Pairs come from the items: every item with m ratings yields m (m - 1) / 2 rating pairs,
    aggregated per annotator pair with bincount — never an annotator x annotator x item array.
    """
    if weighted is None:
        weighted = enc.positions is not None and enc.level != "nominal"
    n_annotators = max(enc.n_annotators, 1)
    # Sort ratings by (item, annotator): within an item, the earlier rating of a pair then
    # always has the smaller annotator code, so pairs come out oriented (a < b) for free.
    order = _group_order(enc.item * n_annotators + enc.annotator)
    annotator_sorted = enc.annotator[order].astype(np.intp)
    left, right = _pairs_within_groups(enc.item[order])
    key = annotator_sorted[left] * n_annotators + annotator_sorted[right]
    if n_annotators * n_annotators <= max(4 * key.size, 1 << 22):
        overlap_by_key = np.bincount(key, minlength=n_annotators * n_annotators)
        kept_keys = np.flatnonzero(overlap_by_key >= max(min_overlap, 1))
        lookup = np.full(overlap_by_key.size, -1, dtype=np.int32)
        lookup[kept_keys] = np.arange(kept_keys.size)
        pair = lookup[key]
    else:
        unique_keys, inverse, overlap = np.unique(key, return_inverse=True, return_counts=True)
        kept = overlap >= max(min_overlap, 1)
        kept_keys = unique_keys[kept]
        lookup = np.full(unique_keys.size, -1, dtype=np.int64)
        lookup[kept] = np.arange(kept_keys.size)
        pair = lookup[inverse]
    use = pair >= 0
    # intp from here on: bincount casts every other integer type to it, one copy per call.
    pair = pair[use].astype(np.intp)
    value_sorted = enc.value[order].astype(np.intp)
    va, vb = value_sorted[left[use]], value_sorted[right[use]]
    n_pairs = kept_keys.size
    stats = _cohen_by_pair(pair, va, vb, n_pairs, enc.n_values, enc.positions if weighted else None)
    return pd.DataFrame(
        {
            "annotator_a": enc.annotator_labels.take(np.asarray(kept_keys) // n_annotators),
            "annotator_b": enc.annotator_labels.take(np.asarray(kept_keys) % n_annotators),
            **stats,
        },
        columns=PAIR_COLUMNS,
    )


def _cohen_by_pair(pair, va, vb, n_pairs, n_values, positions) -> dict[str, np.ndarray]:
    """Unweighted and (with positions) linear / quadratic kappa for each pair id 0..n_pairs-1.

    A handful of bincounts over the rating pairs into per-annotator-pair arrays (which stay
    cache-sized), rather than one scatter into a (pairs, V, V) joint table.
    """
    x = positions - positions.mean() if positions is not None else None
    return _kappas(_pair_sums_blockwise(pair, va, vb, n_pairs, n_values, x), x)


@dataclass(frozen=True)
class _PairSums:
    """Per annotator pair: n shared items, agreements, sum |x_a - x_b|, sum (x_a - x_b)^2, and value marginals (P, V)."""

    n: np.ndarray
    agree: np.ndarray
    observed_abs: np.ndarray | None
    observed_sq: np.ndarray | None
    marginal_a: np.ndarray
    marginal_b: np.ndarray


def _pair_sums_blockwise(pair, va, vb, n_pairs, n_values, x) -> _PairSums:
    n = np.bincount(pair, minlength=n_pairs).astype(np.float64)
    observed_abs = observed_sq = None
    if n_values <= 256:
        # Per-rating-pair quantities looked up by the value pair's code in small V x V tables.
        code = va * n_values + vb
        agree = np.bincount(pair, weights=np.eye(n_values).ravel()[code], minlength=n_pairs)
        if x is not None:
            gap = x[:, None] - x[None, :]
            observed_abs = np.bincount(pair, weights=np.abs(gap).ravel()[code], minlength=n_pairs)
            observed_sq = np.bincount(pair, weights=(gap**2).ravel()[code], minlength=n_pairs)
    else:
        agree = np.bincount(pair, weights=(va == vb), minlength=n_pairs)
        if x is not None:
            gap = x[va] - x[vb]
            observed_abs = np.bincount(pair, weights=np.abs(gap), minlength=n_pairs)
            observed_sq = np.bincount(pair, weights=gap**2, minlength=n_pairs)
    marginal_a = np.zeros((n_pairs, n_values))
    marginal_b = np.zeros((n_pairs, n_values))
    block = max(1, (1 << 24) // max(n_values, 1))
    if n_pairs <= block:
        base = pair * n_values
        marginal_a[:] = np.bincount(base + va, minlength=n_pairs * n_values).reshape(n_pairs, n_values)
        marginal_b[:] = np.bincount(base + vb, minlength=n_pairs * n_values).reshape(n_pairs, n_values)
        return _PairSums(n, agree, observed_abs, observed_sq, marginal_a, marginal_b)
    order = np.argsort(pair, kind="stable")
    bounds = np.searchsorted(pair[order], np.arange(0, n_pairs + block, block))
    for index, start in enumerate(range(0, n_pairs, block)):
        stop = min(start + block, n_pairs)
        rows = order[bounds[index] : bounds[index + 1]]
        local = pair[rows] - start
        width = stop - start
        marginal_a[start:stop] = np.bincount(local * n_values + va[rows], minlength=width * n_values).reshape(width, n_values)
        marginal_b[start:stop] = np.bincount(local * n_values + vb[rows], minlength=width * n_values).reshape(width, n_values)
    return _PairSums(n, agree, observed_abs, observed_sq, marginal_a, marginal_b)


def _kappas(sums: _PairSums, x: np.ndarray | None) -> dict[str, np.ndarray]:
    """Cohen's kappas from per-pair sums; x (V,) centred positions or None (unweighted only)."""
    n = sums.n
    with np.errstate(invalid="ignore", divide="ignore"):
        pa = sums.marginal_a / n[:, None]
        pb = sums.marginal_b / n[:, None]
        agree = sums.agree / n
        expected_agree = (pa * pb).sum(axis=1)
        kappa = np.where(expected_agree < 1 - 1e-12, (agree - expected_agree) / (1 - expected_agree), np.nan)
        linear = np.full(n.size, np.nan)
        quadratic = np.full(n.size, np.nan)
        if x is not None:
            # E|X - Y| for independent X ~ p_a, Y ~ p_b: sum over gaps of F_a (1 - F_b) + F_b (1 - F_a).
            fa = np.cumsum(pa, axis=1)[:, :-1]
            fb = np.cumsum(pb, axis=1)[:, :-1]
            expected_abs = ((fa * (1 - fb) + fb * (1 - fa)) * np.diff(x)).sum(axis=1)
            # E (X - Y)^2 for independent X, Y: var_a + var_b + (mean_a - mean_b)^2.
            mean_a, mean_b = pa @ x, pb @ x
            var_a = np.maximum(pa @ x**2 - mean_a**2, 0)
            var_b = np.maximum(pb @ x**2 - mean_b**2, 0)
            expected_sq = var_a + var_b + (mean_a - mean_b) ** 2
            scale = max(float(np.abs(x).max()), 1.0) if x.size else 1.0
            linear = np.where(expected_abs > 1e-12 * scale, 1 - sums.observed_abs / n / expected_abs, np.nan)
            quadratic = np.where(expected_sq > 1e-12 * scale**2, 1 - sums.observed_sq / n / expected_sq, np.nan)
    return {
        "n_items": n.astype(np.int64),
        "percent_agreement": agree,
        "kappa": kappa,
        "kappa_linear": linear,
        "kappa_quadratic": quadratic,
    }


@dataclass(frozen=True)
class CohenKappa:
    """Cohen's kappa between two annotators: unweighted, and weighted by value distance (None for nominal)."""

    annotator_a: Any
    annotator_b: Any
    n_items: int
    percent_agreement: float
    kappa: float | None
    kappa_linear: float | None
    kappa_quadratic: float | None

    @classmethod
    def from_row(cls, row: pd.Series) -> CohenKappa:
        """From one row of the `pairwise_cohen` table (NaN kappas become None)."""
        return cls(
            row["annotator_a"],
            row["annotator_b"],
            int(row["n_items"]),
            float(row["percent_agreement"]),
            _none_if_nan(row["kappa"]),
            _none_if_nan(row["kappa_linear"]),
            _none_if_nan(row["kappa_quadratic"]),
        )


def _none_if_nan(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def cohen_kappa(data, level: Level | str = "nominal", *, value_domain: Sequence[Any] | None = None, annotators: tuple[Any, Any] | None = None) -> CohenKappa:
    """Cohen's kappa between two annotators of long-format `data` over the items both rated.

    `annotators` picks the pair when `data` has more than two. Weighted kappas (by value
    distance) are given for ordinal/interval/ratio levels. Raises AgreementUndefined when the
    two share no item.
    """
    enc = encode_ratings(data, level, value_domain=value_domain)
    if annotators is None:
        if enc.n_annotators != 2:
            raise ValueError(f"cohen_kappa needs exactly two annotators or `annotators=`; data has {enc.n_annotators}")
        annotators = (enc.annotator_labels[0], enc.annotator_labels[1])
    codes = enc.annotator_labels.get_indexer(list(annotators))
    if (codes < 0).any():
        raise ValueError(f"annotators {annotators!r} not all in the data")
    keep = np.isin(enc.annotator, codes)
    pair_data = _subset(enc, keep)
    table = pairwise_cohen(pair_data, min_overlap=1)
    if table.empty:
        raise AgreementUndefined(f"annotators {annotators[0]!r} and {annotators[1]!r} share no item")
    return CohenKappa.from_row(table.iloc[0])


def _subset(enc: EncodedRatings, keep: np.ndarray) -> EncodedRatings:
    """The encoded ratings where `keep` (n,) holds; codes and labels are kept (unused codes allowed)."""
    return EncodedRatings(
        item=enc.item[keep],
        annotator=enc.annotator[keep],
        value=enc.value[keep],
        domain=enc.domain,
        positions=enc.positions,
        level=enc.level,
        item_labels=enc.item_labels,
        annotator_labels=enc.annotator_labels,
    )


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class AgreementConfig:
    """What `agreement_report` computes and how.

    min_overlap: shared items a pair of annotators needs for its Cohen's kappa row.
    n_bootstrap: bootstrap replicates for alpha's interval (0 = no interval).
    confidence: the interval's coverage.
    seed: seeds the bootstrap.
    pairwise: compute the Cohen's kappa table (the costliest part on big data).
    """

    min_overlap: int = DEFAULT_MIN_OVERLAP
    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    pairwise: bool = True


@dataclass(frozen=True)
class PairwiseSummary:
    """Cohen's kappa across annotator pairs: how many pairs qualified, and the item-weighted mean and median kappa."""

    n_pairs: int
    mean_kappa: float | None
    median_kappa: float | None
    mean_kappa_quadratic: float | None


@dataclass(frozen=True)
class AgreementReport:
    """Every agreement statistic for one variable (a rubric dimension, or preference choices).

    Statistics that have no value are None with the reason in `notes` (keyed by field name).
    `gwet_ac2` uses the weights matching the level (ordinal -> ordinal, interval -> quadratic,
    ratio -> ratio; None for nominal). `cohen` is set when the data has exactly two annotators.
    `pairwise` has one row per annotator pair with enough overlap (see `pairwise_cohen`).
    """

    level: str
    n_items: int
    n_annotators: int
    n_annotations: int
    n_pairable_items: int
    krippendorff_alpha: float | None
    alpha_interval: ConfidenceInterval | None
    fleiss: FleissKappa
    gwet_ac1: float | None
    gwet_ac2: float | None
    gwet_ac2_weights: str | None
    percent_agreement: float | None
    cohen: CohenKappa | None
    pairwise: pd.DataFrame
    pairwise_summary: PairwiseSummary
    notes: dict[str, str]

    def summary(self) -> dict[str, Any]:
        """The headline numbers as a flat JSON-ready dict (the `rlhf agreement --json` object)."""
        out: dict[str, Any] = {
            "level": self.level,
            "n_items": self.n_items,
            "n_annotators": self.n_annotators,
            "n_annotations": self.n_annotations,
            "n_pairable_items": self.n_pairable_items,
            "krippendorff_alpha": self.krippendorff_alpha,
            "krippendorff_alpha_ci": [self.alpha_interval.low, self.alpha_interval.high] if self.alpha_interval else None,
            "fleiss_kappa": self.fleiss.value,
            "gwet_ac1": self.gwet_ac1,
            "percent_agreement": self.percent_agreement,
            "pairwise_cohen_pairs": self.pairwise_summary.n_pairs,
            "pairwise_cohen_mean": self.pairwise_summary.mean_kappa,
        }
        if self.gwet_ac2_weights is not None:
            out["gwet_ac2"] = self.gwet_ac2
            out["gwet_ac2_weights"] = self.gwet_ac2_weights
        if self.cohen is not None:
            out["cohen_kappa"] = self.cohen.kappa
            if self.level != "nominal":
                out["cohen_kappa_linear"] = self.cohen.kappa_linear
                out["cohen_kappa_quadratic"] = self.cohen.kappa_quadratic
        if self.notes:
            out["notes"] = dict(self.notes)
        return out


_AC2_WEIGHTS = {"ordinal": "ordinal", "interval": "quadratic", "ratio": "ratio"}


def agreement_report(
    data,
    level: Level | str = "nominal",
    *,
    value_domain: Sequence[Any] | None = None,
    config: AgreementConfig = AgreementConfig(),
) -> AgreementReport:
    """All agreement statistics of long-format `data` at `level`, sharing one encoding.

    `value_domain` is the full scale (e.g. 1..7 for a 7-point rubric): its unused points
    count as categories for Gwet's chance agreement; alpha and kappa do not depend on them.
    """
    enc = encode_ratings(data, level, value_domain=value_domain)
    cells = enc.cells()
    notes: dict[str, str] = {}

    def attempt(name: str, compute: Callable[[], Any]) -> Any:
        try:
            return compute()
        except AgreementUndefined as exc:
            notes[name] = str(exc)
            return None

    alpha = attempt("krippendorff_alpha", lambda: alpha_from_cells(cells, enc.level, enc.positions))
    interval = None
    if alpha is not None and config.n_bootstrap > 0:
        interval = attempt(
            "alpha_interval",
            lambda: _alpha_bootstrap_cells(cells, enc.level, enc.positions, config.n_bootstrap, config.confidence, config.seed),
        )
    fleiss = fleiss_from_cells(cells)
    if fleiss.value is None and fleiss.reason:
        notes["fleiss_kappa"] = fleiss.reason
    ac1 = attempt("gwet_ac1", lambda: gwet_from_cells(cells, "identity").value)
    ac2_weights = _AC2_WEIGHTS.get(enc.level) if enc.positions is not None else None
    ac2 = None
    if ac2_weights is not None:
        ac2 = attempt("gwet_ac2", lambda: gwet_from_cells(cells, ac2_weights, enc.positions).value)
    agreement = attempt("percent_agreement", lambda: percent_agreement_from_cells(cells))
    pairwise = pairwise_cohen(enc, min_overlap=config.min_overlap) if config.pairwise else pd.DataFrame(columns=PAIR_COLUMNS)
    cohen = None
    if enc.n_annotators == 2:
        both = pairwise_cohen(enc, min_overlap=1) if (pairwise.empty or config.min_overlap > 1) else pairwise
        if both.empty:
            notes["cohen_kappa"] = "the two annotators share no item"
        else:
            cohen = CohenKappa.from_row(both.iloc[0])
    return AgreementReport(
        level=enc.level,
        n_items=int(np.count_nonzero(cells.per_item)),
        n_annotators=int(np.unique(enc.annotator).size),
        n_annotations=enc.n_annotations,
        n_pairable_items=int(np.count_nonzero(cells.per_item >= 2)),
        krippendorff_alpha=alpha,
        alpha_interval=interval,
        fleiss=fleiss,
        gwet_ac1=ac1,
        gwet_ac2=ac2,
        gwet_ac2_weights=ac2_weights,
        percent_agreement=agreement,
        cohen=cohen,
        pairwise=pairwise,
        pairwise_summary=summarise_pairs(pairwise),
        notes=notes,
    )


def summarise_pairs(pairwise: pd.DataFrame) -> PairwiseSummary:
    """Item-weighted mean and median of the pairwise kappas (NaN pairs left out)."""
    kappa = pairwise["kappa"].to_numpy(dtype=np.float64) if len(pairwise) else np.zeros(0)
    weight = pairwise["n_items"].to_numpy(dtype=np.float64) if len(pairwise) else np.zeros(0)
    finite = np.isfinite(kappa)
    if not finite.any():
        return PairwiseSummary(len(pairwise), None, None, None)
    quad = pairwise["kappa_quadratic"].to_numpy(dtype=np.float64)
    quad_finite = np.isfinite(quad)
    mean_quad = float(np.average(quad[quad_finite], weights=weight[quad_finite])) if quad_finite.any() else None
    return PairwiseSummary(
        len(pairwise),
        float(np.average(kappa[finite], weights=weight[finite])),
        float(np.median(kappa[finite])),
        mean_quad,
    )
