"""SubXPAT (LP-RG/subxpat) as a generator of approximate multipliers.

SubXPAT is not a library: it is a program run from its checkout (``SUBXPAT_HOME``) with its own
Python environment, and it reads and writes everything relative to its working directory. Each
job (one worst-case error threshold) therefore runs as a subprocess in a fresh folder:

1. **Benchmark**: the exact circuit, synthesized to gates by our flow, becomes
   ``input/ver/mul_i16_o16.v`` with SubXPAT's port convention (``in0..in7 = a[0..7]``,
   ``in8..in15 = b[0..7]``, ``out0..out15 = r[0..15]``). SubXPAT's metric is the worst-case
   absolute difference of the outputs read unsigned, which is why a signed multiplier is given as
   its core ``r = product XOR 0x8000`` (``circuits.generation``).
2. **Run** ``main.py`` with the flags of ``SubxpatParams`` (written against commit f52f0b8, whose
   ``--output`` does nothing), everything else of the checkout linked in read-only.
3. **Harvest** every circuit it wrote (``input/ver/<benchmark>_<id>_i<iteration>_<model>.v``;
   also the names of neighbouring versions), and the error it reports for each iteration from its
   grid CSV (``output/report/grid_..._time<YYYYmmdd:HHMMSS>.csv``: 15 header names, 16 fields).
4. **Re-characterize** each one with our flow: its module is cleaned (SubXPAT repeats identical
   assignments), wrapped from ``in*/out*`` to ``a, b, r``, wrapped back to a signed multiplier
   (``wrap_signed``), synthesized and simulated exhaustively. A circuit whose measured worst-case
   error exceeds the threshold it was generated for is rejected with a warning.

The chain is ordered by the measured worst-case error. The command line, the file layout and the
output formats were learnt by reading SubXPAT's source (the versions around commit f52f0b8);
none of its code (GPL) is used here.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from circuits.activity import OperandStream
from circuits.cache import ResultCache
from circuits.characterize import FlowSettings
from circuits.generation import DesignPoint, ExactCircuit, OnPoint, design_point, wrap_signed
from circuits.multiplier import Multiplier
from circuits.netlist_sim import net_names
from circuits.synthesis import synthesize_asic
from circuits.tools import ToolError, die_with_parent, kill_group

GENERATOR_VERSION = "1"
DOCUMENTED_COMMIT = "f52f0b8"
HOME_VARIABLE = "SUBXPAT_HOME"
PYTHON_VARIABLE = "SUBXPAT_PYTHON"
BENCHMARK = "mul_i16_o16"  # SubXPAT reads <name>_i<inputs>_o<outputs> from input/ver/
INPUTS = tuple(f"in{k}" for k in range(16))
OUTPUTS = tuple(f"out{k}" for k in range(16))
# the grid CSV's header names 15 columns; each row has a 16th, SubXPAT's Model.subxpat_v1_time
# (the cell's exploration time: template definition + solving; its plot scripts call it
# ``exploration_time``)
UNNAMED_GRID_FIELD = "subxpat_v1_time"
ERROR_PARTITIONINGS = ("asc", "desc", "smart_asc", "smart_desc")
ENCODINGS = ("z3int", "z3bvec", "z3dint", "z3dbvec", "qbf")
CONSTANTS = ("never", "always")
# folders SubXPAT writes into (relative to its working directory): never linked into a job
WRITTEN_FOLDERS = ("input", "output", "test", "experiments")
JOB_FOLDERS = ("input/ver", "input/gv", "input/aig", "output/ver", "output/gv", "output/aig",
               "output/z3", "output/report", "output/figure", "output/log", "output/json",
               "output/html", "test/ver", "test/z3")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubxpatParams:
    """SubXPAT's settings (all of them are part of the cache key); one job per threshold.

    Flags (commit f52f0b8): ``--max-error``, ``--extraction-mode``, ``--imax``, ``--omax``,
    ``--max-sensitivity``, ``--min-subgraph-size``, ``--num-subgraphs``, ``--template``,
    ``--max-lpp``, ``--max-ppo`` (non-shared) or ``--max-pit`` (shared), ``--wanted-models``,
    ``--error-partitioning``, ``--encoding``, ``--constants``, ``--timeout`` (per grid cell).
    Within a job SubXPAT walks its own grid of thresholds up to ``--max-error`` (``asc``: eight
    even steps, or 1, 2, ... up to 8) and of template sizes (1..max literals x 1..max products).
    """

    thresholds: tuple[int, ...] = (16, 64, 256, 1024)
    extraction_mode: int = 55
    max_inputs: int = 6  # --imax: subgraph inputs
    max_outputs: int = 3  # --omax: subgraph outputs
    max_sensitivity: int | None = None  # extraction modes 2-5 partition by sensitivity
    min_subgraph_size: int | None = None
    num_subgraphs: int = 1
    literals_per_product: int = 3  # --max-lpp (non-shared template)
    products_per_output: int = 2  # --max-ppo (non-shared template)
    shared: bool = False  # --template shared: one pool of products for all outputs
    products_in_total: int = 6  # --max-pit (shared template)
    wanted_models: int = 1
    error_partitioning: str = "asc"
    encoding: str = "z3bvec"
    constants: str | None = None  # None: SubXPAT's default
    cell_timeout_s: float = 600.0  # --timeout: SubXPAT's limit for one grid cell
    time_limit_s: float = 3600.0  # wall-clock limit of one job; what it wrote is still harvested
    extra_args: tuple[str, ...] = ()  # further flags, passed as they are

    def __post_init__(self) -> None:
        if not self.thresholds or any(int(t) != t or t < 1 for t in self.thresholds):
            raise ValueError("thresholds must be a non-empty list of integer errors >= 1 "
                             "(SubXPAT stops at an error threshold of 0)")
        for name in ("extraction_mode", "max_inputs", "max_outputs", "num_subgraphs",
                     "literals_per_product", "products_per_output", "products_in_total",
                     "wanted_models"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, value, allowed in (("error_partitioning", self.error_partitioning,
                                      ERROR_PARTITIONINGS), ("encoding", self.encoding, ENCODINGS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.constants is not None and self.constants not in CONSTANTS:
            raise ValueError(f"constants must be one of {', '.join(CONSTANTS)}, got "
                             f"{self.constants!r}")
        if self.cell_timeout_s <= 0 or self.time_limit_s <= 0:
            raise ValueError("cell_timeout_s and time_limit_s must be positive")


def subxpat_command(params: SubxpatParams, threshold: int,
                    benchmark: str = f"input/ver/{BENCHMARK}.v") -> list[str]:
    """The arguments of ``main.py`` for one job (the benchmark path: SubXPAT keeps its stem)."""
    args = [benchmark, "--subxpat", "--max-error", str(threshold),
            "--extraction-mode", str(params.extraction_mode),
            "--imax", str(params.max_inputs), "--omax", str(params.max_outputs),
            "--num-subgraphs", str(params.num_subgraphs)]
    if params.max_sensitivity is not None:
        args += ["--max-sensitivity", str(params.max_sensitivity)]
    if params.min_subgraph_size is not None:
        args += ["--min-subgraph-size", str(params.min_subgraph_size)]
    if params.shared:
        args += ["--template", "shared", "--max-pit", str(params.products_in_total)]
    else:
        args += ["--template", "nonshared", "--max-lpp", str(params.literals_per_product),
                 "--max-ppo", str(params.products_per_output)]
    args += ["--wanted-models", str(params.wanted_models),
             "--error-partitioning", params.error_partitioning, "--encoding", params.encoding,
             "--timeout", f"{params.cell_timeout_s:g}"]
    if params.constants is not None:
        args += ["--constants", params.constants]
    return args + list(params.extra_args)


# ---------------------------------------------------------------- the checkout and its Python
def subxpat_home() -> Path:
    """The SubXPAT checkout named by ``SUBXPAT_HOME``, or a one-line ToolError."""
    value = os.environ.get(HOME_VARIABLE)
    if not value:
        raise ToolError(f"{HOME_VARIABLE} is not set: point it at a SubXPAT checkout (commit "
                        f"{DOCUMENTED_COMMIT}, with its own Python environment)")
    home = Path(value).expanduser()
    if not (home / "main.py").is_file() or not (home / "sxpat").is_dir():
        raise ToolError(f"{HOME_VARIABLE}={value}: not a SubXPAT checkout (no main.py and "
                        f"sxpat/ there)")
    return home.resolve()


def subxpat_python(home: Path) -> str:
    """SubXPAT's interpreter: ``SUBXPAT_PYTHON``, else its .venv (or venv, as its Makefile
    names it), else python3."""
    override = os.environ.get(PYTHON_VARIABLE)
    if override:
        found = shutil.which(override)
        if found is None:
            raise ToolError(f"{PYTHON_VARIABLE}={override}: no such executable")
        return found
    for venv in (".venv", "venv"):
        python = home / venv / "bin" / "python"
        if python.exists():
            return str(python)
    found = shutil.which("python3")
    if found is None:
        raise ToolError(f"python3 not found: set {PYTHON_VARIABLE} to SubXPAT's Python")
    return found


def subxpat_revision(home: Path) -> str | None:
    """The checkout's commit (part of the cache key), or None where git cannot tell."""
    git = shutil.which("git")
    if git is None or not (home / ".git").exists():
        return None
    out = subprocess.run([git, "-C", str(home), "rev-parse", "HEAD"], capture_output=True,
                         text=True, timeout=30)
    return (out.stdout.strip() or None) if out.returncode == 0 else None


