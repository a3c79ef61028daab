"""Study files: the strict schema of a study YAML and its one-line validation errors.

Every section forbids unknown keys, so a typo is an error rather than a silently ignored
setting. ``load_study_file`` returns validated settings or raises ``StudyFileError`` whose
message has one line per problem, each naming the file, the field and what is expected.

The file itself is read defensively, since a study file may come from anyone: UTF-8 text only,
at most ``MAX_STUDY_FILE_BYTES``, no duplicate or non-string keys, no YAML aliases (so no alias
bombs), bounded nesting, and every number finite and in range.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from circuits.appaxo import N_BITS as APPAXO_BITS
from dse.kinds.base import StudyKind, kind_named, kinds, resolve, space_types
from evaluators.networks.zoo import ARCHITECTURES

METRIC_DIRECTIONS = {
    "accuracy": "maximize",
    "f1_macro": "maximize",
    "fpga_luts": "minimize",
    "fpga_power": "minimize",
    "fpga_delay": "minimize",
    "mae": "minimize",
    "mred": "minimize",
    "wce": "minimize",
    "error_probability": "minimize",
    "area": "minimize",
    "power": "minimize",
    "delay": "minimize",
    "pdp": "minimize",
    "energy": "minimize",
    "energy_saving": "maximize",
    "bram": "minimize",
    "latency_cycles": "minimize",
    "multipliers": "minimize",
}
ASIC_METRICS = ("area", "power", "delay", "pdp", "energy", "energy_saving")
ZERO_AT_EXACT = ("mae", "mred", "wce", "error_probability")  # 0 for the exact multiplier
KNOWN_LIBERTY = ("nangate45", "sky130hd")
MAX_STUDY_FILE_BYTES = 1 << 20
MAX_NESTING = 32
# the longest duration any setting accepts (about three years): far below what timers and
# Ray accept, so no timeout can overflow them
MAX_SECONDS = 1e8

Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]


class StudyFileError(ValueError):
    """A study file that cannot be used; the message is one line per problem for the user."""


class Section(BaseModel):
    # NaN and infinities would pass every bound check (and make the hypervolume 0)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100", "jets")


def existing(value: str, what: str, want_dir: bool) -> str:
    """A path that must exist when the study is read (relative to the current folder)."""
    path = Path(os.path.expanduser(value))
    if want_dir and not path.is_dir():
        raise ValueError(f"folder {value!r} does not exist (expected {what})")
    if not want_dir and not path.is_file():
        raise ValueError(f"file {value!r} does not exist (expected {what})")
    return value


class DatasetSettings(Section):
    """Where the samples come from: a known dataset (``name``, found in ``path`` or the usual
    folders, or downloaded), or a user's ``npz`` file with x_train, y_train, x_test, y_test."""

    name: Literal[DATASET_NAMES] | None = None
    npz: str | None = None
    path: str | None = None
    download: bool = True
    train_size: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    test_size: Annotated[int, Field(ge=1, le=1_000_000)] | None = None

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: str | None) -> str | None:
        return None if value is None else existing(
            value, "a folder holding the dataset's files", want_dir=True)

    @field_validator("npz")
    @classmethod
    def _npz_exists(cls, value: str | None) -> str | None:
        return None if value is None else existing(
            value, "an .npz file with x_train, y_train, x_test, y_test", want_dir=False)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSettings:
        if self.npz is not None and (self.name is not None or self.path is not None):
            raise ValueError("give either npz (your own data) or name (and path), not both")
        return self

    @property
    def source(self) -> str:
        """The dataset's registry name (``npz`` for a user's file)."""
        return "npz" if self.npz is not None else self.name or "mnist"

    @property
    def location(self) -> str | None:
        """What ``load_split`` takes as ``path``: the npz file, or the folder."""
        return self.npz if self.npz is not None else self.path


class PreprocessingSettings(Section):
    """``(pixel * scale - mean[c]) / std[c]`` in the given layout; where a model was trained
    with other statistics than the dataset's default (see ``evaluators.data.preprocess``)."""

    scale: Annotated[float, Field(gt=0, le=1e6)] = 1 / 255
    mean: Annotated[list[Annotated[float, Field(ge=-1e6, le=1e6)]],
                    Field(min_length=1, max_length=4)] = [0.0]
    std: Annotated[list[Annotated[float, Field(gt=0, le=1e6)]],
                   Field(min_length=1, max_length=4)] = [1.0]
    layout: Literal["NCHW", "NHWC"] = "NCHW"


