"""Switching activity from simulation: how often each net toggles under an operand stream.

A stream is the sequence of (activation, weight) pairs a multiplier sees, one per clock cycle:
uniform random operands, or pairs drawn from what a network really multiplies (see
``evaluators.runtime.workload``). Simulation is zero-delay, so glitches are not counted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from circuits.netlist_sim import Netlist, Word, operand_words


@dataclass(frozen=True)
class OperandStream:
    """Operand codes in cycle order: activations ``a`` and weights ``b`` (int, same length)."""

    a: np.ndarray
    b: np.ndarray
    name: str = "stream"

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.a, dtype=np.int16).tobytes())
        digest.update(np.ascontiguousarray(self.b, dtype=np.int16).tobytes())
        return digest.hexdigest()

    def save(self, path: Path) -> None:
        """An ``.npz`` with the stream and its operand histograms (kept with a study)."""
        bins = np.arange(-128, 257)
        np.savez_compressed(path, activations=self.a.astype(np.int16), weights=self.b.astype(np.int16),
                            histogram_codes=bins[:-1],
                            activation_histogram=np.histogram(self.a, bins)[0],
                            weight_histogram=np.histogram(self.b, bins)[0])

    @classmethod
    def load(cls, path: Path, name: str = "workload") -> OperandStream:
        with np.load(path) as data:
            return cls(data["activations"].astype(np.int64), data["weights"].astype(np.int64), name)

    @classmethod
    def uniform(cls, signed: bool, length: int, seed: int = 0) -> OperandStream:
        """Independent uniform operands over the whole code range."""
        rng = np.random.default_rng(seed)
        lo, hi = (-128, 128) if signed else (0, 256)
        return cls(rng.integers(lo, hi, length), rng.integers(lo, hi, length), "uniform")


def transitions(words: Word, count: int) -> int:
    """Number of value changes between consecutive bits of a packed stream of ``count`` bits."""
    previous = np.concatenate((np.zeros(1, np.uint64), words[:-1] >> np.uint64(63)))
    changes = words ^ ((words << np.uint64(1)) | previous)
    changes[0] &= ~np.uint64(1)  # bit 0 has no predecessor
    tail = len(words) * 64 - count
    if tail:
        changes[-1] &= np.uint64((1 << (64 - tail)) - 1)
    return int(np.bitwise_count(changes).sum())


def toggle_rates(netlist: Netlist, nets: dict[str, int], ports: tuple[str, str],
                 stream: OperandStream) -> dict[str, float]:
    """Transitions per cycle of each named net bit (``nets``: name -> bit) under ``stream``;
    ``ports`` names the activation and weight input ports."""
    n = len(stream.a)
    values = netlist.simulate({ports[0]: operand_words(stream.a), ports[1]: operand_words(stream.b)})
    return {name: transitions(values[bit], n) / (n - 1) for name, bit in nets.items()}
