"""`TransformSummaries`: what transforms and layers report, written for TensorBoard.

Any `WeightTransform` may define ``summaries(value) -> {name: float}`` (``value``:
what the chain ahead of it produces) and any layer ``summaries() -> {name: float}``:
a pruning mask reports its sparsity, a clustering its distinct values, an
activation quantizer its range. This callback collects them during training and writes them
as TensorBoard scalars, ``<layer>/<weight>/<name>`` for a transform and
``<layer>/<name>`` for a layer; the techniques' callbacks (`PruningSummaries`,
...) are this one restricted to their own kind. The event files are written with
``tf.summary`` (TensorFlow is a kmot dependency; its writer needs the
``tensorboard`` package, the ``kmot[tensorboard]`` extra), on every Keras backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import keras

from kmot.core.rewrite import find_wrappers
from kmot.core.selection import walk_layers
from kmot.core.transform import flatten_chain
from kmot.errors import TransformError

__all__ = ["TransformSummaries", "collect_summaries"]


def collect_summaries(model: keras.Model,
                      select: Callable[[Any], bool] = lambda obj: True) -> dict[str, float]:
    """``{tag: value}`` of every selected transform's and layer's ``summaries()``."""
    from kmot.core.wrapper import weight_key

    out: dict[str, float] = {}
    for wrapper in find_wrappers(model):
        variables = {weight_key(wrapper.layer, v): v for v in wrapper.layer.weights}
        for key, chain in wrapper.transforms.items():
            value = keras.ops.copy(variables[key].value)
            for transform in chain:  # each sees the value the chain ahead produces
                for t in flatten_chain([transform]):
                    report = getattr(t, "summaries", None)
                    if callable(report) and select(t):
                        for name, number in report(value).items():
                            out[f"{wrapper.layer.name}/{key}/{name}"] = float(number)
                value = transform(value, training=False)
    for layer in walk_layers(model):
        report = getattr(layer, "summaries", None)
        if callable(report) and select(layer):
            for name, value in report().items():
                out[f"{layer.name}/{name}"] = float(value)
    return out


class TransformSummaries(keras.callbacks.Callback):
    """Writes the selected transforms' and layers' summaries to TensorBoard.

    Args:
        log_dir: the folder TensorBoard reads (``tensorboard --logdir log_dir``).
        update_freq: ``"epoch"`` (at each epoch's end) or every N training batches.
        select: which transforms and layers report (default: all).
        what: how errors name what is summarized ("pruning", ...).

    Raises:
        TransformError: a bad ``update_freq``, or (when training starts) a model
            with nothing selected to report.

    Example:
        >>> model.fit(x, y, callbacks=[TransformSummaries("logs")])  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | os.PathLike, *, update_freq: str | int = "epoch",
                 select: Callable[[Any], bool] = lambda obj: True, what: str = "transform"):
        super().__init__()
        if update_freq != "epoch" and (isinstance(update_freq, bool)
                                       or not isinstance(update_freq, int) or update_freq < 1):
            raise TransformError(
                f"Expected update_freq='epoch' or a number of batches >= 1. Received: "
                f"update_freq={update_freq!r}")
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:  # tf.summary needs its writer
            raise TransformError(
                "TensorBoard summaries need the tensorboard package. Expected it installed: "
                'pip install "kmot[tensorboard]". Received: no tensorboard module')
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self.select = select
        self.what = what
        self._writer = None
        self._batches = 0

    def on_train_begin(self, logs=None):
        if not collect_summaries(self.model, self.select):
            raise TransformError(
                f"This model reports no {self.what} summaries: it has no {self.what} "
                f"wrappers. Expected the model the {self.what} function returned. Received: "
                f"model '{self.model.name}'")
        import tensorflow as tf

        self._writer = tf.summary.create_file_writer(self.log_dir)
        self._write(0)

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.update_freq != "epoch" and self._batches % self.update_freq == 0:
            self._write(self._batches)

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._write(self._batches)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def _write(self, step: int) -> None:
        import tensorflow as tf

        with self._writer.as_default():
            for tag, value in collect_summaries(self.model, self.select).items():
                tf.summary.scalar(tag, value, step=step)
        self._writer.flush()