# ---------------------------------------------------------------- Verilog in SubXPAT's format
def _operand_bit(port: str) -> str:
    """``in<k>`` -> the operand bit it carries (first operand low bit first)."""
    k = int(port[2:])
    return f"a[{k}]" if k < 8 else f"b[{k - 8}]"


def port_wrapper(inner: str, name: str, inputs: Iterable[str] = INPUTS) -> str:
    """A module ``name`` (ports a, b, r) around a module ``inner`` with SubXPAT's ports
    (``inputs``: the ``in<k>`` ports it declares; every ``out<k>`` is connected)."""
    conns = [f".{p}({_operand_bit(p)})" for p in inputs]
    conns += [f".{o}(r[{k}])" for k, o in enumerate(OUTPUTS)]
    return (f"module {name} (input [7:0] a, input [7:0] b, output [15:0] r);\n"
            f"  {inner} u_sx ({', '.join(conns)});\nendmodule\n")


def benchmark_verilog(exact: ExactCircuit, timeout_s: float = 120.0) -> str:
    """The exact circuit as SubXPAT's benchmark ``mul_i16_o16``: synthesized to gates by our flow
    and written as one flat module of scalar ports ``in0..in15``, ``out0..out15`` (plain
    Verilog, whatever the source used: SubXPAT reads it with its own Yosys)."""
    netlist = synthesize_asic(Multiplier(exact.top, exact.verilog, exact.top, False), None,
                              timeout_s).netlist
    widths = {p: len(netlist.ports[p].bits) for p in ("a", "b", "r") if p in netlist.ports}
    if widths != {"a": 8, "b": 8, "r": 16}:
        raise ValueError(f"{exact.name}: the exact circuit needs ports a[7:0], b[7:0], r[15:0], "
                         f"found {widths}")
    operand = net_names({bit: f"in{k}" for k, bit in
                         enumerate(netlist.ports["a"].bits + netlist.ports["b"].bits)})

    flip = "r = product XOR 0x8000" if exact.signed else "r = product"
    lines = [f"// dse: {exact.name} ({flip}) for SubXPAT: in0..in7 = a[0..7], "
             f"in8..in15 = b[0..7], out0..out15 = r[0..15]",
             f"module {BENCHMARK} ({', '.join(INPUTS + OUTPUTS)});",
             f"input {', '.join(INPUTS)};", f"output {', '.join(OUTPUTS)};"]
    lines += netlist.assignments(operand)
    lines += [f"assign {o} = {operand(bit)};" for o, bit in zip(OUTPUTS, netlist.ports["r"].bits)]
    return "\n".join(lines + ["endmodule"]) + "\n"


