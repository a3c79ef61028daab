"""SubXPAT (LP-RG/subxpat) as a generator of approximate multipliers.

SubXPAT is not a library: it is a program run from its checkout (``SUBXPAT_HOME``) with its own
Python environment, and it reads and writes everything relative to its working directory. Each
job (one worst-case error threshold) therefore runs as a subprocess in a fresh folder:

1. **Benchmark**: the exact circuit, synthesized to gates by our flow, becomes
   ``input/ver/mul_i16_o16.v`` with SubXPAT's port convention (``in0..in7 = a[0..7]``,
   ``in8..in15 = b[0..7]``, ``out0..out15 = r[0..15]``). SubXPAT's metric is the worst-case
   absolute difference of the outputs read unsigned, which is why a signed multiplier is given as
   its core ``r = product XOR 0x8000`` (``circuits.generation``). A smaller exact circuit on the
   low bits of the same ports (``small_multiplier``: a 4x4 multiplier becomes ``mul_i8_o8``,
   ``Layout``) runs the same way in minutes instead of hours.
2. **Run** ``main.py`` with the flags of ``SubxpatParams`` (written against commit f52f0b8, whose
   ``--output`` does nothing), everything else of the checkout linked in read-only. SubXPAT and
   its Z3Log library run the z3 scripts they generate with a bare ``python3``, so the job's PATH
   starts with SubXPAT's interpreter (``job_environment``); a preflight check fails in one line
   when that interpreter lacks z3, pygraphviz or Z3Log.
3. **Harvest** every circuit it wrote (``input/ver/<benchmark>_..._s<parent>_i<iteration>m<model>
   t<stamp>.v``; also the names of neighbouring versions), and the error it reports for each
   iteration: printed in its log as it goes, and in the grid CSV it writes when it ends
   (``output/report/grid_..._time<YYYYmmdd:HHMMSS>.csv``: 15 header names, 16 fields).
4. **Re-measure** each one with our flow: its module is cleaned (SubXPAT repeats identical
   assignments) and wrapped from ``in*/out*`` to ``a, b, r``; an 8x8 circuit is wrapped back to
   a signed multiplier (``wrap_signed``), synthesized and simulated exhaustively
   (``harvest_points``), a smaller one is simulated against its exact circuit (``measure``). A
   circuit whose measured worst-case error exceeds the threshold it was generated for is
   rejected with a warning, and an error SubXPAT reported that differs from ours is named.

The chain is ordered by the measured worst-case error. The command line, the file layout and the
output formats were learnt by reading SubXPAT's source (commit f52f0b8, MIT licence) and by
running it; none of its code is used here.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from circuits.activity import OperandStream
from circuits.cache import ResultCache, cache_dir
from circuits.characterize import FlowSettings
from circuits.generation import DesignPoint, ExactCircuit, OnPoint, design_point, wrap_signed
from circuits.liberty import Liberty, load_liberty
from circuits.multiplier import Multiplier
from circuits.netlist_sim import net_names, operand_words
from circuits.synthesis import synthesize_asic
from circuits.tools import ToolError, die_with_parent, kill_group

GENERATOR_VERSION = "2"
DOCUMENTED_COMMIT = "f52f0b8"
HOME_VARIABLE = "SUBXPAT_HOME"
PYTHON_VARIABLE = "SUBXPAT_PYTHON"
VENV_FOLDER = "subxpat-venv"  # under the dse cache: what ``make subxpat-env`` builds
# the grid CSV's header names 15 columns; each row has a 16th, SubXPAT's Model.subxpat_v1_time
# (the cell's exploration time: template definition + solving; its plot scripts call it
# ``exploration_time``)
UNNAMED_GRID_FIELD = "subxpat_v1_time"
ERROR_PARTITIONINGS = ("asc", "desc", "smart_asc", "smart_desc")
# f52f0b8 also parses ``qbf``, but its manager is a stub (SOP_QBF_Manager.run returns nothing)
ENCODINGS = ("z3bvec", "z3int")
CONSTANTS = ("never", "always")
# what SubXPAT and its Z3Log start by name from PATH (python3: the generated z3 scripts)
TOOLS = ("yosys", "sta", "dot")
PREFLIGHT_MODULES = ("z3", "pygraphviz", "Z3Log")
# folders SubXPAT writes into (relative to its working directory): never linked into a job
WRITTEN_FOLDERS = ("input", "output", "test", "experiments")
LOG_FILE = "subxpat.log"  # a job's output, in its folder
_ANSI_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # SubXPAT colours its messages
JOB_FOLDERS = ("input/ver", "input/gv", "input/aig", "output/ver", "output/gv", "output/aig",
               "output/z3", "output/report", "output/figure", "output/log", "output/json",
               "output/html", "test/ver", "test/z3")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Which low bits of the exact circuit's ports ``a[7:0]``, ``b[7:0]``, ``r[15:0]`` SubXPAT
    sees: its benchmark ``mul_i<inputs>_o<outputs>`` (SubXPAT reads the counts from the name)
    has ``in0.. = a[0..]``, then ``b[0..]``, and ``out<k> = r[k]``; the other bits of ``r`` are 0."""

    a_bits: int = 8
    b_bits: int = 8
    r_bits: int = 16

    def __post_init__(self) -> None:
        if not (1 <= self.a_bits <= 8 and 1 <= self.b_bits <= 8 and 1 <= self.r_bits <= 16):
            raise ValueError(f"a layout within a[7:0], b[7:0], r[15:0] is needed, got {self}")

    @property
    def name(self) -> str:
        return f"mul_i{self.a_bits + self.b_bits}_o{self.r_bits}"

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(f"in{k}" for k in range(self.a_bits + self.b_bits))

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(f"out{k}" for k in range(self.r_bits))

    def operand_bit(self, port: str) -> str:
        """``in<k>`` -> the operand bit it carries (first operand low bit first)."""
        k = int(port[2:])
        return f"a[{k}]" if k < self.a_bits else f"b[{k - self.a_bits}]"


