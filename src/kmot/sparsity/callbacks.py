"""Training callbacks for pruning, with tfmot's names."""

from __future__ import annotations

import keras

from kmot.errors import TransformError

__all__ = ["UpdatePruningStep"]


class UpdatePruningStep(keras.callbacks.Callback):
    """Updates channel masks; checks that the model is pruned (tfmot's callback).

    Magnitude pruning (`prune_low_magnitude`) needs no callback in kmot: its
    step advances inside the training step, each time the model runs with
    ``training=True``, on every backend. Channel masks (`mask_channels`) do:
    a channel's importance sums over the weights of several layers, so this
    callback ranks the channels between steps, at the schedule's update steps,
    and writes one decision into every mask of a group. It also fails early
    when the model carries no pruning wrapper (a common slip: fitting the
    unpruned model), and with `verbose` prints the model's sparsity after each
    epoch.

    In a custom training loop, drive it by hand: ``cb.set_model(model);
    cb.on_train_begin()``, then ``cb.on_train_batch_begin(i)`` before and
    ``cb.on_train_batch_end(i)`` after each step, and ``cb.on_train_end()``.

    Example:
        >>> pruned.fit(x, y, callbacks=[UpdatePruningStep()])  # doctest: +SKIP
    """

    def __init__(self, verbose: bool = False):
        super().__init__()
        self.verbose = verbose
        self._masks = None
        self._begin = 0

    def on_train_begin(self, logs=None):
        from kmot.sparsity.channel_masks import _MaskUpdater, channel_mask_transforms
        from kmot.sparsity.summary import pruning_transforms

        self._masks = _MaskUpdater(self.model) if channel_mask_transforms(self.model) else None
        if self._masks is None and not pruning_transforms(self.model):
            raise TransformError(
                "UpdatePruningStep is attached to a model with no pruned layer. Expected "
                "the model returned by kmot.sparsity.prune_low_magnitude(...) or "
                f"mask_channels(...). Received: model '{self.model.name}'"
            )

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = batch
        if self._masks is not None:
            self._masks.before_step()

    def on_train_batch_end(self, batch, logs=None):
        if self._masks is not None:
            # A batch runs steps_per_execution steps; Keras reports a short last
            # block of an epoch as a full one, so clip it to the epoch's steps.
            steps = (self.params or {}).get("steps")
            last = min(batch, steps - 1) if steps else batch
            self._masks.after_steps(max(last - self._begin + 1, 1))

    def on_epoch_end(self, epoch, logs=None):
        if self._masks is not None:
            self._masks.save_step()
        if self.verbose:
            from kmot.sparsity.summary import summary

            line = f"epoch {epoch + 1}: {summary(self.model).overall:.1%} of prunable weights are zero"
            if self._masks is not None:
                line += f", {self._masks.masked_fraction():.1%} of prunable channels masked"
            print(line)

    def on_train_end(self, logs=None):
        if self._masks is not None:
            self._masks.save_step()
