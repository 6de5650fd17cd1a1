"""A nested model that shows its layers where it is placed.

Keras's Functional model, called on tensors of the shapes it was built for,
returns output specs without running its graph, so the layers inside never see
the tensors it is called on. A transform whose value depends on its layer's
place (`WeightTransform.bind`: the grid its input is on) then finds nothing.
`PlacedModel` runs its graph on those tensors first; its first layers see them
with their history, as they would in the outer graph.
"""

from __future__ import annotations

import keras

__all__ = ["PlacedModel"]


@keras.saving.register_keras_serializable(package="kmot")
class PlacedModel(keras.Model):
    """A Functional model (built as ``PlacedModel(inputs, outputs, name=...)``)
    whose placement in a graph reaches its layers: each one that reads the model's
    inputs directly is shown the outer tensors. A model loaded from a file is placed
    again, so what the layers find is never saved."""

    def compute_output_spec(self, inputs, training=None, mask=None):
        first = keras.tree.flatten(inputs)[0] if inputs is not None else None
        if getattr(first, "_keras_history", None) is not None:
            self._run_through_graph(inputs, operation_fn=lambda op: op.compute_output_spec)
        return super().compute_output_spec(inputs, training=training, mask=mask)
