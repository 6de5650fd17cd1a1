"""``tensorflow_model_optimization``'s shape on kmot: ``import kmot.compat.tfmot as tfmot``.

Every name maps onto kmot's native API (`kmot.sparsity`, `kmot.clustering`,
`kmot.quantization`); nothing here optimizes by itself. Where tfmot's behaviour
cannot be matched (its wrapper classes, custom ``QuantizeConfig``), a `KmotError`
names the native way. Submodules: ``sparsity.keras``, ``clustering.keras``,
``quantization.keras``, ``experimental.combine``.

Example:
    >>> import kmot.compat.tfmot as tfmot
    >>> pruned = tfmot.sparsity.keras.prune_low_magnitude(model)  # doctest: +SKIP
"""

from kmot.compat.tfmot import clustering, experimental, quantization, sparsity

__all__ = ["clustering", "experimental", "quantization", "sparsity"]
