"""The multiplier library: members from every source, save/load, characterization and the
energy of one multiplication per workload, through the real Yosys flow (Liberty-free estimate)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from circuits import appaxo
from circuits.activity import OperandStream
from circuits.baselines import truncated
from circuits.cache import ResultCache
from circuits.catalogue import MAX_NAME_BYTES, Design, characterize_folder, write_catalogue
from circuits.characterize import FlowSettings, characterize
from circuits.error_metrics import error_metrics
from circuits.library import TOGGLE_UNIT, LibraryError, Member, MultiplierLibrary
from circuits.product_table import ProductTable
from tests.conftest import shared_path

pytestmark = pytest.mark.skipif(shutil.which("yosys") is None,
                                reason="Yosys is not installed (make setup installs it)")

CONFIG = 404750335  # DESIGN.md's golden AppAxO configuration
EXACT_V = "module mul8s (input signed [7:0] a, input signed [7:0] b, output signed [15:0] p);\n" \
          "  assign p = a * b;\nendmodule\n"
TRUNC4_V = "module trunc4 (input signed [7:0] a, input signed [7:0] b, output signed [15:0] p);\n" \
           "  wire signed [15:0] full = a * b;\n  assign p = {full[15:4], 4'b0};\nendmodule\n"
UNSIGNED_V = "module mul8u (input [7:0] a, input [7:0] b, output [15:0] p);\n" \
             "  assign p = a * b;\nendmodule\n"
ADDER_V = "module adder (input [7:0] a, input [7:0] b, output [8:0] s);\n" \
          "  assign s = a + b;\nendmodule\n"
FLOW = FlowSettings()  # the Liberty-free estimate: fast, and it needs no PDK


@pytest.fixture(scope="module")
def cache_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cache(monkeypatch, cache_folder) -> ResultCache:
    """One characterization cache for the module's tests, never the user's."""
    monkeypatch.setenv("DSE_CACHE_DIR", str(cache_folder))
    return ResultCache()


def trunc4_table() -> ProductTable:
    exact = ProductTable.exact(True).values
    return ProductTable(exact & ~np.int32(15), True)


def write(folder, name, text):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.v").write_text(text)
    return folder / f"{name}.v"


def test_appaxo_and_baselines_join_the_exact_member_and_duplicates_are_dropped():
    lib = MultiplierLibrary.build(appaxo=[CONFIG, appaxo.EXACT, "0" * 35 + "1"],
                                  baselines=["trunc_s_k6", "trunc_s_k0", "trunc_s_k6"])
    assert lib.names == ("exact", appaxo.config_name(CONFIG), appaxo.config_name(1), "trunc_s_k6")
    assert lib.dropped == ((appaxo.config_name(appaxo.EXACT), "exact"), ("trunc_s_k0", "exact"),
                           ("trunc_s_k6", "trunc_s_k6"))
    exact, approx = lib[0], lib[appaxo.config_name(CONFIG)]
    assert exact.table == ProductTable.exact(True) and exact.source == "exact"
    assert exact.verilog == truncated(0, True).verilog() and exact.metrics["mae"] == 0
    assert approx.table == appaxo.table(CONFIG) and approx.appaxo_config == CONFIG
    assert approx.source == f"appaxo:{CONFIG}" and approx.metrics["mae"] == 188.25
    assert approx.multiplier().appaxo_config == CONFIG
    assert lib["trunc_s_k6"].table == truncated(6, True).table()
    assert lib["trunc_s_k6"].metrics == error_metrics(truncated(6, True).table())
    assert lib.index("trunc_s_k6") == 3 and "trunc_s_k6" in lib and len(lib) == 4
    assert lib.tables == tuple(m.table for m in lib) and lib.signed
    with pytest.raises(LibraryError, match="no member named 'nope'"):
        lib["nope"]


def test_a_member_is_kept_only_with_the_library_signedness():
    unsigned = MultiplierLibrary.build(signed=False, baselines=["trunc_u_k4"])
    assert unsigned.names == ("exact", "trunc_u_k4") and unsigned[0].table == ProductTable.exact(False)
    with pytest.raises(LibraryError, match="^baseline:trunc_u_k4: member trunc_u_k4 is unsigned; "
                                           "the library is signed$"):
        MultiplierLibrary.build(baselines=["trunc_u_k4"])
    with pytest.raises(LibraryError, match=f"^appaxo:{CONFIG}: .* is signed; the library is unsigned$"):
        MultiplierLibrary.build(signed=False, appaxo=[CONFIG])


def test_verilog_files_are_simulated_and_their_signedness_checked(tmp_path, cache):
    lib = MultiplierLibrary.build(verilog=[write(tmp_path, "trunc4", TRUNC4_V),
                                           write(tmp_path, "mul8s", EXACT_V)], cache=cache)
    assert lib.names == ("exact", "trunc4") and lib.dropped == (("mul8s", "exact"),)
    assert lib["trunc4"].table == trunc4_table() and lib["trunc4"].verilog == TRUNC4_V
    assert lib["trunc4"].source == str(tmp_path / "trunc4.v")
    with pytest.raises(LibraryError, match=r"mul8u.v: member mul8u is unsigned; the library is signed$"):
        MultiplierLibrary.build(verilog=[write(tmp_path, "mul8u", UNSIGNED_V)], cache=cache)
    assert MultiplierLibrary.build(signed=False, verilog=[tmp_path / "mul8u.v"], cache=cache).dropped \
        == (("mul8u", "exact"),)
    # a constant output reads as neither signedness: it takes the library's
    zero = write(tmp_path, "zero", "module zero (input [7:0] a, input [7:0] b, output [15:0] p);\n"
                                   "  assign p = 16'd0;\nendmodule\n")
    member = MultiplierLibrary.build(verilog=[zero], cache=cache)["zero"]
    assert member.table.signed and not member.table.values.any()


@pytest.mark.parametrize("spec, message", [
    ({"appaxo": [-1]}, r"^appaxo:-1: AppAxO configuration must be an integer in \[0, 2\^36 - 1\]"),
    ({"appaxo": [1 << 36]}, r"^appaxo:68719476736: AppAxO configuration must be"),
    ({"baselines": ["trunc_s_k99"]}, r"^baseline:trunc_s_k99: truncation k must be in 0..15"),
    ({"baselines": ["wallace"]}, r"^baseline:wallace: unknown baseline 'wallace'"),
    ({"verilog": ["{tmp}/none.v"]}, r"none.v: cannot read"),
    ({"verilog": ["{tmp}/adder.v"]}, r"adder.v: expected two 8-bit inputs"),
    ({"catalogues": ["{tmp}/nowhere"]}, r"nowhere: no catalogue.csv or catalogue.parquet"),
])
def test_every_failure_to_load_a_member_is_one_line_naming_it(tmp_path, cache, spec, message):
    write(tmp_path, "adder", ADDER_V)
    spec = {k: [str(v).format(tmp=tmp_path) for v in values] if k != "appaxo" else values
            for k, values in spec.items()}
    with pytest.raises(LibraryError, match=message) as err:
        MultiplierLibrary.build(**spec, cache=cache)
    assert "\n" not in str(err.value)


def test_member_names_and_metrics_are_checked():
    table = truncated(6, True).table()
    with pytest.raises(LibraryError, match="member name 'a/b' must be usable as a file name"):
        Member("a/b", table, "test")
    with pytest.raises(LibraryError, match="member m: metric 'units' must be a number or a string"):
        Member("m", table, "test", metrics={"units": {"area": "um2"}})
    with pytest.raises(LibraryError, match="member m: 'signed' is a library column"):
        Member("m", table, "test", metrics={"signed": True})
    with pytest.raises(LibraryError, match="study:x: member name trunc_s_k6 is taken by baseline:"):
        MultiplierLibrary.build(baselines=["trunc_s_k6"],
                                members=[Member("trunc_s_k6", trunc4_table(), "study:x")])
    with pytest.raises(LibraryError, match="the member named 'exact' must be the exact multiplier"):
        MultiplierLibrary([Member("exact", table, "study:x")])


@pytest.mark.parametrize("name, problem", [
    ("../../../x", "it starts with '.'"),
    ("..", "it starts with '.'"),
    (".hidden", "it starts with '.'"),
    ("/etc/passwd", "it holds '/'"),
    ("a/../../b", "it holds '/'"),
    ("a\\..\\b", "it holds '\\\\'"),
    ("x\x00y", "it holds '\\x00'"),
    ("two\nlines", "it holds '\\n'"),
    ("", "it is empty"),
    ("x" * (MAX_NAME_BYTES + 1), f"it is {MAX_NAME_BYTES + 1} bytes long, at most {MAX_NAME_BYTES} fit"),
    ("\u00e9" * (MAX_NAME_BYTES // 2 + 1), f"it is {MAX_NAME_BYTES + 2} bytes long"),
    (float("nan"), "expected a string, got float"),
])
def test_a_member_name_must_be_a_plain_file_name(name, problem):
    table = truncated(6, True).table()
    with pytest.raises(LibraryError) as err:
        Member(name, table, "study:x")
    assert str(err.value).startswith(f"study:x: member name {name!r} must be usable as a file name: "
                                     f"{problem}")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["a..b", "x" * MAX_NAME_BYTES, "trunc s k6 (v2)", "\u00e9t\u00e9"])
def test_names_that_stay_in_the_folder_are_kept(tmp_path, name):
    member = Member(name, trunc4_table(), "study:x")
    MultiplierLibrary([member]).save(tmp_path)
    assert (tmp_path / "tables" / f"{name}.npy").is_file()
    assert MultiplierLibrary.load(tmp_path)[name] == member


_OPENED: list[str] | None = None  # while a test records: every path the process opens


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


@pytest.fixture(scope="module")
def _audit_hook() -> None:
    sys.addaudithook(_audit)  # a hook cannot be removed: it records only while _OPENED is a list


@pytest.fixture
def touched(monkeypatch, _audit_hook):
    """The absolute paths the code under test opens (Python's 'open' audit event: open, io.open,
    os.open, hence numpy and pandas) or probes (os.stat: Path.is_file, Path.exists)."""
    global _OPENED
    paths: list[str] = []
    stat = os.stat

    def recording_stat(path, *args, **kwargs):
        if isinstance(path, (str, bytes, os.PathLike)):
            paths.append(os.fsdecode(path))
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", recording_stat)
    _OPENED = paths
    yield paths
    _OPENED = None


def outside(paths: list[str], folder: Path, world: Path) -> list[Path]:
    """The paths under ``world`` (the test's folder) that lie outside ``folder``."""
    resolved = {Path(os.path.abspath(p)).resolve() for p in paths}
    return sorted(p for p in resolved if p.is_relative_to(world.resolve())
                  and not p.is_relative_to(folder.resolve()))


def plant_targets(world: Path) -> None:
    """What ``../../../x`` and ``WORLD/x`` would open from ``WORLD/deep/FOLDER``: files that, if
    read, would fail differently (a table that is not .npy) or load (a Verilog file)."""
    (world / "x.npy").write_bytes(b"not a product table")
    (world / "x.v").write_text(TRUNC4_V)


@pytest.mark.parametrize("name", ["../../../x", "{world}/x"], ids=["relative", "absolute"])
def test_a_library_name_never_opens_a_file_outside_its_folder(tmp_path, touched, name):
    name = name.format(world=tmp_path)
    folder = tmp_path / "deep" / "lib"
    MultiplierLibrary.build(members=[Member("plus3", trunc4_table(), "test")]).save(folder)
    frame = pd.read_csv(folder / "library.csv", dtype=object)
    frame.loc[frame["name"] == "plus3", "name"] = name
    frame.to_csv(folder / "library.csv", index=False)
    plant_targets(tmp_path)
    touched.clear()
    with pytest.raises(LibraryError) as err:
        MultiplierLibrary.load(folder)
    seen = list(touched)  # a copy: resolving paths below probes them too
    problem = "it starts with '.'" if name.startswith(".") else "it holds '/'"
    assert str(err.value) == (f"{folder / 'library.csv'}: line 3: member name {name!r} must be "
                              f"usable as a file name: {problem}")
    assert seen and outside(seen, folder, tmp_path) == []


@pytest.fixture
def catalogue(tmp_path, cache):
    """A catalogue written as ``python -m dse characterize DIR -o OUT`` writes it."""
    designs = tmp_path / "designs"
    write(designs, "trunc4", TRUNC4_V)
    write(designs, "exact", EXACT_V)
    write(designs, "broken", "module broken (input [7:0] a;\n")
    frame, built = characterize_folder(designs, FLOW, cache=cache, fpga=False, progress=False)
    write_catalogue(frame, built, tmp_path / "catalogue")
    return tmp_path / "catalogue"


def test_a_catalogue_is_self_contained_and_read_back(catalogue):
    assert (catalogue / "tables" / "trunc4.npy").is_file() and (catalogue / "verilog" / "trunc4.v").is_file()
    assert not (catalogue / "tables" / "broken.npy").exists()
    shutil.rmtree(catalogue.parent / "designs")  # the catalogue needs the designs no more
    lib = MultiplierLibrary.build(catalogues=[catalogue], appaxo=[CONFIG])
    assert lib.names == ("exact", appaxo.config_name(CONFIG), "trunc4")
    assert lib.dropped == (("exact", "exact"),)
    assert len(lib.notes) == 1 and lib.notes[0].startswith(f"{catalogue}: broken skipped, its "
                                                           "characterization failed: ")
    member = lib["trunc4"]
    assert member.table == trunc4_table() and member.verilog == TRUNC4_V
    assert member.source == f"catalogue:{catalogue}/trunc4"
    assert member.metrics["area"] > 0 and member.metrics["cost_model"].startswith("yosys-gates")
    assert member.metrics["mae"] == error_metrics(trunc4_table())["mae"]
    np.save(catalogue / "tables" / "trunc4.npy", ProductTable.exact(True).values)
    with pytest.raises(LibraryError, match=r"trunc4.npy: does not match the table_sha256 catalogue"):
        MultiplierLibrary.build(catalogues=[catalogue])


def test_an_older_catalogue_falls_back_to_the_verilog_it_names(catalogue, cache):
    (catalogue / "catalogue.parquet").unlink()  # the CSV alone is a catalogue too
    shutil.rmtree(catalogue / "tables")
    shutil.rmtree(catalogue / "verilog")
    lib = MultiplierLibrary.build(catalogues=[catalogue], cache=cache)
    assert lib.names == ("exact", "trunc4") and lib["trunc4"].table == trunc4_table()
    assert lib["trunc4"].verilog == TRUNC4_V
    (catalogue.parent / "designs" / "trunc4.v").unlink()
    with pytest.raises(LibraryError, match=r"catalogue row trunc4 has neither tables/trunc4.npy "
                                           r"nor its Verilog file .*trunc4.v$"):
        MultiplierLibrary.build(catalogues=[catalogue], cache=cache)


@pytest.mark.parametrize("name", ["../../../x", "{world}/x"], ids=["relative", "absolute"])
def test_a_catalogue_name_never_opens_a_file_outside_its_folder(catalogue, touched, name):
    world = catalogue.parent
    name = name.format(world=world)
    folder = world / "deep" / "catalogue"
    shutil.copytree(catalogue, folder)
    parquet = folder / "catalogue.parquet"
    frame = pd.read_parquet(parquet)
    frame.loc[frame["name"] == "trunc4", "name"] = name
    frame.to_parquet(parquet, index=False)
    plant_targets(world)
    touched.clear()
    with pytest.raises(LibraryError) as err:
        MultiplierLibrary.build(catalogues=[folder])
    seen = list(touched)
    problem = "it starts with '.'" if name.startswith(".") else "it holds '/'"
    assert str(err.value) == f"{parquet}: member name {name!r} must be usable as a file name: {problem}"
    assert seen and outside(seen, folder, world) == []


def test_a_file_whose_name_cannot_name_a_member_is_a_catalogue_error_row(tmp_path, cache):
    designs = tmp_path / "designs"
    write(designs, ".hidden", TRUNC4_V)
    frame, built = characterize_folder(designs, FLOW, cache=cache, fpga=False, progress=False)
    assert built == {} and list(frame["name"]) == [".hidden"]
    assert frame["error"][0] == (f"{designs / '.hidden.v'}: its name cannot name a member's files: "
                                 "it starts with '.'")
    write_catalogue(frame, built, tmp_path / "catalogue")
    lib = MultiplierLibrary.build(catalogues=[tmp_path / "catalogue"])
    assert lib.names == ("exact",) and lib.notes[0].startswith(f"{tmp_path / 'catalogue'}: .hidden skipped")
    with pytest.raises(ValueError, match=r"design name '\.\./x' cannot name its files: it starts with"):
        write_catalogue(frame, {"../x": Design(TRUNC4_V, trunc4_table())}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_save_and_load_round_trip_exactly(tmp_path):
    noisy = ProductTable(ProductTable.exact(True).values + np.int32(3), True)
    lib = MultiplierLibrary.build(
        appaxo=[CONFIG], baselines=["bam_s_h2_v7"],
        members=[Member("plus3", noisy, "study:runs/a/plus3", metrics={"accuracy": 0.987654321,
                                                                       "note": "NA", "layers": 3})])
    lib.save(tmp_path / "lib")
    loaded = MultiplierLibrary.load(tmp_path / "lib")
    assert list(loaded) == list(lib) and loaded.names == lib.names and loaded.signed
    plus3 = loaded["plus3"]
    assert plus3.verilog is None and plus3.multiplier() is None
    assert plus3.metrics["note"] == "NA" and type(plus3.metrics["layers"]) is int
    assert loaded[1].appaxo_config == CONFIG and type(loaded[1].appaxo_config) is int
    assert list(loaded.frame()["name"]) == list(lib.names)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "tables" / "plus3.npy").unlink(),
     r"plus3.npy: missing \(the product table library.csv lists\)"),
    (lambda d: (d / "tables" / "plus3.npy").write_bytes(b"\x93NUMPY garbage"),
     r"plus3.npy: not a readable .npy"),
    (lambda d: np.save(d / "tables" / "plus3.npy", np.zeros((256, 256), np.int16)),
     r"plus3.npy: expected a 256x256 int32 product table, got int16 \(256, 256\)"),
    (lambda d: np.save(d / "tables" / "plus3.npy", ProductTable.exact(True).values),
     r"plus3.npy: does not match the table_sha256 library.csv gives \(signed\)"),
    (lambda d: (d / "library.csv").unlink(), r"library.csv: not found"),
])
def test_a_damaged_library_folder_is_a_one_line_error(tmp_path, damage, message):
    noisy = ProductTable(ProductTable.exact(True).values + np.int32(3), True)
    MultiplierLibrary.build(members=[Member("plus3", noisy, "test")]).save(tmp_path)
    damage(tmp_path)
    with pytest.raises(LibraryError, match=message) as err:
        MultiplierLibrary.load(tmp_path)
    assert "\n" not in str(err.value)


