"""Graph surgery that makes PP-OCRv4 rec cheaper to run for plates, same function.

Run by `edgegw models fetch` (the manifest's `slim-plate-recogniser` fix, `slim_for_plates`), which
writes the derived `ppocr_rec.edge.onnx`; the gateway only loads that file (edge.plates.slimmed) and
never imports onnx.

PP-OCRv4's backbone (PPLCNetV3) follows every convolution with a learnable affine block (a scalar
Mul and Add), writes hard-swish as four nodes (x·clip(x+3, 0, 6)/6) and follows the activation with
another scalar affine block. ONNX Runtime fuses none of these into its blocked (NCHWc) convolutions,
so every layer leaves the blocked layout, runs eight element-wise nodes and re-enters it. Its head
scores all 6,625 characters of the Chinese charset, of which a plate reader keeps 73.

`slim_recogniser` rewrites, each exactly in real arithmetic (float rounding moved the plate
classes' probabilities by 1.2e-4 at most on real crops; tests/test_plates_slim.py checks them and
the reads):
- Conv → Mul(s) → Add(b): the affine folded into the convolution (W·s, bias·s + b);
- Mul(s) → Add(b) → 1x1 Conv without padding: folded into that convolution (W·s, bias + b·ΣW);
  not before a padded convolution, whose zero border the affine would have shifted;
- Add(3) → Clip(0, 6) → Mul(x) → Div(6) as x·HardSigmoid(x) (alpha 1/6, beta 1/2), which ONNX
  Runtime fuses into the preceding convolution as its HardSwish activation;
- the classifier (MatMul + Add before the output Softmax) cut to the classes kept: the softmax
  over the kept logits equals the full softmax restricted to them and renormalised, which is what
  edge.plates.ctc.Vocabulary.restrict computes from the full output.

Measured on this CPU, one thread, a 160x48 line: 11.7 → 7.7 ms a call (docs/gate.md).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

from edge.errors import ModelError
from edge.models.fixes import checked_bytes
from edge.plates import slimmed
from edge.plates.ctc import Vocabulary
from edge.plates.recognisers import ppocr_charset


class _Graph:
    """The node list of a model with its constant values (Constant nodes and initializers)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        graph = model.graph
        self.nodes: list[onnx.NodeProto] = list(graph.node)
        self.outputs = {o.name for o in graph.output}
        self.const: dict[str, NDArray[np.float32]] = {}
        for node in self.nodes:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.const[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        for init in graph.initializer:
            self.const[init.name] = numpy_helper.to_array(init)
        self.new_inits: list[onnx.TensorProto] = []

    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        out: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                out[name].append(node)
        return out

    def scalar(self, name: str) -> float | None:
        value = self.const.get(name)
        return None if value is None or value.size != 1 else float(value.reshape(()))

    def only_consumer(self, name: str, cons: dict[str, list[onnx.NodeProto]], op: str) -> onnx.NodeProto | None:
        """The single node reading `name` when it is an `op` (and `name` is not a graph output)."""
        readers = cons.get(name, [])
        if name in self.outputs or len(readers) != 1 or readers[0].op_type != op:
            return None
        return readers[0]

    def add_const(self, name: str, value: NDArray[np.float32]) -> str:
        arr = np.ascontiguousarray(value.astype(np.float32))
        self.new_inits.append(numpy_helper.from_array(arr, name))
        self.const[name] = arr
        return name

    def conv_weights(self, conv: onnx.NodeProto) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
        """A Conv's constant weights and bias (zeros when it has none); None if not constant."""
        w = self.const.get(conv.input[1]) if len(conv.input) > 1 else None
        if w is None or w.ndim != 4:
            return None
        b = self.const.get(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0], np.float32)
        return (w.astype(np.float32), b.astype(np.float32)) if b is not None else None

    def finish(self) -> None:
        """Write the node list back, dropping constants nothing reads any more."""
        used = {name for node in self.nodes for name in node.input}
        graph = self.model.graph
        nodes = [n for n in self.nodes if n.op_type != "Constant" or n.output[0] in used]
        del graph.node[:]
        graph.node.extend(nodes)
        kept = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend([*kept, *(i for i in self.new_inits if i.name in used)])
        del graph.value_info[:]  # stale shapes of removed intermediates


