"""The cost of a layer-wise assignment, by its documented formulas, on a hand-made library."""

from __future__ import annotations

import pandas as pd
import pytest

from circuits import appaxo
from circuits.library import Member, MultiplierLibrary, exact_member
from evaluators.scoring.layerwise import AssignmentCosts, assignment_name

LAYERS = ("conv1", "conv2", "fc")
MACS = {"conv1": 100, "conv2": 300, "fc": 50}


@pytest.fixture(scope="module")
def library():
    def member(name, table, **figures):
        return Member(name, table, name, metrics=figures)

    exact = exact_member(True)
    return MultiplierLibrary([
        Member(exact.name, exact.table, exact.source, exact.verilog,
               metrics={"area": 10.0, "delay": 2.0, "fpga_luts": 36}),
        member("a", appaxo.table(68652367871), area=8.0, delay=1.5, fpga_luts=30),
        member("b", appaxo.table(404750335), area=5.0, delay=1.8, fpga_luts=20),
    ])


def costs(datapath: str) -> AssignmentCosts:
    energy = pd.DataFrame([[1.0, 2.0, 4.0], [0.5, 1.0, 2.0], [0.25, 0.5, 1.0]],
                          index=["exact", "a", "b"], columns=list(LAYERS))
    return AssignmentCosts(MACS, energy, "nJ", datapath)


def test_energy_is_macs_times_energy_per_multiplication_under_each_layer(library):
    figures = costs("shared").of({"conv1": "b", "conv2": "a", "fc": "exact"}, library)
    assert figures["energy"] == pytest.approx(100 * 0.25 + 300 * 1.0 + 50 * 4.0)
    exact = 100 * 1.0 + 300 * 2.0 + 50 * 4.0
    assert figures["energy_saving"] == pytest.approx(1 - figures["energy"] / exact)
    assert costs("shared").of(dict.fromkeys(LAYERS, "exact"), library)["energy_saving"] == 0


def test_area_and_luts_of_the_two_datapaths(library):
    assignment = {"conv1": "b", "conv2": "b", "fc": "a"}
    shared = costs("shared").of(assignment, library)
    spatial = costs("spatial").of(assignment, library)
    assert shared["area"] == 5.0 + 8.0 and shared["fpga_luts"] == 20 + 30  # distinct members
    assert spatial["area"] == 5.0 + 5.0 + 8.0 and spatial["fpga_luts"] == 20 + 20 + 30
    assert shared["delay"] == spatial["delay"] == 1.8  # the slowest member used
    assert shared["distinct_members"] == 2


def test_error_metrics_weighted_by_each_layers_macs(library):
    figures = costs("shared").of({"conv1": "b", "conv2": "exact", "fc": "exact"}, library)
    share = MACS["conv1"] / sum(MACS.values())
    assert figures["mae"] == pytest.approx(share * library["b"].metrics["mae"])
    assert figures["wce"] == library["b"].metrics["wce"]


def test_assignment_names():
    assert assignment_name(dict.fromkeys(LAYERS, "a"), LAYERS) == "a"
    mixed = assignment_name({"conv1": "a", "conv2": "b", "fc": "a"}, LAYERS)
    assert mixed.startswith("lw_") and mixed != assignment_name({"conv1": "b", "conv2": "a", "fc": "a"}, LAYERS)
