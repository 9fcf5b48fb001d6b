"""The previous length-bias fit, the anchor of bench_length_model.py and of its test: `rlhf.length_model` with the
crowd fitted by L-BFGS over every response (as before issue 20) instead of block Newton.

Only the fit differs: the annotators are factorised the new way (hashing; the old code sorted the names with
np.unique, seconds more at 10^6 rows), so this anchor is a little faster than the old code and the ratio against
it is conservative.
"""

from __future__ import annotations

from unittest import mock

import rlhf.length_model as length_model


def length_bias(preferences, reference_excludes=()):
    """`rlhf.length_model.length_bias` with every crowd fit by L-BFGS (no block is small enough for Newton)."""
    with mock.patch.object(length_model, "BLOCK_LIMIT", 0):
        return length_model.length_bias(preferences, reference_excludes)
