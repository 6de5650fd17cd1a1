"""The linear algebra of low-rank factorization, in NumPy (float64 inside).

Every factorization here keeps an orthogonal projection of the kernel, so its
*kept energy* ``||W_approx||^2 / ||W||^2`` is also ``1 - ||W - W_approx||^2 / ||W||^2``:
one number says how much of the kernel survives.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Spectrum", "TuckerSpectrum", "svd_factors", "tucker_factors", "as_matrix"]


def as_matrix(kernel: np.ndarray, in_axes: tuple[int, ...], out_axes: tuple[int, ...]) -> np.ndarray:
    """`kernel` as a (prod(in), prod(out)) matrix: input axes first, in order."""
    moved = np.transpose(kernel, (*in_axes, *out_axes))
    rows = int(np.prod([kernel.shape[a] for a in in_axes], dtype=np.int64))
    return moved.reshape(rows, -1)


class Spectrum:
    """The SVD of one matrix: its best approximation of every rank (Eckart-Young)."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.shape = tuple(matrix.shape)
        self.u, self.s, self.vt = np.linalg.svd(np.asarray(matrix, np.float64), full_matrices=False)
        squares = self.s**2
        total = float(squares.sum())
        self._kept = np.cumsum(squares) / total if total > 0 else np.ones_like(squares)

    @property
    def max_rank(self) -> int:
        return len(self.s)

    def kept_energy(self, rank: int) -> float:
        """The fraction of the squared singular values the top `rank` keep."""
        return float(self._kept[rank - 1])

    def rank_for(self, energy: float) -> int:
        """The smallest rank keeping at least `energy` of the squared singular values."""
        # A tolerance, so that energy=1.0 is met at full rank despite rounding.
        return int(min(np.searchsorted(self._kept, energy - 1e-12) + 1, self.max_rank))


def svd_factors(spectrum: Spectrum, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of shapes (m, rank) and (rank, n) with ``A @ B`` the best rank-`rank`
    approximation; the singular values are split as square roots between them, so
    both factors have the same scale (better for training and int8)."""
    root = np.sqrt(spectrum.s[:rank])
    return spectrum.u[:, :rank] * root, root[:, None] * spectrum.vt[:rank]


def _mode_basis(kernel: np.ndarray, axis: int) -> np.ndarray:
    """The left singular vectors of the kernel unfolded along `axis` (a full square basis)."""
    unfolded = np.moveaxis(kernel, axis, 0).reshape(kernel.shape[axis], -1)
    u, _, _ = np.linalg.svd(unfolded, full_matrices=True)
    return u


class TuckerSpectrum:
    """The Tucker-2 (HOSVD) decomposition of a conv kernel (..., in, out) over its
    channel axes: the energy its core keeps for every pair of ranks."""

    def __init__(self, kernel: np.ndarray) -> None:
        self.kernel = np.asarray(kernel, np.float64)
        self.u_in = _mode_basis(self.kernel, -2)
        self.u_out = _mode_basis(self.kernel, -1)
        core = np.einsum("...io,ia,ob->...ab", self.kernel, self.u_in, self.u_out)
        per_pair = (core**2).reshape(-1, *core.shape[-2:]).sum(0)
        total = float(per_pair.sum())
        cumulative = per_pair.cumsum(0).cumsum(1)
        self.kept = cumulative / total if total > 0 else np.ones_like(cumulative)

    @property
    def channels(self) -> tuple[int, int]:
        return int(self.kernel.shape[-2]), int(self.kernel.shape[-1])

    def kept_energy(self, r_in: int, r_out: int) -> float:
        """The energy the HOSVD core of ranks (r_in, r_out) keeps (a lower bound for
        `tucker_factors`, whose refinement only adds to it)."""
        return float(self.kept[r_in - 1, r_out - 1])


def tucker_factors(spectrum: TuckerSpectrum, r_in: int, r_out: int, *, iterations: int = 3):
    """``(u_in, core, u_out, kept_energy)``: ``kernel ~= core x_in u_in x_out u_out``.

    Starts from the HOSVD bases and refines them by alternating projections
    (HOOI), each of which can only keep more energy. `u_in` is (in, r_in) and
    `u_out` (out, r_out), both with orthonormal columns; `core` is (..., r_in, r_out).
    """
    w = spectrum.kernel
    u_in, u_out = spectrum.u_in[:, :r_in], spectrum.u_out[:, :r_out]
    cin, cout = spectrum.channels
    for _ in range(iterations if (r_in < cin and r_out < cout) else 0):
        # (Only when both sides are cut: with one side whole, HOSVD is already optimal.)
        u_in = _mode_basis(np.einsum("...io,ob->...ib", w, u_out), -2)[:, :r_in]
        u_out = _mode_basis(np.einsum("...io,ia->...ao", w, u_in), -1)[:, :r_out]
    core = np.einsum("...io,ia,ob->...ab", w, u_in, u_out)
    total = float((w**2).sum())
    kept = float((core**2).sum()) / total if total > 0 else 1.0
    return u_in, core, u_out, min(kept, 1.0)
