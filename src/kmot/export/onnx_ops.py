"""The ops ONNX Runtime runs for an ``.onnx`` file, by the type they compute in.

A QDQ file is a float graph with QuantizeLinear/DequantizeLinear around each op;
what runs in int8 is decided when ONNX Runtime loads it and fuses
``DQ -> Conv -> Q`` into QLinearConv (and so on), or leaves the float op where it
cannot. So the ops are read from the graph ONNX Runtime optimized (at the
"extended" level: the fusions, without the machine-specific layout changes),
and each op gets the kind `kmot.export.inspect` gives LiteRT ops: "quantize" /
"dequantize", else the first of float, "int16", "int8" among the dtypes of its
non-constant inputs and outputs, else "other" (shape math). Shape and Size read
only a tensor's shape: "other".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ONNXOp", "ONNXOps", "runtime_ops"]

_FLOAT = {"float32", "float16", "float64", "bfloat16"}
_INT8 = {"int8", "uint8"}
_INT16 = {"int16", "uint16"}
_QUANTIZE = {"QuantizeLinear": "quantize", "DynamicQuantizeLinear": "quantize",
             "DequantizeLinear": "dequantize"}
_FLOAT_OUT = {"DequantizeLinear", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}


@dataclass(frozen=True)
class ONNXOp:
    """One node of the optimized graph; `index` is its position in execution order."""

    index: int
    name: str
    domain: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    output_dtypes: tuple[str, ...]


@dataclass(frozen=True)
class ONNXOps:
    """The optimized graph's ops, and its inputs and outputs (tensor names)."""

    ops: list[ONNXOp]
    inputs: list[str]
    outputs: list[str]

    @property
    def is_quantized(self) -> bool:
        """True when integer activations flow between ops (static int8, QAT).

        Dynamic quantization quantizes each op's input on the fly and leaves its
        activations float between ops, so it is not (as for LiteRT files).
        """
        return any(op.kind in ("int8", "int16") and set(op.output_dtypes) & (_INT8 | _INT16)
                   for op in self.ops)

    def float_ops_between_io(self) -> list[ONNXOp]:
        """Float ops on a path from the input boundary to the output boundary.

        The boundary is the QuantizeLinear reading a graph input and the
        DequantizeLinear writing a graph output (else the tensor itself), as in
        `kmot.export.ModelInspection.float_ops_between_io`.
        """
        starts: set[str] = set()
        ends: set[str] = set()
        for name in self.inputs:
            starts |= {o for op in self.ops if op.kind == "quantize" and name in op.inputs
                       for o in op.outputs} or {name}
        for name in self.outputs:
            ends |= {op.inputs[0] for op in self.ops if op.kind == "dequantize"
                     and name in op.outputs} or {name}
        after, reached = set(), set(starts)
        for op in self.ops:  # execution order is topological
            if reached & set(op.inputs):
                after.add(op.index)
                reached |= set(op.outputs)
        before, needed = set(), set(ends)
        for op in reversed(self.ops):
            if needed & set(op.outputs):
                before.add(op.index)
                needed |= set(op.inputs)
        return [op for op in self.ops if op.kind == "float" and op.index in after & before]


def _np_name(elem_type: int) -> str:
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(elem_type).name


def _output_types(node, types: dict[str, str]) -> list[str]:
    inputs = [types.get(i, "") for i in node.input]
    first = next((t for t in inputs if t), "float32")
    op = node.op_type
    attrs = {a.name: a for a in node.attribute}
    if op == "QuantizeLinear":
        if "output_dtype" in attrs and attrs["output_dtype"].i:
            return [_np_name(attrs["output_dtype"].i)]
        return [inputs[2] if len(inputs) > 2 and inputs[2] else "uint8"]
    if op in _FLOAT_OUT:
        return ["float32"] * len(node.output)
    if op == "DynamicQuantizeLinear":
        return ["uint8", "float32", "uint8"]
    if op in ("Shape", "Size", "NonZero"):
        return ["int64"]
    if op == "Cast":
        return [_np_name(attrs["to"].i)]
    if op in ("ConvInteger", "MatMulInteger"):
        return ["int32"]
    if op == "QGemm" and (len(node.input) < 8 or not node.input[7]):
        return ["float32"]  # no output scale: dequantized output
    if op.startswith("QLinear") or op == "QGemm":
        return [next((t for t in inputs if t in _INT8 | _INT16), "int8")] * len(node.output)
    return [first] * len(node.output)


def _kind(node, types: dict[str, str], constant: set[str]) -> str:
    if node.op_type in _QUANTIZE:
        return _QUANTIZE[node.op_type]
    if node.op_type in ("Shape", "Size"):
        return "other"
    dtypes = {types.get(t, "") for t in [*node.input, *node.output] if t and t not in constant}
    if dtypes & _FLOAT:
        return "float"
    if dtypes & _INT16:
        return "int16"
    return "int8" if dtypes & _INT8 else "other"


def runtime_ops(path: str | os.PathLike) -> ONNXOps:
    """The ops of ``path`` as ONNX Runtime's CPU provider runs them, with their kinds.

    Raises:
        ModelFileError: ONNX Runtime cannot load the file.
    """
    import onnx
    import onnxruntime as ort

    from kmot._tempdirs import temporary_directory
    from kmot.errors import ModelFileError

    with temporary_directory("onnx") as work:
        optimized = Path(work) / "optimized.onnx"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized)
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            raise ModelFileError(f"ONNX Runtime could not load {Path(path).name}. "
                                 f"Received: {type(err).__name__}: {err}") from err
        graph = onnx.load(str(optimized)).graph
    types: dict[str, str] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = _np_name(value.type.tensor_type.elem_type)
    constant = set()
    for init in graph.initializer:
        types[init.name] = _np_name(init.data_type)
        constant.add(init.name)
    ops = []
    for index, node in enumerate(graph.node):
        for name, dtype in zip(node.output, _output_types(node, types)):
            types.setdefault(name, dtype)
        if node.op_type == "Constant" or (node.input and all(i in constant or not i
                                                             for i in node.input)):
            constant.update(node.output)
        ops.append(ONNXOp(index=index, name=node.op_type, domain=node.domain,
                          kind=_kind(node, types, constant), inputs=tuple(node.input),
                          outputs=tuple(node.output),
                          output_dtypes=tuple(types.get(o, "") for o in node.output)))
    initializers = {i.name for i in graph.initializer}
    return ONNXOps(ops=ops, inputs=[i.name for i in graph.input if i.name not in initializers],
                   outputs=[o.name for o in graph.output])
