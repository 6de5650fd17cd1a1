"""Statistics of the whole batch under `tf.distribute` (MirroredStrategy and the like).

Under a TensorFlow distribution strategy each replica runs the training step on its
share of the batch, so a statistic such as the batch's maximum, computed in the step,
is that share's. Activation ranges must be the whole batch's, as on one device: these
helpers gather the replicas' values and reduce them. On JAX (`keras.distribution`),
a sharded batch is one array and the step sees all of it; elsewhere there is one
replica: the value is returned as it is.
"""

from __future__ import annotations

import keras

__all__ = ["global_max", "global_min"]


def _replicas():
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return tf, context


def _reduced(value, reduce: str):
    found = _replicas()
    if found is None:
        return value
    tf, context = found
    gathered = context.all_gather(tf.reshape(value, [1]), axis=0)
    return getattr(tf, f"reduce_{reduce}")(gathered)


def global_min(value):
    """The minimum of a scalar over every replica of a distributed step."""
    return _reduced(value, "min")


def global_max(value):
    """The maximum of a scalar over every replica of a distributed step."""
    return _reduced(value, "max")
