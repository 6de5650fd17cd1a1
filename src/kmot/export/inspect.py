"""`inspect`: what a LiteRT (.tflite) file really holds, read without TensorFlow.

It answers the questions that matter after conversion: which ops still compute
in float, what the weights were stored as, whether pruning or clustering
survived (zeros, distinct values), and how large the file is, raw and gzipped.
Only numpy and the schema classes shipped with `ai_edge_litert` are used, and
the latter load on the first call, so `import kmot.export` stays light.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kmot.errors import InspectionError

__all__ = ["inspect", "ModelInspection", "OpInfo", "TensorInfo", "WeightInfo"]


_FLOAT = {"float32", "float16", "float64", "bfloat16"}
# Types numpy reads as stored; int4 and bfloat16 are unpacked by hand in _decode.
_NUMPY = {"float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32",
          "uint32", "int64", "uint64", "bool", "complex64", "complex128"}
_DECODABLE = _NUMPY | {"int4", "bfloat16"}
# Ops whose 1-D constant input is a bias; the flag lets pattern checks skip it.
_BIAS_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D",
             "CONV_3D_TRANSPOSE"}


@functools.cache
def _schema() -> Any:
    # Imported on first use: `import kmot.export` must not load ai_edge_litert.
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


@functools.cache
def _enum_names(enum: str) -> dict[int, str]:
    return {v: k for k, v in vars(getattr(_schema(), enum)).items() if not k.startswith("_")}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of one subgraph, as the flatbuffer stores it.

    `dtype` is the numpy-style name ("float32", "int8", "int32", ...). A tensor is
    constant when its buffer holds data. `scales`/`zero_points` are empty for
    unquantized tensors and have one entry per channel of `quantized_dimension`
    for per-channel quantization.
    """

    index: int
    subgraph: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    is_constant: bool
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0


@dataclass(frozen=True)
class OpInfo:
    """One operator; `index` is its position in its subgraph's execution order.

    Omitted optional inputs (index -1 in the file) are left out of `inputs`.
    """

    index: int
    subgraph: int
    name: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    @property
    def kind(self) -> str:
        """"quantize", "dequantize", or what the activations (non-constant tensors) are.

        The first of float (float32/16), "int16", "int8" (int8/uint8) among them
        wins, so a float op fed int8 weights (dynamic range) is "float"; ops on
        int32 or bool alone (shape math) are "other".
        """
        if self.name in ("QUANTIZE", "DEQUANTIZE"):
            return self.name.lower()
        dtypes = {t.dtype for t in self.inputs + self.outputs if not t.is_constant}
        if dtypes & _FLOAT:
            return "float"
        if "int16" in dtypes:
            return "int16"
        return "int8" if dtypes & {"int8", "uint8"} else "other"


