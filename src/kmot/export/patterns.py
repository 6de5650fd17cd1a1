"""Checks of sparsity patterns (N:M, blocks) in the weights a LiteRT file stores."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from kmot.errors import KmotError

__all__ = ["check_tflite_pattern", "PatternCheck"]


@dataclass(frozen=True)
class PatternCheck:
    """The result of `check_tflite_pattern` for one weight tensor."""

    tensor: str
    op: str
    shape: tuple[int, ...]
    sparsity: float
    violations: int  # groups or blocks breaking the pattern

    @property
    def ok(self) -> bool:
        return self.violations == 0


def _zero_of(constant: np.ndarray, zero_points) -> np.ndarray:
    zp = int(zero_points[0]) if len(zero_points) else 0
    return constant == zp


def check_tflite_pattern(
    model: str | os.PathLike | bytes,
    *,
    sparsity_m_by_n: tuple[int, int] | None = None,
    block_size: tuple[int, int] | None = None,
    ops_to_check: tuple[str, ...] = ("CONV_2D", "FULLY_CONNECTED"),
) -> list[PatternCheck]:
    """Verifies a sparsity pattern in the weights stored in a ``.tflite`` file.

    LiteRT stores CONV_2D kernels as (out, h, w, in) and FULLY_CONNECTED weights
    as (out, in): input channels are the last axis, so an n:m pattern means at
    most n non-zeros in each run of m along it, and a (r, c) block pattern (on
    the Keras kernel viewed as (-1, out)) means whole blocks are zero or not.

    Returns:
        One `PatternCheck` per checked weight (``all(c.ok for c in checks)``).

    Raises:
        KmotError: neither or both patterns given, or no weight to check.

    Example:
        >>> checks = check_tflite_pattern("m.tflite", sparsity_m_by_n=(2, 4))  # doctest: +SKIP
    """
    from kmot.export.inspect import inspect

    if (sparsity_m_by_n is None) == (block_size is None):
        raise KmotError(
            "Give exactly one pattern to check: sparsity_m_by_n=(n, m) or block_size=(r, c). "
            f"Received: sparsity_m_by_n={sparsity_m_by_n}, block_size={block_size}"
        )
    info = inspect(model)
    checks = []
    for w in info.weights:
        if w.is_bias or w.op not in ops_to_check or len(w.shape) < 2:
            continue
        tensor = next(t for op in info.ops for t in op.inputs if t.name == w.name)
        zero = _zero_of(info.constant(w.name), tensor.zero_points)
        nonzero = ~zero
        if sparsity_m_by_n:
            n, m = sparsity_m_by_n
            if w.shape[-1] % m:
                continue
            groups = nonzero.reshape(-1, m).sum(axis=1)
            violations = int(np.sum(groups > n))
        else:
            r, c = block_size
            # Back to the Keras view (-1, out): out is the first axis in LiteRT.
            view = np.moveaxis(nonzero, 0, -1).reshape(-1, w.shape[0])
            rows, cols = view.shape
            view = np.pad(view, ((0, (-rows) % r), (0, (-cols) % c)))
            blocks = view.reshape(view.shape[0] // r, r, view.shape[1] // c, c).sum(axis=(1, 3))
            full = r * c
            violations = int(np.sum((blocks > 0) & (blocks < full)))
        checks.append(PatternCheck(w.name, w.op, tuple(w.shape), float(zero.mean()), violations))
    if not checks:
        raise KmotError(
            f"No weight of ops {list(ops_to_check)} to check in this file. "
            f"Received: ops {sorted(info.op_counts)}"
        )
    return checks
