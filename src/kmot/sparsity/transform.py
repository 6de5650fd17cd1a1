"""`PruneTransform`: a weight's pruning mask, updated by its schedule in training."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kmot.core.constraints import apply_mask as _apply
from kmot.core.transform import WeightTransform
from kmot.sparsity.masks import block_mask, magnitude_mask, n_of_m_mask
from kmot.sparsity.schedule import PruningSchedule

__all__ = ["PruneTransform"]




@keras.saving.register_keras_serializable(package="kmot")
class PruneTransform(WeightTransform):
    """Multiplies a weight by a 0/1 mask that its schedule updates during training.

    The pruning step lives in the model (a variable), and advances by one each
    time the layer runs with ``training=True``: inside ``model.fit``, a custom
    loop or a compiled JAX step alike. At the schedule's update steps the mask
    is recomputed from the magnitudes of the masked weight, so pruned weights
    stay pruned.

    Args:
        schedule: a `PruningSchedule`.
        block_size: prune whole (rows, cols) blocks of the weight viewed as
            (-1, last_dim); (1, 1) prunes single weights.
        block_pooling_type: ``"AVG"`` or ``"MAX"`` block scoring.
        sparsity_m_by_n: ``(n, m)``: keep n of every m weights along the input
            channel axis (e.g. (2, 4)); the schedule then only times the updates.
        n_of_m_axis: the input-channel axis of the weight for `sparsity_m_by_n`.
    """

    def __init__(
        self,
        schedule: PruningSchedule,
        *,
        block_size: tuple[int, int] = (1, 1),
        block_pooling_type: str = "AVG",
        sparsity_m_by_n: tuple[int, int] | None = None,
        n_of_m_axis: int = -2,
    ):
        self.schedule = schedule
        self.block_size = tuple(block_size)
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = tuple(sparsity_m_by_n) if sparsity_m_by_n else None
        self.n_of_m_axis = n_of_m_axis

    def build(self, weight, add_weight):
        self.mask = add_weight("mask", weight.shape, initializer="ones")
        self.step = add_weight(
            "step", (), initializer=keras.initializers.Constant(-1), dtype="int32"
        )

    def _new_mask(self, value, sparsity):
        masked = _apply(value, self.mask.value)
        if self.sparsity_m_by_n:
            n, m = self.sparsity_m_by_n
            return n_of_m_mask(masked, n, m, axis=self.n_of_m_axis)
        if self.block_size != (1, 1):
            return block_mask(masked, sparsity, self.block_size, self.block_pooling_type)
        return magnitude_mask(masked, sparsity)

    def __call__(self, value, *, training):
        if training:
            step = self.step + 1
            self.step.assign(step)
            update, sparsity = self.schedule(step)
            if keras.backend.backend() == "torch":  # eager: branch in Python, copy nothing
                if bool(update):
                    self.mask.assign(self._new_mask(value, sparsity))
                return _apply(value, self.mask.value)
            mask = ops.cond(
                update,
                lambda: self._new_mask(value, sparsity),
                lambda: ops.copy(self.mask.value),
            )
            self.mask.assign(mask)
            return _apply(value, mask)
        return _apply(value, self.mask.value)

    def strip(self, value):
        return _apply(value, self.mask.value)

    def summaries(self, value) -> dict[str, float]:
        """The mask's sparsity (fraction of zeros), for `PruningSummaries`."""
        return {"sparsity": float(1.0 - ops.convert_to_numpy(ops.mean(self.mask.value)))}

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "block_size": list(self.block_size),
            "block_pooling_type": self.block_pooling_type,
            "sparsity_m_by_n": list(self.sparsity_m_by_n) if self.sparsity_m_by_n else None,
            "n_of_m_axis": self.n_of_m_axis,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
