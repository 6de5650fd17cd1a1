"""`distill`: train a student on its labels and a frozen teacher's softened logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from kmot.distillation.checks import check_models, check_options, first_inputs, has_arrays
from kmot.distillation.distiller import StudentDistiller, logits_distillation
from kmot.errors import DistillationError

__all__ = ["distill"]


def _optimizer(optimizer: Any, student: keras.Model) -> keras.optimizers.Optimizer:
    if optimizer is None:
        compiled = getattr(student, "optimizer", None)
        if compiled is None:
            return keras.optimizers.Adam(1e-3)
        # A fresh copy: the compiled one may hold slots built for other variables.
        return compiled.__class__.from_config(compiled.get_config())
    if isinstance(optimizer, (str, keras.optimizers.Optimizer)):
        return keras.optimizers.get(optimizer)
    raise DistillationError(
        "`optimizer` must be None (the student's compiled optimizer, else Adam(1e-3)), an "
        f"optimizer name or a keras.optimizers.Optimizer. Received: optimizer={optimizer!r}"
    )


def distill(
    student: keras.Model,
    teacher: keras.Model,
    x: Any,
    y: Any = None,
    *,
    epochs: int,
    batch_size: int = 64,
    temperature: float = 4.0,
    alpha: float = 0.5,
    optimizer: str | keras.optimizers.Optimizer | None = None,
    loss: str | keras.losses.Loss | None = None,
    metrics: Sequence[Any] | None = None,
    validation_data: Any = None,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    verbose: int | str = 0,
) -> keras.Model:
    """Trains `student` on its labels and on a frozen `teacher`'s softened logits.

    A thin layer over `keras.distillation.Distiller` with
    ``LogitsDistillation(temperature)``: each step minimizes
    ``alpha * loss(y, student(x)) + (1 - alpha) * T**2 * KL(softmax(teacher(x) / T)
    || softmax(student(x) / T))``, plus the student's regularization losses.

    The student is trained **in place** and returned (like ``fit``); keep a copy
    first if you need the untrained one. The teacher runs with ``training=False``
    and is left as it was: weights, statistics and ``trainable`` flags.

    The student may be a plain model or a kmot-wrapped one (from
    `prune_low_magnitude`, `cluster_weights` or `quantize_model`): it runs once
    per step with ``training=True``, so its in-call state updates happen as in
    ``fit`` (the pruning step and masks follow their schedule, activation
    quantizer ranges move), and afterwards it strips (`strip_pruning`,
    `strip_clustering`) and exports (`kmot.export.to_litert`) as usual.

    Args:
        student: the model to train; outputs class logits (no final softmax).
        teacher: a trained model with the student's inputs and output shape. It
            may output logits or probabilities (a final softmax): probabilities
            are used as ``log(p)``, which gives the same softened targets.
        x: inputs as for ``Model.fit``: arrays, or a dataset yielding
            ``(x, y)`` batches (then `y` is None and `batch_size` is not used).
        y: labels for `loss`; None with array `x` only when ``alpha=0``
            (distillation from the teacher alone, e.g. on unlabelled data).
        epochs: training epochs.
        batch_size: batch size for array inputs.
        temperature: softmax temperature T for both models (> 0; 2 to 8 is usual).
        alpha: weight of the hard-label loss in [0, 1]; the distillation loss
            gets ``1 - alpha``. 0.5 is Keras's `Distiller` default.
        optimizer: None (a fresh copy of the student's compiled optimizer, with
            its learning rate, else ``Adam(1e-3)``), a name, or an optimizer.
        loss: the hard-label loss on the student's logits; None is
            ``SparseCategoricalCrossentropy(from_logits=True)`` (integer labels).
            Use ``CategoricalCrossentropy(from_logits=True)`` for one-hot labels.
        metrics: metrics of the student's outputs against `y`, e.g.
            ``["accuracy"]`` (shown in logs and by callbacks).
        validation_data: as for ``fit``; validation losses include the teacher's.
        callbacks: as for ``fit``. They see the `Distiller` as ``self.model``; its
            ``.student`` is `student`.
        verbose: as for ``fit``.

    Returns:
        `student`, trained.

    Raises:
        DistillationError: a bad option; models that are not separate Keras
            models, take different inputs, or are not single-output classifiers
            with the same classes; a student that outputs probabilities; labels
            missing while ``alpha > 0``.

    Example:
        >>> teacher = kmot.data.digits_cnn()       # doctest: +SKIP
        >>> teacher.fit(x_train, y_train, epochs=15)
        >>> student = keras.Sequential([keras.Input((8, 8, 1)),
        ...     keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.Flatten(),
        ...     keras.layers.Dense(10)])
        >>> student = distill(student, teacher, x_train, y_train, epochs=15,
        ...                   temperature=4.0, alpha=0.5)
        >>> kmot.export.to_litert(student, "student.tflite")
    """
    check_options(temperature=temperature, alpha=alpha, epochs=epochs, batch_size=batch_size)
    arrays = has_arrays(x)
    if y is None and arrays and alpha > 0:
        raise DistillationError(
            "`alpha` > 0 weights a hard-label loss, but no labels were given. Pass `y`, or "
            f"alpha=0.0 to learn from the teacher alone. Received: y=None, alpha={alpha!r}"
        )
    teacher_probabilities = check_models(student, teacher, first_inputs(x))
    optimizer = _optimizer(optimizer, student)
    # Distiller sets teacher.trainable = False, recursively: restore every flag after.
    flags = [(layer, layer.trainable) for layer in teacher._flatten_layers(include_self=True)]
    try:
        try:
            distiller = StudentDistiller(
                teacher=teacher, student=student, student_loss_weight=float(alpha),
                distillation_losses=logits_distillation(
                    temperature, teacher_probabilities=teacher_probabilities))
        except ValueError as err:
            raise DistillationError(
                "keras.distillation.Distiller expects a teacher and a student with the same "
                f"input and output shapes and dtypes. Received: {err}"
            ) from err
        distiller.compile(
            optimizer=optimizer,
            loss=loss if loss is not None else keras.losses.SparseCategoricalCrossentropy(
                from_logits=True),
            metrics=list(metrics) if metrics is not None else None,
        )
        # Datasets and generators come batched, and shuffled (or not) by their owner.
        distiller.fit(x, y, epochs=epochs, batch_size=batch_size if arrays else None,
                      shuffle=arrays, validation_data=validation_data, callbacks=callbacks,
                      verbose=verbose)
    finally:
        for layer, trainable in flags:  # parents first, so nested flags win
            layer.trainable = trainable
    return student