class ModelSettings(Section):
    """The network: a registry architecture trained here (``arch``), the same with pretrained
    weights (``arch`` + ``checkpoint``, a PyTorch state dict), or a user's ONNX classifier
    (``onnx``, float or already quantized). Prepared networks are cached by these settings."""

    arch: str | None = None
    checkpoint: str | None = None
    onnx: str | None = None
    preprocessing: PreprocessingSettings | None = None  # default: the dataset's
    epochs: Annotated[int, Field(ge=1, le=500)] = 20
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 64
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.003
    augment: bool = True
    reuse_checkpoint: bool = True

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str | None) -> str | None:
        if value is not None and value not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {value!r} (known: {', '.join(ARCHITECTURES)})")
        return value

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: str | None) -> str | None:
        return None if value is None else existing(
            value, "a PyTorch state dict (.pt) of the architecture", want_dir=False)

    @field_validator("onnx")
    @classmethod
    def _onnx_exists(cls, value: str | None) -> str | None:
        return None if value is None else existing(
            value, "an ONNX classifier, float or quantized", want_dir=False)

    @model_validator(mode="after")
    def _one_route(self) -> ModelSettings:
        if self.onnx is not None and (self.arch is not None or self.checkpoint is not None):
            raise ValueError("give either onnx (your own model) or arch (with an optional "
                             "checkpoint), not both")
        if self.checkpoint is not None and self.arch is None:
            raise ValueError("checkpoint needs arch: the registry architecture its weights are for")
        return self

    @property
    def architecture(self) -> str | None:
        """The registry architecture (``lenet5`` when neither arch nor onnx is given)."""
        return None if self.onnx is not None else self.arch or "lenet5"


# settings added after studies were frozen without them (their path in the dump, their
# default): left out of the dump while they hold the default, so those studies keep their hash
LATER_DEFAULTS = ((("retrain",), None), (("approximate",), "all"),
                  (("quantization", "scheme"), "s8s8"), (("quantization", "format"), "qoperator"),
                  (("quantization", "reduce_range"), False), (("quantization", "mode"), "static"))


class QuantizationSettings(Section):
    """Static 8-bit quantization with onnxruntime (``evaluators.networks.quantization``): per-channel
    weights, MinMax calibration. ``scheme``: activations then weights, signed (s8) or unsigned
    (u8); ``format``: the graph form the study scores; ``reduce_range``: 7-bit weights, the
    option onnxruntime recommends for x86 CPUs without AVX-512 VNNI, where its own uint8 x int8
    kernels saturate (dse's products are exact either way). ``mode``: static (calibrated
    scales) or dynamic (each activation quantized at run time by DynamicQuantizeLinear, to
    uint8: scheme u8s8 or u8u8, format qoperator; the attention products of transformers
    included). They apply when dse quantizes the network (an imported quantized model is used
    as it is)."""

    calibration_size: Annotated[int, Field(ge=1, le=60000)] = 1000
    scheme: Literal["s8s8", "u8s8", "u8u8"] = "s8s8"
    format: Literal["qoperator", "qdq"] = "qoperator"
    reduce_range: bool = False
    mode: Literal["static", "dynamic"] = "static"

    @model_validator(mode="after")
    def _dynamic_operands(self) -> QuantizationSettings:
        if self.mode == "dynamic" and (self.scheme == "s8s8" or self.format == "qdq"):
            raise ValueError(f"quantization.mode dynamic quantizes activations to uint8 at run "
                             f"time (DynamicQuantizeLinear) into QOperator layers: give scheme "
                             f"u8s8 or u8u8 and format qoperator (got {self.scheme} {self.format})")
        return self


def parse_bits(value: Any, field: str) -> int:
    """36 bits given as a 36-character 0/1 string (MSB first) or a non-negative integer."""
    if isinstance(value, bool):
        raise ValueError(f"{field} must be 36 bits, got a boolean")
    if isinstance(value, int):
        if not 0 <= value < 1 << APPAXO_BITS:
            raise ValueError(f"{field} must fit in 36 bits (0 .. 2^36-1), got {value}")
        return value
    if isinstance(value, str):
        bits = value.replace("_", "")
        if len(bits) != APPAXO_BITS or set(bits) - {"0", "1"}:
            raise ValueError(
                f"{field} must be a 36-character string of 0/1 (MSB first), got {len(bits)} "
                f"characters {value!r}"
            )
        return int(bits, 2)
    raise ValueError(f"{field} must be a 36-character 0/1 string or an integer, got {value!r}")


