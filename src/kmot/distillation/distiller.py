"""The two small corrections kmot makes to `keras.distillation` (Keras 3.15).

1. ``LogitsDistillation(loss="kl_divergence")`` (its default) resolves the string
   to the *function* ``keras.losses.kl_divergence``, not a ``KLDivergence``
   instance, so its KL branch (softmax at temperature T, times T**2) never runs:
   the function is applied to raw logits / T, clipped to [1e-7, 1], which is not
   a distillation loss. `logits_distillation` passes a ``KLDivergence`` instance.
2. ``Distiller.compute_loss`` drops the student's own losses (weight and
   activity regularizers) that ``Model.compute_loss`` adds. `StudentDistiller`
   adds them back (the student's only: the teacher is frozen).

Everything else (the training step, freezing the teacher, metrics) is Keras's.
"""

from __future__ import annotations

import keras
from keras import ops
from keras.distillation import Distiller, LogitsDistillation

__all__ = ["StudentDistiller", "TeacherProbabilitiesDistillation", "logits_distillation"]

# Probabilities are clipped before the log: an int8 softmax outputs exact zeros.
_EPSILON = 1e-7


class TeacherProbabilitiesDistillation(LogitsDistillation):
    """`LogitsDistillation` for a teacher that outputs probabilities.

    ``log(p)`` are logits of ``p`` up to a per-row constant, which the softmax
    at temperature T cancels: ``softmax(log(p) / T)`` is ``p ** (1 / T)``,
    normalized: the usual softened targets.
    """

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        logits = keras.tree.map_structure(
            lambda p: ops.log(ops.clip(p, _EPSILON, 1.0)), teacher_outputs)
        return super().compute_loss(logits, student_outputs, **kwargs)


def logits_distillation(temperature: float, *,
                        teacher_probabilities: bool = False) -> LogitsDistillation:
    """KL divergence between the teacher's and the student's softmax at `temperature`,
    scaled by ``temperature ** 2`` (Hinton et al., 2015)."""
    cls = TeacherProbabilitiesDistillation if teacher_probabilities else LogitsDistillation
    return cls(temperature=float(temperature), loss=keras.losses.KLDivergence())


class StudentDistiller(Distiller):
    """`keras.distillation.Distiller` that also minimizes the student's own losses."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                     training=training)
        dtype = keras.backend.standardize_dtype(total.dtype)
        extra = [ops.cast(loss, dtype) for loss in self.student.losses]
        if extra:
            total = ops.add(total, ops.sum(ops.stack(extra)))
        return total
