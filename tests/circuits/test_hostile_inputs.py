"""What a hostile or unlucky user hands the EDA flow: paths that read as commands, files that are
not Liberty, names that are not identifiers, and a driver killed while its tools run."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from circuits.characterize import FlowSettings, characterize
from circuits.liberty import LibertyError, load_liberty
from circuits.multiplier import Multiplier, MultiplierError
from circuits.tools import ToolError, run_tool
from tests.conftest import REPO, shared_path

pytestmark = pytest.mark.skipif(
    shutil.which("yosys") is None or shutil.which("sta") is None,
    reason="Yosys and OpenSTA are not installed (make setup installs them)",
)

MUL = "module mul8s (input signed [7:0] a, input signed [7:0] b, output signed [15:0] p);\n" \
      "  assign p = a * b;\nendmodule\n"
# Each part would run `touch $DSE_MARKER` if it reached a Yosys script (`!` and `;` start shell
# and Yosys commands), a Tcl script (`[...]`, `;`) or a shell (`$(...)`, backticks) as text.
HOSTILE = [
    "my lib 'quoted' \"double\"",
    "x; exec -- touch $DSE_MARKER ;",
    "x\n!touch $DSE_MARKER\n",
    "$(touch $DSE_MARKER)",
    "`touch $DSE_MARKER`",
    "x]; exec touch $::env(DSE_MARKER); puts [x",
    "-x {brace} \\",
]


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    """The file an injected command would create (named through the environment: a path cannot
    hold a '/' in one component)."""
    path = tmp_path / "injected"
    monkeypatch.setenv("DSE_MARKER", str(path))
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    return path


def hostile_folder(root: Path) -> Path:
    folder = root.joinpath(*HOSTILE)
    folder.mkdir(parents=True)
    return folder


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message.strip(), message
    return message


def test_hostile_liberty_and_verilog_paths_work_and_run_nothing(tmp_path, marker):
    nangate = shared_path("pdk", "nangate45_typ.lib.gz")
    plain = tmp_path / "mul8s.v"
    plain.write_text(MUL)
    reference = characterize(Multiplier.from_file(plain), FlowSettings(liberty=str(nangate)))
    folder = hostile_folder(tmp_path / "in")
    verilog = folder / f"{HOSTILE[1]} {HOSTILE[3]}.v"
    verilog.write_text(MUL)
    for suffix in ("", ".gz"):  # a plain Liberty file is as safe as a decompressed one
        liberty = folder / f"lib {HOSTILE[2]}; $(x).lib{suffix}"
        data = nangate.read_bytes()
        liberty.write_bytes(data if suffix else gzip.decompress(data))
        hostile = characterize(Multiplier.from_file(verilog), FlowSettings(liberty=str(liberty)))
        for key in ("area", "delay", "power_uniform", "table_sha256"):
            assert hostile.metrics[key] == reference.metrics[key], key
        assert hostile.metrics["mae"] == 0 and hostile.metrics["area"] > 0
    assert not marker.exists()


@pytest.mark.parametrize("injection", ["\n!touch $DSE_MARKER\n", "; exec -- touch $DSE_MARKER ;"],
                         ids=["newline", "semicolon"])
def test_a_liberty_path_cannot_smuggle_a_command(tmp_path, marker, injection):
    """Issue 11's attack: a real library where the script line would end, a command after it."""
    cells = gzip.decompress(shared_path("pdk", "nangate45_typ.lib.gz").read_bytes())
    (tmp_path / "cells.lib").write_bytes(cells)  # what the cut script line would read
    liberty = tmp_path / f"cells.lib{injection}" / "cells.lib"
    liberty.parent.mkdir()
    liberty.write_bytes(cells)
    m = characterize(Multiplier.from_appaxo(404750335), FlowSettings(liberty=str(liberty))).metrics
    assert m["mae"] == 188.25 and m["area"] > 0
    assert not marker.exists()