_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", flags=re.S)
_MODULE = re.compile(r"\bmodule\s+([\w$]+)\s*(?:\([^)]*\))?\s*;(.*?)\bendmodule\b", flags=re.S)


def harvested_module(verilog_text: str, name: str, subject: str = "SubXPAT circuit") -> str:
    """A circuit SubXPAT wrote, as module ``name`` with ports a, b, r (over its cleaned module
    ``<name>_sx``): identical repeated assignments and declarations are kept once, an empty
    ``wire ;`` is dropped. ``subject`` (the file) names it in errors."""
    modules = _MODULE.findall(_COMMENTS.sub(" ", verilog_text))
    if len(modules) != 1:
        raise ValueError(f"{subject}: expected one module, found {len(modules)}")
    declared: dict[str, list[str]] = {"input": [], "output": [], "wire": []}
    assigns: dict[str, str] = {}
    others: list[str] = []
    for statement in modules[0][1].split(";"):
        text = " ".join(statement.split())
        kind, _, rest = text.partition(" ")
        if not text:
            continue
        if kind in declared:
            if rest.startswith("["):
                raise ValueError(f"{subject}: vector declaration '{text}' (SubXPAT declares "
                                 f"scalar in*/out* ports)")
            names = [n.strip() for n in rest.split(",") if n.strip()]
            declared[kind] += [n for n in dict.fromkeys(names) if n not in declared[kind]]
        elif kind == "assign":
            lhs, eq, rhs = (s.strip() for s in rest.partition("="))
            if not eq or not lhs or not rhs:
                raise ValueError(f"{subject}: cannot read '{text}'")
            if assigns.setdefault(lhs, rhs) != rhs:
                raise ValueError(f"{subject}: {lhs} is assigned twice, differently "
                                 f"('{assigns[lhs]}' and '{rhs}')")
        elif text not in others:
            others.append(text)
    inputs, outputs = declared["input"], declared["output"]
    unknown = [p for p in inputs if p not in INPUTS] + [p for p in outputs if p not in OUTPUTS]
    if unknown:
        raise ValueError(f"{subject}: unexpected port {', '.join(unknown)} (SubXPAT's ports are "
                         f"in0..in15 and out0..out15)")
    missing = [o for o in OUTPUTS if o not in outputs or (not others and o not in assigns)]
    if missing:
        raise ValueError(f"{subject}: output {', '.join(missing)} missing or never assigned")
    ports = set(inputs) | set(outputs)
    wires = [w for w in dict.fromkeys(declared["wire"] + list(assigns)) if w not in ports]
    core = f"{name}_sx"
    lines = [f"// {subject} (SubXPAT), repeated assignments removed",
             f"module {core} ({', '.join(inputs + outputs)});"]
    lines += [f"  input {', '.join(inputs)};"] if inputs else []
    lines += [f"  output {', '.join(outputs)};"]
    lines += [f"  wire {', '.join(wires)};"] if wires else []
    lines += [f"  {s};" for s in others]
    lines += [f"  assign {lhs} = {rhs};" for lhs, rhs in assigns.items()]
    return "\n".join(lines + ["endmodule", ""]) + "\n" + port_wrapper(core, name, inputs)


