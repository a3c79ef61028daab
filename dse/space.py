"""Search spaces: which configurations a strategy may propose.

Every space numbers its configurations by *points* ``0 .. size - 1`` and spells a point as one
integer per variable (``digits``, variable ``k`` taking ``0 .. cardinalities[k] - 1``), so one
strategy searches them all: bit spaces (AppAxO LUTs, generator choices) have binary variables,
a layer-wise space one variable per group of layers whose values are library members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from circuits.appaxo import EXACT
from circuits.appaxo import N_BITS as APPAXO_BITS


class _BitSpace:
    """Integer variables of a space whose points are numbered by their free bits: one binary
    variable per free bit, the lowest free bit first (point bit ``i`` is variable ``i``)."""

    free_bits: tuple[int, ...]

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return (2,) * len(self.free_bits)

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(f"b{bit}" for bit in self.free_bits)

    def digits(self, point: int) -> tuple[int, ...]:
        return tuple((point >> i) & 1 for i in range(len(self.free_bits)))

    def from_digits(self, digits: Sequence[int]) -> int:
        if len(digits) != len(self.free_bits):
            raise ValueError(f"{len(digits)} digits for a space of {len(self.free_bits)} bits")
        return sum(int(d) << i for i, d in enumerate(digits))


@dataclass(frozen=True)
class AppAxOSubspace(_BitSpace):
    """AppAxO 36-bit configurations whose free bits vary and whose other bits are fixed.

    A point of the subspace is numbered by an integer over the free bits alone (lowest free bit
    is its bit 0), so grids and samplers work on ``0 .. size - 1``.
    """

    free: int
    fixed: int

    exact = EXACT  # the configuration of the exact multiplier (all LUTs kept)

    @property
    def free_bits(self) -> tuple[int, ...]:
        """Positions (LSB = 0) of the free bits, lowest first."""
        return tuple(b for b in range(APPAXO_BITS) if (self.free >> b) & 1)

    @property
    def size(self) -> int:
        return 1 << len(self.free_bits)

    def config(self, point: int) -> int:
        """The 36-bit configuration of subspace point ``point``."""
        if not 0 <= point < self.size:
            raise ValueError(f"point {point} outside the subspace of {self.size} configurations")
        config = self.fixed & ~self.free
        for i, bit in enumerate(self.free_bits):
            if (point >> i) & 1:
                config |= 1 << bit
        return config

    def point(self, config: int) -> int:
        """Inverse of ``config``; raises if the configuration is outside the subspace."""
        if config & ~self.free != self.fixed & ~self.free:
            raise ValueError(f"configuration {config:036b} does not match the fixed bits")
        return sum(1 << i for i, bit in enumerate(self.free_bits) if (config >> bit) & 1)

    def sample_points(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` uniform points (with possible repeats) as int64."""
        return rng.integers(0, self.size, size=count, dtype=np.int64)

    def __contains__(self, config: int) -> bool:
        return config & ~self.free == self.fixed & ~self.free

    def params(self, config: int) -> dict[str, tuple[int, BaseDistribution]]:
        """The searched LUTs of a configuration as named 0/1 parameters (``lut_r<row>_j<lut>``:
        1 keeps the LUT), for Optuna clients' importance, slice and contour views."""
        out = {}
        for bit in self.free_bits:
            r, j = divmod(APPAXO_BITS - 1 - bit, 9)
            out[f"lut_r{r}_j{j}"] = ((config >> bit) & 1, IntDistribution(0, 1))
        return out


