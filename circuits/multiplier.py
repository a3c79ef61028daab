"""A multiplier to characterize: Verilog text, its top module, and how to read its ports.

Any module with two 8-bit inputs and one output of 16 or more bits is an 8x8 multiplier. The
inputs named ``a`` and ``b`` are the activation and the weight operand; otherwise the first
declared input is the activation. Signedness comes from the port declarations (``signed`` or
``unsigned``), else from what the caller gives (``signed``), else from the simulated table
(``circuits.characterize.infer_signedness``), which says ``ambiguous`` rather than guess.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from circuits import appaxo


class MultiplierError(ValueError):
    """A Verilog file that is not a usable 8x8 multiplier; one line naming the file."""


@dataclass(frozen=True)
class Multiplier:
    """Verilog of an 8x8 multiplier and what is known of it."""

    name: str
    verilog: str
    top: str | None = None  # None: Yosys picks the top of the hierarchy
    signed: bool | None = None
    source: str = ""
    appaxo_config: int | None = None

    @property
    def file_name(self) -> str:
        """The name the tools see, so their messages name the user's file: letters, digits and
        ``_ . -`` only, never leading with ``-`` (a tool script could read it as an option)."""
        return re.sub(r"^[^A-Za-z0-9_]|[^A-Za-z0-9_.-]", "_", self.name) + ".v"

    @property
    def sha256(self) -> str:
        """Identity of the design (text and top module) for caches."""
        return hashlib.sha256(f"{self.top}\n{self.verilog}".encode()).hexdigest()

    @classmethod
    def from_file(cls, path: str | Path, signed: bool | None = None, top: str | None = None) -> Multiplier:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise MultiplierError(f"{path}: cannot read ({err.strerror})") from None
        if not re.search(r"^\s*module\b", text, flags=re.M):
            raise MultiplierError(f"{path}: no Verilog module found")
        return cls(path.stem, text, top, signed, str(path))

    @classmethod
    def from_appaxo(cls, config: int) -> Multiplier:
        config = appaxo.check_config(config)
        top = appaxo.design_name(config)
        return cls(top, appaxo.verilog(config, top), top, True, f"appaxo:{config}", config)

    @classmethod
    def parse(cls, spec: str, signed: bool | None = None) -> Multiplier:
        """``FILE.v``, ``appaxo:CONFIG`` (CONFIG an integer or a 36-character bit string) or
        ``baseline:NAME`` (see ``circuits.baselines.parse``)."""
        if spec.startswith("baseline:"):
            from circuits import baselines

            try:
                return baselines.parse(spec.removeprefix("baseline:")).multiplier()
            except ValueError as err:
                raise MultiplierError(f"{spec}: {err}") from None
        if spec.startswith("appaxo:"):
            value = spec.removeprefix("appaxo:")
            try:
                config = appaxo.from_bitstring(value) if len(value) == 36 and set(value) <= {"0", "1"} \
                    else int(value, 0)
                return cls.from_appaxo(config)
            except ValueError as err:
                raise MultiplierError(f"{spec}: {err}") from None
        return cls.from_file(spec, signed)