@dataclass(frozen=True)
class WeightInfo:
    """Statistics of one constant parameter tensor, on its raw stored values.

    `zeros` counts values equal to zero as stored: the channel's zero point for
    quantized tensors, 0.0 otherwise. `max_unique_per_channel` is the largest
    count of distinct values in one slice along the quantized dimension when the
    tensor is quantized per channel, else `unique_values`. `op` is the first op
    that reads the tensor; `is_bias` marks a 1-D input of a conv or dense op.
    For a sparse-encoded tensor (rare) the counts cover the stored values only.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    size: int
    zeros: int
    sparsity: float
    unique_values: int
    max_unique_per_channel: int
    op: str
    is_bias: bool


@dataclass(frozen=True)
class ModelInspection:
    """Everything `inspect` read from one LiteRT flatbuffer.

    `ops` lists subgraph 0 (the main graph) in execution order, then the other
    subgraphs; `tensors` likewise. `inputs`/`outputs` are subgraph 0's.
    `weights` has one entry per constant tensor holding parameters: floating
    point or quantized (has scales), at least 1-D, read by some op. Integer
    constants without scales (shapes, axes, indices) and scalars are left out.
    `constant(name)` returns any constant's stored values.
    """

    size_bytes: int
    gzip_bytes: int
    ops: list[OpInfo]
    tensors: list[TensorInfo]
    weights: list[WeightInfo]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    _content: bytes = field(repr=False, compare=False)

    @property
    def op_counts(self) -> dict[str, int]:
        """Number of ops per op name, over all subgraphs."""
        return dict(Counter(op.name for op in self.ops))

    @property
    def float_ops(self) -> list[OpInfo]:
        """Ops that compute in float (kind "float"); QUANTIZE/DEQUANTIZE never count."""
        return [op for op in self.ops if op.kind == "float"]

    @property
    def is_quantized(self) -> bool:
        """True when some op computes on integer activations (full-integer modes).

        Float16 and dynamic-range models keep float activations, so they are not.
        """
        return any(op.kind in ("int8", "int16") for op in self.ops)

    @property
    def input_dtypes(self) -> list[str]:
        """Dtypes of the main graph's inputs, in order."""
        return [t.dtype for t in self.inputs]

    @property
    def output_dtypes(self) -> list[str]:
        """Dtypes of the main graph's outputs, in order."""
        return [t.dtype for t in self.outputs]

    def float_ops_between_io(self) -> list[OpInfo]:
        """Float ops of the main graph inside its quantized I/O boundary.

        The boundary is the QUANTIZE ops that read a graph input and the
        DEQUANTIZE ops that write a graph output; where an input or output has
        none (integer I/O, or an unquantized model), the tensor itself is the
        boundary. Returned are the float ops on a path from the input boundary to
        the output boundary: none for a fully integer model with float I/O; with
        integer I/O or no quantization, every float op on an input-output path.

        Returns:
            The ops, in execution order.

        Example:
            >>> assert inspect(int8_content).float_ops_between_io() == []
        """
        main = [op for op in self.ops if op.subgraph == 0]
        starts: set[int] = set()
        ends: set[int] = set()
        for t in self.inputs:
            starts |= {o.index for op in main if op.kind == "quantize" and t in op.inputs
                       for o in op.outputs} or {t.index}
        for t in self.outputs:
            ends |= {i.index for op in main if op.kind == "dequantize" and t in op.outputs
                     for i in op.inputs} or {t.index}
        # Execution order is topological, so one pass each way finds all paths.
        after = _reach(main, starts, forward=True)
        before = _reach(main, ends, forward=False)
        return [op for op in main if op.kind == "float" and op.index in after & before]

    def constant(self, name: str) -> np.ndarray:
        """The stored (raw, still quantized) values of a constant tensor.

        Args:
            name: The tensor's name, e.g. a `WeightInfo.name`. Subgraph 0 is
                searched first.

        Returns:
            A new array with the tensor's dtype and shape (flat for a
            sparse-encoded tensor, whose file holds only the kept values).

        Raises:
            InspectionError: No constant tensor has that name.

        Example:
            >>> info = inspect("model.tflite")
            >>> kernel = info.constant(info.weights[0].name)
        """
        for t in self.tensors:
            if t.name == name and t.is_constant:
                return _decode(_tensor_bytes(self._content, t.subgraph, t.index), t)
        known = [t.name for t in self.tensors if t.is_constant]
        raise InspectionError(
            f"Expected the name of a constant tensor, e.g. one of {known[:5]}. "
            f"Received: name={name!r}. See `.weights` or `.tensors` for the names."
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict; ops name tensors by index within their subgraph."""
        ops = [{"index": op.index, "subgraph": op.subgraph, "name": op.name, "kind": op.kind,
                "inputs": [t.index for t in op.inputs], "outputs": [t.index for t in op.outputs]}
               for op in self.ops]
        return {"size_bytes": self.size_bytes, "gzip_bytes": self.gzip_bytes,
                "is_quantized": self.is_quantized, "input_dtypes": self.input_dtypes,
                "output_dtypes": self.output_dtypes, "op_counts": self.op_counts,
                "float_ops_between_io": [op.index for op in self.float_ops_between_io()],
                "ops": ops, "tensors": [asdict(t) for t in self.tensors],
                "weights": [asdict(w) for w in self.weights]}

    def format_table(self) -> str:
        """A plain-text summary: size, I/O dtypes, ops with kinds, weight statistics."""
        lines = [f"LiteRT model: {self.size_bytes:,} bytes ({self.gzip_bytes:,} gzipped), "
                 f"inputs {self.input_dtypes} -> outputs {self.output_dtypes}, "
                 f"quantized: {'yes' if self.is_quantized else 'no'}",
                 "", f"{'#':>5}  {'op':<24} {'kind':<10} output dtypes"]
        for op in self.ops:  # ops outside the main graph are numbered "subgraph:index"
            number = f"{op.subgraph}:{op.index}" if op.subgraph else str(op.index)
            lines.append(f"{number:>5}  {op.name:<24} {op.kind:<10} "
                         + ", ".join(t.dtype for t in op.outputs))
        lines += ["", f"{'weight':<40} {'dtype':<8} {'shape':<16} {'sparsity':>8} {'unique':>7}"]
        for w in self.weights:
            name = w.name if len(w.name) <= 40 else "..." + w.name[-37:]
            lines.append(f"{name:<40} {w.dtype:<8} {str(w.shape):<16} "
                         f"{w.sparsity:>8.1%} {w.unique_values:>7}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def inspect(model: str | os.PathLike | bytes) -> ModelInspection:
    """Reads a LiteRT flatbuffer: ops, tensors, weight statistics and sizes.

    Args:
        model: A path to a .tflite file, or the flatbuffer's bytes (e.g. what
            `to_litert` returns).

    Returns:
        A `ModelInspection`.

    Raises:
        InspectionError: The file is missing or unreadable, or the bytes are not
            a LiteRT flatbuffer.

    Example:
        >>> info = inspect(to_litert(model, quantize="int8", representative_data=x))
        >>> assert info.is_quantized and not info.float_ops_between_io()
        >>> print(info)
    """
    content = _load(model)
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise InspectionError(
            "Expected a LiteRT flatbuffer, whose bytes 4:8 are the file identifier "
            f"b'TFL3'. Received: {len(content)} bytes starting with {content[:8]!r}. "
            "Pass a .tflite file or the bytes the LiteRT converter returned "
            "(not a .keras/.h5 file or a SavedModel)."
        )
    try:
        return _read(content)
    except InspectionError:
        raise
    except Exception as err:  # a truncated table fails anywhere inside the flatbuffers reader
        raise InspectionError(
            "Expected a complete LiteRT flatbuffer. Received: "
            f"{len(content)} bytes with the TFL3 identifier that fail to parse "
            f"({type(err).__name__}: {err}). The file may be truncated; convert the "
            "model again."
        ) from err


def _load(model: Any) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if not isinstance(model, (str, os.PathLike)):
        raise InspectionError(
            "Expected a path to a .tflite file or the flatbuffer's bytes. Received: "
            f"{type(model).__name__}. Convert a Keras model first, e.g. with to_litert()."
        )
    try:
        return Path(model).read_bytes()
    except FileNotFoundError:
        problem = f"No such file: {os.fspath(model)}."
    except OSError as err:
        problem = f"Cannot read {os.fspath(model)} ({err.strerror or err})."
    raise InspectionError(
        f"{problem} Expected a readable LiteRT (.tflite) file. "
        f"Received: path={os.fspath(model)!r}. Check the path, or pass the model's bytes."
    )


def _read(content: bytes) -> ModelInspection:
    model = _schema().Model.GetRootAs(content, 0)
    names = [_op_name(model.OperatorCodes(k)) for k in range(model.OperatorCodesLength())]
    ops: list[OpInfo] = []
    tensors: list[TensorInfo] = []
    io: list[tuple[list[TensorInfo], list[TensorInfo]]] = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        infos = [_tensor_info(content, model, graph.Tensors(t), s, t)
                 for t in range(graph.TensorsLength())]
        tensors += infos
        for j in range(graph.OperatorsLength()):
            op = graph.Operators(j)
            ops.append(OpInfo(j, s, names[op.OpcodeIndex()], _pick(infos, op, "Inputs"),
                              _pick(infos, op, "Outputs")))
        io.append((_pick(infos, graph, "Inputs"), _pick(infos, graph, "Outputs")))
    inputs, outputs = io[0] if io else ([], [])
    compressed = len(gzip.compress(content, compresslevel=9, mtime=0))
    return ModelInspection(len(content), compressed, ops, tensors, _weights(content, ops),
                           inputs, outputs, content)


def _pick(infos: list[TensorInfo], table: Any, vector: str) -> list[TensorInfo]:
    # -1 marks an omitted optional input (e.g. a Dense bias the converter dropped).
    indices = (getattr(table, vector)(j) for j in range(getattr(table, vector + "Length")()))
    return [infos[i] for i in indices if i >= 0]


def _op_name(code: Any) -> str:
    # Codes past 127 live only in BuiltinCode; older files fill only the deprecated one.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == _schema().BuiltinOperator.CUSTOM and code.CustomCode():
        return code.CustomCode().decode("utf-8", "replace")
    return _enum_names("BuiltinOperator").get(builtin, f"BUILTIN_{builtin}")


def _tensor_info(content: bytes, model: Any, tensor: Any, subgraph: int, index: int) -> TensorInfo:
    quant = tensor.Quantization()
    scales = zero_points = ()
    if quant is not None:
        scales = tuple(float(quant.Scale(i)) for i in range(quant.ScaleLength()))
        zero_points = tuple(int(quant.ZeroPoint(i)) for i in range(quant.ZeroPointLength()))
    return TensorInfo(
        index, subgraph, (tensor.Name() or b"").decode("utf-8", "replace"),
        _enum_names("TensorType").get(tensor.Type(), f"TYPE{tensor.Type()}").lower(),
        tuple(int(tensor.Shape(i)) for i in range(tensor.ShapeLength())),
        _buffer_bytes(content, model, tensor.Buffer()) is not None, scales, zero_points,
        int(quant.QuantizedDimension()) if quant is not None else 0,
    )


def _buffer_bytes(content: bytes, model: Any, index: int) -> memoryview | None:
    if not 0 <= index < model.BuffersLength():
        return None
    buffer = model.Buffers(index)
    if buffer.DataLength():
        return memoryview(buffer.DataAsNumpy())
    # Files over 2 GB keep data after the flatbuffer; offset is from the file start
    # and 0/1 are sentinels for "not stored this way".
    if buffer.Offset() > 1 and buffer.Size():
        return memoryview(content)[buffer.Offset(): buffer.Offset() + buffer.Size()]
    return None


def _tensor_bytes(content: bytes, subgraph: int, index: int) -> memoryview:
    model = _schema().Model.GetRootAs(content, 0)
    tensor = model.Subgraphs(subgraph).Tensors(index)
    return _buffer_bytes(content, model, tensor.Buffer())


def _decode(raw: memoryview, info: TensorInfo) -> np.ndarray:
    if info.dtype in _NUMPY:
        values = np.frombuffer(raw, np.dtype(info.dtype).newbyteorder("<"))
    elif info.dtype == "int4":
        packed = np.frombuffer(raw, np.int8)
        # Two values per byte, the first in the low nibble; shifts sign-extend.
        values = np.stack([(packed << 4) >> 4, packed >> 4], axis=-1).ravel()
    elif info.dtype == "bfloat16":
        values = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        raise InspectionError(
            f"Expected a constant of a numeric type. Received: tensor {info.name!r} of "
            f"type {info.dtype}, which kmot cannot decode. Read its bytes another way."
        )
    size = math.prod(info.shape)
    if info.dtype == "int4" and values.size == size + 1:
        values = values[:size]  # an odd count leaves the last high nibble as padding
    values = values.astype(values.dtype.newbyteorder("="))
    return values.reshape(info.shape) if values.size == size else values


def _weights(content: bytes, ops: list[OpInfo]) -> list[WeightInfo]:
    found: list[WeightInfo] = []
    seen: set[tuple[int, int]] = set()
    for op in ops:
        for t in op.inputs:
            key = (t.subgraph, t.index)
            is_parameter = (t.dtype in _FLOAT or bool(t.scales)) and t.dtype in _DECODABLE
            if key in seen or not (t.is_constant and is_parameter and t.shape):
                continue
            seen.add(key)
            values = _decode(_tensor_bytes(content, t.subgraph, t.index), t)
            is_bias = op.name in _BIAS_OPS and len(t.shape) == 1
            found.append(_statistics(t, values, op.name, is_bias))
    return found


def _statistics(t: TensorInfo, values: np.ndarray, op: str, is_bias: bool) -> WeightInfo:
    axis = t.quantized_dimension
    per_channel = len(t.scales) > 1 and values.ndim > axis and values.shape[axis] == len(t.scales)
    zero: Any = 0
    if t.scales and t.zero_points:
        zero = np.asarray(t.zero_points, values.dtype)
        if per_channel and zero.size == values.shape[axis]:
            zero = zero.reshape([-1 if d == axis else 1 for d in range(values.ndim)])
        else:
            zero = zero[0]  # a lone zero point applies to the whole tensor
    zeros = int(np.count_nonzero(values == zero))
    unique = int(np.unique(values).size)
    most = unique
    if per_channel:
        most = max(int(np.unique(c).size) for c in np.moveaxis(values, axis, 0))
    return WeightInfo(t.name, t.dtype, t.shape, int(values.size), zeros,
                      zeros / values.size if values.size else 0.0, unique, most, op, is_bias)


def _reach(ops: list[OpInfo], tensors: set[int], *, forward: bool) -> set[int]:
    reached, hit = set(tensors), set()
    for op in ops if forward else reversed(ops):
        near, far = (op.inputs, op.outputs) if forward else (op.outputs, op.inputs)
        if any(t.index in reached for t in near):
            hit.add(op.index)
            reached |= {t.index for t in far}
    return hit
