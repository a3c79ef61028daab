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

# gate type -> (input pins, bit-parallel function, Verilog expression over the pins)
_GATES: dict[str, tuple[tuple[str, ...], Callable[..., Word], str]] = {
    "$_BUF_": (("A",), lambda a: a, "{A}"),
    "$_NOT_": (("A",), lambda a: ~a, "~{A}"),
    "$_AND_": (("A", "B"), lambda a, b: a & b, "{A} & {B}"),
    "$_NAND_": (("A", "B"), lambda a, b: ~(a & b), "~({A} & {B})"),
    "$_OR_": (("A", "B"), lambda a, b: a | b, "{A} | {B}"),
    "$_NOR_": (("A", "B"), lambda a, b: ~(a | b), "~({A} | {B})"),
    "$_XOR_": (("A", "B"), lambda a, b: a ^ b, "{A} ^ {B}"),
    "$_XNOR_": (("A", "B"), lambda a, b: ~(a ^ b), "~({A} ^ {B})"),
    "$_ANDNOT_": (("A", "B"), lambda a, b: a & ~b, "{A} & ~{B}"),
    "$_ORNOT_": (("A", "B"), lambda a, b: a | ~b, "{A} | ~{B}"),
    "$_MUX_": (("A", "B", "S"), lambda a, b, s: (a & ~s) | (b & s), "{S} ? {B} : {A}"),
    "$_NMUX_": (("A", "B", "S"), lambda a, b, s: ~((a & ~s) | (b & s)), "~({S} ? {B} : {A})"),
    "$_AOI3_": (("A", "B", "C"), lambda a, b, c: ~((a & b) | c), "~(({A} & {B}) | {C})"),
    "$_OAI3_": (("A", "B", "C"), lambda a, b, c: ~((a | b) & c), "~(({A} | {B}) & {C})"),
    "$_AOI4_": (("A", "B", "C", "D"), lambda a, b, c, d: ~((a & b) | (c & d)),
                "~(({A} & {B}) | ({C} & {D}))"),
    "$_OAI4_": (("A", "B", "C", "D"), lambda a, b, c, d: ~((a | b) & (c | d)),
                "~(({A} | {B}) & ({C} | {D}))"),
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
class Gate:
    """One gate: its type, the net bits it reads (ints, or "0"/"1" constants) and drives."""

    name: str
    kind: str
    fn: Callable[..., Word]
    inputs: tuple
    output: int

    def expression(self, operand: Callable[[int | str], str]) -> str:
        """The gate as a Verilog expression, each input written by ``operand``."""
        pins, _, template = _GATES[self.kind]
        return template.format(**{p: operand(b) for p, b in zip(pins, self.inputs)})


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
            pins, fn, _ = _GATES[cell["type"]]
            conns = cell["connections"]
            gates.append(Gate(cell_name, cell["type"], fn, tuple(conns[p][0] for p in pins),
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

    def _levelize(self, gates: list[Gate]) -> list[Gate]:
        driven = {p: True for port in self.ports.values() if port.direction == "input" for p in port.bits}
        by_output = {g.output: g for g in gates}
        order: list[Gate] = []
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
    def order(self) -> tuple[Gate, ...]:
        """The gates in evaluation order (every gate after the gates driving its inputs)."""
        return tuple(self._gates)

    @property
    def gates(self) -> dict[str, tuple[str, int]]:
        """Gate name -> (gate type, output net bit)."""
        return {g.name: (g.kind, g.output) for g in self._gates}

    def assignments(self, operand: Callable[[int | str], str],
                    replaced: dict[int, str] | None = None, skipped: frozenset = frozenset()
                    ) -> list[str]:
        """The gates as Verilog: ``wire n<bit>;`` then ``assign n<bit> = ...;`` per gate, in
        evaluation order. ``operand`` names inputs and constants; a gate whose output is in
        ``replaced`` drives that expression instead; gates in ``skipped`` (indices into
        ``order``) are left out."""
        replaced = replaced or {}
        kept = [(g, replaced.get(g.output) or g.expression(operand))
                for k, g in enumerate(self._gates) if g.output in replaced or k not in skipped]
        return [f"wire n{g.output};" for g, _ in kept] + \
            [f"assign n{g.output} = {expr};" for g, expr in kept]

    def logic_depth(self) -> int:
        """Gates on the longest input-to-output path (the Liberty-free delay estimate)."""
        depth: dict = {}
        for g in self._gates:
            depth[g.output] = 1 + max((depth.get(b, 0) for b in g.inputs), default=0)
        return max(depth.values(), default=0)

    def simulate(self, inputs: dict[str, np.ndarray], force: dict[int, Word] | None = None
                 ) -> dict[int, Word]:
        """Values of every net bit for packed input words: ``inputs[port]`` is (width, words)
        uint64, bit k of the port in row k. A gate whose output net is in ``force`` drives the
        forced words instead of its function (a stuck-at or replaced net)."""
        words = next(iter(inputs.values())).shape[1]
        values: dict = {"0": np.zeros(words, np.uint64), "1": np.full(words, ~np.uint64(0))}
        values["x"] = values["z"] = values["0"]
        for name, port in self.ports.items():
            if port.direction == "input":
                if name not in inputs:
                    raise NetlistError(f"no stimulus for input port {name!r}")
                for k, bit in enumerate(port.bits):
                    values[bit] = inputs[name][k]
        return self._evaluate(values, force or {}, downstream_only=False)

    def resimulate(self, values: dict[int, Word], force: dict[int, Word]) -> dict[int, Word]:
        """Net values after forcing ``force`` onto a finished simulation ``values``: only the
        gates downstream of a forced net are evaluated again (``values`` is not changed)."""
        return self._evaluate(dict(values), force, downstream_only=True)

    def _evaluate(self, values: dict, force: dict[int, Word], downstream_only: bool) -> dict:
        values.update(force)
        changed = set(force)
        for g in self._gates:
            if g.output in force:
                continue
            if not downstream_only or not changed.isdisjoint(g.inputs):
                values[g.output] = g.fn(*(values[b] for b in g.inputs))
                changed.add(g.output)
        return values

    def read_port(self, values: dict[int, Word], port: str, count: int) -> np.ndarray:
        """Integer value of an output port for each of the first ``count`` vectors."""
        p = self.ports[port]
        value = read_bits([values[b] for b in p.bits], count)
        if p.signed:
            value -= (value >> (len(p.bits) - 1)) << len(p.bits)
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


def read_bits(words: list[Word], count: int) -> np.ndarray:
    """Unsigned integers (int64) whose bit k over the first ``count`` vectors is ``words[k]``."""
    if len(words) > 62:
        raise NetlistError(f"cannot read a {len(words)}-bit value as int64")
    bits = np.unpackbits(np.stack(words).view(np.uint8), axis=1, bitorder="little", count=count)
    rows = -(-len(words) // 8) * 8
    padded = np.zeros((rows, count), np.uint8)
    padded[: len(words)] = bits
    packed = np.packbits(padded, axis=0, bitorder="little")  # (bytes, count), byte 0 lowest
    value = np.zeros(count, np.int64)
    for k in range(packed.shape[0]):
        value |= packed[k].astype(np.int64) << (8 * k)
    return value


def net_names(names: dict[int, str]) -> Callable[[int | str], str]:
    """A Verilog name for every net bit: ``names`` for the listed ones (ports), ``n<bit>`` for
    the others, ``1'b1``/``1'b0`` for the constants (undriven ``x``/``z`` read as 0)."""
    def name(net: int | str) -> str:
        if isinstance(net, str):
            return "1'b1" if net == "1" else "1'b0"
        return names.get(net, f"n{net}")
    return name
