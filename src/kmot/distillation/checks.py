"""Checks run before distilling: options, the two models, and a first batch.

`keras.distillation.Distiller` raises plain ValueErrors about symbolic shapes
and nothing about what its losses assume (a teacher and a student that output
logits). These checks run both models on a few real inputs instead, so they
also cover subclassed and kmot-wrapped models, and say how to fix what they find.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from kmot.errors import DistillationError

__all__ = ["check_options", "check_models", "first_inputs", "has_arrays", "outputs_probabilities"]

_SAMPLE = 32


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_options(*, temperature: Any, alpha: Any, epochs: Any, batch_size: Any) -> None:
    """Raises `DistillationError` for an out-of-range option."""
    if not _is_number(temperature) or temperature <= 0:
        raise DistillationError(
            "`temperature` must be a finite number > 0 (it softens the teacher's class "
            "probabilities; 2 to 8 is typical, 1 leaves them as they are). "
            f"Received: temperature={temperature!r}"
        )
    if not _is_number(alpha) or not 0.0 <= alpha <= 1.0:
        raise DistillationError(
            "`alpha` weights the hard-label loss against the distillation loss and must be "
            "a number in [0, 1] (0: the teacher alone, 1: the labels alone; 0.1 to 0.3 is "
            f"typical). Received: alpha={alpha!r}"
        )
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DistillationError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")


def has_arrays(x: Any) -> bool:
    """Whether `x` is arrays (NumPy, tensors; or a list/tuple/dict of them), not a
    dataset or generator that yields batches."""
    leaves = keras.tree.flatten(x) if isinstance(x, (list, tuple, dict)) else [x]
    return bool(leaves) and all(
        hasattr(leaf, "shape") and hasattr(leaf, "__getitem__") and len(leaf.shape) >= 1
        for leaf in leaves
    )


def first_inputs(x: Any, n: int = _SAMPLE) -> Any | None:
    """Up to `n` model inputs from `x` (arrays or a `tf.data.Dataset`); None for
    anything that a peek would consume (generators, iterators)."""
    if has_arrays(x):
        return keras.tree.map_structure(lambda a: a[:n], x)
    if hasattr(x, "element_spec") and hasattr(x, "take"):  # tf.data.Dataset, without importing TF
        batch = next(iter(x.take(1)), None)
        if isinstance(batch, (tuple, list)) and 2 <= len(batch) <= 3:
            batch = batch[0]  # (x, y) or (x, y, sample_weight)
        return None if batch is None else keras.tree.map_structure(lambda a: a[:n], batch)
    return None


def outputs_probabilities(outputs: np.ndarray) -> bool:
    """Whether every row is a probability distribution (non-negative, sums to 1).

    The tolerance admits fake-quantized softmax outputs (steps of 1/256); class
    logits practically never pass for a whole batch.
    """
    outputs = np.asarray(outputs, dtype="float64")
    return bool(
        np.all(outputs >= -1e-6) and np.all(outputs <= 1 + 1e-6)
        and np.allclose(outputs.sum(axis=-1), 1.0, atol=0.05)
    )


def _describe(variable) -> str:
    return getattr(variable, "path", None) or getattr(variable, "name", "?")


def _check_separate(student: keras.Model, teacher: keras.Model) -> None:
    teacher_ids = {id(v) for v in teacher.weights}
    shared = [v for v in student.weights if id(v) in teacher_ids]
    if student is teacher or shared:
        what = "the same model object" if student is teacher else (
            f"{len(shared)} shared variable(s), e.g. '{_describe(shared[0])}'")
        raise DistillationError(
            "The student and the teacher must be separate models: distillation freezes the "
            f"teacher and trains the student. Received: {what}. Build the student on its own, "
            "or start it from a copy: student = keras.models.clone_model(teacher); "
            "student.set_weights(teacher.get_weights())"
        )


def _symbolic_shapes(model: keras.Model, attribute: str) -> list[tuple] | None:
    try:
        tensors = getattr(model, attribute)
    except (AttributeError, ValueError):  # subclassed models have no symbolic tensors
        return None
    return None if tensors is None else [tuple(t.shape) for t in keras.tree.flatten(tensors)]


def _run(model: keras.Model, role: str, inputs: Any) -> list[np.ndarray]:
    try:
        outputs = model(inputs, training=False)
    except Exception as err:  # noqa: BLE001 - any failure here is a data/model mismatch
        shapes = keras.tree.map_structure(lambda a: tuple(a.shape), inputs)
        raise DistillationError(
            f"The {role} must run on the training inputs. Received: inputs of shape "
            f"{shapes} fail in '{model.name}' with {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}. Give both models the "
            "inputs of `x`."
        ) from err
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(outputs)]


def check_models(student: Any, teacher: Any, inputs: Any | None) -> bool:
    """Checks that `student` can be distilled from `teacher` on `inputs`.

    Args:
        student: the model to train.
        teacher: the trained model to learn from.
        inputs: a few real inputs (see `first_inputs`), or None to check the
            symbolic shapes only.

    Returns:
        Whether the teacher outputs probabilities (True) rather than logits.

    Raises:
        DistillationError: the models are not Keras models, share weights, take
            different inputs, are not single-output classifiers with the same
            classes, or the student outputs probabilities.
    """
    if not isinstance(student, keras.Model) or not isinstance(teacher, keras.Model):
        raise DistillationError(
            "Expected keras.Model instances for `student` and `teacher`. Received: "
            f"student={type(student).__name__}, teacher={type(teacher).__name__}"
        )
    _check_separate(student, teacher)
    teacher_in = _symbolic_shapes(teacher, "inputs")
    student_in = _symbolic_shapes(student, "inputs")
    if teacher_in is not None and student_in is not None and (
            len(teacher_in) != len(student_in)
            or any(t[1:] != s[1:] for t, s in zip(teacher_in, student_in))):
        raise DistillationError(
            "The student must take the teacher's inputs (the teacher labels the student's "
            f"batches). Received: teacher inputs {teacher_in}, student inputs {student_in}. "
            "Give the student the teacher's input shape."
        )
    if inputs is not None:
        outputs = {"teacher": _run(teacher, "teacher", inputs),
                   "student": _run(student, "student", inputs)}
        shapes = {role: [(None, *o.shape[1:]) for o in out] for role, out in outputs.items()}
    else:
        outputs = None
        shapes = {"teacher": _symbolic_shapes(teacher, "outputs"),
                  "student": _symbolic_shapes(student, "outputs")}
        if shapes["teacher"] is None or shapes["student"] is None:
            return False  # nothing known before training: Keras checks as it goes
    for role, model in (("teacher", teacher), ("student", student)):
        if len(shapes[role]) != 1:
            raise DistillationError(
                "distill expects single-output classifiers (one logit per class). Received: "
                f"the {role} '{model.name}' has {len(shapes[role])} outputs. For several "
                "outputs, use keras.distillation.Distiller with a loss per output."
            )
        if len(shapes[role][0]) < 2 or (shapes[role][0][-1] or 2) < 2:
            raise DistillationError(
                "distill expects class logits over at least 2 classes, on the last axis. "
                f"Received: {role} output shape {shapes[role][0]}. A binary classifier "
                "distills as a 2-class one: end it with Dense(2)."
            )
    if shapes["teacher"][0][1:] != shapes["student"][0][1:]:
        raise DistillationError(
            "The student's output shape must equal the teacher's (one logit per class, the "
            f"same classes). Received: teacher output shape {shapes['teacher'][0]}, student "
            f"output shape {shapes['student'][0]}. End the student with the teacher's "
            f"Dense({shapes['teacher'][0][-1]})."
        )
    if outputs is None:
        return False
    if outputs_probabilities(outputs["student"][0]):
        raise DistillationError(
            "The student must output logits: the hard-label loss and the temperature act on "
            f"logits. Received: student '{student.name}' outputs probabilities (rows >= 0 "
            "summing to 1) on the first batch. Remove its final softmax (e.g. Dense(10) instead "
            "of Dense(10, activation='softmax')); apply softmax after distilling if needed."
        )
    return outputs_probabilities(outputs["teacher"][0])
