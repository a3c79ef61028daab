"""Bit-parallel simulation of a gate-level netlist (Yosys JSON of internal ``$_..._`` gates).

Each net holds one bit per input vector, packed 64 to a machine word, so all 65,536 operand
pairs of an 8x8 multiplier are one pass over the gates. The netlist is the synthesized circuit
with its Liberty cells flattened into Yosys's gate primitives (``read_liberty`` derives those
from each cell's ``function``), so simulating it is simulating what was synthesized.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Word = np.ndarray  # packed uint64 bits

_GATES: dict[str, tuple[tuple[str, ...], Callable[..., Word]]] = {
    "$_BUF_": (("A",), lambda a: a),
    "$_NOT_": (("A",), lambda a: ~a),
    "$_AND_": (("A", "B"), lambda a, b: a & b),
    "$_NAND_": (("A", "B"), lambda a, b: ~(a & b)),
    "$_OR_": (("A", "B"), lambda a, b: a | b),
    "$_NOR_": (("A", "B"), lambda a, b: ~(a | b)),
    "$_XOR_": (("A", "B"), lambda a, b: a ^ b),
    "$_XNOR_": (("A", "B"), lambda a, b: ~(a ^ b)),
    "$_ANDNOT_": (("A", "B"), lambda a, b: a & ~b),
    "$_ORNOT_": (("A", "B"), lambda a, b: a | ~b),
    "$_MUX_": (("A", "B", "S"), lambda a, b, s: (a & ~s) | (b & s)),
    "$_NMUX_": (("A", "B", "S"), lambda a, b, s: ~((a & ~s) | (b & s))),
    "$_AOI3_": (("A", "B", "C"), lambda a, b, c: ~((a & b) | c)),
    "$_OAI3_": (("A", "B", "C"), lambda a, b, c: ~((a | b) & c)),
    "$_AOI4_": (("A", "B", "C", "D"), lambda a, b, c, d: ~((a & b) | (c & d))),
    "$_OAI4_": (("A", "B", "C", "D"), lambda a, b, c, d: ~((a | b) & (c | d))),
}


class NetlistError(ValueError):
    """A netlist the simulator cannot evaluate (unknown cell, loop, undriven net)."""


@dataclass(frozen=True)
class Port:
    name: str
    direction: str
    bits: tuple
    signed: bool


@dataclass(frozen=True)
class _Gate:
    name: str
    kind: str
    fn: Callable[..., Word]
    inputs: tuple
    output: int


class Netlist:
    """A combinational gate netlist, levelized once, simulated many times."""

    def __init__(self, module: dict, name: str = "top") -> None:
        self.name = name
        self.ports = {
            p: Port(p, d["direction"], tuple(d["bits"]), bool(d.get("signed", 0)))
            for p, d in module["ports"].items()
        }
        self.netnames = {n: tuple(d["bits"]) for n, d in module["netnames"].items()}
        gates = []
        for cell_name, cell in module["cells"].items():
            if cell["type"] not in _GATES:
                raise NetlistError(f"cell {cell_name!r} of type {cell['type']!r} is not a gate primitive")
            pins, fn = _GATES[cell["type"]]
            conns = cell["connections"]
            gates.append(_Gate(cell_name, cell["type"], fn, tuple(conns[p][0] for p in pins),
                               conns["Y"][0]))
        self._gates = self._levelize(gates)

    @classmethod
    def from_json(cls, path: Path, top: str | None = None) -> Netlist:
        modules = json.loads(Path(path).read_text())["modules"]
        if top is None:
            if len(modules) != 1:
                raise NetlistError(f"{path}: several modules; name the top one")
            top = next(iter(modules))
        return cls(modules[top], top)

    def _levelize(self, gates: list[_Gate]) -> list[_Gate]:
        driven = {p: True for port in self.ports.values() if port.direction == "input" for p in port.bits}
        by_output = {g.output: g for g in gates}
        order: list[_Gate] = []
        state: dict[int, int] = {}  # 1 visiting, 2 done
        for gate in gates:
            stack = [(gate, False)]
            while stack:
                g, expanded = stack.pop()
                if state.get(g.output) == 2:
                    continue
                if expanded:
                    state[g.output] = 2
                    order.append(g)
                    continue
                if state.get(g.output) == 1:
                    raise NetlistError(f"combinational loop through net bit {g.output}")
                state[g.output] = 1
                stack.append((g, True))
                for bit in g.inputs:
                    if isinstance(bit, str) or bit in driven or state.get(bit) == 2:
                        continue
                    if bit not in by_output:
                        raise NetlistError(f"net bit {bit} is read but never driven")
                    if state.get(bit) == 1:
                        raise NetlistError(f"combinational loop through net bit {bit}")
                    stack.append((by_output[bit], False))
        return order

    @property
    def gates(self) -> dict[str, tuple[str, int]]:
        """Gate name -> (gate type, output net bit)."""
        return {g.name: (g.kind, g.output) for g in self._gates}

    def logic_depth(self) -> int:
        """Gates on the longest input-to-output path (the Liberty-free delay estimate)."""
        depth: dict = {}
        for g in self._gates:
            depth[g.output] = 1 + max((depth.get(b, 0) for b in g.inputs), default=0)
        return max(depth.values(), default=0)

    def simulate(self, inputs: dict[str, np.ndarray]) -> dict[int, Word]:
        """Values of every net bit for packed input words: ``inputs[port]`` is (width, words)
        uint64, bit k of the port in row k."""
        words = next(iter(inputs.values())).shape[1]
        values: dict = {"0": np.zeros(words, np.uint64), "1": np.full(words, ~np.uint64(0))}
        values["x"] = values["z"] = values["0"]
        for name, port in self.ports.items():
            if port.direction == "input":
                if name not in inputs:
                    raise NetlistError(f"no stimulus for input port {name!r}")
                for k, bit in enumerate(port.bits):
                    values[bit] = inputs[name][k]
        for g in self._gates:
            values[g.output] = g.fn(*(values[b] for b in g.inputs))
        return values

    def read_port(self, values: dict[int, Word], port: str, count: int) -> np.ndarray:
        """Integer value of an output port for each of the first ``count`` vectors."""
        p = self.ports[port]
        bits = np.stack([unpack(values[b], count) for b in p.bits]).astype(np.int64)
        value = (bits << np.arange(len(p.bits), dtype=np.int64)[:, None]).sum(axis=0)
        if p.signed:
            value -= (bits[-1] << len(p.bits))
        return value


def pack(bits: np.ndarray) -> Word:
    """Bool array (n,) -> packed uint64 words (bit i of the stream at word i // 64, bit i % 64)."""
    n = len(bits)
    padded = np.zeros(-(-n // 64) * 64, dtype=bool)
    padded[:n] = bits
    return np.packbits(padded, bitorder="little").view(np.uint64)


def unpack(words: Word, count: int) -> np.ndarray:
    """Inverse of ``pack``: the first ``count`` bits as a bool array."""
    return np.unpackbits(words.view(np.uint8), bitorder="little", count=count).astype(bool)


def operand_words(values: np.ndarray, width: int = 8) -> np.ndarray:
    """Packed stimulus (width, words) for a stream of integer operand values (two's complement)."""
    raw = np.asarray(values, dtype=np.int64) & ((1 << width) - 1)
    return np.stack([pack((raw >> k) & 1 == 1) for k in range(width)])
