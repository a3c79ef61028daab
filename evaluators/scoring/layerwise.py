"""Scoring layer-wise assignments: a library member per table-multiplying layer, the network
scored with each layer's own product table, and the hardware cost of the assignment.

Cost model (per inference; ``l`` runs over the table layers, ``m(l)`` is the member of layer ``l``):

- multiplication energy ``E = sum_l MACs_l * e(m(l), l)``, where ``e(m, l)`` is the energy of one
  multiplication of member ``m`` under layer ``l``'s own operands (its power under a stream of
  operand pairs drawn from that layer in the exact network, times the clock period: one
  multiplication per cycle). ``energy_saving = 1 - E / E_exact`` with the exact multiplier in
  every layer. With a Liberty file ``e`` is in pJ and ``E`` in nJ; with the Liberty-free
  estimate both are transistor toggles.
- ``area`` (and ``fpga_luts``, ``fpga_carry4``): ``shared`` datapath, one array holding each
  distinct member used once (the layers time-share it): the sum over the distinct members;
  ``spatial`` datapath, a processing element per layer: the sum over the layers.
- ``delay``: the slowest member used. ``mae``, ``mred``, ``error_probability``: the members'
  metrics weighted by each layer's share of the MACs; ``wce``: the largest.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from circuits.library import MultiplierLibrary
from evaluators.errors import AssignmentError
from evaluators.networks.prepared import int8_layer_macs
from evaluators.runtime.approx_runner import require_layers
from evaluators.runtime.layer_tables import LayerTables
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.workload import sample_layer_workloads
from evaluators.scoring.candidate import ScoredEvaluator

EXACT = 0  # the library's member 0 is the exact multiplier
WEIGHTED = ("mae", "mred", "error_probability")  # MAC-weighted over the layers
SUMMED = ("area", "fpga_luts", "fpga_carry4")  # added up as the datapath says


@dataclass(frozen=True)
class AssignmentCosts:
    """What the hardware figures of an assignment are computed from: MACs per layer (per
    inference), each member's energy per multiplication under each layer's operands (members x
    layers) and how areas add up."""

    macs: Mapping[str, int]
    energy: pd.DataFrame
    energy_unit: str
    datapath: str  # shared | spatial

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.macs)

    def inference_energy(self, members: Sequence[str]) -> float:
        """Multiplication energy of one inference with ``members[i]`` in layer ``i``."""
        per_mac = self.energy.to_numpy()[[self.energy.index.get_loc(m) for m in members],
                                         np.arange(len(members))]
        return float(np.dot(per_mac, [self.macs[layer] for layer in self.energy.columns]))

    def of(self, assignment: Mapping[str, str], library: MultiplierLibrary) -> dict:
        """The hardware and error figures of an assignment (every table layer named)."""
        members = [assignment[layer] for layer in self.layers]
        counted = members if self.datapath == "spatial" else list(dict.fromkeys(members))
        share = np.array([self.macs[layer] for layer in self.layers], dtype=float)
        share /= share.sum()
        figures = [library[m].metrics for m in members]
        out: dict = {}
        for key in SUMMED:
            values = [library[m].metrics.get(key) for m in counted]
            if all(v is not None and np.isfinite(v) for v in values):
                out[key] = float(sum(values))
        for key in WEIGHTED:
            out[key] = float(np.dot(share, [f[key] for f in figures]))
        out["wce"] = float(max(f["wce"] for f in figures))
        if all(f.get("delay") is not None for f in figures):
            out["delay"] = float(max(f["delay"] for f in figures))
        out["energy"] = self.inference_energy(members)
        exact = self.inference_energy([library[EXACT].name] * len(members))
        out["energy_saving"] = 1.0 - out["energy"] / exact if exact else 0.0
        out["energy_unit"] = self.energy_unit
        out["distinct_members"] = len(set(members))
        return out


def assignment_name(assignment: Mapping[str, str], layers: Sequence[str]) -> str:
    """The member's name when every layer has the same one, else ``lw_`` and a short hash of
    the assignment (the readable form is the ``assignment`` column)."""
    members = [assignment[layer] for layer in layers]
    if len(set(members)) == 1:
        return members[0]
    text = "\n".join(f"{layer}={m}" for layer, m in zip(layers, members))
    return "lw_" + hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass
class LayerwiseEvaluator(ScoredEvaluator):
    """Measures assignments (layer -> library member name) of the network's table layers."""

    library: MultiplierLibrary | None = None
    costs: AssignmentCosts | None = None

    @property
    def layers(self) -> tuple[str, ...]:
        """The network's table-multiplying layers (node names of the int8 model), in order."""
        return self.costs.layers

    def tables(self, assignment: Mapping[str, str]) -> LayerTables:
        """The product table of every layer; an unknown layer (``approx_runner.require_layers``),
        a layer left out or an unknown member is one line."""
        require_layers(assignment, self.layers)
        if missing := [layer for layer in self.layers if layer not in assignment]:
            raise AssignmentError(f"the assignment gives no multiplier for layer {missing[0]!r}")
        for member in assignment.values():
            if member not in self.library.names:
                raise AssignmentError(f"{member!r} is not a library member; members: "
                                      f"{', '.join(self.library.names)}")
        return LayerTables({layer: self.library[assignment[layer]].table for layer in self.layers},
                           self.library[EXACT].table)

    def evaluate(self, assignment: Mapping[str, str], front=None) -> dict:
        """Every metric of one assignment (plain values, ready to store)."""
        start = time.perf_counter()
        tables = self.tables(assignment)
        ordered = {layer: assignment[layer] for layer in self.layers}
        before = self.network.prefix_stats()
        metrics = {
            "design": assignment_name(ordered, self.layers),
            "assignment": ordered,
            "table_sha256": tables.sha256,
            **self.costs.of(ordered, self.library),
            "fingerprint": self.fingerprint,
            **self.score(tables),
        }
        after = self.network.prefix_stats()
        # table-layer computations of this evaluation, and those its reused activations spared
        metrics["prefix_layers"] = after["layers_total"] - before["layers_total"]
        metrics["prefix_layers_skipped"] = after["layers_skipped"] - before["layers_skipped"]
        metrics["eval_seconds"] = time.perf_counter() - start
        return metrics

    def sensitivity(self, groups: Mapping[str, Sequence[str]], progress: bool = False) -> pd.DataFrame:
        """Accuracy with each member in one group of layers and the exact multiplier elsewhere:
        one row per group, one column per member (the exact column is the int8 network's)."""
        exact = self.library[EXACT].name
        base = {layer: exact for layer in self.layers}
        frame = pd.DataFrame(index=list(groups), columns=list(self.library.names), dtype=float)
        cells = [(g, m) for g in groups for m in self.library.names]
        for group, member in tqdm(cells, desc="layer sensitivity", unit="evaluation",
                                  disable=not progress, dynamic_ncols=True):
            assignment = {**base, **{layer: member for layer in groups[group]}}
            frame.loc[group, member] = self.score(self.tables(assignment))["accuracy"]
        return frame

    def export(self, front: pd.DataFrame, folder: Path) -> None:
        """The front's assignments (``assignments.csv``: one row per design, one column per
        layer) and the library of the members they use (``library/``). Replaces the folder."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        rows = [{"design": row["design"], **row["assignment"]} for _, row in front.iterrows()
                if isinstance(row.get("assignment"), dict)]
        pd.DataFrame(rows, columns=["design", *self.layers]).to_csv(
            folder / "assignments.csv", index=False)
        used = {m for row in rows for layer, m in row.items() if layer != "design"}
        self.library.subset([m for m in self.library.names if m in used]).save(folder / "library")

    def save_artifacts(self, folder: Path) -> None:
        """Besides the network and workload: the library, its energy table and MACs per layer."""
        super().save_artifacts(folder)
        if not (folder / "library" / "library.csv").is_file():
            self.library.save(folder / "library")
        table = pd.DataFrame({"macs": pd.Series(self.costs.macs)})
        table = table.join(self.costs.energy.T.add_prefix("energy_"))
        table.rename_axis("layer").to_csv(folder / "layer_costs.csv")


def layer_costs(evaluator: ScoredEvaluator, library: MultiplierLibrary, datapath: str, *,
                fpga: bool, seed: int = 0, log: Callable[[str], None] = print,
                progress: bool = False) -> tuple[MultiplierLibrary, AssignmentCosts]:
    """Characterize the library under the study's flow and each (member, layer) pair under that
    layer's operands (cached on disk, so each pair is measured once across studies); ``fpga``:
    also LUTs and CARRY4s (Yosys ``synth_xilinx`` for members that are not AppAxO)."""
    int8 = evaluator.prepared.int8_onnx
    macs = int8_layer_macs(int8, evaluator.network.inputs[:1])
    flow = evaluator.asic.flow
    log(f"characterizing the {len(library)} library members")
    library = library.characterize(flow, evaluator.asic.workload, evaluator.asic_cache,
                                   fpga=fpga, progress=progress)
    log(f"sampling {flow.vectors} operand pairs per layer ({len(macs)} layers) and measuring "
        f"each member's energy per multiplication under them")
    streams = sample_layer_workloads(QGraph.from_onnx(int8), evaluator.network.inputs,
                                     flow.vectors, seed=seed, signed=library.signed)
    energy = library.energy_per_multiplication(flow, streams, evaluator.asic_cache,
                                               progress=progress)
    unit = energy.attrs.get("unit", "")
    if flow.liberty:  # pJ per multiplication, nJ per inference
        energy = energy * 1e-3
        unit = "nJ"
    return library, AssignmentCosts(macs, energy[list(macs)], unit, datapath)
