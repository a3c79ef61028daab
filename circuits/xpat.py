"""The built-in XPAT-style generator: approximate a circuit step by step under an error bound.

With 16 inputs every case can be simulated, so each step is quantifier-free:

1. **Label** every gate by the worst-case error of the circuit with that gate stuck at its
   better constant (exhaustive bit-parallel simulation, ``circuits.netlist_sim``).
2. **Extract** a convex subgraph within the input/output limits, grown from the gate with the
   lowest label not tried yet (``circuits.subgraph``).
3. **Allowed outputs**: for every subgraph-input pattern, the subgraph output vectors that keep
   every product it affects within the threshold (one forced simulation per output vector).
4. **Fit** a sum-of-products template to those sets with the fewest literals (z3,
   ``circuits.sop``).
5. **Substitute** the subgraph by the fitted logic, **re-synthesize** (Yosys + ABC) and
   **verify** the worst-case error by exhaustive simulation of the new netlist; the step is
   accepted when the area went down.

Thresholds are walked in increasing order; every accepted circuit is a design point of the
chain, and the next steps start from it. Errors are always measured against the exact circuit.
Clean-room: written from the published method (XPAT, Rezaalipour et al., DATE 2023; SubXPAT),
not from its code.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from circuits.activity import OperandStream
from circuits.cache import ResultCache
from circuits.characterize import FlowSettings
from circuits.generation import DesignPoint, ExactCircuit, OnPoint, design_point, wrap_signed
from circuits.liberty import load_liberty
from circuits.multiplier import Multiplier
from circuits.netlist_sim import Netlist, Word, net_names, operand_words, read_bits
from circuits.sop import Sop, Template, fit_sop
from circuits.subgraph import GateGraph, Subgraph
from circuits.synthesis import synthesize_asic

GENERATOR_VERSION = "1"
VECTORS = 65536
UNUSABLE = 1 << 40  # the label of a gate no constant can replace
log = logging.getLogger(__name__)


class GeneratorError(RuntimeError):
    """A generated circuit broke its own guarantee (a bug, never a user error)."""


def log_spaced(low: float, high: float, count: int) -> tuple[int, ...]:
    """``count`` integer thresholds spaced evenly in log scale from ``low`` to ``high``."""
    return tuple(int(round(v)) for v in np.geomspace(low, high, count))


@dataclass(frozen=True)
class XpatParams:
    """Parameters of one generator run (all of them are part of the cache key)."""

    thresholds: tuple[int, ...] = log_spaced(16, 1024, 7)
    max_inputs: int = 8
    max_outputs: int = 3
    literals_per_product: int = 3
    products: int = 2  # per output, or the shared pool's size
    shared: bool = False
    steps_per_threshold: int = 8  # accepted steps before moving to the next threshold
    attempts: int = 6  # subgraphs tried in a step before giving up on the threshold
    solver_timeout_s: float = 2.0
    time_limit_s: float = 600.0
    exact_zero: bool = False  # products with a zero operand stay exact (0): no error where
    # a network multiplies by a zero activation (ReLU) or a pruned weight

    def __post_init__(self) -> None:
        if not self.thresholds or any(t < 0 for t in self.thresholds):
            raise ValueError("thresholds must be a non-empty list of non-negative errors")
        if self.max_inputs < 1 or self.max_outputs < 1:
            raise ValueError("max_inputs and max_outputs must be >= 1")
        if self.max_inputs > 12 or self.max_outputs > 8:
            raise ValueError("max_inputs above 12 or max_outputs above 8 make the solver "
                             "problem too large")

    @property
    def template(self) -> Template:
        return Template(self.literals_per_product, self.products, self.shared)


@dataclass
class _Circuit:
    """The current circuit: its Verilog core, its gate netlist and its area."""

    verilog: str
    top: str
    netlist: Netlist
    area: float
    values: dict = field(default_factory=dict)  # simulation over all operand pairs

    @property
    def outputs(self) -> tuple:
        return self.netlist.ports["r"].bits


@dataclass
class XpatGenerator:
    """Built-in generator; ``generate`` returns the chain of accepted design points."""

    config: XpatParams = field(default_factory=XpatParams)
    prefix: str | None = None  # design names: PREFIX<step>; default <exact name>_xpat<step>
    name: str = "xpat"
    version: str = GENERATOR_VERSION

    def params(self) -> dict:
        return {**asdict(self.config), "prefix": self.prefix}

    def generate(self, exact: ExactCircuit, flow: FlowSettings,
                 cache: ResultCache | None = None, on_point: OnPoint | None = None,
                 workload: OperandStream | None = None) -> list[DesignPoint]:
        started = time.monotonic()
        deadline = started + self.config.time_limit_s
        liberty = load_liberty(flow.liberty) if flow.liberty else None
        index = np.arange(VECTORS)
        stimulus = {"a": operand_words(index >> 8), "b": operand_words(index & 0xFF)}

        def synthesize(verilog: str, top: str) -> _Circuit:
            mult = Multiplier(top, verilog, top, False)
            gates = synthesize_asic(mult, None, flow.timeout_s)
            area = synthesize_asic(mult, liberty, flow.timeout_s).area if liberty else gates.area
            circuit = _Circuit(verilog, top, gates.netlist, area)
            circuit.values = circuit.netlist.simulate(stimulus)
            return circuit

        current = synthesize(exact.verilog, exact.top)
        reference = _outputs(current.values, current.outputs)
        zero = ((index >> 8) == 0) | ((index & 0xFF) == 0)
        protected = zero if self.config.exact_zero else np.zeros(VECTORS, bool)
        points: list[DesignPoint] = []
        for threshold in self.config.thresholds:
            for _ in range(self.config.steps_per_threshold):
                if time.monotonic() >= deadline:
                    return points
                step = len(points) + 1
                name = f"{self.prefix or exact.name + '_xpat'}{step}"
                core = f"{name}_core"
                bound = np.where(protected, 0, threshold)
                found = self._step(current, reference, bound, core, synthesize, deadline)
                if found is None:
                    break
                current = found
                point = design_point(name, self.name, wrap_signed(current.verilog, core, name,
                                                                  exact.signed),
                                     exact.signed, threshold=threshold, step=step,
                                     started=started, flow=flow, cache=cache, workload=workload)
                point.metrics["synthesis_area"] = current.area
                log.info("%s: threshold %d, WCE %g, area %g", name, threshold,
                         point.metrics["wce"], point.metrics["area"])
                points.append(point)
                if on_point:
                    on_point(point)
        return points

    def _step(self, current: _Circuit, reference: np.ndarray, bound: np.ndarray, top: str,
              synthesize, deadline: float) -> _Circuit | None:
        """The best substitution within the per-vector error ``bound`` among ``attempts``
        subgraphs (the smallest area below the current one), or None when none of them helps."""
        netlist, values = current.netlist, current.values
        graph = GateGraph(netlist, current.outputs)
        labels = stuck_at_labels(netlist, values, current.outputs, reference, bound == 0)
        threshold = int(bound.max())
        best: _Circuit | None = None
        tried = covered = 0
        for seed in map(int, np.argsort(labels, kind="stable")):
            if tried >= self.config.attempts or time.monotonic() >= deadline \
                    or labels[seed] > threshold:
                break
            if (covered >> seed) & 1:
                continue
            sub = graph.grow(seed, labels, self.config.max_inputs, self.config.max_outputs)
            covered |= 1 << seed
            if sub is None:
                continue
            covered |= sum(1 << k for k in sub.gates)
            tried += 1
            allowed, occurring = allowed_outputs(netlist, values, current.outputs, sub,
                                                 reference, bound)
            sop = fit_sop(allowed, occurring, self.config.template, self.config.solver_timeout_s)
            if sop is None:
                continue
            candidate = synthesize(substitute(netlist, sub, sop, top), top)
            error = np.abs(_outputs(candidate.values, candidate.outputs) - reference)
            if (error > bound).any():
                raise GeneratorError(f"{top}: an error of {int(error.max())} exceeds its bound "
                                     f"after substitution")
            if candidate.area < (best or current).area:
                best = candidate
        return best


def _outputs(values: dict, bits: tuple) -> np.ndarray:
    return read_bits([values[b] for b in bits], VECTORS)


def _constant(bit: bool) -> Word:
    return np.full(VECTORS // 64, ~np.uint64(0) if bit else np.uint64(0))


def stuck_at_labels(netlist: Netlist, values: dict, outputs: tuple, reference: np.ndarray,
                    exact: np.ndarray | None = None) -> np.ndarray:
    """Per gate (in evaluation order): the worst-case error of the circuit with that gate's
    output stuck at the constant that errs less (``UNUSABLE`` if either constant changes a
    product at a vector marked ``exact``)."""
    labels = np.empty(len(netlist.order), np.int64)
    for k, gate in enumerate(netlist.order):
        errors = []
        for c in (False, True):
            error = np.abs(_outputs(netlist.resimulate(values, {gate.output: _constant(c)}),
                                    outputs) - reference)
            errors.append(UNUSABLE if exact is not None and error[exact].any() else error.max())
        labels[k] = min(errors)
    return labels


def allowed_outputs(netlist: Netlist, values: dict, outputs: tuple, sub: Subgraph,
                    reference: np.ndarray, bound: np.ndarray | int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``allowed[p, o]``: forcing the subgraph outputs to vector ``o`` wherever its inputs show
    pattern ``p`` keeps every product within ``bound`` (a threshold, or one per operand pair);
    ``occurring[p]``: pattern ``p`` happens for some operand pair."""
    pattern = read_bits([values[n] for n in sub.inputs], VECTORS)
    n_patterns = 1 << len(sub.inputs)
    occurring = np.bincount(pattern, minlength=n_patterns) > 0
    allowed = np.empty((n_patterns, 1 << len(sub.outputs)), bool)
    for o in range(allowed.shape[1]):
        force = {net: _constant(bool((o >> k) & 1)) for k, net in enumerate(sub.outputs)}
        error = np.abs(_outputs(netlist.resimulate(values, force), outputs) - reference)
        allowed[:, o] = np.bincount(pattern[error > bound], minlength=n_patterns) == 0
    return allowed, occurring


def substitute(netlist: Netlist, sub: Subgraph, sop: Sop, top: str) -> str:
    """Verilog of the netlist with the subgraph replaced by the fitted sum of products."""
    operand = net_names({bit: f"{port}[{k}]" for port in ("a", "b")
                         for k, bit in enumerate(netlist.ports[port].bits)})
    replaced = dict(zip(sub.outputs, sop.expressions([operand(n) for n in sub.inputs])))
    lines = [f"module {top} (input [7:0] a, input [7:0] b, output [15:0] r);"]
    lines += ["  " + line for line in netlist.assignments(operand, replaced, sub.gates)]
    lines += [f"  assign r[{k}] = {operand(bit)};" for k, bit in enumerate(netlist.ports["r"].bits)]
    lines.append("endmodule")
    return "\n".join(lines) + "\n"