# ---------------------------------------------------------------- SubXPAT's output files
def _grid_value(name: str, text: str) -> object:
    """A grid CSV field as a value: the cell as a tuple, numbers, None for 'None' or empty."""
    text = text.strip()
    if name == "cell":
        return tuple(int(v) for v in re.findall(r"-?\d+", text))
    if text in ("", "None"):
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def parse_grid_csv(text: str, subject: str = "grid CSV") -> list[dict]:
    """Rows of SubXPAT's grid CSV (one per explored cell and iteration). Its header names 15
    columns (cell, iteration, model_id, status, runtime, area, delay, total_power, et,
    labeling_time, subgraph_extraction, subgraph_inputs, subgraph_outputs, subxpat_phase1,
    subxpat_phase2); its rows carry a 16th field, ``UNNAMED_GRID_FIELD``. For a SAT row, ``et``
    is the worst-case error SubXPAT verified for the circuit it kept."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    if not header:
        raise ValueError(f"{subject}: no header")
    rows = []
    for line, fields in enumerate(reader, start=2):
        if not fields:
            continue
        names = header + [UNNAMED_GRID_FIELD] if len(fields) == len(header) + 1 else header
        if len(fields) != len(names):
            raise ValueError(f"{subject}: line {line} has {len(fields)} fields for "
                             f"{len(header)} header names")
        rows.append({n: _grid_value(n, v) for n, v in zip(names, fields)})
    return rows


def parse_grid_name(filename: str) -> dict | None:
    """The fields of a grid CSV name, e.g. ``grid_mul_i16_o16_3X2_et16_..._time20240403:214107.csv``
    (``:`` in the time stamp): benchmark, lpp, ppo, et (None where SubXPAT wrote ``etNone``)
    and time; None for another file."""
    name = Path(filename).name
    if not (name.startswith("grid_") and name.endswith(".csv")):
        return None
    bench = re.match(r"grid_(.+?_i\d+_o\d+)_", name)
    cell = re.search(r"_(\d+)X(\d+)_", name)
    et = re.search(r"_et(\d+)_", name)
    stamp = re.search(r"time(\d{8}:\d{6})", name)
    return {"benchmark": bench[1] if bench else None,
            "lpp": int(cell[1]) if cell else None, "ppo": int(cell[2]) if cell else None,
            "et": int(et[1]) if et else None,
            "time": datetime.strptime(stamp[1], "%Y%m%d:%H%M%S") if stamp else None}


_CIRCUIT_NAMES = (
    re.compile(r"_i(\d+)_(\d+)\.v$"),  # <benchmark>_<time id>_i<iteration>_<model>.v
    re.compile(r"_i(\d+)m(\d+)\.v$"),  # <benchmark>_s<source id>_i<iteration>m<model>.v
    re.compile(r"^gen_iter(\d+)_model(\d+)\.v$"),  # later versions: output/<run>/verilog/
    re.compile(r"_iter(\d+)\.v$"),  # early versions: ..._et<e>_SOP1_pap<p>_iter<i>.v
)


def parse_circuit_name(filename: str) -> tuple[int, int] | None:
    """(iteration, model) of a circuit file SubXPAT wrote, or None for another name."""
    name = Path(filename).name
    for pattern in _CIRCUIT_NAMES:
        if match := pattern.search(name):
            return int(match[1]), (int(match[2]) if match.lastindex == 2 else 0)
    return None


@dataclass(frozen=True)
class Harvested:
    """A circuit SubXPAT wrote in one job, and what SubXPAT said of it."""

    file: str
    verilog: str
    threshold: int
    iteration: int | None
    model: int | None
    reported_error: float | None  # the grid CSV's error of its iteration (None: not reported)


def reported_errors(rows: Iterable[dict]) -> dict[int, float]:
    """Iteration -> the worst-case error SubXPAT verified for the circuit it kept (SAT rows)."""
    return {row["iteration"]: row["et"] for row in rows
            if str(row.get("status")).upper() == "SAT" and isinstance(row.get("iteration"), int)
            and isinstance(row.get("et"), int | float)}


def _is_circuit(path: Path) -> bool:
    text = path.read_text(errors="replace")
    return "Generated by Yosys" not in text and re.search(r"\bmodule\b", text) is not None \
        and re.search(r"\bout0\b", text) is not None


def harvest(workdir: Path, threshold: int, benchmark: str = BENCHMARK) -> list[Harvested]:
    """Every circuit a job wrote under ``workdir`` (not the benchmark, not Yosys's own netlists),
    in (iteration, model) order, with the errors of its grid CSVs."""
    files = [p for p in sorted((workdir / "input" / "ver").glob("*.v"))
             if p.stem != benchmark and not p.is_symlink()]
    files += [p for p in sorted((workdir / "output").glob("*/verilog/*.v"))
              if p.name not in ("origin.v", "current.v")]
    errors: dict[int, float] = {}
    for grid in sorted((workdir / "output").rglob("grid_*.csv")):
        try:
            errors.update(reported_errors(parse_grid_csv(grid.read_text(), grid.name)))
        except ValueError as err:
            log.warning("%s (the errors SubXPAT reports in it are ignored)", err)
    found = []
    for path in filter(_is_circuit, files):
        iteration, model = parse_circuit_name(path.name) or (None, None)
        found.append((iteration, model, path))
    per_iteration: dict[int | None, int] = {}
    for iteration, _, _ in found:
        per_iteration[iteration] = per_iteration.get(iteration, 0) + 1
    found.sort(key=lambda f: (f[0] is None, f[0] or 0, f[1] or 0, f[2].name))
    # SubXPAT reports the error of the one circuit it kept per iteration: only attributable
    # when the iteration wrote one circuit
    return [Harvested(path.name, path.read_text(), threshold, iteration, model,
                      errors.get(iteration) if per_iteration[iteration] == 1 else None)
            for iteration, model, path in found]


# ---------------------------------------------------------------- jobs
def prepare_workdir(home: Path, workdir: Path, benchmark: str, name: str = BENCHMARK) -> None:
    """A working directory where SubXPAT finds its checkout's files (linked, read-only use) and
    our benchmark alone in ``input/ver/``; the folders it writes into start empty."""
    for entry in home.iterdir():
        if entry.name.startswith(".") or entry.name in WRITTEN_FOLDERS:
            continue
        (workdir / entry.name).symlink_to(entry.resolve(), entry.is_dir())
    source = home / "input"
    for folder, _, files in os.walk(source) if source.is_dir() else ():
        target = workdir / "input" / Path(folder).relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for f in files:  # configuration files, not the checkout's benchmarks
            if not f.endswith(".v"):
                (target / f).symlink_to(Path(folder, f).resolve())
    for folder in JOB_FOLDERS:
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    (workdir / "input" / "ver" / f"{name}.v").write_text(benchmark)


@dataclass(frozen=True)
class JobResult:
    returncode: int | None  # None: killed at the time limit
    seconds: float
    log_tail: str  # its last output line, for messages

    @property
    def failed(self) -> bool:
        """A non-zero exit, or an exception as its last words (its dependencies print an error
        and ``exit()`` with status 0)."""
        exception = re.match(r"\w*(Error|Exception)\b", self.log_tail)
        return self.returncode != 0 or exception is not None


def run_job(command: list[str], workdir: Path, env: dict[str, str], time_limit_s: float
            ) -> JobResult:
    """Run a SubXPAT command in ``workdir`` (output in ``subxpat.log``); at the time limit its
    whole process group (SubXPAT and the tools it started) is killed, and SubXPAT dies with us."""
    started = time.monotonic()
    log_path = workdir / "subxpat.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent())
        try:
            returncode: int | None = proc.wait(timeout=time_limit_s)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            if proc.poll() is None:
                kill_group(proc.pid)
                proc.wait()
    lines = [s.strip() for s in log_path.read_text(errors="replace").splitlines() if s.strip()]
    return JobResult(returncode, time.monotonic() - started, lines[-1] if lines else "no output")


# ---------------------------------------------------------------- design points
def _module_name(text: str) -> str:
    return re.sub(r"\W", "_", text)


def harvest_points(candidates: Iterable[Harvested], exact: ExactCircuit, generator: str,
                   flow: FlowSettings, cache: ResultCache | None, started: float,
                   workload: OperandStream | None = None) -> list[DesignPoint]:
    """Characterize harvested circuits with our flow; keep those whose measured worst-case
    error is within the threshold they were generated for (the others are rejected with a
    warning), ordered by that error (then larger area first) and numbered 1, 2, ..."""
    points, failures = [], []
    candidates = list(candidates)
    for k, cand in enumerate(candidates):
        tag = f"i{cand.iteration}m{cand.model}" if cand.iteration is not None else f"f{k}"
        name = _module_name(f"{exact.name}_subxpat_et{cand.threshold}_{tag}")
        try:
            core = harvested_module(cand.verilog, f"{name}_core", cand.file)
            point = design_point(name, generator, wrap_signed(core, f"{name}_core", name,
                                                              exact.signed),
                                 exact.signed, threshold=cand.threshold, step=0, started=started,
                                 flow=flow, cache=cache, workload=workload)
        except (ValueError, ToolError) as err:
            log.warning("%s: rejected, it cannot be characterized: %s", cand.file, err)
            failures.append(err)
            continue
        wce = point.metrics["wce"]
        if wce > cand.threshold:
            log.warning("%s: rejected, its measured worst-case error %g exceeds the threshold %d "
                        "it was generated for", cand.file, wce, cand.threshold)
            continue
        if cand.reported_error is not None and cand.reported_error != wce:
            log.warning("%s: SubXPAT reported a worst-case error of %g, measured %g", cand.file,
                        cand.reported_error, wce)
        point.metrics.update(subxpat_file=cand.file, subxpat_iteration=cand.iteration,
                             subxpat_model=cand.model, subxpat_error=cand.reported_error)
        points.append(point)
    if candidates and failures and len(failures) == len(candidates):
        raise ToolError(f"SubXPAT: none of its {len(candidates)} circuits could be "
                        f"characterized: {failures[0]}")
    points.sort(key=lambda p: (p.metrics["wce"], -p.metrics["area"], p.threshold,
                               p.metrics["subxpat_iteration"] or 0,
                               p.metrics["subxpat_model"] or 0))
    for step, point in enumerate(points, start=1):
        point.step = step
    return points


@dataclass
class SubxpatGenerator:
    """SubXPAT run from ``SUBXPAT_HOME``; ``generate`` returns the chain of its circuits.
    ``work_dir``: keep each job's folder there (for inspection) instead of a deleted temporary."""

    config: SubxpatParams = field(default_factory=SubxpatParams)
    name: str = "subxpat"
    version: str = GENERATOR_VERSION
    work_dir: str | None = None

    def params(self) -> dict:
        home = os.environ.get(HOME_VARIABLE)
        return {**asdict(self.config),
                "subxpat_revision": subxpat_revision(Path(home)) if home else None}

    def generate(self, exact: ExactCircuit, flow: FlowSettings,
                 cache: ResultCache | None = None, on_point: OnPoint | None = None,
                 workload: OperandStream | None = None) -> list[DesignPoint]:
        """Run one job per threshold, then characterize what they wrote (``on_point`` is called
        for each point once the chain is ordered)."""
        started = time.monotonic()
        home = subxpat_home()
        python = subxpat_python(home)
        revision = subxpat_revision(home)
        if revision and not revision.startswith(DOCUMENTED_COMMIT):
            log.warning("SubXPAT at %s: this adapter was written against commit %s", revision[:12],
                        DOCUMENTED_COMMIT)
        benchmark = benchmark_verilog(exact, flow.timeout_s)
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(home),
                                                           os.environ.get("PYTHONPATH")]))}
        candidates: list[Harvested] = []
        for threshold in sorted(set(self.config.thresholds)):
            candidates += self._job(home, python, env, benchmark, threshold)
        points = harvest_points(candidates, exact, self.name, flow, cache, started, workload)
        for point in points:
            log.info("%s: threshold %d, WCE %g, area %g", point.name, point.threshold,
                     point.metrics["wce"], point.metrics["area"])
            if on_point:
                on_point(point)
        return points

    def _job(self, home: Path, python: str, env: dict[str, str], benchmark: str,
             threshold: int) -> list[Harvested]:
        """One SubXPAT run at ``threshold`` in a fresh folder, and what it wrote."""
        if self.work_dir:
            Path(self.work_dir).mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix=f"subxpat-et{threshold}-", dir=self.work_dir))
            return self._run_in(workdir, home, python, env, benchmark, threshold)
        with tempfile.TemporaryDirectory(prefix=f"dse-subxpat-et{threshold}-") as tmp:
            return self._run_in(Path(tmp), home, python, env, benchmark, threshold)

    def _run_in(self, workdir: Path, home: Path, python: str, env: dict[str, str],
                benchmark: str, threshold: int) -> list[Harvested]:
        prepare_workdir(home, workdir, benchmark)
        command = [python, str(home / "main.py"), *subxpat_command(self.config, threshold)]
        log.info("SubXPAT at threshold %d in %s: %s", threshold, workdir, " ".join(command[1:]))
        result = run_job(command, workdir, env, self.config.time_limit_s)
        found = harvest(workdir, threshold)
        if result.returncode is None:
            log.warning("SubXPAT at threshold %d stopped at the time limit (%g s); %d circuits "
                        "written until then", threshold, self.config.time_limit_s, len(found))
        elif result.failed and not found:
            raise ToolError(f"SubXPAT failed at threshold {threshold} (exit {result.returncode}): "
                            f"{result.log_tail}")
        elif result.failed:
            log.warning("SubXPAT failed at threshold %d after writing %d circuits: %s",
                        threshold, len(found), result.log_tail)
        elif not found:
            log.warning("SubXPAT wrote no circuit at threshold %d (%s)", threshold,
                        result.log_tail)
        return found
