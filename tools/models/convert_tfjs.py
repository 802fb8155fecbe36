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

from onnx_edit import rename_io

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


def convert_blazeface(json_bytes, bin_bytes):
    tmp = tempfile.mkdtemp(prefix="fc-tfjs-")
    d = json.loads(json_bytes)
    assert add_targs(d) > 0
    # the weights manifest names the .bin relative to the json: keep the original file name
    bin_name = d["weightsManifest"][0]["paths"][0]
    with open(os.path.join(tmp, bin_name), "wb") as f:
        f.write(bin_bytes)
    jp = os.path.join(tmp, "blazeface.json")
    with open(jp, "w") as f:
        json.dump(d, f)
    raw = os.path.join(tmp, "raw.onnx")
    r = subprocess.run([sys.executable, os.path.join(HERE, "tf2onnx_shim.py"), "--tfjs", jp, "--output", raw,
                        "--opset", str(OPSET)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("tf2onnx --tfjs failed:\n" + r.stderr[-4000:])
    m = onnx.load(raw)
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
