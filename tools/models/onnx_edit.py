"""Small graph edits shared by the converters, and the common finishing step (canonical, checked bytes)."""
import onnx
from onnx import numpy_helper

from onnx_canon import canonicalize


def rename_io(g, mapping):
    """Rename graph inputs/outputs and every reference to them."""
    for old, new in mapping.items():
        for vi in list(g.input) + list(g.output):
            if vi.name == old:
                vi.name = new
        for n in g.node:
            for i, x in enumerate(n.input):
                if x == old:
                    n.input[i] = new
            for i, x in enumerate(n.output):
                if x == old:
                    n.output[i] = new


def set_dims(vi, dims):
    for d, v in zip(vi.type.tensor_type.shape.dim, dims):
        if isinstance(v, str):
            d.ClearField("dim_value")
            d.dim_param = v
        elif v is not None:
            d.ClearField("dim_param")
            d.dim_value = v


def drop_unused_initializers(g):
    used = {x for n in g.node for x in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


def init_array(g, name):
    for t in g.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None


def replace_init(g, name, arr):
    for i, t in enumerate(g.initializer):
        if t.name == name:
            g.initializer[i].CopyFrom(numpy_helper.from_array(arr, name))
            return
    raise KeyError(name)


def finish(m, path, doc, producer, canon=True):
    """Canonicalise (tf2onnx names/order are not stable between runs), infer shapes, check, save."""
    g = m.graph
    drop_unused_initializers(g)
    del g.value_info[:]
    m.doc_string = doc
    g.doc_string = ""
    if canon:
        m = canonicalize(m)
    m.producer_name = producer
    m = onnx.shape_inference.infer_shapes(m)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    return path
