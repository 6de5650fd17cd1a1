"""`factorize`: a model whose large kernels are products of smaller ones."""

from __future__ import annotations

import keras

from kmot.core.graph import as_functional, clone_model
from kmot.core.selection import LayerSelector, walk_layers
from kmot.decomposition.plan import check_method, check_model, plan
from kmot.decomposition.ranks import check_criterion
from kmot.decomposition.summary import describe, record, summarize

__all__ = ["factorize"]


def factorize(
    model: keras.Model,
    *,
    rank: int | dict[str, int] | None = None,
    energy: float | None = None,
    compression: float | None = None,
    method: str = "auto",
    layers: LayerSelector = None,
) -> keras.Model:
    """A new plain model with Dense, EinsumDense and conv kernels factored at low rank.

    Each factored layer becomes two or three plain Keras layers in its place: the
    last keeps the layer's name, bias and activation, the others have no bias and
    a linear activation.

    * Dense / EinsumDense: truncated SVD ``W ~= U_r S_r V_r``, the singular values
      split as square roots between the two factors (the best rank-r
      approximation in the Frobenius norm).
    * Conv2D / Conv1D, ``method="tucker"``: Tucker-2 over the channel axes, a 1x1
      conv to ``r_in`` channels, the kxk core (the original strides, padding and
      dilation) to ``r_out``, a 1x1 conv to the outputs (a side at full rank has no
      1x1 conv). ``method="spatial"`` (Conv2D): a ``k x 1`` conv to r channels then
      a ``1 x k`` conv. ``"auto"``: whichever costs fewer MACs at the chosen rank
      (with `compression`: the one keeping more energy for its parameters).
      ``"svd"``: Dense and EinsumDense only. Grouped and depthwise convs stay whole.

    Each layer's rank comes from exactly one of:

    * ``rank``: an int for every selected layer (capped at each layer's full rank,
      where factoring saves nothing), or ``{layer name: int}`` for those layers
      only. For Tucker-2, both channel ranks.
    * ``energy`` (default 0.9 when none is given): the smallest rank whose squared
      singular values (for Tucker-2: whose core) keep this fraction of the kernel's
      squared norm, per layer.
    * ``compression``: the whole model's parameter count divided by this. Every
      layer starts at rank 1, then rank goes, step by step, to the layer that keeps
      the most energy per parameter added, until the next step would exceed the
      budget: steep spectra get few ranks, flat ones more.

    A layer stays whole wherever its factors would not have both fewer
    parameters and fewer MACs. Compile and fine-tune the result, distill,
    quantize or export it like any Keras model.

    Args:
        model: a built Functional or Sequential model (nested models allowed), not
            wrapped; it is left untouched.
        rank: see above.
        energy: see above, in (0, 1].
        compression: see above, >= 1.
        method: one of `METHODS`: ``"auto"``, ``"svd"``, ``"tucker"``, ``"spatial"``.
        layers: which layers to factor (see `kmot.core.make_predicate`); default all.

    Returns:
        A new Functional model with the same inputs and outputs (a Sequential
        model comes back Functional, as from `kmot.quantization.quantize_model`).
        `kmot.decomposition.summary(result)` tells what was done to each layer.

    Raises:
        DecompositionError: more than one of rank / energy / compression; a rank
            below 1 or above what a layer allows; energy outside (0, 1];
            compression below 1 or beyond reach; an unknown method.
        LayerSelectionError: `layers` selects no factorable layer.
        UnsupportedModelError: not a Keras model, a subclassed or unbuilt model,
            a model holding kmot wrappers.

    Example:
        >>> import keras, kmot
        >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64)])
        >>> small = kmot.decomposition.factorize(model, rank=8)
        >>> [layer.name for layer in small.layers[1:]] == [
        ...     f"{model.layers[0].name}_reduce", model.layers[0].name]
        True
        >>> small.count_params() < model.count_params()
        True
    """
    criterion = check_criterion(rank, energy, compression)
    check_method(method)
    check_model(model)
    found = plan(model, criterion, method, layers)
    chosen = {c.name: c for c in found if c.option is not None}
    work = as_functional(model)
    taken = {layer.name for layer in walk_layers(work)}
    kept: dict[str, float] = {}
    chains: dict[str, tuple[str, ...]] = {}

    def fresh(name: str) -> str:
        unique, n = name, 0
        while unique in taken:
            n += 1
            unique = f"{name}_{n}"
        taken.add(unique)
        return unique

    def replace(copy):
        c = chosen[copy.name]
        chain, kept[c.name] = c.factorings[c.option.method].chain(c.option, fresh)
        chains[c.name] = tuple(layer.name for layer in chain)
        return chain

    result = clone_model(work, layers=lambda layer: layer.name in chosen, replace=replace)
    record(result, summarize(model, found, kept, chains, describe(criterion, method)))
    return result