@dataclass(frozen=True)
class ChoiceSpace(_BitSpace):
    """Named parameters, each choosing among a power-of-two number of values, packed into the
    bits of one integer (the first parameter in the lowest bits).

    Every integer in ``0 .. size - 1`` is a configuration and its own point, so the bit-based
    strategies (grid, random, Sobol, NSGA-II's binary genome, optuna over bits) search it as
    they search AppAxO bits. Used for generator parameters (the ``xpat`` space).
    """

    choices: tuple[tuple[str, tuple], ...]

    exact = EXACT  # outside every choice space (at most 36 bits): the exact circuit

    def __post_init__(self) -> None:
        for name, values in self.choices:
            if not values or len(values) & (len(values) - 1):
                raise ValueError(f"{name}: the number of values must be a power of two, got {len(values)}")

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(len(values).bit_length() - 1 for _, values in self.choices)

    @property
    def free_bits(self) -> tuple[int, ...]:
        return tuple(range(sum(self.widths)))

    @property
    def size(self) -> int:
        return 1 << len(self.free_bits)

    def config(self, point: int) -> int:
        if not 0 <= point < self.size:
            raise ValueError(f"point {point} outside the space of {self.size} configurations")
        return point

    def point(self, config: int) -> int:
        if config not in self:
            raise ValueError(f"configuration {config} outside the space of {self.size}")
        return config

    def sample_points(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return rng.integers(0, self.size, size=count, dtype=np.int64)

    def __contains__(self, config: int) -> bool:
        return 0 <= config < self.size

    def params(self, config: int) -> dict[str, tuple[object, BaseDistribution]]:
        """The parameter values of a configuration with their choices, for Optuna clients (none
        for a configuration outside the space, such as the exact circuit)."""
        if config not in self:
            return {}
        return {name: (value, CategoricalDistribution(values))
                for (name, values), value in zip(self.choices, self.values(config).values())}

    def values(self, config: int) -> dict:
        """The parameter values a configuration stands for."""
        self.point(config)
        out, shift = {}, 0
        for (name, values), width in zip(self.choices, self.widths):
            out[name] = values[(config >> shift) & ((1 << width) - 1)]
            shift += width
        return out


INT64_SAFE = 1 << 62  # sizes up to this are drawn as int64; beyond, as Python ints


@dataclass(frozen=True)
class LayerwiseSpace:
    """One library member per group of layers (a group is one layer, or layers tied to share a
    multiplier). A configuration is the mixed-radix integer of the member indices, group 0 the
    lowest digit: ``sum(index_g * len(members) ** g)``, a Python int (20 members over 20 groups
    exceed 2^63); every configuration is its own point. ``members[0]`` is the exact multiplier,
    so configuration 0 is the exact network.
    """

    groups: tuple[tuple[str, tuple[str, ...]], ...]
    members: tuple[str, ...]

    exact = 0  # every group on members[0], the exact multiplier

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("layer-wise space: needs at least one group of layers")
        if len(self.members) < 2:
            raise ValueError("layer-wise space: needs at least two library members, "
                             f"got {list(self.members)}")
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"layer-wise space: member names repeat in {list(self.members)}")
        names = [name for name, _ in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"layer-wise space: group names repeat in {names}")
        if "config" in names:
            raise ValueError("layer-wise space: 'config' names the configuration itself; rename that group")
        seen: dict[str, str] = {}
        for name, layers in self.groups:
            if not layers:
                raise ValueError(f"layer-wise space: group {name!r} covers no layer")
            for layer in layers:
                if layer in seen:
                    raise ValueError(f"layer-wise space: layer {layer!r} is in groups "
                                     f"{seen[layer]!r} and {name!r}")
                seen[layer] = name

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return (len(self.members),) * len(self.groups)

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.groups)

    @property
    def size(self) -> int:
        return len(self.members) ** len(self.groups)

    def config(self, point: int) -> int:
        if not 0 <= point < self.size:
            raise ValueError(f"point {point} outside the layer-wise space of {self.size} configurations")
        return int(point)

    def point(self, config: int) -> int:
        if config not in self:
            raise ValueError(f"configuration {config} outside the layer-wise space of {self.size}")
        return int(config)

    def __contains__(self, config: int) -> bool:
        return 0 <= config < self.size

    def digits(self, point: int) -> tuple[int, ...]:
        """The member index of every group, group 0 first."""
        self.config(point)
        out = []
        for _ in self.groups:
            point, index = divmod(point, len(self.members))
            out.append(index)
        return tuple(out)

    def from_digits(self, digits: Sequence[int]) -> int:
        m = len(self.members)
        if len(digits) != len(self.groups) or not all(0 <= d < m for d in digits):
            raise ValueError(f"member indices {list(digits)}: expected {len(self.groups)} "
                             f"values in 0 .. {m - 1}")
        return sum(int(d) * m**g for g, d in enumerate(digits))

    def sample_points(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` uniform points (with possible repeats): int64, or Python ints in an object
        array when the space is beyond int64 (one uniform member index per group)."""
        if self.size <= INT64_SAFE:
            return rng.integers(0, self.size, size=count, dtype=np.int64)
        indices = rng.integers(0, len(self.members), size=(count, len(self.groups))).astype(object)
        weights = np.array([len(self.members) ** g for g in range(len(self.groups))], dtype=object)
        return indices @ weights

    def assignment(self, config: int) -> dict[str, str]:
        """Every layer of every group (in group order) -> the member name it multiplies with."""
        return {layer: self.members[index]
                for (_, layers), index in zip(self.groups, self.digits(self.point(config)))
                for layer in layers}

    def params(self, config: int) -> dict[str, tuple[str, BaseDistribution]]:
        """The member of every group as a categorical parameter, for Optuna clients."""
        choices = CategoricalDistribution(self.members)
        return {name: (self.members[index], choices)
                for (name, _), index in zip(self.groups, self.digits(self.point(config)))}


Space = AppAxOSubspace | ChoiceSpace | LayerwiseSpace
