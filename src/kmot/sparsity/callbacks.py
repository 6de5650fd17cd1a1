"""Training callbacks for pruning, with tfmot's names."""

from __future__ import annotations

import keras

from kmot.errors import TransformError

__all__ = ["UpdatePruningStep"]


class UpdatePruningStep(keras.callbacks.Callback):
    """Checks that the model is pruned; kept for tfmot users' training scripts.

    In kmot the pruning step needs no callback: it advances inside the training
    step, each time the model runs with ``training=True``, on every backend. So a
    custom training loop needs nothing either: call ``model(x, training=True)``
    once per step. This callback fails early when the model carries no pruning
    wrapper (a common slip: fitting the unpruned model), and with `verbose`
    prints the model's sparsity after each epoch.

    Example:
        >>> pruned.fit(x, y, callbacks=[UpdatePruningStep()])  # doctest: +SKIP
    """

    def __init__(self, verbose: bool = False):
        super().__init__()
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        from kmot.sparsity.summary import pruning_transforms

        if not pruning_transforms(self.model):
            raise TransformError(
                "UpdatePruningStep is attached to a model with no pruned layer. Expected "
                "the model returned by kmot.sparsity.prune_low_magnitude(...). "
                f"Received: model '{self.model.name}'"
            )

    def on_epoch_end(self, epoch, logs=None):
        if self.verbose:
            from kmot.sparsity.summary import summary

            print(f"epoch {epoch + 1}: {summary(self.model).overall:.1%} of prunable weights are zero")
