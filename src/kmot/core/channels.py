"""Which channels of a graph must be removed together, and the graph without them.

Every tensor's last axis (channels last) is a row of *channel ids*. A layer that
makes new channels (a convolution's or Dense's output channels, read from the
kernel-layout table) draws fresh ids; a layer that works channel by channel
(BatchNormalization, activations, pooling, depthwise convolutions, padding...)
passes its input's ids on; ``Add``, ``Multiply``, ``Subtract`` (layers or
``keras.ops`` calls) make the ids of their inputs one and the same channel;
``Concatenate`` joins its inputs' rows; ``Flatten`` repeats the row once per
position, so a Dense behind it loses the rows of a removed channel. A squeeze-
excite gate (``GlobalAveragePooling -> Dense -> Dense -> Reshape -> Multiply``)
is thereby coupled with the tensor it gates, and its first Dense with nothing.

A *channel* is a set of ids made one; removing it removes every kernel slice,
bias entry and normalization entry indexed by any of its ids. A *group* is the
channels of one producer (or of producers made one by a residual): what
`channel_groups` lists. Channels that reach a model output or input, or pass
through an op this module cannot map, are fixed, with the reason.

`ChannelGraph.rebuild(keep)` returns a new plain model (same inputs, outputs and
layer names) holding the kept channels' weights.

A wrapped layer (`OptimizedLayer`) counts as the layer it wraps; `weight_value`
reads its weights as it computes with them (its transforms applied) and
`rebuild` gives it back plain, its transforms baked into the weights. This is
what lets channel masks (`kmot.sparsity.mask_channels`) rank and remove the
channels of a wrapped model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import keras
import numpy as np
from keras.src import tree

from kmot.core.graph import clone_operation, is_graph_model, require_graph_model
from kmot.core.kernels import kernels
from kmot.core.wrapper import OptimizedLayer
from kmot.errors import UnsupportedModelError

__all__ = ["ChannelGraph", "ChannelGroup", "ChannelUse", "channel_graph"]

_L = keras.layers
CONVS = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
TRANSPOSED = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
#: Layers that work on each channel alone: their weights (if any) are indexed by channel.
CHANNELWISE = (
    _L.BatchNormalization, _L.LayerNormalization, _L.Normalization, _L.ReLU, _L.Activation,
    _L.LeakyReLU, _L.ELU, _L.Softmax, _L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D,
    _L.SpatialDropout3D, _L.GaussianNoise, _L.GaussianDropout, _L.AlphaDropout,
    _L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D, _L.AveragePooling1D,
    _L.AveragePooling2D, _L.AveragePooling3D, _L.GlobalAveragePooling1D,
    _L.GlobalAveragePooling2D, _L.GlobalAveragePooling3D, _L.GlobalMaxPooling1D,
    _L.GlobalMaxPooling2D, _L.GlobalMaxPooling3D, _L.ZeroPadding1D, _L.ZeroPadding2D,
    _L.ZeroPadding3D, _L.Cropping1D, _L.Cropping2D, _L.Cropping3D, _L.UpSampling1D,
    _L.UpSampling2D, _L.UpSampling3D, _L.Identity, _L.ActivityRegularization, _L.Rescaling,
)
MERGES = (_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum)
#: ``keras.ops`` operation nodes, by class name.
UNARY_OPS = frozenset({
    "Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu", "Silu", "Swish", "Gelu", "Tanh",
    "Abs", "Absolute", "Negative", "Square", "Sqrt", "Exp", "Log", "Softplus", "Softsign",
    "LeakyRelu", "Elu", "Selu", "Celu", "Clip", "Cast", "Sign", "Floor", "Ceil", "Round",
    "Reciprocal", "Mish", "LogSigmoid",
})
BINARY_OPS = frozenset({"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum",
                        "Minimum", "Power"})


@dataclass(frozen=True)
class ChannelUse:
    """One place a group's channels index: a weight's axis (or a layer's output)."""

    layer: str
    weight: str
    axis: int
    role: str  # "out" (made here), "in" (read here) or "channelwise"


@dataclass
class ChannelGroup:
    """Channels that are removed together.

    Attributes:
        index: the group's number (stable for one model).
        size: how many channels the group has (each removable on its own).
        producers: the layers whose output channels these are.
        uses: every weight axis the channels index (why a layer is pruned with another).
        prunable: False when a channel cannot be removed; `reason` says why.
    """

    index: int
    size: int
    producers: tuple[str, ...]
    uses: tuple[ChannelUse, ...]
    prunable: bool
    reason: str | None = None
    channels: tuple[int, ...] = field(default=(), repr=False)  # the channel roots, in order

    def __str__(self) -> str:
        state = "prunable" if self.prunable else f"fixed ({self.reason})"
        uses = ", ".join(f"{u.layer}/{u.weight}[{u.axis}]" for u in self.uses)
        return f"group {self.index}: {self.size} channels of {', '.join(self.producers)}, {state}: {uses}"


@dataclass
class _T:
    """A symbolic tensor's channel ids (None: no channel axis this module tracks)."""

    ids: np.ndarray | None
    shape: tuple


@dataclass
class _Record:
    layer: keras.layers.Layer
    kind: str
    in_ids: np.ndarray | None = None
    out_ids: np.ndarray | None = None
    #: ``(weight index, axis, "in" | "out" | "mid")`` slices to take from the layer's weights.
    slices: list[tuple[int, int, str]] = field(default_factory=list)
    mid_ids: np.ndarray | None = None  # a separable conv's depthwise output


class ChannelGraph:
    """The channel ids of every tensor of a Functional model; see the module docstring."""

    def __init__(self, model: keras.Model) -> None:
        require_graph_model(model, "removing channels rewrites the graph")
        self.model = model
        self._parent: list[int] = []
        self._fixed: dict[int, str] = {}  # id -> why it cannot be removed
        self.records: dict[int, _Record] = {}
        self.nested: dict[int, list[_T]] = {}  # a nested model's inputs
        self._producers: dict[int, list[str]] = {}  # first id of a block -> producer names
        self._blocks: list[tuple[str, np.ndarray]] = []
        self._wrappers: dict[int, OptimizedLayer] = {}  # id(inner layer) -> its wrapper
        inputs = [self._fresh(_T(None, tuple(x.shape)), fixed="a model input") for x in model.inputs]
        outputs = self._walk(model, inputs)
        for out in outputs:
            self._fix(out, "reaches a model output")

    # -- ids ---------------------------------------------------------------------------

    def _new_ids(self, n: int) -> np.ndarray:
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        return np.arange(start, start + n)

    def _fresh(self, like: _T, *, fixed: str | None = None, producer: str | None = None) -> _T:
        last = like.shape[-1] if like.shape else None
        if not isinstance(last, int):
            return _T(None, like.shape)
        ids = self._new_ids(last)
        if fixed:
            for i in ids:
                self._fixed.setdefault(int(i), fixed)
        if producer:
            self._blocks.append((producer, ids))
        return _T(ids, like.shape)

    def find(self, i: int) -> int:
        parent = self._parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def _union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self._parent[max(rx, ry)] = min(rx, ry)

    def _fix(self, t: _T | np.ndarray | None, reason: str) -> None:
        ids = t.ids if isinstance(t, _T) else t
        if ids is not None:
            for i in ids.tolist():
                self._fixed.setdefault(i, reason)

    # -- walking the graph -------------------------------------------------------------

    def _walk(self, model: keras.Model, inputs: list[_T]) -> list[_T]:
        graph = getattr(model, "_functional", None) or model  # a Sequential's graph
        values = {id(x): v for x, v in zip(graph.inputs, inputs)}
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(x) not in values for x in node.input_tensors):
                    continue
                args, kwargs = node.arguments.fill_in(values)
                outs = self._node(node.operation, node, args, kwargs)
                for x, y in zip(node.outputs, outs):
                    values[id(x)] = y
        return [values[id(x)] for x in graph.outputs]

    def _node(self, op, node, args, kwargs) -> list[_T]:
        if isinstance(op, OptimizedLayer):
            self._wrappers[id(op.layer)] = op
            op = op.layer
        tensors = [v for v in tree.flatten((args, kwargs)) if isinstance(v, _T)]
        shapes = [tuple(x.shape) for x in node.outputs]
        if isinstance(op, keras.Model) and is_graph_model(op):
            self.nested.setdefault(id(op), tensors)
            return self._walk(op, tensors)
        if isinstance(op, keras.layers.Layer):
            out = self._layer(op, tensors, shapes, args, kwargs)
        else:
            out = self._operation(op, tensors, shapes, args)
        if out is None:  # a layer or op whose channels this module cannot map
            name = getattr(op, "name", type(op).__name__)
            reason = f"passes through {name} ({type(op).__name__}), which cannot be mapped"
            for t in tensors:
                self._fix(t, reason)
            return [self._fresh(_T(None, s), fixed=reason) for s in shapes]
        return out

    def _same(self, t: _T, shape: tuple) -> _T:
        return _T(t.ids, shape)

    def _layer(self, layer, tensors, shapes, args, kwargs) -> list[_T] | None:
        if len(tensors) == 0:
            return None
        x, shape = tensors[0], shapes[0]
        config = layer.get_config()
        if config.get("data_format", "channels_last") != "channels_last":
            return None
        if isinstance(layer, MERGES):
            return [self._merge([t for t in tensors], shape)]
        if isinstance(layer, _L.Concatenate):
            return [self._concatenate(tensors, shape, layer.axis)]
        if isinstance(layer, _L.Flatten):
            return [self._flatten(x, shape)]
        if isinstance(layer, _L.Reshape):
            return self._reshape(layer, x, shape)
        if len(tensors) != 1:
            return None
        if isinstance(layer, (*CONVS, *TRANSPOSED, _L.Dense)) and config.get("groups", 1) == 1:
            return [self._producer(layer, x, shape)]
        if isinstance(layer, CONVS) and config["groups"] == config["filters"] == x.shape[-1]:
            return [self._grouped_depthwise(layer, x, shape)]  # ConvNeXt's depthwise conv
        if isinstance(layer, DEPTHWISE):
            return [self._depthwise(layer, x, shape)]
        if isinstance(layer, SEPARABLE):
            return [self._separable(layer, x, shape)]
        if isinstance(layer, CHANNELWISE) or _is_layer_scale(layer):
            if not self._channelwise_ok(layer, x):
                return None
            return [self._channelwise(layer, x, shape)]
        return None

    def _operation(self, op, tensors, shapes, args) -> list[_T] | None:
        name = type(op).__name__
        if name in UNARY_OPS and len(tensors) == 1:
            return [self._same(tensors[0], shapes[0])]
        if name in BINARY_OPS:
            constants = [a for a in args if not isinstance(a, _T)]
            if any(np.size(c) != 1 for c in constants):
                return None  # a per-channel constant the rebuilt op would not fit
            return [self._merge(tensors, shapes[0])]
        if name in ("Mean", "Max", "Min", "Sum") and len(tensors) == 1:
            rank = len(tensors[0].shape)
            axis = getattr(op, "axis", None)
            axes = () if axis is None else (axis if isinstance(axis, (tuple, list)) else (axis,))
            if axes and all(a % rank != rank - 1 for a in axes) and (
                    getattr(op, "keepdims", False) or len(shapes[0]) >= 1):
                return [self._same(tensors[0], shapes[0])]
        return None

    def _record(self, layer, kind: str, x: _T) -> tuple[_Record, bool]:
        """The layer's record; True when it is met again (a shared layer)."""
        rec = self.records.get(id(layer))
        if rec is not None:
            if rec.in_ids is not None and x.ids is not None:
                self._union(rec.in_ids, x.ids)
            return rec, True
        rec = _Record(layer, kind, in_ids=x.ids)
        self.records[id(layer)] = rec
        return rec, False

    def _weight_index(self, layer, variable) -> int:
        return next(i for i, w in enumerate(layer.weights) if w is variable)

    def _producer(self, layer, x: _T, shape) -> _T:
        rec, seen = self._record(layer, "producer", x)
        if seen:
            return _T(rec.out_ids, shape)
        kernel = kernels(layer)[0]
        out = self._fresh(_T(None, shape), producer=layer.name)
        rec.out_ids = out.ids
        k = self._weight_index(layer, kernel.variable)
        rec.slices.append((k, kernel.in_axes()[0], "in"))
        rec.slices.append((k, kernel.out_axes()[0], "out"))
        if getattr(layer, "bias", None) is not None:
            rec.slices.append((self._weight_index(layer, layer.bias), 0, "out"))
        return out

    def _depthwise(self, layer, x: _T, shape) -> _T:
        rec, seen = self._record(layer, "channelwise", x)
        if seen:
            return _T(rec.out_ids, shape)
        rec.out_ids = None if x.ids is None else np.repeat(x.ids, layer.depth_multiplier)
        k = self._weight_index(layer, layer.kernel)
        rec.slices.append((k, len(layer.kernel.shape) - 2, "in"))
        if getattr(layer, "bias", None) is not None:
            rec.slices.append((self._weight_index(layer, layer.bias), 0, "out"))
        return _T(rec.out_ids, shape)

    def _separable(self, layer, x: _T, shape) -> _T:
        rec, seen = self._record(layer, "producer", x)
        if seen:
            return _T(rec.out_ids, shape)
        rec.mid_ids = None if x.ids is None else np.repeat(x.ids, layer.depth_multiplier)
        out = self._fresh(_T(None, shape), producer=layer.name)
        rec.out_ids = out.ids
        depthwise = self._weight_index(layer, layer.depthwise_kernel)
        pointwise = self._weight_index(layer, layer.pointwise_kernel)
        rec.slices += [(depthwise, len(layer.depthwise_kernel.shape) - 2, "in"),
                       (pointwise, len(layer.pointwise_kernel.shape) - 2, "mid"),
                       (pointwise, len(layer.pointwise_kernel.shape) - 1, "out")]
        if getattr(layer, "bias", None) is not None:
            rec.slices.append((self._weight_index(layer, layer.bias), 0, "out"))
        return out

    def _grouped_depthwise(self, layer, x: _T, shape) -> _T:
        """A Conv with one group per channel: each output channel reads its own input."""
        rec, seen = self._record(layer, "grouped", x)
        if not seen:
            rec.out_ids = x.ids
            rec.slices.append((self._weight_index(layer, layer.kernel), len(layer.kernel.shape) - 1, "in"))
            if getattr(layer, "bias", None) is not None:
                rec.slices.append((self._weight_index(layer, layer.bias), 0, "in"))
        return _T(rec.out_ids, shape)

    def _channelwise_ok(self, layer, x: _T) -> bool:
        axis = getattr(layer, "axis", -1)
        rank = len(x.shape)
        if isinstance(layer, (_L.BatchNormalization, _L.LayerNormalization, _L.Normalization)):
            axes = axis if isinstance(axis, (list, tuple)) else (axis,)
            if [a % rank for a in axes] != [rank - 1]:
                return False
        if isinstance(layer, _L.Softmax) and axis not in (-1, rank - 1):
            return False
        if isinstance(layer, _L.Rescaling) and np.size(layer.scale) != 1:
            return False
        channels = x.shape[-1]
        # Every weight is a per-channel vector (or a scalar such as a count).
        return all(int(np.prod(w.shape)) in (1, channels) for w in layer.weights)

    def _channelwise(self, layer, x: _T, shape) -> _T:
        rec, seen = self._record(layer, "channelwise", x)
        if not seen:
            rec.out_ids = x.ids
            channels = x.shape[-1]
            for i, w in enumerate(layer.weights):
                if len(w.shape) and w.shape[-1] == channels and channels != 1:
                    rec.slices.append((i, len(w.shape) - 1, "in"))
        return _T(rec.out_ids, shape)

    def _merge(self, tensors: list[_T], shape) -> _T:
        full = [t for t in tensors if t.ids is not None and t.shape[-1] == shape[-1]]
        for t in full[1:]:
            self._union(full[0].ids, t.ids)
        for t in tensors:
            if t.ids is not None and all(t is not f for f in full) and t.shape[-1] != 1:
                self._fix(t, "broadcast against another shape")
        return _T(full[0].ids if full else None, shape)

    def _concatenate(self, tensors: list[_T], shape, axis: int) -> _T:
        rank = len(shape)
        if axis % rank != rank - 1:
            return self._merge(tensors, shape)
        if any(t.ids is None for t in tensors):
            for t in tensors:
                self._fix(t, "concatenated with a tensor of unknown channels")
            return self._fresh(_T(None, shape), fixed="concatenation of unknown channels")
        return _T(np.concatenate([t.ids for t in tensors]), shape)

    def _flatten(self, x: _T, shape) -> _T:
        positions = x.shape[1:-1]
        if x.ids is None or not all(isinstance(p, int) for p in positions):
            self._fix(x, "flattened with unknown spatial size")
            return self._fresh(_T(None, shape), fixed="flattened")
        return _T(np.tile(x.ids, int(np.prod(positions, dtype=np.int64))), shape)

    def _reshape(self, layer, x: _T, shape) -> list[_T] | None:
        if x.ids is None:
            return None
        target = tuple(layer.target_shape)
        if target and target[-1] == x.shape[-1] and all(d == 1 for d in target[:-1]) and all(
                d == 1 for d in x.shape[1:-1]):
            rec, _ = self._record(layer, "reshape", x)
            rec.out_ids = x.ids
            return [_T(x.ids, shape)]
        if len(target) == 1:  # a flatten written as Reshape((-1,))
            return [self._flatten(x, shape)]
        return None

    # -- weights -----------------------------------------------------------------------

    def wrapper(self, layer) -> OptimizedLayer | None:
        """The `OptimizedLayer` wrapping `layer` in the model, if any."""
        return self._wrappers.get(id(layer))

    def weight_value(self, layer, weight_index: int) -> np.ndarray:
        """``layer.weights[weight_index]`` as the layer computes with it (a wrapper's
        transforms applied, in inference mode)."""
        variable = layer.weights[weight_index]
        wrapper = self._wrappers.get(id(layer))
        value = wrapper.transformed_value(variable) if wrapper is not None else variable.value
        return np.asarray(keras.ops.convert_to_numpy(value))

    # -- groups ------------------------------------------------------------------------

    def channel_roots(self) -> dict[int, list[int]]:
        """Each channel (root id) and its ids."""
        roots: dict[int, list[int]] = {}
        for i in range(len(self._parent)):
            roots.setdefault(self.find(i), []).append(i)
        return roots

    def fixed_reason(self, root: int, members: Iterable[int]) -> str | None:
        return next((self._fixed[i] for i in members if i in self._fixed), None)

    def groups(self) -> list[ChannelGroup]:
        roots = self.channel_roots()
        # Producer blocks that share a channel (through Add, or a gate that
        # multiplies a concatenation) are one group.
        owner = list(range(len(self._blocks)))

        def top(b: int) -> int:
            while owner[b] != b:
                b = owner[b]
            return b

        first_block: dict[int, int] = {}
        for b, (_, ids) in enumerate(self._blocks):
            for i in ids.tolist():
                c = self.find(i)
                if c in first_block:
                    x, y = top(first_block[c]), top(b)
                    owner[max(x, y)] = min(x, y)
                else:
                    first_block[c] = b
        members: dict[int, tuple[list[str], list[int]]] = {}
        for b, (producer, ids) in enumerate(self._blocks):
            names, channels = members.setdefault(top(b), ([], []))
            names.append(producer)
            channels.extend(self.find(int(i)) for i in ids)
        groups = []
        for index, (producers, channels) in enumerate(members.values()):
            channels = list(dict.fromkeys(channels))
            reason = next((r for c in channels if (r := self.fixed_reason(c, roots[c]))), None)
            groups.append(ChannelGroup(index, len(channels), tuple(producers),
                                       self._uses(set(channels)), reason is None, reason,
                                       tuple(channels)))
        return groups

    def _uses(self, channels: set[int]) -> tuple[ChannelUse, ...]:
        uses = []
        for rec in self.records.values():
            ids = {"in": rec.in_ids, "out": rec.out_ids, "mid": rec.mid_ids}
            for weight_index, axis, side in rec.slices:
                row = ids[side]
                if row is not None and any(self.find(int(i)) in channels for i in row):
                    role = "channelwise" if rec.kind in ("channelwise", "grouped") else (
                        "in" if side in ("in", "mid") else "out")
                    key = rec.layer.weights[weight_index].path.split("/")[-1]
                    uses.append(ChannelUse(rec.layer.name, key, axis, role))
        return tuple(dict.fromkeys(uses))

    # -- rebuilding --------------------------------------------------------------------

    def rebuild(self, keep: Callable[[int], bool]) -> keras.Model:
        """A new plain model holding only the channels (roots) for which ``keep`` is True.

        Fixed channels are always kept. Wrapped layers come back plain, holding
        their stripped weights (every transform baked in, see
        `OptimizedLayer.stripped_weights`).
        """
        cache: dict[int, bool] = {}

        def kept(ids: np.ndarray | None) -> np.ndarray | None:
            if ids is None:
                return None
            mask = np.empty(len(ids), bool)
            for n, i in enumerate(ids.tolist()):
                root = self.find(i)
                if root not in cache:  # fixed channels are cached as kept below
                    cache[root] = bool(keep(root))
                mask[n] = cache[root]
            return np.flatnonzero(mask)

        # A channel is fixed if any of its ids is: resolve that once per root.
        for root, members in self.channel_roots().items():
            if self.fixed_reason(root, members) is not None:
                cache[root] = True
        plans = {}
        for key, rec in self.records.items():
            positions = {"in": kept(rec.in_ids), "out": kept(rec.out_ids), "mid": kept(rec.mid_ids)}
            plans[key] = (rec, positions)
        copies: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

        def clone(op):
            if not isinstance(op, keras.layers.Layer):
                return clone_operation(op)
            if isinstance(op, keras.Model) and is_graph_model(op):
                return nested(op)
            layer = op.layer if isinstance(op, OptimizedLayer) else op
            plan = plans.get(id(layer))
            config = layer.get_config()
            if plan is not None:
                rec, positions = plan
                if positions["out"] is not None and rec.kind == "producer":
                    config["filters" if "filters" in config else "units"] = int(len(positions["out"]))
                if _is_layer_scale(layer) and positions["in"] is not None:
                    config["projection_dim"] = int(len(positions["in"]))
                if rec.kind == "grouped" and positions["in"] is not None:
                    config["filters"] = config["groups"] = int(len(positions["in"]))
                if rec.kind == "reshape":
                    config["target_shape"] = (*tuple(layer.target_shape)[:-1], int(len(positions["out"])))
            new = type(layer).from_config(config)
            copies.append((op, new))
            return new

        def nested(model):
            # Its inputs take the channels kept upstream.
            inputs = []
            for x, t in zip(model.inputs, self.nested.get(id(model), [])):
                positions = kept(t.ids)
                channels = x.shape[-1] if positions is None else int(len(positions))
                inputs.append(keras.Input(batch_shape=(*x.shape[:-1], channels), dtype=x.dtype))
            return keras.models.clone_model(model, clone_function=clone, input_tensors=(
                inputs[0] if isinstance(model, keras.Sequential) else inputs) if inputs else None)

        new_model = keras.models.clone_model(self.model, clone_function=clone)
        for op, new in copies:
            old = op.layer if isinstance(op, OptimizedLayer) else op
            values = op.stripped_weights() if op is not old else [np.asarray(v) for v in old.get_weights()]
            plan = plans.get(id(old))
            if plan is not None:
                rec, positions = plan
                for weight_index, axis, side in rec.slices:
                    if positions[side] is not None:
                        values[weight_index] = np.take(values[weight_index], positions[side], axis=axis)
            if not new.built:
                raise UnsupportedModelError(
                    f"Layer '{old.name}' was not rebuilt in the pruned graph. Expected every "
                    "layer to be called in the model. Received: an unused layer")
            new.set_weights(values)
        return new_model


def _is_layer_scale(layer) -> bool:
    """keras.applications' ConvNeXt LayerScale: a per-channel scale, no config of channels."""
    return type(layer).__name__ == "LayerScale" and type(layer).__module__.startswith("keras.")


def channel_graph(model: keras.Model) -> ChannelGraph:
    """The channel dependency graph of a Functional or Sequential model."""
    return ChannelGraph(model)