def test_characterize_adds_the_hardware_figures_and_checks_the_tables(tmp_path, cache):
    lib = MultiplierLibrary.build(baselines=["trunc_s_k8"], appaxo=[CONFIG])
    figured = lib.characterize(FLOW, cache=cache, fpga=False)
    assert figured.names == lib.names
    exact, trunc = figured["exact"].metrics, figured["trunc_s_k8"].metrics
    assert exact["area"] > trunc["area"] > 0 and exact["power_uniform"] > trunc["power_uniform"]
    assert trunc["mae"] == lib["trunc_s_k8"].metrics["mae"] and "fpga_luts" not in trunc
    figured.save(tmp_path / "lib")
    assert list(MultiplierLibrary.load(tmp_path / "lib")) == list(figured)
    liar = Member("liar", truncated(6, True).table(), "test", truncated(4, True).verilog())
    with pytest.raises(LibraryError, match="^member liar: its Verilog does not implement its product table"):
        MultiplierLibrary([liar]).characterize(FLOW, cache=cache, fpga=False)
    only_table = Member("plus3", ProductTable(ProductTable.exact(True).values + np.int32(3), True), "study:x")
    with pytest.raises(LibraryError, match="^study:x: member plus3 has only a product table"):
        MultiplierLibrary([only_table]).characterize(FLOW, cache=cache, fpga=False)