def _other(node: onnx.NodeProto, name: str) -> str | None:
    """The other input of a two-input node that reads `name`."""
    if len(node.input) != 2:
        return None
    a, b = node.input
    return b if a == name else a if b == name else None


def fold_conv_affine(g: _Graph) -> int:
    """Conv → Mul(scalar) → Add(scalar) becomes one Conv; returns how many were folded."""
    cons = g.consumers()
    count = 0
    for conv in [n for n in g.nodes if n.op_type == "Conv"]:
        y = conv.output[0]
        mul = g.only_consumer(y, cons, "Mul")
        s = None if mul is None else g.scalar(_other(mul, y) or "")
        if mul is None or s is None:
            continue
        add = g.only_consumer(mul.output[0], cons, "Add")
        b = None if add is None else g.scalar(_other(add, mul.output[0]) or "")
        wb = g.conv_weights(conv)
        if add is None or b is None or wb is None:
            continue
        w, bias = wb
        base = conv.name or y
        new_w = g.add_const(f"{base}__slim_w", w * np.float32(s))
        new_b = g.add_const(f"{base}__slim_b", bias * np.float32(s) + np.float32(b))
        conv.input[1:] = [new_w, new_b]
        conv.output[0] = add.output[0]
        g.nodes.remove(mul)
        g.nodes.remove(add)
        count += 1
    return count


def _pointwise(g: _Graph, conv: onnx.NodeProto, x: str) -> bool:
    """Whether `conv` is an ungrouped 1x1 convolution without padding reading `x` as its data."""
    w = g.const.get(conv.input[1]) if len(conv.input) > 1 else None
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    return (w is not None and w.ndim == 4 and tuple(w.shape[2:]) == (1, 1) and conv.input[0] == x
            and int(attrs.get("group", 1)) == 1 and not any(attrs.get("pads", ()))
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))


def fold_affine_pointwise(g: _Graph) -> int:
    """Mul(scalar) → Add(scalar) read only by 1x1 unpadded Convs is folded into them."""
    cons = g.consumers()
    count = 0
    for mul in [n for n in g.nodes if n.op_type == "Mul"]:
        if len(mul.input) != 2:
            continue
        x = mul.input[0] if g.scalar(mul.input[1]) is not None else mul.input[1]
        s = g.scalar(_other(mul, x) or "")
        add = g.only_consumer(mul.output[0], cons, "Add")
        b = None if add is None else g.scalar(_other(add, mul.output[0]) or "")
        if s is None or add is None or b is None or x in g.const:
            continue
        u = add.output[0]
        readers = cons.get(u, [])
        if u in g.outputs or not readers or not all(r.op_type == "Conv" and _pointwise(g, r, u) for r in readers):
            continue
        for conv in readers:
            wb = g.conv_weights(conv)
            assert wb is not None  # _pointwise checked the weights are constant
            w, bias = wb
            base = conv.name or conv.output[0]
            new_w = g.add_const(f"{base}__slim_pw", w * np.float32(s))
            new_b = g.add_const(f"{base}__slim_pb", bias + np.float32(b) * w.sum(axis=(1, 2, 3)))
            conv.input[:] = [x, new_w, new_b]
        g.nodes.remove(mul)
        g.nodes.remove(add)
        count += 1
    return count


def hardswish_as_hardsigmoid(g: _Graph) -> int:
    """x·clip(x+3, 0, 6)/6 (Add, Clip, Mul, Div) becomes x·HardSigmoid(x); returns how many."""
    cons = g.consumers()
    count = 0
    for add in [n for n in g.nodes if n.op_type == "Add"]:
        if len(add.input) != 2:
            continue
        x = add.input[0] if g.scalar(add.input[1]) == 3.0 else add.input[1] if g.scalar(add.input[0]) == 3.0 else None
        if x is None:
            continue
        clip = g.only_consumer(add.output[0], cons, "Clip")
        if clip is None or len(clip.input) != 3 or g.scalar(clip.input[1]) != 0.0 or g.scalar(clip.input[2]) != 6.0:
            continue
        mul = g.only_consumer(clip.output[0], cons, "Mul")
        if mul is None or _other(mul, clip.output[0]) != x:
            continue
        div = g.only_consumer(mul.output[0], cons, "Div")
        if div is None or div.input[0] != mul.output[0] or g.scalar(div.input[1]) != 6.0:
            continue
        at = g.nodes.index(add)
        for node in (add, clip, mul, div):
            g.nodes.remove(node)
        base = add.name or add.output[0]
        gate = f"{base}__hsig"
        g.nodes[at:at] = [
            helper.make_node("HardSigmoid", [x], [gate], name=gate, alpha=1.0 / 6.0, beta=0.5),
            helper.make_node("Mul", [x, gate], [div.output[0]], name=f"{base}__hswish"),
        ]
        count += 1
    return count


