"""Classic approximate multipliers, the baselines every generated front is compared with: the
truncated and broken-array multipliers of every size (``baseline_family``).

Both remove partial-product bits from the 8x8 array; what remains is summed exactly. Their
model, ``ArrayMultiplier`` with ``truncated``, ``broken_array`` and the name grammar ``parse``,
lives in ``circuits.multiplier`` next to the ``Multiplier`` it builds (``Multiplier.parse``
resolves ``baseline:NAME`` through it) and is re-exported here.
"""

from __future__ import annotations

from circuits.multiplier import WIDTH, ArrayMultiplier, broken_array, truncated
from circuits.multiplier import parse_baseline as parse

__all__ = ["WIDTH", "ArrayMultiplier", "baseline_family", "broken_array", "parse", "truncated"]


def baseline_family(signed: bool = True) -> list[ArrayMultiplier]:
    """The baselines fronts are compared with: truncation with and without compensation at
    every k, and the broken-array multipliers over their two break levels; a circuit equal to
    one listed before it (a BAM that is a plain truncation, a compensation that rounds to 0) is
    left out."""
    family = [truncated(k, signed, c) for k in range(1, 13) for c in (False, True)]
    family += [broken_array(h, v, signed) for h in range(0, 5) for v in range(h, 13) if h or v]
    unique: dict[tuple, ArrayMultiplier] = {}
    for m in family:
        unique.setdefault((m.kept, m.constant), m)
    return list(unique.values())
