"""BlazeFace TFJS graph model (npm @vladmandic/human@3.3.6 models/blazeface.json+bin) -> ONNX.

human's JSON lacks the `TArgs` attribute that TensorFlow's graph import needs on fused conv /
matmul nodes: added before tf2onnx runs. The four heads are concatenated into MediaPipe order:
regressors [1,896,16] (stride-16 anchors first, then stride-32), classificators [1,896,1] logits."""
import json
import os
import subprocess
import sys
import tempfile

import onnx
from onnx import helper

from onnx_edit import relu6_to_clip, rename_io, set_dims

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 13


def add_targs(d):
    n_fixed = 0
    for n in d["modelTopology"]["node"]:
        if n["op"] in ("_FusedConv2D", "_FusedDepthwiseConv2dNative", "_FusedMatMul") and "TArgs" not in n.get("attr", {}):
            t = n["attr"]["T"]["type"]
            k = int(n["attr"].get("num_args", {}).get("i", "0"))
            n["attr"]["TArgs"] = {"list": {"type": [t] * k}}
            n_fixed += 1
    return n_fixed


def tfjs_to_onnx(json_bytes, bin_bytes):
    tmp = tempfile.mkdtemp(prefix="fc-tfjs-")
    d = json.loads(json_bytes)
    assert add_targs(d) > 0
    # the weights manifest names the .bin relative to the json: keep the original file name
    bin_name = d["weightsManifest"][0]["paths"][0]
    with open(os.path.join(tmp, bin_name), "wb") as f:
        f.write(bin_bytes)
    jp = os.path.join(tmp, "model.json")
    with open(jp, "w") as f:
        json.dump(d, f)
    raw = os.path.join(tmp, "raw.onnx")
    r = subprocess.run([sys.executable, os.path.join(HERE, "tf2onnx_shim.py"), "--tfjs", jp, "--output", raw,
                        "--opset", str(OPSET)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("tf2onnx --tfjs failed:\n" + r.stderr[-4000:])
    return onnx.load(raw)


def convert_faceres(json_bytes, bin_bytes):
    """human's faceres (HSE-FaceRes MobileNet): input [N,224,224,3] raw 0..255 RGB; outputs renamed
    age [N,100] (softmax over one-year classes), gender [N,1] (sigmoid, > 0.5 male), descriptor [N,1024]."""
    m = tfjs_to_onnx(json_bytes, bin_bytes)
    g = m.graph
    names = {o.name for o in g.output}
    want = {"age_pred/Softmax:0": "age", "gender_pred/Sigmoid:0": "gender", "global_pooling/Mean": "descriptor"}
    assert set(want) <= names, names
    rename_io(g, dict(want, **{"input_1:0": "input"}))
    keep = [o for o in g.output if o.name in want.values()]
    order = {"age": 0, "gender": 1, "descriptor": 2}
    keep.sort(key=lambda o: order[o.name])
    keep = [o.__class__.FromString(o.SerializeToString()) for o in keep]
    del g.output[:]
    g.output.extend(keep)
    for vi in list(g.input) + list(g.output):  # tf2onnx names the batch dim from a run-dependent counter
        set_dims(vi, ["N"])
    assert relu6_to_clip(g) == 27
    return m


def convert_blazeface(json_bytes, bin_bytes):
    m = tfjs_to_onnx(json_bytes, bin_bytes)
    g = m.graph
    # heads: Identity:0 [1,512,1] Identity_1:0 [1,384,1] Identity_2:0 [1,512,16] Identity_3:0 [1,384,16]
    outs = {o.name for o in g.output}
    assert outs == {"Identity:0", "Identity_1:0", "Identity_2:0", "Identity_3:0"}, outs
    rename_io(g, {"input:0": "input"})
    g.node.append(helper.make_node("Concat", ["Identity_2:0", "Identity_3:0"], ["regressors"],
                                   name="concat_regressors", axis=1))
    g.node.append(helper.make_node("Concat", ["Identity:0", "Identity_1:0"], ["classificators"],
                                   name="concat_classificators", axis=1))
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("regressors", onnx.TensorProto.FLOAT, [1, 896, 16]),
                     helper.make_tensor_value_info("classificators", onnx.TensorProto.FLOAT, [1, 896, 1])])
    return m
