"""A nested model that shows its layers where it is placed.

Keras's Functional model, called on tensors of the shapes it was built for,
returns output specs without running its graph, so the layers inside never see
the tensors it is called on. A transform whose value depends on its layer's
place (`WeightTransform.bind`: the grid its input is on) then finds nothing.
`PlacedModel` runs its graph on those tensors first; its first layers see them
with their history, as they would in the outer graph. The specs that pass makes
have no history of their own, so each records the operation and inputs it came
from, and `producer` reads either: a layer behind a reshape inside finds the
outer tensor too.
"""

from __future__ import annotations

import keras

__all__ = ["PlacedModel", "producer"]


@keras.saving.register_keras_serializable(package="kmot")
class PlacedModel(keras.Model):
    """A Functional model (built as ``PlacedModel(inputs, outputs, name=...)``)
    whose placement in a graph reaches its layers: each one that reads the model's
    inputs directly is shown the outer tensors. A model loaded from a file is placed
    again, so what the layers find is never saved."""

    def compute_output_spec(self, inputs, training=None, mask=None):
        first = keras.tree.flatten(inputs)[0] if inputs is not None else None
        if producer(first) is not None:  # placed (or placed inside a placed model)
            self._run_through_graph(inputs, operation_fn=_placing)
        return super().compute_output_spec(inputs, training=training, mask=mask)


def producer(tensor) -> tuple | None:
    """``(operation, input tensors)`` that made a symbolic `tensor`: its Keras history,
    or the placement pass of a `PlacedModel` it was made in; None for neither."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return getattr(tensor, "_kmot_placed", None)
    nodes = history.operation._inbound_nodes
    return history.operation, (nodes[history.node_index].input_tensors if nodes else [])


def _placing(op):
    """`op`'s output spec, each output recording `op` and its inputs (see `producer`)."""
    def spec(*args, **kwargs):
        out = op.compute_output_spec(*args, **kwargs)
        inputs = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        for t in keras.tree.flatten(out):
            if isinstance(t, keras.KerasTensor) and getattr(t, "_keras_history", None) is None:
                t._kmot_placed = (op, inputs)
        return out
    return spec
