"""Graph surgery applied at fetch time to make shipped ONNX models faster and more flexible.

Each fix is a pure function on an `onnx.ModelProto`. The derived model must compute the same
function as the original; tests/test_model_fixes.py checks that on real images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge.errors import ModelError
from edge.models.manifest import KNOWN_FIXES

Fix = Callable[[onnx.ModelProto], None]


def _dims(value: onnx.ValueInfoProto) -> Sequence[onnx.TensorShapeProto.Dimension]:
    return value.type.tensor_type.shape.dim  # type: ignore[no-any-return]


def _make_symbolic(dim: onnx.TensorShapeProto.Dimension, name: str) -> None:
    dim.ClearField("dim_value")
    dim.dim_param = name


def _real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in graph.initializer}
    return [v for v in graph.input if v.name not in inits]


def dynamic_hw(model: onnx.ModelProto) -> None:
    """Make the image input's H and W symbolic, and every output dim but batch and the last one.

    YuNet declares a fixed [1,3,640,640] input; its Reshapes use -1 and its Resizes use scales,
    so any multiple of 32 works once the declaration allows it. Its outputs are [1,N,k] with N
    depending on H and W. Stale intermediate shapes (value_info) are dropped.
    """
    graph = model.graph
    inputs = _real_inputs(graph)
    if len(inputs) != 1 or len(_dims(inputs[0])) != 4:
        raise ModelError("dynamic-hw expects exactly one NCHW image input")
    dims = _dims(inputs[0])
    _make_symbolic(dims[2], "height")
    _make_symbolic(dims[3], "width")
    for out in graph.output:
        out_dims = _dims(out)
        for i in range(1, len(out_dims) - 1):
            _make_symbolic(out_dims[i], f"{out.name}_dim{i}")
    del graph.value_info[:]


def weights_as_initializers(model: onnx.ModelProto) -> None:
    """Stop listing initializers as graph inputs, so ORT may treat weights as constants and fold them."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    keep = [v for v in graph.input if v.name not in inits]
    del graph.input[:]
    graph.input.extend(keep)


def dynamic_batch(model: onnx.ModelProto) -> None:
    """Make dim 0 of every real input and every output symbolic ("batch")."""
    graph = model.graph
    for value in [*_real_inputs(graph), *graph.output]:
        dims = _dims(value)
        if not dims:
            raise ModelError(f"dynamic-batch: {value.name} has no declared shape")
        _make_symbolic(dims[0], "batch")
    del graph.value_info[:]


def prelu_as_relu(model: onnx.ModelProto) -> None:
    """Rewrite PRelu(x, a) as Relu(x) + a·(x − Relu(x)), which ONNX Runtime runs about twice as fast.

    This is exact for any slope. max(x, a·x) would not be: it equals PRelu only for 0 ≤ a ≤ 1,
    and SFace's slopes range from about −0.81 to 1.12.
    """
    def expand(node: onnx.NodeProto, base: str) -> list[onnx.NodeProto]:
        x, slope = node.input[0], node.input[1]
        relu, neg, scaled = f"{base}_relu", f"{base}_neg", f"{base}_scaled"
        return [
            helper.make_node("Relu", [x], [relu], name=f"{base}_Relu"),
            helper.make_node("Sub", [x, relu], [neg], name=f"{base}_Sub"),
            helper.make_node("Mul", [neg, slope], [scaled], name=f"{base}_Mul"),
            helper.make_node("Add", [relu, scaled], [node.output[0]], name=f"{base}_Add"),
        ]

    _replace_prelus(model, "prelu-as-relu", "prelu", expand)


def _replace_prelus(model: onnx.ModelProto, fix: str, tag: str,
                    expand: Callable[[onnx.NodeProto, str], list[onnx.NodeProto]]) -> None:
    """Replace every PRelu node of the graph by `expand(node, unique_base_name)`, in place and order."""
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        nodes.extend(expand(node, f"{node.name or node.output[0]}__{tag}{count}"))
        count += 1
    if count == 0:
        raise ModelError(f"{fix}: the model has no PRelu node")
    del graph.node[:]
    graph.node.extend(nodes)


