"""Convex subgraphs of a gate netlist within input and output limits.

A subgraph is a set of gates; its inputs are the nets its gates read from outside it, its
outputs the nets of its gates read outside it (or at a primary output). It is convex when no
path leaves it and comes back, so its inputs never depend on its outputs and replacing its
outputs by any function of its inputs leaves a combinational circuit. Sets are bit masks over
the gates' evaluation order; ancestors and descendants are precomputed masks, so the convex
closure of a set is ``set | (descendants & ancestors)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from circuits.netlist_sim import Netlist


@dataclass(frozen=True)
class Subgraph:
    """Gates (indices into the netlist's order), their input nets and output nets."""

    gates: frozenset[int]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


class GateGraph:
    """The fan-in/fan-out structure of a netlist, for growing convex subgraphs."""

    def __init__(self, netlist: Netlist, primary_outputs: Sequence[int]) -> None:
        self.order = netlist.order
        self.driver = {g.output: k for k, g in enumerate(self.order)}
        self.readers: dict[int, list[int]] = {}
        for k, g in enumerate(self.order):
            for net in set(g.inputs):
                if isinstance(net, int):
                    self.readers.setdefault(net, []).append(k)
        self.primary = set(primary_outputs)
        self.ancestors = [0] * len(self.order)
        for k, g in enumerate(self.order):  # drivers come first in evaluation order
            for net in g.inputs:
                if (d := self.driver.get(net)) is not None:
                    self.ancestors[k] |= self.ancestors[d] | (1 << d)
        self.descendants = [0] * len(self.order)
        for k in range(len(self.order) - 1, -1, -1):
            for r in self.readers.get(self.order[k].output, ()):
                self.descendants[k] |= self.descendants[r] | (1 << r)

    def closure(self, mask: int) -> int:
        """The smallest convex set containing ``mask``."""
        down = up = 0
        for k in _members(mask):
            down |= self.descendants[k]
            up |= self.ancestors[k]
        return mask | (down & up)

    def boundary(self, mask: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Input nets and output nets of the gate set ``mask``."""
        inside = {self.order[k].output for k in _members(mask)}
        inputs = {n for k in _members(mask) for n in self.order[k].inputs
                  if isinstance(n, int) and n not in inside}
        outputs = {n for n in inside if n in self.primary
                   or any(not (mask >> r) & 1 for r in self.readers.get(n, ()))}
        return tuple(sorted(inputs)), tuple(sorted(outputs))

    def grow(self, seed: int, rank: Sequence[float], max_inputs: int, max_outputs: int,
             max_gates: int = 128) -> Subgraph | None:
        """Grow a convex subgraph from gate ``seed``: repeatedly add the neighbouring gate
        whose closure keeps the fewest inputs (then outputs, then lowest ``rank``) while the
        inputs stay within ``max_inputs``; return the largest set seen that also met
        ``max_outputs``."""
        mask = self.closure(1 << seed)
        best: Subgraph | None = None
        while True:
            inputs, outputs = self.boundary(mask)
            if len(inputs) > max_inputs:
                break
            if len(outputs) <= max_outputs and (best is None or len(best.gates) < mask.bit_count()):
                best = Subgraph(frozenset(_members(mask)), inputs, outputs)
            options = []
            for k in self._neighbours(mask, inputs, outputs):
                grown = self.closure(mask | (1 << k))
                if grown.bit_count() > max_gates:
                    continue
                i2, o2 = self.boundary(grown)
                if len(i2) <= max_inputs:
                    options.append((len(i2), len(o2), rank[k], k, grown))
            if not options:
                break
            mask = min(options)[-1]
        return best

    def _neighbours(self, mask: int, inputs: tuple[int, ...], outputs: tuple[int, ...]) -> set[int]:
        near = {self.driver[n] for n in inputs if n in self.driver}
        near |= {r for n in outputs for r in self.readers.get(n, ())}
        return {k for k in near if not (mask >> k) & 1}


def _members(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out
