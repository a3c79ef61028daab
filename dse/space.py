"""Search spaces: which configurations a strategy may propose."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from circuits.appaxo import EXACT
from circuits.appaxo import N_BITS as APPAXO_BITS


@dataclass(frozen=True)
class AppAxOSubspace:
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
class ChoiceSpace:
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


Space = AppAxOSubspace | ChoiceSpace