class RandomStrategy(Section):
    """Uniform sampling of the free bits without repetition (seeded by the study seed)."""

    type: Literal["random"]


class SobolStrategy(Section):
    """A scrambled Sobol sequence over the free bits (seeded), repeats skipped."""

    type: Literal["sobol"]


class GridStrategy(Section):
    """Every configuration of the free-bit subspace, in counting order over the free bits
    (lowest free bit changes fastest), from ``start`` on; or an explicit list of configurations
    (``configs`` inline, or ``file``: one per line, integer or 36-character bit string)."""

    type: Literal["grid"]
    start: Annotated[int, Field(ge=0, lt=1 << APPAXO_BITS)] = 0
    configs: list[int] | None = None
    # read into ``configs`` at validation, so the frozen study records the list itself
    file: str | None = Field(default=None, exclude=True)

    @field_validator("configs", mode="before")
    @classmethod
    def _configs(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise ValueError("configs must be a non-empty list of configurations")
        return [parse_bits(v, "configs entry") for v in value]

    @model_validator(mode="after")
    def _read_file(self) -> GridStrategy:
        if self.file is not None:
            if self.configs is not None:
                raise ValueError("give configs or file, not both")
            path = Path(os.path.expanduser(self.file))
            if not path.is_file():
                raise ValueError(f"file {self.file!r} does not exist (expected one configuration per line)")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"file {self.file!r} is not UTF-8 text") from None
            lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
            values = [v for v in lines if v]
            if not values:
                raise ValueError(f"file {self.file!r} lists no configuration")
            configs = []
            for number, text in enumerate(values, 1):
                try:
                    configs.append(parse_bits(text if len(text) == APPAXO_BITS else int(text, 0),
                                               f"{self.file} entry {number}"))
                except ValueError as err:
                    raise ValueError(str(err)) from None
            object.__setattr__(self, "configs", configs)
        return self


class NSGA2Strategy(Section):
    """NSGA-II (pymoo) on the free bits: binary genome, bit-flip mutation (default rate 1/bits),
    two-point or uniform crossover; ``generations`` null runs until the budget."""

    type: Literal["nsga2"]
    population: Annotated[int, Field(ge=4, le=10000)] = 40
    generations: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    crossover: Literal["two_point", "uniform"] = "two_point"
    mutation_rate: Annotated[float, Field(gt=0, le=1)] | None = None


class BayesStrategy(Section):
    """Bayesian optimization with optuna: multi-objective TPE or the Gaussian-process sampler,
    constraints included."""

    type: Literal["bayes"]
    sampler: Literal["tpe", "gp"] = "tpe"
    startup_trials: Annotated[int, Field(ge=1, le=10000)] = 10


Strategy = Annotated[
    RandomStrategy | SobolStrategy | GridStrategy | NSGA2Strategy | BayesStrategy,
    Field(discriminator="type"),
]

CONSTRAINT_METRICS = (
    "accuracy", "accuracy_drop", "precision_macro", "recall_macro", "f1_macro", "mean_error",
    "mae", "mse", "wce", "mred", "error_probability", "kept_luts", "fpga_luts", "fpga_carry4",
    "fpga_delay", "fpga_power", "area", "power", "delay", "pdp", "energy", "energy_saving",
    "bram", "dsps", "latency_cycles", "multipliers",
)


class Constraint(BaseModel):
    """``metric <= value`` or ``metric >= value`` (written as one string in the study file)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)
    metric: str
    op: Literal["<=", ">="]
    bound: float

    def violation(self, value: float) -> float:
        """Constraint value: feasible when <= 0 (optuna's and pymoo's convention)."""
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def _parse_constraint(text: Any) -> Constraint:
    match = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*", str(text))
    if match is None:
        raise ValueError(f"constraint {text!r} must read 'metric <= number' or 'metric >= number'")
    metric, op, bound = match.groups()
    if metric not in CONSTRAINT_METRICS:
        raise ValueError(f"constraint {text!r}: unknown metric {metric!r}; expected one of "
                         f"{', '.join(CONSTRAINT_METRICS)}")
    try:
        value = float(bound)
    except ValueError:
        raise ValueError(f"constraint {text!r}: {bound!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"constraint {text!r}: {bound!r} is not a finite number")
    return Constraint(metric=metric, op="<=" if op in ("<=", "<") else ">=", bound=value)


class Objective(Section):
    """A metric the study optimizes; the direction defaults to the metric's natural one."""

    metric: Literal[tuple(METRIC_DIRECTIONS)]  # type: ignore[valid-type]
    direction: Literal["maximize", "minimize"] | None = None

    @model_validator(mode="after")
    def _direction(self) -> Objective:
        if self.direction is None:
            object.__setattr__(self, "direction", METRIC_DIRECTIONS[self.metric])
        return self


