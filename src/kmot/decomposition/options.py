"""What each way of factoring a layer costs and keeps, for every rank.

A `Factoring` is one method applied to one layer (an SVD of a Dense kernel, a
Tucker-2 or spatial SVD of a conv kernel). It prices an `Option` (a method and its
ranks) in parameters and multiply-accumulates and says how much of the kernel's
energy it keeps, without building anything; `chain(option)` then builds the
layers. The layer kinds (`dense`, `conv`) supply the shapes and the builders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kmot.decomposition.factors import (
    Spectrum,
    TuckerSpectrum,
    svd_factors,
    tucker_factors,
)

__all__ = ["Option", "Factoring", "MatrixFactoring", "TuckerFactoring", "GRID"]

#: At most this many ranks per channel axis are tried when searching Tucker-2 pairs
#: for `compression=` (every pair is tried for `energy=`).
GRID = 64


@dataclass(frozen=True)
class Option:
    """One way to factor one layer: a method, its ranks, and what it costs and keeps.

    Attributes:
        method: ``"svd"``, ``"tucker"`` or ``"spatial"``.
        ranks: ``(rank,)``, or ``(input rank, output rank)`` for Tucker-2.
        params: parameters of the layers that replace the original (bias included).
        macs: their multiply-accumulates per sample.
        energy: the fraction of the kernel's squared norm the factors keep (for
            Tucker-2 a lower bound: its refinement keeps a little more).
    """

    method: str
    ranks: tuple[int, ...]
    params: int
    macs: int
    energy: float


class Factoring:
    """One method for one layer; see the module docstring."""

    method: str
    max_rank: int

    def at_rank(self, rank: int) -> Option:
        raise NotImplementedError

    def for_energy(self, energy: float) -> Option:
        raise NotImplementedError

    def options(self) -> list[Option]:
        raise NotImplementedError

    def kept(self, option: Option) -> float:
        """The energy the factors of `option` keep (what `chain` builds)."""
        raise NotImplementedError

    def chain(self, option: Option, fresh: Callable[[str], str]):
        """``(layers, kept_energy)``: built Keras layers holding the factors; the last
        keeps the layer's name, the others are named ``fresh(f"{name}_{role}")``."""
        raise NotImplementedError


class MatrixFactoring(Factoring):
    """A truncated SVD of the kernel seen as an (m, n) matrix, built as two layers.

    Args:
        method: ``"svd"`` or ``"spatial"``.
        matrix: the kernel as a matrix (rows: what the first layer contracts).
        bias: the bias parameters (they stay on the second layer).
        positions: where each layer is applied (MACs = rank * (m * p1 + n * p2)).
        build: ``fn(a, b, fresh) -> layers`` for factors (m, r) and (r, n).
    """

    def __init__(self, method: str, matrix: np.ndarray, bias: int, positions: tuple[int, int],
                 build: Callable) -> None:
        self.method, self.spectrum, self.bias = method, Spectrum(matrix), bias
        self.positions, self._build = positions, build
        self.max_rank = self.spectrum.max_rank

    def at_rank(self, rank: int) -> Option:
        rank = min(rank, self.max_rank)
        m, n = self.spectrum.shape
        p1, p2 = self.positions
        return Option(self.method, (rank,), rank * (m + n) + self.bias, rank * (m * p1 + n * p2),
                      self.spectrum.kept_energy(rank))

    def for_energy(self, energy: float) -> Option:
        return self.at_rank(self.spectrum.rank_for(energy))

    def options(self) -> list[Option]:
        return [self.at_rank(r) for r in range(1, self.max_rank + 1)]

    def kept(self, option: Option) -> float:
        return self.spectrum.kept_energy(option.ranks[0])

    def chain(self, option: Option, fresh):
        a, b = svd_factors(self.spectrum, option.ranks[0])
        return self._build(a, b, fresh), self.spectrum.kept_energy(option.ranks[0])


class TuckerFactoring(Factoring):
    """Tucker-2 of a conv kernel (..., in, out): a 1x1 conv to ``r_in`` channels, the
    core conv ``r_in -> r_out``, a 1x1 conv to the outputs. A side kept whole
    (``r_in = in`` or ``r_out = out``) has no 1x1 conv.

    Args:
        kernel: the conv kernel.
        bias: the bias parameters.
        positions: ``(input positions, output positions)``; the input 1x1 conv runs
            at the input's, the core and the output 1x1 conv at the output's.
        build: ``fn(u_in | None, core, u_out | None, fresh) -> layers``.
    """

    method = "tucker"

    def __init__(self, kernel: np.ndarray, bias: int, positions: tuple[int, int],
                 build: Callable) -> None:
        self.spectrum, self.bias, self.positions, self._build = (
            TuckerSpectrum(kernel), bias, positions, build)
        self.cin, self.cout = self.spectrum.channels
        self.taps = int(np.prod(kernel.shape[:-2], dtype=np.int64))
        self.max_rank = max(self.cin, self.cout)

    def _costs(self, r_in, r_out):
        """Parameters and MACs of rank pairs (NumPy arrays or ints alike)."""
        p_in, p_out = self.positions
        cut_in, cut_out = np.asarray(r_in) < self.cin, np.asarray(r_out) < self.cout
        params = (cut_in * self.cin * r_in + self.taps * r_in * r_out
                  + cut_out * r_out * self.cout + self.bias)
        macs = (cut_in * p_in * self.cin * r_in + p_out * self.taps * r_in * r_out
                + cut_out * p_out * r_out * self.cout)
        return params, macs

    def _option(self, r_in: int, r_out: int) -> Option:
        params, macs = self._costs(r_in, r_out)
        return Option("tucker", (int(r_in), int(r_out)), int(params), int(macs),
                      self.spectrum.kept_energy(int(r_in), int(r_out)))

    def at_rank(self, rank: int) -> Option:
        return self._option(min(rank, self.cin), min(rank, self.cout))

    def for_energy(self, energy: float) -> Option:
        """The pair keeping at least `energy` with the fewest MACs (then parameters)."""
        r_in, r_out = np.meshgrid(np.arange(1, self.cin + 1), np.arange(1, self.cout + 1),
                                  indexing="ij")
        params, macs = self._costs(r_in, r_out)
        ok = self.spectrum.kept >= energy - 1e-12
        order = np.lexsort((params[ok], macs[ok]))
        a, b = r_in[ok][order[0]], r_out[ok][order[0]]
        return self._option(int(a), int(b))

    def options(self) -> list[Option]:
        grid = lambda c: np.unique(np.linspace(1, c, min(c, GRID)).round().astype(int))
        return [self._option(a, b) for a in grid(self.cin) for b in grid(self.cout)]

    def kept(self, option: Option) -> float:
        return tucker_factors(self.spectrum, *option.ranks)[3]

    def chain(self, option: Option, fresh):
        r_in, r_out = option.ranks
        u_in, core, u_out, kept = tucker_factors(self.spectrum, r_in, r_out)
        u_in = u_in if r_in < self.cin else None
        u_out = u_out if r_out < self.cout else None
        if u_in is None:  # the core then reads the input itself: no rotation before it
            core = np.einsum("...io,ob->...ib", self.spectrum.kernel, u_out if u_out is not None
                             else np.eye(self.cout))
        elif u_out is None:
            core = np.einsum("...io,ia->...ao", self.spectrum.kernel, u_in)
        return self._build(u_in, core, u_out, fresh), kept