FULL = Layout()  # the 8x8 multiplier
BENCHMARK = FULL.name


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
    cell_timeout_s: float = 600.0  # --timeout: SubXPAT's limit for one grid cell (its own
    # default is 3 h)
    time_limit_s: float = 3600.0  # wall-clock limit of the whole run, shared among the
    # thresholds (``job_time_limit``); what a stopped job wrote is still harvested
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


def job_time_limit(time_left_s: float, thresholds_left: int) -> float:
    """A job's share of the run's time limit: the time left, divided evenly among the
    thresholds left (a job that ends early leaves its time to the next ones)."""
    return max(time_left_s, 0.0) / max(thresholds_left, 1)


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
    """SubXPAT's interpreter: ``SUBXPAT_PYTHON``, else the checkout's .venv (or venv, as its
    Makefile names it), else the dse cache's ``subxpat-venv`` (``make subxpat-env``), else
    python3. A venv's interpreter keeps its path (the venv is found from it)."""
    override = os.environ.get(PYTHON_VARIABLE)
    if override:
        found = shutil.which(os.path.expanduser(override))
        if found is None:
            raise ToolError(f"{PYTHON_VARIABLE}={override}: no such executable")
        return found
    for venv in (home / ".venv", home / "venv", cache_dir() / VENV_FOLDER):
        python = venv / "bin" / "python"
        if python.exists():
            return str(python)
    found = shutil.which("python3")
    if found is None:
        raise ToolError(f"python3 not found: set {PYTHON_VARIABLE} to SubXPAT's Python")
    return found


