"""Ratings for regression reward models: a ratings or raw export read into per-response targets per rubric dimension.

Two export formats carry ratings (`rlhf export --format ...`):
- `raw`: one row per rating with the (pseudonymised) `annotator` and `score_<dimension>`. Each
  annotator's scores are normalised per dimension before they are averaged per response:
  z = (y − μ_a) / σ_a, where μ_a and σ_a are the annotator's mean and spread on that dimension
  shrunk towards the dimension's overall mean and spread by `SHRINK` pseudo-ratings (an annotator
  with three ratings is not given a scale of their own). This removes lenient/harsh raters and
  narrow/wide users of the scale (HelpSteer2 trains on such per-attribute scores). With
  `annotator_offsets`, the rows stay one per rating, standardised by the dimension's overall mean
  and spread, and each annotator's offset is fitted beside the heads instead.
- `ratings`: one row per response with `mean_<dimension>`: annotators are already averaged, so
  only the dimension's overall mean and spread are taken out (normalisation `dimension`).

The held-out split is the export's own `split` column (grouped by prompt, same seed as the pairs
export), else prompts held out by `grouped_split`. Test targets are always one row per response.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from rlhf.export import ExportError, ExportManifest, grouped_split, read_export_rows, read_manifest
from rlhf.reward.data import RewardDataError, prompt_key, prompt_value, response_value

SHRINK = 5.0
"""Pseudo-ratings at the dimension's overall mean and spread added to each annotator's own (shrinkage)."""
MIN_STD = 1e-6


@dataclass
class RatingsData:
    """Regression targets: `train` / `test` frames with prompt, response, annotator (−1: none) and `target_<dimension>`.

    Targets are in normalised units (mean about 0, spread about 1 per dimension); `scale` holds the
    training ratings' mean and std in rubric points per dimension, to read a prediction back as points.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    dimensions: list[str]
    scale: dict[str, dict[str, float]]
    normalization: str
    """`annotator` (raw export, per-annotator z-scores), `offsets` (raw export, fitted offsets) or `dimension` (ratings export)."""
    annotators: int
    """How many annotators have an offset (0 unless `normalization == "offsets"`)."""
    source: str
    manifest: ExportManifest | None = None
    counts: dict[str, int] = field(default_factory=dict)
    test_ratings: pd.DataFrame | None = None
    """raw exports: the held-out ratings one row per rating (with `response_key`), for the leave-one-out ceiling."""

    def targets(self, frame: pd.DataFrame) -> np.ndarray:
        """The targets of `frame` as (N, D) float, NaN where a dimension was not rated."""
        return frame[[target_column(d) for d in self.dimensions]].to_numpy(dtype=float)


def target_column(dimension: str) -> str:
    return f"target_{dimension}"


def _dimension_columns(frame: pd.DataFrame, prefix: str) -> list[str]:
    return [c[len(prefix):] for c in frame.columns if isinstance(c, str) and c.startswith(prefix) and len(c) > len(prefix)]


def _select_dimensions(found: list[str], requested: Sequence[str] | None, source: str) -> list[str]:
    if not found:
        raise RewardDataError(f"{source}: no rating dimensions (expected columns score_<dimension> or mean_<dimension>)")
    if requested is None:
        return found
    missing = [d for d in requested if d not in found]
    if missing:
        raise RewardDataError(f"{source}: no ratings for dimension(s) {', '.join(map(repr, missing))} (the export has: {', '.join(found)})")
    return list(requested)


def _texts(frame: pd.DataFrame, prompt_column: str, response_column: str, source: str, rows: Sequence[int]) -> tuple[list, list[str]]:
    prompts, responses = [], []
    for row_number, prompt, response in zip(rows, frame[prompt_column], frame[response_column]):
        where = f"{source}: row {row_number}"
        prompts.append(prompt_value(prompt, f"{where}: field {prompt_column!r}"))
        responses.append(response_value(response, f"{where}: field {response_column!r}"))
    return prompts, responses


def _scores(frame: pd.DataFrame, columns: list[str], source: str, rows: Sequence[int]) -> np.ndarray:
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & frame[columns].notna()
    if bad.to_numpy().any():
        r, c = (int(i) for i in np.argwhere(bad.to_numpy())[0])
        raise RewardDataError(f"{source}: row {rows[r]}: field {columns[c]!r}: expected a number, got {frame[columns[c]].iloc[r]!r}")
    return values.to_numpy(dtype=float)