class Stagnation(Section):
    """Stop when the hypervolume grew by at most ``tolerance`` (relative) over the last
    ``window`` trials."""

    window: Annotated[int, Field(ge=2, le=1_000_000_000)]
    tolerance: Annotated[float, Field(ge=0)] = 0.0


class Budget(Section):
    """When the study stops: total trials over the whole study (every run and resume together),
    optionally a total wall time and hypervolume stagnation."""

    trials: Annotated[int, Field(ge=1, le=1_000_000_000)]
    time_limit_s: Seconds | None = None
    stagnation: Stagnation | None = None


class HardwareSettings(Section):
    """The ASIC flow that measures area, power, delay and power-delay product (pdp).

    ``liberty``: a Liberty file (.lib or .lib.gz), a known library (nangate45, sky130hd: looked
    up in $DSE_PDK_DIR and the user cache), or null for the Liberty-free estimate (transistors,
    gate levels, transistor toggles). ``power`` picks which power is the ``power`` objective.
    """

    liberty: str | None = None
    clock_period_ns: Annotated[float, Field(gt=0, le=1e6)] = 10.0
    power: Literal["workload", "uniform", "vectorless"] = "workload"
    vectors: Annotated[int, Field(ge=64, le=1 << 20)] = 8192
    timeout_s: Seconds = 120.0

    @field_validator("liberty")
    @classmethod
    def _liberty_exists(cls, value: str | None) -> str | None:
        if value is not None and value not in KNOWN_LIBERTY and not Path(os.path.expanduser(value)).is_file():
            raise ValueError(
                f"file {value!r} does not exist (expected a Liberty .lib/.lib.gz file or one of "
                f"{', '.join(KNOWN_LIBERTY)})")
        return value

    @model_validator(mode="after")
    def _vectorless_needs_liberty(self) -> HardwareSettings:
        if self.power == "vectorless" and self.liberty is None:
            raise ValueError("power: vectorless power needs a Liberty file (set liberty)")
        return self


class ScreeningSettings(Section):
    """Score each new configuration on ``images`` random test images first; evaluate it fully
    only if the upper confidence bound of its accuracy could reach the front."""

    images: Annotated[int, Field(ge=50)] = 1000
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.99


