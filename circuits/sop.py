"""Fitting a sum-of-products template to allowed output sets, with the z3 SMT solver.

A subgraph with ``n`` inputs and ``m`` outputs may be replaced by any function that, for every
input pattern ``p`` the circuit produces, gives an output vector in ``allowed[p]`` (the vectors
that keep every affected product within the error threshold). The template is a sum of
products: each product ANDs at most ``literals_per_product`` literals (an input or its
complement); each output ORs products, either its own ``products`` of them or any of a pool of
``products`` shared by all outputs. Among the fits, the solver looks for the fewest literals:
literals are what the substituted logic costs before re-synthesis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

Product = tuple[tuple[int, bool], ...]  # (input index, True for the input, False for its complement)


@dataclass(frozen=True)
class Template:
    """The shape of the replacement logic."""

    literals_per_product: int = 4
    products: int = 2  # per output, or the size of the shared pool
    shared: bool = False

    def __post_init__(self) -> None:
        if self.literals_per_product < 0 or self.products < 0:
            raise ValueError("literals_per_product and products must be >= 0")


@dataclass(frozen=True)
class Sop:
    """A fitted sum of products: the products and, per output, which products it ORs."""

    products: tuple[Product, ...]
    outputs: tuple[tuple[int, ...], ...]

    @property
    def literals(self) -> int:
        used = {j for out in self.outputs for j in out}
        return sum(len(self.products[j]) for j in used)

    def evaluate(self, patterns: np.ndarray) -> np.ndarray:
        """Output vectors (as integers, output k at bit k) for integer input patterns."""
        patterns = np.asarray(patterns, dtype=np.int64)
        values = np.zeros(patterns.shape, np.int64)
        for k, out in enumerate(self.outputs):
            bit = np.zeros(patterns.shape, bool)
            for j in out:
                term = np.ones(patterns.shape, bool)
                for i, positive in self.products[j]:
                    term &= ((patterns >> i) & 1 == 1) == positive
                bit |= term
            values |= bit.astype(np.int64) << k
        return values

    def expressions(self, names: list[str]) -> list[str]:
        """One Verilog expression per output, inputs named by ``names``."""
        def product(j: int) -> str:
            lits = [names[i] if pos else f"~{names[i]}" for i, pos in self.products[j]]
            return "(" + " & ".join(lits) + ")" if lits else "1'b1"
        return [" | ".join(product(j) for j in out) if out else "1'b0" for out in self.outputs]


def constant_fit(allowed: np.ndarray, occurring: np.ndarray) -> Sop | None:
    """Constant outputs allowed for every occurring pattern (no literals at all), if any."""
    common = np.flatnonzero(allowed[occurring].all(axis=0))
    if common.size == 0:
        return None
    value = int(common[0])
    n_outputs = int(np.log2(allowed.shape[1]))
    ones = [k for k in range(n_outputs) if (value >> k) & 1]
    return Sop(((),) if ones else (), tuple((0,) if k in ones else () for k in range(n_outputs)))


def fit_sop(allowed: np.ndarray, occurring: np.ndarray, template: Template,
            timeout_s: float = 2.0) -> Sop | None:
    """The fit with the fewest literals found within ``timeout_s``, or None if none was found.

    ``allowed`` is (2^n, 2^m) bool: output vector ``o`` is acceptable for input pattern ``p``;
    ``occurring`` (2^n,) marks the patterns the circuit produces (the others are don't-cares).
    """
    import z3

    if (fit := constant_fit(allowed, occurring)) is not None:
        return fit
    n_patterns, n_vectors = allowed.shape
    n_inputs, n_outputs = int(np.log2(n_patterns)), int(np.log2(n_vectors))
    n_products = template.products * (1 if template.shared else n_outputs)
    if n_products == 0:
        return None
    use = [[z3.Bool(f"u{j}_{i}") for i in range(n_inputs)] for j in range(n_products)]
    pos = [[z3.Bool(f"p{j}_{i}") for i in range(n_inputs)] for j in range(n_products)]
    # sel[k][j]: output k ORs product j (per-output products: only its own block)
    sel = [[z3.Bool(f"s{k}_{j}") if template.shared or j // template.products == k
            else z3.BoolVal(False) for j in range(n_products)] for k in range(n_outputs)]
    solver = z3.Solver()
    for j in range(n_products):
        solver.add(z3.AtMost(*use[j], template.literals_per_product))
    for p in np.flatnonzero(occurring):
        bad = np.flatnonzero(~allowed[p])
        if bad.size == 0:
            continue
        terms = [z3.And([z3.Or(z3.Not(use[j][i]), pos[j][i] if (p >> i) & 1 else z3.Not(pos[j][i]))
                         for i in range(n_inputs)]) for j in range(n_products)]
        outs = [z3.Or([z3.And(sel[k][j], terms[j]) for j in range(n_products)])
                for k in range(n_outputs)]
        for o in bad:
            solver.add(z3.Not(z3.And([outs[k] if (o >> k) & 1 else z3.Not(outs[k])
                                      for k in range(n_outputs)])))
    literals = [u for row in use for u in row]
    best = None
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        solver.set("timeout", max(1, int(left * 1000)))
        if solver.check() != z3.sat:
            break
        best = _decode(solver.model(), use, pos, sel, template.shared)
        if best.literals == 0:
            break
        solver.add(z3.AtMost(*literals, best.literals - 1))
    return best


def _decode(model, use, pos, sel, shared: bool) -> Sop:
    true = lambda v: _is_true(model, v)  # noqa: E731
    products = tuple(tuple((i, true(pos[j][i])) for i in range(len(use[j])) if true(use[j][i]))
                     for j in range(len(use)))
    outputs = tuple(tuple(j for j in range(len(use)) if true(sel[k][j])) for k in range(len(sel)))
    return Sop(products, outputs)


def _is_true(model, var) -> bool:
    """A Boolean's value in a z3 model (unconstrained variables read as False)."""
    import z3

    return z3.is_true(model.eval(var, model_completion=True))