def read_ratings(path: str | os.PathLike, *, dimensions: Sequence[str] | None, eval_fraction: float, seed: int, annotator_offsets: bool = False) -> RatingsData:
    """Regression targets from a raw or ratings export; RewardDataError names the file, row and field when unusable."""
    source = str(path)
    try:
        frame = read_export_rows(path)
    except ExportError as exc:
        raise RewardDataError(str(exc)) from None
    if {"kind", "annotator", "response_a"} <= set(frame.columns):
        keep = (frame["kind"] == "rating").to_numpy()
        rows = [int(i) + 1 for i in np.flatnonzero(keep)]
        frame = frame[keep].reset_index(drop=True)
        dims = _select_dimensions(_dimension_columns(frame, "score_"), dimensions, source)
        prompts, responses = _texts(frame, "prompt", "response_a", source, rows)
        values = _scores(frame, [f"score_{d}" for d in dims], source, rows)
        annotators = frame["annotator"].astype(str).to_numpy()
        normalization = "offsets" if annotator_offsets else "annotator"
    elif "response" in frame.columns and _dimension_columns(frame, "mean_"):
        rows = list(range(1, len(frame) + 1))
        dims = _select_dimensions(_dimension_columns(frame, "mean_"), dimensions, source)
        prompts, responses = _texts(frame, "prompt", "response", source, rows)
        values = _scores(frame, [f"mean_{d}" for d in dims], source, rows)
        annotators = np.full(len(frame), "", dtype=object)
        normalization = "dimension"
    else:
        raise RewardDataError(
            f"{source}: not a ratings export: expected a raw export (kind, annotator, response_a, score_<dimension>) or a ratings "
            f"export (prompt, response, mean_<dimension>) (found: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    usable = ~np.isnan(values).all(axis=1)
    if not usable.any():
        raise RewardDataError(f"{source}: no ratings of dimension(s) {', '.join(dims)}")
    keys = [prompt_key(p) for p in prompts]
    split = frame["split"].astype(str).to_numpy()
    is_test = split == "test" if (split == "test").any() else grouped_split(keys, eval_fraction, seed)
    is_train = ~is_test & usable
    for d, name in enumerate(dims):
        if np.isnan(values[is_train, d]).all():
            raise RewardDataError(f"{source}: no training ratings of dimension {name!r}")
    targets, scale = normalise(values, annotators, is_train, normalization, dims)
    base = pd.DataFrame({"prompt": prompts, "response": responses, "prompt_key": keys, "annotator_name": annotators})
    for d, name in enumerate(dims):
        base[target_column(name)] = targets[:, d]
    names = sorted({a for a in annotators[is_train]}) if normalization == "offsets" else []
    index = {a: i for i, a in enumerate(names)}
    base["annotator"] = [index.get(a, -1) for a in annotators]
    train = base[is_train].reset_index(drop=True)
    if normalization != "offsets":
        train = per_response(train, dims)
    test_rows = base[is_test & usable].reset_index(drop=True)
    test = per_response(test_rows, dims)
    test_ratings = test_rows.assign(response_key=test_rows["prompt_key"] + "\x00" + test_rows["response"]) if normalization != "dimension" else None
    return RatingsData(
        train=train, test=test, dimensions=dims, scale=scale, normalization=normalization, annotators=len(names), source=source,
        manifest=read_manifest(path), counts={"rating_rows": int(usable.sum()), "train_rows": len(train), "test_responses": len(test)}, test_ratings=test_ratings,
    )


def normalise(values: np.ndarray, annotators: np.ndarray, is_train: np.ndarray, normalization: str, dims: list[str]) -> tuple[np.ndarray, dict]:
    """Scores (N, D) → normalised targets (N, D) and the dimension scale, from the training rows' statistics.

    `annotator`: z = (y − μ_a) / σ_a with μ_a = (Σ y + k μ) / (n + k) and
    σ_a² = (Σ (y − μ_a)² + k σ²) / (n + k), k = SHRINK, μ and σ the dimension's overall mean and std;
    otherwise z = (y − μ) / σ. Annotators without training ratings get μ and σ.
    """
    train = values[is_train]
    mean = np.nanmean(train, axis=0)  # (D,)
    std = np.nanstd(train, axis=0)
    std = np.where(std > MIN_STD, std, 1.0)
    scale = {name: {"mean": float(mean[d]), "std": float(std[d])} for d, name in enumerate(dims)}
    if normalization != "annotator":
        return (values - mean) / std, scale
    out = np.full_like(values, np.nan)
    frame = pd.DataFrame(values[is_train], columns=range(len(dims)))
    frame["annotator"] = annotators[is_train]
    for d in range(len(dims)):
        grouped = frame.groupby("annotator")[d]
        n, total = grouped.count(), grouped.sum()
        mu = (total + SHRINK * mean[d]) / (n + SHRINK)
        squares = frame.assign(dev=(frame[d] - frame["annotator"].map(mu)) ** 2).groupby("annotator")["dev"].sum()
        sigma = np.sqrt((squares + SHRINK * std[d] ** 2) / (n + SHRINK)).clip(lower=MIN_STD)
        row_mu = pd.Series(annotators).map(mu).fillna(mean[d]).to_numpy(dtype=float)
        row_sigma = pd.Series(annotators).map(sigma).fillna(std[d]).to_numpy(dtype=float)
        out[:, d] = (values[:, d] - row_mu) / row_sigma
    return out, scale


def per_response(frame: pd.DataFrame, dims: list[str]) -> pd.DataFrame:
    """One row per (prompt, response): the mean target over its ratings (NaN where nobody rated a dimension)."""
    if frame.empty:
        return frame.assign(n=pd.Series(dtype=int))
    columns = [target_column(d) for d in dims]
    grouped = frame.groupby(["prompt_key", "response"], sort=False)
    out = grouped[columns].mean().reset_index()
    out["prompt"] = grouped["prompt"].first().to_numpy()
    out["n"] = grouped.size().to_numpy()
    out["annotator"] = -1
    return out
