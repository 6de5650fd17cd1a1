"""``tfmot.experimental.combine``: the collaborative-optimization QAT schemes.

Each scheme is what `quantize_apply` passes to `kmot.quantization.quantize_model`:
``preserve_sparsity`` (PQAT) and ``preserve_clusters`` (CQAT, PCQAT).
"""

from __future__ import annotations

__all__ = ["Default8BitClusterPreserveQuantizeScheme", "Default8BitPrunePreserveQuantizeScheme",
           "Default8BitQuantizeScheme"]


class Default8BitQuantizeScheme:
    """int8 QAT (tfmot's default scheme)."""

    def options(self) -> dict[str, bool]:
        """The keyword arguments of `kmot.quantization.quantize_model` this scheme means."""
        return {}


class Default8BitPrunePreserveQuantizeScheme(Default8BitQuantizeScheme):
    """Pruning-preserving QAT: zeros stay zero. Native: ``quantize_model(m, preserve_sparsity=True)``."""

    def options(self) -> dict[str, bool]:
        return {"preserve_sparsity": True}


class Default8BitClusterPreserveQuantizeScheme(Default8BitQuantizeScheme):
    """Cluster-preserving QAT (with ``preserve_sparsity``: PCQAT). Native:
    ``quantize_model(m, preserve_clusters=True, preserve_sparsity=...)``."""

    def __init__(self, preserve_sparsity: bool = True):
        self.preserve_sparsity = bool(preserve_sparsity)

    def options(self) -> dict[str, bool]:
        return {"preserve_clusters": True, "preserve_sparsity": self.preserve_sparsity}