def test_a_top_module_that_is_not_an_identifier_is_refused(tmp_path, marker):
    bad = Multiplier("m", MUL, "mul8s; exec -- touch $DSE_MARKER")
    err = _raised(lambda: characterize(bad))
    assert err.type is ToolError
    assert one_line(err).startswith("m: top module 'mul8s; exec -- touch $DSE_MARKER' is not a "
                                    "plain Verilog identifier")
    # an escaped Verilog identifier picked as top would reach OpenSTA's link_design
    escaped = MUL.replace("module mul8s", r"module \mul8s;x[exec")
    path = tmp_path / "escaped.v"
    path.write_text(escaped)
    nangate = FlowSettings(liberty=str(shared_path("pdk", "nangate45_typ.lib.gz")))
    err = _raised(lambda: characterize(Multiplier.from_file(path), nangate))
    assert err.type is ToolError and "top module 'mul8s;x[exec'" in one_line(err)
    assert not marker.exists()


def _raised(call) -> pytest.ExceptionInfo:
    with pytest.raises((ToolError, MultiplierError, LibertyError)) as err:
        call()
    return err


@pytest.mark.parametrize("content", [
    b"this is a text file, not a cell library\n",
    b"",
    gzip.compress(os.urandom(4096)),
    bytes(range(256)) * 64,
    b"library (empty) {\n}\n",  # a library group without cells
], ids=["text", "empty", "gzip-of-garbage", "binary", "no-cells"])
def test_a_file_that_is_not_liberty_is_refused_at_once(tmp_path, marker, content):
    path = tmp_path / "cells.lib"
    path.write_bytes(content)
    with pytest.raises(LibertyError) as err:
        load_liberty(path)
    assert one_line(err) == f"{path}: not a Liberty library (expected `library (...)` with cells)"


def test_a_broken_gzip_is_refused_with_one_line(tmp_path, marker):
    path = tmp_path / "cells.lib.gz"
    path.write_bytes(gzip.compress(b"library (x) { cell (a) {} }")[:20])
    with pytest.raises(LibertyError, match=rf"^{path}: cannot read the Liberty file") as err:
        load_liberty(path)
    one_line(err)


def test_liberty_with_leading_comments_is_accepted(tmp_path, marker):
    path = tmp_path / "tiny.lib"
    path.write_text("/* a\n comment */\n// another\nlibrary (tiny) {\n  cell (INV) {}\n}\n")
    assert load_liberty(path).name == "tiny.lib"


def processes_with(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def gone(text: str, seconds: float) -> bool:
    """Whether every process showing ``text`` ends within ``seconds`` (survivors are killed)."""
    if wait_for(lambda: not processes_with(text), seconds):
        return True
    for pid in processes_with(text):
        os.kill(pid, signal.SIGKILL)
    return False


def test_a_tool_dies_with_its_driver(tmp_path):
    script = tmp_path / f"hang-{os.getpid()}.tcl"
    script.write_text("after 60000\n")
    driver = subprocess.Popen(  # the script named in the environment: only sta's argv shows it
        [sys.executable, "-c",
         "import os; from pathlib import Path; from circuits.tools import run_tool; "
         "run_tool('sta', ['-no_splash', '-exit', os.environ['HANG']], cwd=Path('.'), "
         "timeout=120, subject='hang')"], cwd=REPO, env={**os.environ, "HANG": str(script)})
    try:
        assert wait_for(lambda: processes_with(script.name), 30), "sta never started"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert gone(script.name, 5), "sta outlived its driver"


def test_a_timeout_kills_the_tool_and_its_children(tmp_path):
    unique = f"61.{os.getpid()}"  # the sleep's argument marks it
    script = tmp_path / "spawn.tcl"
    script.write_text(f"exec sleep {unique} &\nafter 60000\n")
    errors: list[Exception] = []

    def run() -> None:
        try:
            run_tool("sta", ["-no_splash", "-exit", str(script)], cwd=tmp_path, timeout=4,
                     subject="spawn")
        except ToolError as err:
            errors.append(err)

    worker = threading.Thread(target=run)
    worker.start()
    assert wait_for(lambda: processes_with(f"sleep {unique}"), 4), "the tool's child never ran"
    worker.join(30)
    assert [str(e) for e in errors] == ["spawn: sta timed out after 4 s"]
    assert gone(f"sleep {unique}", 5), "the tool's child survived"
