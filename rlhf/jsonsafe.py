"""`json_safe`: any value made storable in a JSON column on SQLite and PostgreSQL alike.

A neutral home for it: the queue (`rlhf.jobs`), the worker and the backends that record
artifacts (`rlhf.generate`) all need it, and none of them should import another for it.
"""

from __future__ import annotations

import math
from typing import Any


def json_safe(value: Any) -> Any:
    """`value` made JSON-storable on both backends: numbers become floats/ints, NaN and ±inf None.

    PostgreSQL's JSON type rejects the `NaN` token Python writes, and numpy / torch scalars are
    not JSON at all; a NaN loss is still visible as a gap in the series (and as an error).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    return str(value)