def subxpat_revision(home: Path) -> str | None:
    """The checkout's commit, or None where git cannot tell (a copy without .git)."""
    git = shutil.which("git")
    if git is None or not (home / ".git").exists():
        return None
    out = subprocess.run([git, "-C", str(home), "rev-parse", "HEAD"], capture_output=True,
                         text=True, timeout=30)
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def subxpat_source_sha256(home: Path) -> str:
    """A digest of the checkout's code and requirements (part of the cache key: a copy without
    .git has no commit to name)."""
    digest = hashlib.sha256()
    files = [home / "main.py", home / "requirements.txt", *sorted((home / "sxpat").rglob("*.py"))]
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(home)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def job_environment(python: str, home: Path, private_bin: Path) -> dict[str, str]:
    """The environment SubXPAT runs in. SubXPAT and Z3Log run their generated z3 scripts with a
    bare ``python3`` from PATH, so its interpreter's folder comes first (a venv's ``bin``, with
    ``VIRTUAL_ENV`` set; for another interpreter ``private_bin``, holding a ``python3`` link to
    it). No bytecode is written into the checkout."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(home), os.environ.get("PYTHONPATH")]))}
    env.pop("PYTHONHOME", None)
    folder = Path(python).parent
    if (folder.parent / "pyvenv.cfg").is_file():
        env["VIRTUAL_ENV"] = str(folder.parent)
    else:
        env.pop("VIRTUAL_ENV", None)
        private_bin.mkdir(parents=True, exist_ok=True)
        link = private_bin / "python3"
        link.unlink(missing_ok=True)
        link.symlink_to(python)
        folder = private_bin
    env["PATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PATH")]))
    return env


def preflight(env: dict[str, str], python: str) -> None:
    """A one-line ToolError when SubXPAT cannot run in ``env``: a tool it starts by name is not
    on PATH, or the ``python3`` there (SubXPAT's interpreter ``python``) cannot import z3,
    pygraphviz or Z3Log (SubXPAT would otherwise swallow the failures and find nothing)."""
    path = env.get("PATH", "")
    for tool in ("python3", *TOOLS):
        if shutil.which(tool, path=path) is None:
            raise ToolError(f"SubXPAT needs {tool} on PATH, not found (Yosys, OpenSTA and "
                            f"Graphviz: make system-packages subxpat-env)")
    python3 = shutil.which("python3", path=path)
    out = subprocess.run([python3, "-c", _IMPORT_CHECK, *PREFLIGHT_MODULES], env=env,
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        failed = out.stdout.strip() or (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolError(f"SubXPAT's Python ({python}) cannot import {failed}: build its "
                        f"environment with `make subxpat-env`, or set {PYTHON_VARIABLE} to a "
                        f"Python with {HOME_VARIABLE}/requirements.txt installed")


_IMPORT_CHECK = """import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as err:
        print(f"{name} ({type(err).__name__}: {err})")
        sys.exit(1)
"""


# ---------------------------------------------------------------- Verilog in SubXPAT's format
def port_wrapper(inner: str, name: str, inputs: Iterable[str] | None = None,
                 layout: Layout = FULL) -> str:
    """A module ``name`` (ports a[7:0], b[7:0], r[15:0]) around a module ``inner`` with
    SubXPAT's ports (``inputs``: the ``in<k>`` ports it declares, default all of the layout's;
    every ``out<k>`` is connected, the bits of ``r`` above them are 0)."""
    conns = [f".{p}({layout.operand_bit(p)})" for p in (layout.inputs if inputs is None
                                                         else inputs)]
    conns += [f".{o}(r[{k}])" for k, o in enumerate(layout.outputs)]
    rest = 16 - layout.r_bits
    tie = f"  assign r[15:{layout.r_bits}] = {rest}'b0;\n" if rest else ""
    return (f"module {name} (input [7:0] a, input [7:0] b, output [15:0] r);\n"
            f"  {inner} u_sx ({', '.join(conns)});\n{tie}endmodule\n")


def small_multiplier(bits: int, signed: bool = True) -> tuple[ExactCircuit, Layout]:
    """An exact ``bits`` x ``bits`` multiplier on the low bits of the usual ports (``r`` read
    unsigned: a signed product XOR 2^(2 bits - 1), as for the 8x8 one), and its layout: a
    SubXPAT benchmark small enough to run in minutes (4: ``mul_i8_o8``)."""
    if not 2 <= bits <= 7:
        raise ValueError(f"a small multiplier has 2 to 7 bits per operand, got {bits}")
    width, kind = 2 * bits, "signed" if signed else "unsigned"
    flip = f" ^ {width}'h{1 << (width - 1):x}" if signed else ""
    name = f"mul{bits}{'s' if signed else 'u'}"
    verilog = (f"// dse: exact {kind} {bits}x{bits} multiplier on a[{bits - 1}:0], "
               f"b[{bits - 1}:0], r[{width - 1}:0]{' (product XOR MSB)' if signed else ''}\n"
               f"module {name}_exact (input [7:0] a, input [7:0] b, output [15:0] r);\n"
               f"  wire {kind} [{bits - 1}:0] x = a[{bits - 1}:0];\n"
               f"  wire {kind} [{bits - 1}:0] y = b[{bits - 1}:0];\n"
               f"  wire {kind} [{width - 1}:0] p = x * y;\n"
               f"  assign r = {{{16 - width}'b0, p{flip}}};\nendmodule\n")
    return ExactCircuit(name, verilog, f"{name}_exact", signed), Layout(bits, bits, width)


def benchmark_verilog(exact: ExactCircuit, timeout_s: float = 120.0,
                      layout: Layout = FULL) -> str:
    """The exact circuit as SubXPAT's benchmark (``layout.name``): synthesized to gates by our
    flow and written as one flat module of scalar ports ``in*``, ``out*`` (plain Verilog,
    whatever the source used: SubXPAT reads it with its own Yosys)."""
    netlist = synthesize_asic(Multiplier(exact.top, exact.verilog, exact.top, False), None,
                              timeout_s).netlist
    widths = {p: len(netlist.ports[p].bits) for p in ("a", "b", "r") if p in netlist.ports}
    if widths != {"a": 8, "b": 8, "r": 16}:
        raise ValueError(f"{exact.name}: the exact circuit needs ports a[7:0], b[7:0], r[15:0], "
                         f"found {widths}")
    ports = netlist.ports
    operand = dict(zip(ports["a"].bits[:layout.a_bits] + ports["b"].bits[:layout.b_bits],
                       layout.inputs))
    read = {bit for gate in netlist.order for bit in gate.inputs} | \
        set(ports["r"].bits[:layout.r_bits])
    outside = [f"{p}[{k}]" for p in ("a", "b") for k, bit in enumerate(ports[p].bits)
               if bit not in operand and bit in read]
    outside += [f"r[{k}]" for k, bit in enumerate(ports["r"].bits[layout.r_bits:],
                                                   start=layout.r_bits) if bit != "0"]
    if outside:
        raise ValueError(f"{exact.name}: {', '.join(outside)} outside the layout "
                         f"{layout.name} is used or not 0")
    name = net_names(operand)
    flip = "product XOR MSB" if exact.signed else "product"
    inputs, outputs = layout.inputs, layout.outputs
    lines = [f"// dse: {exact.name} (r = {flip}) for SubXPAT: in0..in{layout.a_bits - 1} = "
             f"a[0..{layout.a_bits - 1}], in{layout.a_bits}..in{len(inputs) - 1} = "
             f"b[0..{layout.b_bits - 1}], out0..out{len(outputs) - 1} = "
             f"r[0..{len(outputs) - 1}]",
             f"module {layout.name} ({', '.join(inputs + outputs)});",
             f"input {', '.join(inputs)};", f"output {', '.join(outputs)};"]
    lines += netlist.assignments(name)
    lines += [f"assign {o} = {name(bit)};" for o, bit in zip(outputs, ports["r"].bits)]
    return "\n".join(lines + ["endmodule"]) + "\n"


_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", flags=re.S)
_MODULE = re.compile(r"\bmodule\s+([\w$]+)\s*(?:\([^)]*\))?\s*;(.*?)\bendmodule\b", flags=re.S)


_IDENTIFIER = re.compile(r"\b[A-Za-z_][\w$]*\b")


def _single_drivers(statements: Iterable[tuple[str, str]], subject: str) -> dict[str, str]:
    """One assignment per net. SubXPAT repeats assignments, identically or through its alias
    wires (``w_g9 = in2 & in5`` and ``w_g9 = w_in2 & w_in5`` with ``w_in2 = in2``): a repeat
    equal to the first once aliases are followed is dropped, another one is an error."""
    statements = list(statements)
    aliases: dict[str, str] = {}
    for lhs, rhs in statements:
        if _IDENTIFIER.fullmatch(rhs):
            aliases.setdefault(lhs, rhs)

    def resolved(expression: str) -> str:
        def follow(match: re.Match) -> str:
            net, seen = match[0], set()
            while net in aliases and net not in seen:
                seen.add(net)
                net = aliases[net]
            return net
        return "".join(_IDENTIFIER.sub(follow, expression).split())

    assigns: dict[str, str] = {}
    for lhs, rhs in statements:
        first = assigns.setdefault(lhs, rhs)
        if first != rhs and resolved(first) != resolved(rhs):
            raise ValueError(f"{subject}: {lhs} is assigned twice, differently ('{first}' and "
                             f"'{rhs}')")
    return assigns


def harvested_module(verilog_text: str, name: str, subject: str = "SubXPAT circuit",
                     layout: Layout = FULL) -> str:
    """A circuit SubXPAT wrote, as module ``name`` with ports a, b, r (over its cleaned module
    ``<name>_sx``): identical repeated assignments and declarations are kept once, an empty
    ``wire ;`` is dropped. ``subject`` (the file) names it in errors."""
    modules = _MODULE.findall(_COMMENTS.sub(" ", verilog_text))
    if len(modules) != 1:
        raise ValueError(f"{subject}: expected one module, found {len(modules)}")
    declared: dict[str, list[str]] = {"input": [], "output": [], "wire": []}
    statements: list[tuple[str, str]] = []
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
            statements.append((lhs, rhs))
        elif text not in others:
            others.append(text)
    assigns = _single_drivers(statements, subject)
    inputs, outputs = declared["input"], declared["output"]
    unknown = [p for p in inputs if p not in layout.inputs] + \
        [p for p in outputs if p not in layout.outputs]
    if unknown:
        raise ValueError(f"{subject}: unexpected port {', '.join(unknown)} (the ports of "
                         f"{layout.name} are in0..in{len(layout.inputs) - 1} and "
                         f"out0..out{len(layout.outputs) - 1})")
    missing = [o for o in layout.outputs if o not in outputs or (not others and o not in assigns)]
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
    return "\n".join(lines + ["endmodule", ""]) + "\n" + port_wrapper(core, name, inputs, layout)


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
    # f52f0b8 (sxpat.utils.name.NameData): <benchmark>_<template>_et<e>_enc<encoding>_imax<i>_
    # omax<o>_const<c>_s<parent id>_i<iteration>m<model>t<last 15 digits of time_ns>.v, the
    # parent id ``E`` (the exact circuit) or the previous circuit's i<iteration>m<model>t<stamp>
    re.compile(r"_i(\d+)m(\d+)t\d+\.v$"),
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


_LOGGED_ERROR = re.compile(r"iteration = (\d+) -> sat \(\d+ models? found\)\s*"
                           r"ErrorEval PASS! with total wce = (\d+)")


def logged_errors(log_text: str) -> dict[int, float]:
    """Iteration -> the worst-case error SubXPAT printed for the circuit it kept ("... iteration
    = 3 -> sat (1 models found)", "ErrorEval PASS! with total wce = 2"): known before its grid
    CSV, which it writes only when it ends (a job stopped at its time limit has none)."""
    return {int(i): int(e) for i, e in _LOGGED_ERROR.findall(_ANSI_COLOURS.sub("", log_text))}


def _is_circuit(path: Path) -> bool:
    text = path.read_text(errors="replace")
    return "Generated by Yosys" not in text and re.search(r"\bmodule\b", text) is not None \
        and re.search(r"\bout0\b", text) is not None


def harvest(workdir: Path, threshold: int, benchmark: str = BENCHMARK) -> list[Harvested]:
    """Every circuit a job wrote under ``workdir`` (not the benchmark, not Yosys's own netlists),
    in (iteration, model) order, with the errors SubXPAT reported (its log, its grid CSVs)."""
    files = [p for p in sorted((workdir / "input" / "ver").glob("*.v"))
             if p.stem != benchmark and not p.is_symlink()]
    files += [p for p in sorted((workdir / "output").glob("*/verilog/*.v"))
              if p.name not in ("origin.v", "current.v")]
    log_path = workdir / LOG_FILE
    errors = logged_errors(log_path.read_text(errors="replace")) if log_path.is_file() else {}
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


def run_job(command: list[str], workdir: Path, env: dict[str, str], time_limit_s: float,
            on_wait: Callable[[float], None] | None = None, poll_s: float = 5.0) -> JobResult:
    """Run a SubXPAT command in ``workdir`` (output in ``subxpat.log``); at the time limit its
    whole process group (SubXPAT and the tools it started) is killed, and SubXPAT dies with us.
    ``on_wait`` is called with the seconds elapsed every ``poll_s`` while it runs."""
    started = time.monotonic()
    deadline = started + time_limit_s
    log_path = workdir / LOG_FILE
    with open(log_path, "w") as out:
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent())
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    proc.wait(timeout=min(poll_s, max(deadline - time.monotonic(), 0.0)))
                except subprocess.TimeoutExpired:
                    if on_wait:
                        on_wait(time.monotonic() - started)
            returncode = proc.poll()  # None: still running at the time limit
        finally:
            if proc.poll() is None:
                kill_group(proc.pid)
                proc.wait()
    text = _ANSI_COLOURS.sub("", log_path.read_text(errors="replace"))
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    return JobResult(returncode, time.monotonic() - started, lines[-1] if lines else "no output")


def _circuits_written(workdir: Path, benchmark: str) -> int:
    """Circuits a running job has written so far (for the progress bar)."""
    return sum(1 for p in (workdir / "input" / "ver").glob(f"{benchmark}_*.v")
               if parse_circuit_name(p.name) is not None)


def run_job_at(workdir: Path, home: Path, python: str, env: dict[str, str], benchmark: str,
               layout: Layout, params: SubxpatParams, threshold: int, time_limit_s: float,
               bar: tqdm | None = None) -> list[Harvested]:
    """One SubXPAT run at ``threshold`` in the empty folder ``workdir``, and what it wrote. A
    failure that wrote nothing is a ToolError; stops and failures after some circuits are
    warnings."""
    prepare_workdir(home, workdir, benchmark, layout.name)
    command = [python, str(home / "main.py"),
               *subxpat_command(params, threshold, f"input/ver/{layout.name}.v")]
    log.info("SubXPAT at threshold %d in %s: %s", threshold, workdir, " ".join(command[1:]))

    def on_wait(seconds: float) -> None:
        if bar is not None:
            bar.set_postfix(threshold=threshold, seconds=f"{seconds:.0f}/{time_limit_s:.0f}",
                            circuits=_circuits_written(workdir, layout.name))

    result = run_job(command, workdir, env, time_limit_s, on_wait)
    found = harvest(workdir, threshold, layout.name)
    if result.returncode is None:
        log.warning("SubXPAT at threshold %d stopped at its time limit (%.0f s); %d circuits "
                    "written until then", threshold, time_limit_s, len(found))
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


def run_subxpat(exact: ExactCircuit, params: SubxpatParams, layout: Layout = FULL,
                work_dir: str | None = None, timeout_s: float = 120.0,
                progress: bool = False) -> list[Harvested]:
    """SubXPAT on ``exact`` (its benchmark under ``layout``): one job per threshold, in
    increasing order, sharing the run's time limit (``job_time_limit``); every circuit they
    wrote. ``work_dir`` keeps the job folders (with ``subxpat.log``) for inspection."""
    started = time.monotonic()
    home = subxpat_home()
    python = subxpat_python(home)
    revision = subxpat_revision(home)
    if revision and not revision.startswith(DOCUMENTED_COMMIT):
        log.warning("SubXPAT at %s: this adapter was written against commit %s", revision[:12],
                    DOCUMENTED_COMMIT)
    benchmark = benchmark_verilog(exact, timeout_s, layout)
    thresholds = sorted(set(params.thresholds))
    found: list[Harvested] = []
    with tempfile.TemporaryDirectory(prefix="dse-subxpat-") as tmp, \
            tqdm(total=len(thresholds), desc=f"SubXPAT on {exact.name}", unit="threshold",
                 disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar, \
            logging_redirect_tqdm() if progress else contextlib.nullcontext():  # warnings above it
        env = job_environment(python, home, Path(tmp) / "bin")
        preflight(env, python)
        if work_dir:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
        for k, threshold in enumerate(thresholds):
            limit = job_time_limit(params.time_limit_s - (time.monotonic() - started),
                                   len(thresholds) - k)
            if limit < 1:
                log.warning("SubXPAT: the time limit (%g s) is spent; thresholds %s not run",
                            params.time_limit_s, ", ".join(map(str, thresholds[k:])))
                break
            workdir = Path(tempfile.mkdtemp(prefix=f"subxpat-et{threshold}-",
                                            dir=work_dir or tmp))
            found += run_job_at(workdir, home, python, env, benchmark, layout, params,
                                threshold, limit, bar)
            bar.update(1)
    return found


# ---------------------------------------------------------------- design points
def _module_name(text: str) -> str:
    return re.sub(r"\W", "_", text)


def _point_name(exact: ExactCircuit, cand: Harvested, k: int) -> str:
    tag = f"i{cand.iteration}m{cand.model}" if cand.iteration is not None else f"f{k}"
    return _module_name(f"{exact.name}_subxpat_et{cand.threshold}_{tag}")


def _within_threshold(cand: Harvested, wce: float) -> bool:
    """Whether a circuit's measured worst-case error is within the threshold it was generated
    for (a warning when not); an error SubXPAT reported that differs is named too."""
    if cand.reported_error is not None and cand.reported_error != wce:
        log.warning("%s: SubXPAT reported a worst-case error of %g, measured %g", cand.file,
                    cand.reported_error, wce)
    if wce > cand.threshold:
        log.warning("%s: rejected, its measured worst-case error %g exceeds the threshold %d "
                    "it was generated for", cand.file, wce, cand.threshold)
        return False
    return True


@dataclass(frozen=True)
class Measured:
    """A harvested circuit of any layout as our flow measured it: the errors of ``r`` read
    unsigned against the exact circuit over every input, and its area."""

    harvested: Harvested
    name: str
    verilog: str  # module ``name``, ports a[7:0], b[7:0], r[15:0]
    wce: int
    mae: float
    area: float


def _simulated_r(mult: Multiplier, layout: Layout, liberty: Liberty | None, timeout_s: float
                 ) -> tuple[np.ndarray, float]:
    """Port ``r`` (its layout bits, unsigned) for every operand bit pattern (a << 8) | b, and
    the area of the synthesized circuit."""
    synth = synthesize_asic(mult, liberty, timeout_s)
    index = np.arange(1 << 16)
    values = synth.netlist.simulate({"a": operand_words(index >> 8),
                                     "b": operand_words(index & 0xFF)})
    r = synth.netlist.read_port(values, "r", 1 << 16) & ((1 << layout.r_bits) - 1)
    return r, synth.area


def measure(candidates: Iterable[Harvested], exact: ExactCircuit, layout: Layout,
            flow: FlowSettings) -> list[Measured]:
    """Re-measure harvested circuits of any layout (the 8x8 one included) by synthesis and
    exhaustive simulation against the exact circuit; those over their threshold, or that cannot
    be read, are rejected with a warning. Ordered by worst-case error, then larger area first."""
    liberty = load_liberty(flow.liberty) if flow.liberty else None
    reference, _ = _simulated_r(Multiplier(exact.top, exact.verilog, exact.top, False), layout,
                                None, flow.timeout_s)
    measured = []
    for k, cand in enumerate(candidates):
        name = _point_name(exact, cand, k)
        try:
            verilog = harvested_module(cand.verilog, name, cand.file, layout)
            r, area = _simulated_r(Multiplier(name, verilog, name, False), layout, liberty,
                                   flow.timeout_s)
        except (ValueError, ToolError) as err:
            log.warning("%s: rejected, it cannot be measured: %s", cand.file, err)
            continue
        error = np.abs(r - reference)
        if _within_threshold(cand, int(error.max())):
            measured.append(Measured(cand, name, verilog, int(error.max()), float(error.mean()),
                                     area))
    return sorted(measured, key=lambda m: (m.wce, -m.area, m.harvested.threshold,
                                           m.harvested.iteration or 0))


def harvest_points(candidates: Iterable[Harvested], exact: ExactCircuit, generator: str,
                   flow: FlowSettings, cache: ResultCache | None, started: float,
                   workload: OperandStream | None = None) -> list[DesignPoint]:
    """Characterize harvested circuits with our flow; keep those whose measured worst-case
    error is within the threshold they were generated for (the others are rejected with a
    warning), ordered by that error (then larger area first) and numbered 1, 2, ..."""
    points, failures = [], []
    candidates = list(candidates)
    for k, cand in enumerate(candidates):
        name = _point_name(exact, cand, k)
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
        if not _within_threshold(cand, point.metrics["wce"]):
            continue
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
    """SubXPAT run from ``SUBXPAT_HOME`` on an 8x8 exact circuit; ``generate`` returns the chain
    of its circuits. ``work_dir``: keep each job's folder there (for inspection) instead of a
    deleted temporary; ``progress``: a progress bar over the thresholds."""

    config: SubxpatParams = field(default_factory=SubxpatParams)
    name: str = "subxpat"
    version: str = GENERATOR_VERSION
    work_dir: str | None = None
    progress: bool = False

    def params(self) -> dict:
        try:
            home: Path | None = subxpat_home()
        except ToolError:
            home = None
        return {**asdict(self.config),
                "subxpat_revision": subxpat_revision(home) if home else None,
                "subxpat_source": subxpat_source_sha256(home) if home else None}

    def generate(self, exact: ExactCircuit, flow: FlowSettings,
                 cache: ResultCache | None = None, on_point: OnPoint | None = None,
                 workload: OperandStream | None = None) -> list[DesignPoint]:
        """Run one job per threshold, then characterize what they wrote (``on_point`` is called
        for each point once the chain is ordered)."""
        started = time.monotonic()
        candidates = run_subxpat(exact, self.config, FULL, self.work_dir, flow.timeout_s,
                                 self.progress)
        points = harvest_points(candidates, exact, self.name, flow, cache, started, workload)
        for point in points:
            log.info("%s: threshold %d, WCE %g, area %g", point.name, point.threshold,
                     point.metrics["wce"], point.metrics["area"])
            if on_point:
                on_point(point)
        return points