class EvaluationSettings(Section):
    """How the approximate network is scored."""

    kernel: Literal["auto", "cpu", "torch", "reference"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    screening: ScreeningSettings | None = None
    # activations before each table layer kept across layer-wise trials (0: off)
    prefix_cache_mb: Annotated[int, Field(ge=0, le=1 << 20)] = 1024


class ExecutorSettings(Section):
    """Where evaluations run: in the driver (serial) or on Ray workers (local or a cluster).
    Not part of the study's identity: a study may be resumed with another executor."""

    type: Literal["serial", "ray"] = "serial"
    address: str | None = None  # null: a local Ray instance; auto; ray://host:port
    workers: Annotated[int, Field(ge=1, le=4096)] = 2
    cpus_per_worker: Annotated[float, Field(gt=0, le=1024)] = 1.0
    gpus_per_worker: Annotated[float, Field(ge=0, le=1024)] = 0.0
    max_in_flight: Annotated[int, Field(ge=1, le=1_000_000)] | None = None  # default: one per worker
    max_retries: Annotated[int, Field(ge=0, le=100)] = 2
    timeout_s: Seconds | None = None
    temp_dir: str | None = None  # Ray's session folder; default: inside the study folder


class RetrainOption(Section):
    """Retrain the final front's members after the search ends (``python -m dse retrain``
    does the same for any design later): ``epochs`` of fine-tuning through each design's
    product table(s), gradients ``ste`` (straight-through: the exact product's) or ``table``
    (finite differences of the table), Adam with a one-cycle schedule peaking at
    ``learning_rate`` (float weight units), ``batch_size`` images per step. Every scale and
    zero point of the int8 network is kept, so a retrained design keeps the hardware figures
    the study measured. ``front: false`` keeps the section but retrains nothing at the end.
    The defaults are ``evaluators.recovery.retraining.RetrainSettings``'s."""

    epochs: Annotated[int, Field(ge=1, le=1000)] = 3
    gradient: Literal["ste", "table"] = "ste"  # evaluators.recovery.retraining.GRADIENTS
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-3
    batch_size: Annotated[int, Field(ge=2, le=65536)] = 64
    front: bool = True


class SpaceSettings(Section):
    """The ``space`` section: its ``type`` names the study kind (``dse.kinds``), whose own
    section class gives the other fields."""

    type: str


class _UnknownSpace(Section):
    """A ``space`` section no registered kind claims: validated only to say so (as one error
    among the file's others)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Any = Field(default=None, validate_default=True)

    @field_validator("type")
    @classmethod
    def _known(cls, value: Any) -> Any:
        expected = ", ".join(space_types())
        if value is None:
            raise ValueError(f"required field is missing (one of {expected})")
        raise ValueError(f"{_shown(value)} is not a space type (expected one of {expected})")


class StudySettings(Section):
    """A whole study file. Each study kind has its subclass, which gives ``space`` its
    section class and ``kind_name`` its name (``dse.kinds``); ``parse_settings`` picks it."""

    kind_name: ClassVar[str]

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    output: str | None = None
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    dataset: DatasetSettings = DatasetSettings()
    model: ModelSettings = ModelSettings()
    quantization: QuantizationSettings = QuantizationSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    hardware: HardwareSettings = HardwareSettings()
    executor: ExecutorSettings = ExecutorSettings()
    storage: str | None = None  # null: a journal file in the study folder; or an RDB URL
    # the table layers the study's multipliers replace: all, or roles (embedding, projection,
    # attention, mlp, head), blocks (block0, ...) and layer names (evaluators.runtime.roles)
    approximate: Literal["all"] | Annotated[list[str], Field(min_length=1)] = "all"
    space: SpaceSettings
    strategy: Strategy
    objectives: Annotated[list[Objective], Field(min_length=2, max_length=4)] = [
        Objective(metric="accuracy"),
        Objective(metric="fpga_luts"),
    ]
    constraints: list[str] = []
    reference_point: dict[str, float] | None = Field(default=None, validate_default=True)
    budget: Budget
    retrain: RetrainOption | None = None  # absent: nothing is retrained after the search

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(postgresql|mysql|sqlite)(\+\w+)?://", value):
            raise ValueError(f"{value!r} is not an RDB URL (postgresql://user@host:port/db, "
                             "mysql://..., sqlite:///path); leave it out for the journal file")
        return value

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: list[str]) -> list[str]:
        return [str(_parse_constraint(c)) for c in value]

    @field_validator("reference_point")
    @classmethod
    def _reference_names_objectives(cls, value: dict | None, info) -> dict | None:
        names = [o.metric for o in info.data.get("objectives", [])]
        zero = [n for n in names if n in ZERO_AT_EXACT]
        if value is None and zero:
            raise ValueError(
                f"required when an objective is an error metric ({zero[0]}): the exact "
                "multiplier's error is 0, so the default (10% worse than the exact multiplier) "
                f"leaves no room for any front; give one value for each of {names}")
        if value is not None and sorted(value) != sorted(names):
            raise ValueError(f"must give one value for each objective {names}, got {sorted(value)}")
        return value

    @property
    def parsed_constraints(self) -> list[Constraint]:
        return [_parse_constraint(c) for c in self.constraints]

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, value: list[Objective]) -> list[Objective]:
        metrics = [o.metric for o in value]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives must be distinct metrics, got {metrics}")
        return value

    @model_validator(mode="after")
    def _kind_rules(self) -> StudySettings:
        """The metrics the study's kind measures, screening where it applies, then the kind's
        own rules across sections."""
        kind = self.kind
        names = [o.metric for o in self.objectives] + [c.metric for c in self.parsed_constraints]
        if wrong := [m for m in names if m not in kind.metrics]:
            raise ValueError(kind.unmeasured(wrong[0]))
        if self.evaluation.screening is not None and not kind.screening:
            having = " or ".join(k.where for k in kinds() if k.screening)
            raise ValueError(f"evaluation.screening is not for {kind.where}; it screens the "
                             f"configurations of {having or 'no registered kind'}")
        kind.check(self)
        return self

    @property
    def kind(self) -> StudyKind:
        """The study's kind (``dse.kinds``): what its space describes and how it is searched."""
        return kind_named(self.kind_name)

    @property
    def needs_fpga_synthesis(self) -> bool:
        """Whether an xpat study's objectives or constraints need Yosys ``synth_xilinx``."""
        metrics = [o.metric for o in self.objectives] + [c.metric for c in self.parsed_constraints]
        return any(m in ("fpga_luts", "fpga_carry4") for m in metrics)

    @property
    def needs_asic(self) -> bool:
        """Whether an objective or a constraint comes from the ASIC flow."""
        metrics = [o.metric for o in self.objectives] + [c.metric for c in self.parsed_constraints]
        return any(m in ASIC_METRICS for m in metrics)

    @property
    def output_dir(self) -> Path:
        """The study folder (``runs/<name>`` unless ``output`` says otherwise)."""
        return Path(os.path.expanduser(self.output)) if self.output else Path("runs") / self.name

    def canonical(self) -> dict[str, Any]:
        """Settings as plain data, defaults filled in; what is frozen into the study folder.
        The ``LATER_DEFAULTS`` (an absent ``retrain`` section or ``space.firmware`` block, the
        default quantization scheme and format) stay out, so the settings of a study frozen
        before they existed keep their hash."""
        data = self.model_dump(mode="json")
        for (*parents, name), default in LATER_DEFAULTS:
            section = data
            for key in parents:
                section = section[key]
            if name in section and section[name] == default:
                del section[name]
        return data

    def identity(self) -> dict[str, Any]:
        """What defines the study's results: every setting but where evaluations run."""
        return identity(self.canonical())

    def sha256(self) -> str:
        """Identity of the settings: equal for files that differ only in layout, comments or
        executor."""
        return identity_sha256(self.canonical())


class _UnresolvedStudy(StudySettings):
    """A study file whose ``space`` no kind claims: every other section is still checked."""

    space: _UnknownSpace


def identity(canonical: dict[str, Any]) -> dict[str, Any]:
    """The settings of a canonical dump that define results (all but ``executor``)."""
    return {k: v for k, v in canonical.items() if k != "executor"}


def identity_sha256(canonical: dict[str, Any]) -> str:
    """The hash of a canonical dump's identity: ``study.sha256`` holds the one of the dump
    frozen into ``study.yaml``, which also verifies a file frozen by an older dse whose dump
    lacked settings added since (their defaults are filled in on loading)."""
    return hashlib.sha256(json.dumps(identity(canonical), sort_keys=True).encode()).hexdigest()


def _tags(union: Any) -> set[str]:
    """The ``type`` values of a discriminated union of sections."""
    members = union.__origin__.__args__ if hasattr(union, "__origin__") else ()
    return {m.model_fields["type"].annotation.__args__[0] for m in members}


def _shown(value: Any, limit: int = 60) -> str:
    """A value as the user wrote it, cut short: a 400-digit number is not worth 400 columns."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _format_issue(source: str, issue: dict[str, Any]) -> str:
    """One pydantic error as ``FILE: dotted.field: what is expected``."""
    # a tagged union puts the tag in the path (space.xpat.max_inputs): say space.max_inputs
    tags = {"strategy": _tags(Strategy)}
    loc = issue["loc"]
    parts = [p for i, p in enumerate(loc) if not (i and p in tags.get(loc[i - 1], ()))]
    field = ".".join(str(p) for p in parts)
    msg = issue["msg"].removeprefix("Value error, ")
    kind = issue["type"]
    if kind == "extra_forbidden":
        msg = "unknown key (check the spelling; see the study file reference, docs/study-file.md)"
    elif kind == "missing":
        msg = "required field is missing"
    elif "input" in issue and kind != "value_error" and not isinstance(issue["input"], dict):
        msg = f"{msg} (got {_shown(issue['input'])})"
    return f"{source}: {field or '<top level>'}: {msg}"


def format_errors(source: str, err: ValidationError) -> str:
    """Every validation error, one line each (in schema order, repeats dropped)."""
    return "\n".join(dict.fromkeys(_format_issue(source, issue) for issue in err.errors()))


def parse_settings(data: Any, source: str = "<study>") -> StudySettings:
    """Validate already-parsed study data."""
    if data is None:
        raise StudyFileError(f"{source}: the study file is empty (expected a mapping of study "
                             "settings at the top level)")
    if not isinstance(data, dict):
        raise StudyFileError(f"{source}: expected a mapping of study settings at the top level, "
                             f"got {_shown(data)}")
    space = data.get("space")
    kind = resolve(space) if isinstance(space, dict) else None
    model = kind.settings_class if kind is not None else _UnresolvedStudy
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise StudyFileError(format_errors(source, err)) from None


class _Refused(yaml.YAMLError):
    """YAML that parses but that a study file may not contain; the message names the line."""


class _StudyLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses what would silently change or blow up a study: duplicate
    keys (YAML keeps the last), non-string keys, aliases and merge keys (alias bombs), deep
    nesting, and integers too long for Python to convert."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"alias *{event.anchor} at line {event.start_mark.line + 1}: anchors "
                           "and aliases are not allowed in a study file (write the value out)")
        if self._depth >= MAX_NESTING:
            raise _Refused(f"nested more than {MAX_NESTING} levels deep at line "
                           f"{event.start_mark.line + 1}")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused(f"merge key '<<' at line {line} is not allowed in a study file")
            if key_node.tag != "tag:yaml.org,2002:str":
                label = (f"key {_shown(self.construct_object(key_node))}"
                         if isinstance(key_node, yaml.ScalarNode) else f"a {key_node.id} key")
                raise _Refused(f"{label} at line {line} is not a string (field names are text)")
            if key_node.value in first_line:
                raise _Refused(f"duplicate key {key_node.value!r} at line {line} (first given "
                               f"at line {first_line[key_node.value]})")
            first_line[key_node.value] = line
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # past Python's int-string conversion limit (4300 digits)
            raise _Refused(f"integer of {len(node.value)} digits at line "
                           f"{node.start_mark.line + 1} is out of range") from None


_StudyLoader.add_constructor("tag:yaml.org,2002:int", _StudyLoader.construct_yaml_int)


def _read_text(path: Path) -> str:
    """The file's text: UTF-8 (a BOM is allowed), at most ``MAX_STUDY_FILE_BYTES``."""
    if path.is_dir():
        raise StudyFileError(f"{path}: is a folder, not a study file")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_STUDY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise StudyFileError(f"{path}: study file not found") from None
    except OSError as err:
        raise StudyFileError(f"{path}: cannot read study file ({err.strerror})") from None
    if len(raw) > MAX_STUDY_FILE_BYTES:
        raise StudyFileError(f"{path}: larger than {MAX_STUDY_FILE_BYTES / 2**20:g} MiB; a study "
                             "file is a short YAML text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise StudyFileError(f"{path}: not UTF-8 text (byte {err.start} is {raw[err.start]:#04x}); "
                             "save the study file as UTF-8") from None
    if "\0" in text:  # valid UTF-8, but what UTF-16 without a BOM and binary files look like
        raise StudyFileError(f"{path}: not UTF-8 text (it holds NUL characters, as UTF-16 and "
                             "binary files do); save the study file as UTF-8")
    return text


def _yaml_error(err: yaml.YAMLError, text: str) -> str:
    """A YAML error as one line: where, then what."""
    if isinstance(err, _Refused):
        return str(err)
    if isinstance(err, yaml.reader.ReaderError):
        line = text.count("\n", 0, err.position) + 1
        return f"not valid YAML at line {line}: unacceptable character {chr(err.character)!r}"
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(err, "problem", None) or "invalid YAML"
    context = getattr(err, "context", None)
    return f"not valid YAML{where}: {f'{context}, ' if context else ''}{problem}"


def _read_yaml(path: Path) -> Any:
    """The parsed YAML of a study file, or a one-line ``StudyFileError``."""
    text = _read_text(path)
    try:
        return yaml.load(text, Loader=_StudyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise StudyFileError(f"{path}: {_yaml_error(err, text)}") from None


def load_study_file(path: str | Path) -> StudySettings:
    """Read and validate a study YAML file."""
    path = Path(path)
    return parse_settings(_read_yaml(path), str(path))


def settings_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted ``field: old -> new`` lines for every setting that differs."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            lines += settings_diff(a, b, name + ".")
        elif a != b:
            lines.append(f"{name}: {a!r} -> {b!r}")
    return lines