def test_characterize_with_fpga_costs(cache):
    lib = MultiplierLibrary.build(appaxo=[CONFIG]).characterize(FLOW, cache=cache, fpga=True)
    assert lib["exact"].metrics["fpga_source"] == "yosys synth_xilinx"
    approx = lib[appaxo.config_name(CONFIG)].metrics
    assert approx["fpga_source"] == "vivado-calibrated model"
    assert lib["exact"].metrics["fpga_luts"] > approx["fpga_luts"] > 0


def workloads() -> dict[str, OperandStream]:
    small = OperandStream(np.arange(2048) % 9 - 4, (np.arange(2048) * 7) % 5 - 2, "conv1")
    return {"conv1": small, "fc": OperandStream.uniform(True, 2048, seed=5)}


def test_energy_per_multiplication_per_workload_is_cached(monkeypatch, cache):
    lib = MultiplierLibrary.build(baselines=["trunc_s_k8"])
    energy = lib.energy_per_multiplication(FLOW, workloads(), cache)
    assert energy.attrs["unit"] == TOGGLE_UNIT
    assert list(energy.index) == ["exact", "trunc_s_k8"] and list(energy.columns) == ["conv1", "fc"]
    assert (energy > 0).all().all() and (energy["conv1"] < energy["fc"]).all()
    assert energy.loc["exact", "fc"] > energy.loc["trunc_s_k8", "fc"]

    def no_yosys(*args, **kwargs):
        raise AssertionError("Yosys ran although every pair is cached")

    monkeypatch.setattr("circuits.characterize.synthesize_asic", no_yosys)
    again = lib.energy_per_multiplication(FLOW, workloads(), ResultCache())
    assert again.equals(energy) and again.attrs["unit"] == TOGGLE_UNIT
    with pytest.raises(LibraryError, match=r"^workload big: operands must lie in \[-128, 127\]"):
        lib.energy_per_multiplication(FLOW, {"big": OperandStream(np.arange(300), np.arange(300))})


@pytest.fixture(scope="module")
def nangate() -> FlowSettings:
    return FlowSettings(liberty=str(shared_path("pdk", "nangate45_typ.lib.gz")), clock_period_ns=5.0)


def test_energy_with_a_liberty_file_is_power_times_clock_period_in_pj(nangate, cache):
    lib = MultiplierLibrary.build()
    stream = workloads()["fc"]
    energy = lib.energy_per_multiplication(nangate, {"fc": stream}, cache)
    power = characterize(lib[0].multiplier(), nangate, stream, cache).metrics["power_workload"]
    assert energy.attrs["unit"] == "pJ"
    assert energy.loc["exact", "fc"] == pytest.approx(power * 5.0 * 1e-3)
    assert 0.05 < energy.loc["exact", "fc"] < 5  # NanGate45: a 8x8 multiplication is ~0.1-1 pJ
