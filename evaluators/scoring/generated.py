"""Turning generator parameters into measured design points: one trial, a chain of circuits.

A configuration of the ``xpat`` space is a set of parameters of the built-in generator
(``circuits.xpat``): one worst-case error threshold, subgraph limits and a template. A trial
runs the generator on the exact multiplier (chains are cached by the exact circuit, the
parameters and the generator version), and every circuit it accepts is characterized under the
study's ASIC flow and workload and scored on the network. The trial's own metrics are those of
its last circuit (the smallest area at that threshold); all the others come back under
``design_points`` and the driver stores each as a trial linked to this one. A run that accepts
nothing yields the exact multiplier.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from circuits.baselines import truncated
from circuits.catalogue import fpga_cost
from circuits.characterize import characterize
from circuits.error_metrics import error_metrics
from circuits.generation import ExactCircuit, generate_cached
from circuits.multiplier import Multiplier
from circuits.product_table import ProductTable
from circuits.xpat import XpatGenerator, XpatParams
from evaluators.scoring.candidate import ScoredEvaluator, asic_metrics


@dataclass(frozen=True)
class XpatRun:
    """What every generator run of a study shares: the fixed parameters (``fixed``: steps,
    attempts, solver and time limits) and the exact multiplier's signedness."""

    fixed: dict
    signed: bool = True
    fpga: bool = False  # also FPGA LUTs and CARRY4 (Yosys synth_xilinx) of every circuit


@dataclass
class XpatEvaluator(ScoredEvaluator):
    """Runs the generator with a configuration's parameters and measures every circuit it
    accepts (the study's space decodes configurations into parameters: ``dse.kinds.xpat``)."""

    run: XpatRun | None = None

    def generator(self, config: int, params: dict) -> XpatGenerator:
        settings = XpatParams(
            thresholds=(params["threshold"],), max_inputs=params["max_inputs"],
            max_outputs=params["max_outputs"], literals_per_product=params["literals_per_product"],
            products=params["products"], shared=params["shared"], exact_zero=params["exact_zero"],
            steps_per_threshold=self.run.fixed["steps"], attempts=self.run.fixed["attempts"],
            solver_timeout_s=self.run.fixed["solver_timeout_s"],
            time_limit_s=self.run.fixed["time_limit_s"])
        exact = ExactCircuit.multiplier(self.run.signed)
        return XpatGenerator(settings, prefix=f"{exact.name}_x{config}_")

    def evaluate_run(self, config: int, params: dict | None) -> dict:
        """Metrics of the run's last circuit, with every other circuit under ``design_points``;
        ``params``: the generator's searched parameters (None: the exact multiplier)."""
        start = time.perf_counter()
        exact = ExactCircuit.multiplier(self.run.signed)
        chain = []
        if params is not None:
            # characterized under the study's workload, so asic_metrics below reads the cache
            chain = generate_cached(self.generator(config, params), exact, self.asic.flow,
                                    self.asic_cache, workload=self.asic.workload)
        rows = [self._point(p.name, p.generator, p.step, p.threshold, p.seconds,
                            p.multiplier(), p.table) for p in chain]
        if not rows:  # the exact multiplier, or a run that accepted nothing
            array = truncated(0, exact.signed)
            rows = [self._point(array.name, "exact", 0, 0, 0.0, array.multiplier(), array.table())]
        for row in rows:
            row.update(config=int(config), **(params or {}))
        *others, last = rows
        return {**last, "chain_length": len(chain), "design_points": others,
                "eval_seconds": time.perf_counter() - start}

    def _point(self, design: str, generator: str, step: int, threshold: float, seconds: float,
               mult: Multiplier, table: ProductTable) -> dict:
        """One circuit's row: the design, its error metrics, the study's ASIC figures (under its
        workload) and the network metrics."""
        fpga = fpga_cost(mult, self.asic.flow.timeout_s, self.asic_cache) if self.run.fpga \
            else {}
        return {"design": design, "generator": generator, "step": step, "threshold": threshold,
                "chain_seconds": seconds, "signed": table.signed, "table_sha256": table.sha256,
                "fingerprint": self.fingerprint, **error_metrics(table),
                **asic_metrics(mult, self.asic, self.asic_cache), **fpga, **self.score(table),
                "verilog": mult.verilog}

    def export(self, front: pd.DataFrame, folder: Path) -> None:
        """Verilog and product table (``.npy``) of every design on the front, named by its
        ``design`` (the generator's circuit name, also the tables' ``design`` column).
        Replaces the folder."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for _, row in front.iterrows():
            name = row["design"]
            mult = Multiplier(name, row["verilog"], name, bool(row["signed"]))
            (folder / f"{name}.v").write_text(mult.verilog)
            table = characterize(mult, self.asic.flow, cache=self.asic_cache).table
            np.save(folder / f"{name}.npy", table.values)
