"""Majority vote: each item's most frequent label, with the share of votes it got."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlhf.agreement import encode_ratings


class MajorityVote:
    """The most frequent label per item.

        label_u = argmax_c n_uc,   confidence_u = n_u,label / m_u

    Ties are broken deterministically toward the smallest label in sort order (the first of
    the value domain), so refitting the same data always gives the same labels; the tie is
    visible as a confidence equal to the runner-up's share in `probas_`.

    Input: long-format `df` with columns item, annotator, value (missing values dropped).

    Fitted attributes:
        labels_: pd.Series (index item, name "label").
        confidence_: pd.Series (index item): share of the item's votes the label got.
        probas_: pd.DataFrame (items x labels): each label's share of the item's votes.
        n_votes_: pd.Series (index item): ratings per item.
    """

    def fit(self, df: pd.DataFrame) -> MajorityVote:
        enc = encode_ratings(df, "nominal")
        cells = enc.cells()
        n_items = enc.n_items
        # Cells are sorted by item then value: the first cell reaching the item's maximum
        # count is the smallest tied label.
        best_count = np.zeros(n_items)
        np.maximum.at(best_count, cells.item, cells.count)
        candidate = np.flatnonzero(cells.count == best_count[cells.item])
        _, first = np.unique(cells.item[candidate], return_index=True)
        winner = candidate[first]
        item_index = pd.Index(enc.item_labels, name="item")
        self.labels_ = pd.Series(enc.domain[cells.value[winner]], index=item_index, name="label")
        self.n_votes_ = pd.Series(cells.per_item.astype(np.int64), index=item_index, name="n_votes")
        self.confidence_ = pd.Series(cells.count[winner] / cells.per_item, index=item_index, name="confidence")
        shares = np.zeros((n_items, enc.n_values))
        shares[cells.item, cells.value] = cells.count / cells.per_item[cells.item]
        self.probas_ = pd.DataFrame(shares, index=item_index, columns=pd.Index(enc.domain, name="label"))
        return self

    def fit_predict(self, df: pd.DataFrame) -> pd.Series:
        return self.fit(df).labels_