def prelu_as_dwconv(model: onnx.ModelProto) -> None:
    """Rewrite per-channel PRelu(x, a) as x + DWConv[1-a](Relu(DWConv[-1](x))), two 1x1 depthwise convolutions.

    Exact for any slope: for x >= 0 the second term is 0; for x < 0 it is (1 - a)(-x), so the sum is a·x.
    ONNX Runtime fuses the Relu and the Add into the convolutions and keeps the whole chain in its
    blocked (NCHWc) layout: on SFace 1.29x faster per face than `prelu-as-relu`, whose Sub and
    channel-broadcast Mul made it reorder the layout at every layer (docs/gate.md). It needs each
    slope as an initializer of C values ([C], [C,1] or [C,1,1]; run `weights-as-initializers` first).
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}

    def expand(node: onnx.NodeProto, base: str) -> list[onnx.NodeProto]:
        x, slope_name = node.input[0], node.input[1]
        if slope_name not in inits:
            raise ModelError(f"prelu-as-dwconv: the slope {slope_name!r} is not an initializer")
        slope = numpy_helper.to_array(inits[slope_name]).astype(np.float32)
        if slope.ndim == 0 or any(d != 1 for d in slope.shape[1:]):
            raise ModelError(f"prelu-as-dwconv: slope {slope_name!r} of shape {slope.shape} is not per channel")
        channels = int(slope.shape[0])
        neg_w, keep_w = f"{base}_wneg", f"{base}_w1a"
        graph.initializer.extend([
            numpy_helper.from_array(np.full((channels, 1, 1, 1), -1.0, np.float32), neg_w),
            numpy_helper.from_array((1.0 - slope.reshape(-1)).reshape(channels, 1, 1, 1), keep_w),
        ])
        negx, relu, scaled = f"{base}_negx", f"{base}_relu", f"{base}_scaled"
        return [
            helper.make_node("Conv", [x, neg_w], [negx], name=f"{base}_ConvNeg", group=channels,
                             kernel_shape=[1, 1]),
            helper.make_node("Relu", [negx], [relu], name=f"{base}_Relu"),
            helper.make_node("Conv", [relu, keep_w], [scaled], name=f"{base}_ConvScale", group=channels,
                             kernel_shape=[1, 1]),
            helper.make_node("Add", [x, scaled], [node.output[0]], name=f"{base}_Add"),
        ]

    _replace_prelus(model, "prelu-as-dwconv", "dwprelu", expand)
    used = {name for n in graph.node for name in n.input}
    kept = [i for i in graph.initializer if i.name in used]  # the old slopes are no longer read
    del graph.initializer[:]
    graph.initializer.extend(kept)


def slim_plate_recogniser(model: onnx.ModelProto) -> None:
    """PP-OCRv4 rec slimmed for plates (edge.plates.slim.slim_for_plates): affine blocks folded into
    the convolutions, hard-swish made fusable, the classifier cut to the blank and the plate
    characters, whose list (and the recipe) the derived file's metadata records."""
    from edge.plates.slim import slim_for_plates  # the plate alphabet lives with the plate code

    slim_for_plates(model)


FIXES: dict[str, Fix] = {
    "dynamic-hw": dynamic_hw,
    "weights-as-initializers": weights_as_initializers,
    "dynamic-batch": dynamic_batch,
    "prelu-as-relu": prelu_as_relu,
    "prelu-as-dwconv": prelu_as_dwconv,
    "slim-plate-recogniser": slim_plate_recogniser,
}
assert set(FIXES) == KNOWN_FIXES, "edge.models.manifest.KNOWN_FIXES and FIXES disagree"


def parse_model(data: bytes) -> onnx.ModelProto:
    """A serialised ONNX model, parsed (ModelError when it is not one)."""
    try:
        return onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"cannot parse ONNX model: {exc}") from exc


def checked_bytes(model: onnx.ModelProto, what: str) -> bytes:
    """`model` serialised once the ONNX checker accepts it (ModelError naming `what` otherwise)."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{what} is not a valid model: {exc}") from exc
    out: bytes = model.SerializeToString(deterministic=True)
    return out


def apply_fixes(data: bytes, fixes: Sequence[str]) -> bytes:
    """Apply the named fixes in order to a serialised model and return the checked, serialised result."""
    model = parse_model(data)
    for name in fixes:
        fix = FIXES.get(name)
        if fix is None:
            raise ModelError(f"unknown graph fix {name!r}")
        fix(model)
    return checked_bytes(model, f"the model after fixes {list(fixes)}")
