"""Low-rank factorization: Dense, EinsumDense and conv kernels as products of smaller
ones (truncated SVD, Tucker-2, spatial SVD), so LiteRT runs fewer MACs."""

from kmot.decomposition.factorize import factorize
from kmot.decomposition.ranks import DEFAULT_ENERGY, METHODS
from kmot.decomposition.summary import FactorizationSummary, LayerFactorization, summary
from kmot.errors import DecompositionError

__all__ = [
    "DEFAULT_ENERGY",
    "METHODS",
    "DecompositionError",
    "FactorizationSummary",
    "LayerFactorization",
    "factorize",
    "summary",
]