def keep_classes(g: _Graph, keep: Sequence[int]) -> None:
    """Cut the classifier before the output Softmax (MatMul by W [D, C], Add b [C]) to `keep`."""
    graph = g.model.graph
    if len(graph.output) != 1:
        raise ModelError("keep_classes expects one output")
    producer = {o: n for n in g.nodes for o in n.output}
    soft = producer.get(graph.output[0].name)
    add = producer.get(soft.input[0]) if soft is not None and soft.op_type == "Softmax" else None
    matmul = None
    bias_name = None
    if add is not None and add.op_type == "Add":
        for a, b in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
            p = producer.get(a)
            if p is not None and p.op_type == "MatMul" and b in g.const:
                matmul, bias_name = p, b
    if matmul is None or bias_name is None or matmul.input[1] not in g.const:
        raise ModelError("keep_classes: no MatMul + Add + Softmax classifier at the output")
    w, b = g.const[matmul.input[1]], g.const[bias_name]
    idx = np.asarray(keep, dtype=np.intp)
    if w.ndim != 2 or b.shape != (w.shape[1],) or idx.size == 0 or idx.min() < 0 or idx.max() >= w.shape[1]:
        raise ModelError("keep_classes: classes out of range of the classifier")
    assert soft is not None and add is not None  # found above
    # An explicit last axis: before opset 13 the default (1) flattens [B, T, C] over T·C.
    axis = {a.name: helper.get_attribute_value(a) for a in soft.attribute}.get("axis")
    if axis not in (-1, 2):
        raise ModelError("keep_classes: the softmax is not over the classes' axis")
    matmul.input[1] = g.add_const(f"{matmul.input[1]}__kept", w[:, idx])
    for k, name in enumerate(add.input):
        if name == bias_name:
            add.input[k] = g.add_const(f"{bias_name}__kept", b[idx])
    dims = graph.output[0].type.tensor_type.shape.dim
    if dims:
        dims[len(dims) - 1].ClearField("dim_param")
        dims[len(dims) - 1].dim_value = int(idx.size)


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The model's custom metadata (PP-OCR keeps its character list under `character`)."""
    return {p.key: p.value for p in model.metadata_props}


def slim_graph(model: onnx.ModelProto, keep: Sequence[int] | None = None) -> dict[str, int]:
    """Rewrite the PP-OCR rec model as the module says, in place (`keep`: the classes to keep, in
    order, None keeps all); returns how many of each rewrite were made."""
    g = _Graph(model)
    done: Counter[str] = Counter()
    done["conv_affine"] = fold_conv_affine(g)
    done["affine_pointwise"] = fold_affine_pointwise(g)
    done["hardswish"] = hardswish_as_hardsigmoid(g)
    if keep is not None:
        keep_classes(g, keep)
        done["classes"] = len(keep)
    g.finish()
    return dict(done)


def slim_recogniser(model: onnx.ModelProto, keep: Sequence[int] | None = None) -> tuple[bytes, dict[str, int]]:
    """`slim_graph`, then the model serialised once the checker accepts it."""
    done = slim_graph(model, keep)
    return checked_bytes(model, "the slimmed recogniser"), done


def slim_for_plates(model: onnx.ModelProto) -> dict[str, int]:
    """The `slim-plate-recogniser` fix (run by `edgegw models fetch`): `slim_graph` keeping the blank
    and the plate characters of the model's charset (edge.plates.ctc.Vocabulary), with that class
    list and the recipe written into the model's metadata (edge.plates.slimmed), in place."""
    full = ppocr_charset(metadata(model))
    keep = Vocabulary(full).model_index.tolist()
    done = slim_graph(model, keep)
    props = {**metadata(model), slimmed.KEPT_KEY: slimmed.encode_classes([full[i] for i in keep]),
             slimmed.RECIPE_KEY: slimmed.recipe()}
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        model.metadata_props.add(key=key, value=value)
    return done
