"""dlib_face_recognition_resnet_model_v1.dat (dlib DNN serialisation) -> ONNX, in pure Python (numpy + onnx).

The parser follows dlib's serialisation code (serialize.h, dnn/core.h, layers.h, input.h, loss.h) and
the network type declared in dlib/examples/dnn_face_recognition_ex.cpp:

  anet_type = loss_metric<fc_no_bias<128,avg_pool_everything<
                alevel0<alevel1<alevel2<alevel3<alevel4<
                max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,
                input_rgb_image_sized<150>>>>>>>>>>>>>
  ares<N>      = relu<add_prev1<affine<con<N,3,3,1,1,relu<affine<con<N,3,3,1,1,tag1<SUB>>>>>>>>
  ares_down<N> = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<
                     affine<con<N,3,3,1,1,relu<affine<con<N,3,3,2,2,tag1<SUB>>>>>>>>>>>>
  alevel0 = ares_down<256>; alevel1 = ares<256>,ares<256>,ares_down<256>
  alevel2 = ares<128>,ares<128>,ares_down<128>
  alevel3 = ares<64>,ares<64>,ares<64>,ares_down<64>; alevel4 = ares<32> x3

Quirks a stock ResNet export gets wrong: stride-2 conv/pool layers have zero padding; add_prev adds
tensors of different shapes by zero-padding at the end of each dimension; affine = frozen BN (Mul+Add);
fc_no_bias weights are stored [in, out]. Everything is built in a fixed order, so the bytes are stable.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


# ----------------------------------------------------------------------------- reader
class Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.p = 0

    def byte(self):
        b = self.d[self.p]
        self.p += 1
        return b

    def read_int(self, signed=True):
        # dlib ser_helper::pack_int: control byte = nbytes (low nibble) | 0x80 if negative,
        # followed by nbytes little-endian magnitude bytes.
        ctrl = self.byte()
        if signed:
            neg = bool(ctrl & 0x80)
            n = ctrl & 0x0F
        else:
            neg = False
            n = ctrl & 0x8F
        if n == 0 or n > 8:
            raise ValueError(f"bad int control byte 0x{ctrl:02x} at {self.p-1}")
        v = int.from_bytes(self.d[self.p:self.p + n], "little")
        self.p += n
        return -v if neg else v

    def read_uint(self):
        return self.read_int(signed=False)

    def read_bool(self):
        c = self.byte()
        if c == ord("1"):
            return True
        if c == ord("0"):
            return False
        raise ValueError(f"bad bool byte {c} at {self.p-1}")

    def read_float(self):
        # dlib float_details: int64 mantissa, int16 exponent; value = m * 2^e
        if (self.d[self.p] & 0x70) != 0:
            raise ValueError("old ASCII float format not supported")
        m = self.read_int()
        e = self.read_int()
        if e == 32000:
            return float("inf")
        if e == 32001:
            return float("-inf")
        if e == 32002:
            return float("nan")
        return float(np.ldexp(np.float64(m), e))

    def read_string(self):
        n = self.read_uint()
        s = self.d[self.p:self.p + n].decode("latin1")
        self.p += n
        return s

    def read_tensor(self):
        v = self.read_int()
        if v != 2:
            raise ValueError(f"tensor version {v} at {self.p}")
        ns, k, nr, nc = (self.read_int() for _ in range(4))
        cnt = ns * k * nr * nc
        arr = np.frombuffer(self.d, dtype="<f4", count=cnt, offset=self.p).copy()
        self.p += 4 * cnt
        return arr.reshape(ns, k, nr, nc)

    def read_alias_tensor(self):
        v = self.read_int()
        if v != 1:
            raise ValueError(f"alias_tensor version {v} at {self.p}")
        return tuple(self.read_int() for _ in range(4))


# ------------------------------------------------------------------- network layout
def build_layout():
    """Layer kinds from the OUTERMOST (just below the loss) to the innermost."""
    L = []

    def ares(n):
        L.extend([("relu",), ("add_prev", 1), ("affine",), ("con", n, 3, 1), ("relu",),
                  ("affine",), ("con", n, 3, 1), ("tag", 1)])

    def ares_down(n):
        L.extend([("relu",), ("add_prev", 2), ("avg_pool", 2, 2), ("skip", 1), ("tag", 2),
                  ("affine",), ("con", n, 3, 1), ("relu",), ("affine",), ("con", n, 3, 2),
                  ("tag", 1)])

    L.append(("fc_no_bias", 128))
    L.append(("avg_pool_everything",))
    ares_down(256)                                   # alevel0
    ares(256); ares(256); ares_down(256)             # alevel1
    ares(128); ares(128); ares_down(128)             # alevel2
    ares(64); ares(64); ares(64); ares_down(64)      # alevel3
    ares(32); ares(32); ares(32)                     # alevel4
    L.extend([("max_pool", 3, 2), ("relu",), ("affine",), ("con", 32, 7, 2)])
    return L


# ------------------------------------------------------------------ layer parsers
def parse_details(r: Reader, kind):
    ver = r.read_string()
    out = {"kind": kind[0], "ver": ver}
    if kind[0] == "con":
        if ver not in ("con_4", "con_5", "con_6"):
            raise ValueError(f"unexpected {ver}")
        params = r.read_tensor()
        out["num_filters"] = r.read_int()
        out["nr"] = r.read_int(); out["nc"] = r.read_int()
        out["stride_y"] = r.read_int(); out["stride_x"] = r.read_int()
        out["pad_y"] = r.read_int(); out["pad_x"] = r.read_int()
        filt = r.read_alias_tensor()
        bias = r.read_alias_tensor()
        for _ in range(4):
            r.read_float()  # lr/wd multipliers
        use_bias = True
        if ver in ("con_5", "con_6"):
            use_bias = r.read_bool()
        if ver == "con_6":
            out["use_relu"] = r.read_bool()
        flat = params.reshape(-1)
        nf = int(np.prod(filt))
        out["W"] = flat[:nf].reshape(filt)
        if use_bias:
            out["B"] = flat[nf:nf + int(np.prod(bias))].reshape(-1)
        else:
            out["B"] = np.zeros(filt[0], np.float32)
        assert filt[0] == kind[1] and filt[2] == kind[2] and out["stride_y"] == kind[3], (filt, kind)
    elif kind[0] == "affine":
        if ver in ("bn_con2",):
            params = r.read_tensor()
            g = r.read_alias_tensor(); b = r.read_alias_tensor()
            r.read_tensor(); r.read_tensor()  # means, invstds
            rm = r.read_tensor().reshape(-1); rv = r.read_tensor().reshape(-1)
            r.read_int(); r.read_int()  # num_updates, running_stats_window_size (unsigned long)
            for _ in range(4):
                r.read_float()
            eps = r.read_float()
            flat = params.reshape(-1); n = int(np.prod(g))
            gamma, beta = flat[:n], flat[n:2 * n]
            gg = gamma / np.sqrt(rv + eps)
            out["gamma"] = gg.astype(np.float32)
            out["beta"] = (beta - gg * rm).astype(np.float32)
            out["from_bn"] = True
        elif ver in ("affine_", "affine_2"):
            params = r.read_tensor()
            g = r.read_alias_tensor(); b = r.read_alias_tensor()
            mode = r.read_int()
            if ver == "affine_2":
                out["disabled"] = r.read_bool()
            flat = params.reshape(-1); n = int(np.prod(g))
            out["gamma"] = flat[:n].copy(); out["beta"] = flat[n:2 * n].copy()
            out["mode"] = mode
            assert mode == 0, "expected CONV_MODE affine"
        else:
            raise ValueError(f"unexpected affine version {ver}")
    elif kind[0] == "relu":
        if ver == "relu_2":
            out["disabled"] = r.read_bool()
        elif ver != "relu_":
            raise ValueError(ver)
    elif kind[0] == "add_prev":
        if ver != "add_prev_":
            raise ValueError(ver)
    elif kind[0] in ("max_pool", "avg_pool", "avg_pool_everything"):
        if ver not in ("max_pool_2", "avg_pool_2"):
            raise ValueError(ver)
        assert ver.startswith("max") == (kind[0] == "max_pool")
        out["nr"] = r.read_int(); out["nc"] = r.read_int()
        out["stride_y"] = r.read_int(); out["stride_x"] = r.read_int()
        out["pad_y"] = r.read_int(); out["pad_x"] = r.read_int()
    elif kind[0] == "fc_no_bias":
        if ver not in ("fc_2", "fc_3"):
            raise ValueError(ver)
        nout = r.read_int(); nin = r.read_int()
        params = r.read_tensor()
        w = r.read_alias_tensor(); b = r.read_alias_tensor()
        bmode = r.read_int()
        for _ in range(4):
            r.read_float()
        if ver == "fc_3":
            r.read_bool()
        assert bmode == 1, "expected FC_NO_BIAS"
        out["W"] = params.reshape(-1)[:int(np.prod(w))].reshape(w[0], w[1])  # (num_inputs, num_outputs)
        out["nout"] = nout; out["nin"] = nin
    else:
        raise ValueError(kind)
    return out


def parse_input_layer(r: Reader):
    ver = r.read_string()
    assert ver == "input_rgb_image_sized", ver
    avg = [r.read_float() for _ in range(3)]
    nr = r.read_uint(); nc = r.read_uint()
    return {"kind": "input", "avg_rgb": avg, "nr": nr, "nc": nc}


def parse_network(data: bytes):
    r = Reader(data)
    layout = build_layout()
    v = r.read_int()
    assert v == 1, f"add_loss_layer version {v}"
    lver = r.read_string()
    loss = {"ver": lver}
    if lver == "loss_metric_2":
        loss["margin"] = r.read_float(); loss["dist_thresh"] = r.read_float()
    elif lver != "loss_metric_":
        raise ValueError(lver)
    layers_inner_to_outer = []

    def parse(i):
        kind = layout[i]
        if kind[0] in ("tag", "skip"):
            v = r.read_int()
            assert v == 1, f"{kind} version {v}"
            parse(i + 1)
            layers_inner_to_outer.append({"kind": kind[0], "id": kind[1]})
            return
        v = r.read_int()
        if i == len(layout) - 1:  # add_layer directly on top of the input layer
            assert 2 <= v <= 3, v
            inp = parse_input_layer(r)
            layers_inner_to_outer.append(inp)
            det = parse_details(r, kind)
            for _ in range(3):
                r.read_bool()
            for _ in range(3):
                r.read_tensor()  # x_grad, cached_output, grad_final
            if v >= 3:
                r.read_uint()  # sample_expansion_factor
        else:
            assert 1 <= v <= 2, f"add_layer version {v} at layer {i} {kind}"
            parse(i + 1)
            det = parse_details(r, kind)
            for _ in range(3):
                r.read_bool()
            for _ in range(2):
                r.read_tensor()  # x_grad, cached_output
            if v == 2:
                r.read_tensor()  # params_grad
        if kind[0] == "add_prev":
            det["id"] = kind[1]
        layers_inner_to_outer.append(det)

    parse(0)
    if r.p != len(data):
        raise ValueError(f"trailing bytes: parsed {r.p} of {len(data)}")
    return loss, layers_inner_to_outer


# -------------------------------------------------------------------- ONNX builder
def out_size(n, k, s, p):
    return 1 + (n + 2 * p - k) // s


def build_onnx(layers, opset=17, with_preproc=False):
    nodes, inits = [], []
    cnt = [0]

    def name(prefix):
        cnt[0] += 1
        return f"{prefix}_{cnt[0]}"

    def const(arr, prefix):
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n))
        return n

    inp = layers[0]
    assert inp["kind"] == "input"
    H, W = inp["nr"], inp["nc"]
    graph_inputs = []
    if with_preproc:
        # raw RGB 0..255 NHWC [N,150,150,3] -> NCHW, (x - mean) / 256 as dlib's input layer does
        graph_inputs.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", H, W, 3]))
        t = name("nchw")
        nodes.append(helper.make_node("Transpose", ["input"], [t], perm=[0, 3, 1, 2]))
        mean = np.array(inp["avg_rgb"], np.float32).reshape(1, 3, 1, 1)
        s = name("sub")
        nodes.append(helper.make_node("Sub", [t, const(mean, "mean")], [s]))
        cur = name("scaled")
        nodes.append(helper.make_node("Mul", [s, const(np.array(1 / 256.0, np.float32), "scale")], [cur]))
    else:
        graph_inputs.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, H, W]))
        cur = "input"
    shape = [3, H, W]  # C,H,W  (tracked statically; input size is fixed)
    tags = {}

    for L in layers[1:]:
        k = L["kind"]
        if k == "con":
            w = L["W"].astype(np.float32); b = L["B"].astype(np.float32)
            o = name("conv")
            nodes.append(helper.make_node(
                "Conv", [cur, const(w, "W"), const(b, "B")], [o],
                kernel_shape=[L["nr"], L["nc"]], strides=[L["stride_y"], L["stride_x"]],
                pads=[L["pad_y"], L["pad_x"], L["pad_y"], L["pad_x"]]))
            cur = o
            shape = [w.shape[0], out_size(shape[1], L["nr"], L["stride_y"], L["pad_y"]),
                     out_size(shape[2], L["nc"], L["stride_x"], L["pad_x"])]
            if L.get("use_relu"):
                o = name("relu"); nodes.append(helper.make_node("Relu", [cur], [o])); cur = o
        elif k == "affine":
            if L.get("disabled"):
                continue
            g = L["gamma"].reshape(1, -1, 1, 1).astype(np.float32)
            bb = L["beta"].reshape(1, -1, 1, 1).astype(np.float32)
            m = name("affmul"); nodes.append(helper.make_node("Mul", [cur, const(g, "gamma")], [m]))
            o = name("affadd"); nodes.append(helper.make_node("Add", [m, const(bb, "beta")], [o]))
            cur = o
        elif k == "relu":
            if L.get("disabled"):
                continue
            o = name("relu"); nodes.append(helper.make_node("Relu", [cur], [o])); cur = o
        elif k == "tag":
            tags[L["id"]] = (cur, list(shape))
        elif k == "skip":
            cur, shape = tags[L["id"]][0], list(tags[L["id"]][1])
        elif k in ("max_pool", "avg_pool"):
            op = "MaxPool" if k == "max_pool" else "AveragePool"
            o = name(op.lower())
            attrs = dict(kernel_shape=[L["nr"], L["nc"]], strides=[L["stride_y"], L["stride_x"]],
                         pads=[L["pad_y"], L["pad_x"], L["pad_y"], L["pad_x"]])
            if op == "AveragePool":
                attrs["count_include_pad"] = 1
            nodes.append(helper.make_node(op, [cur], [o], **attrs))
            cur = o
            shape = [shape[0], out_size(shape[1], L["nr"], L["stride_y"], L["pad_y"]),
                     out_size(shape[2], L["nc"], L["stride_x"], L["pad_x"])]
        elif k == "avg_pool_everything":
            assert L["nr"] == 0 and L["nc"] == 0
            o = name("gap"); nodes.append(helper.make_node("GlobalAveragePool", [cur], [o])); cur = o
            shape = [shape[0], 1, 1]
        elif k == "add_prev":
            # dlib add_prev: output has max() dims of both inputs; missing entries are 0
            # (tt::add zero-pads at the END of every dim).
            t, tshape = tags[L["id"]]
            tgt = [max(a, b) for a, b in zip(shape, tshape)]
            ins = []
            for nm, sh in ((cur, shape), (t, tshape)):
                if sh != tgt:
                    pads = np.array([0, 0, 0, 0, 0, tgt[0] - sh[0], tgt[1] - sh[1], tgt[2] - sh[2]], np.int64)
                    pn = name("pad")
                    nodes.append(helper.make_node("Pad", [nm, const(pads, "pads")], [pn], mode="constant"))
                    ins.append(pn)
                else:
                    ins.append(nm)
            o = name("add"); nodes.append(helper.make_node("Add", ins, [o])); cur = o
            shape = tgt
        elif k == "fc_no_bias":
            f = name("flat"); nodes.append(helper.make_node("Flatten", [cur], [f], axis=1))
            nodes.append(helper.make_node("MatMul", [f, const(L["W"].astype(np.float32), "fcW")], ["embedding"]))
            cur = "embedding"
            shape = [L["nout"]]
        else:
            raise ValueError(k)

    assert cur == "embedding"
    graph = helper.make_graph(nodes, "dlib_face_recognition_resnet_model_v1", graph_inputs,
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 128])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="facecompare tools/models/dlib_dat.py")
    model.ir_version = 8
    model.doc_string = ("dlib_face_recognition_resnet_model_v1 (CC0, Davis King) converted from dlib .dat. "
                        + ("Input: float32 [N,150,150,3] RGB 0..255 (NHWC), mean/scale folded in. "
                           if with_preproc else
                           "Input: float32 [N,3,150,150] RGB, (pixel - [122.782,117.001,104.298])/256. ")
                        + "Output: 128-d raw (unnormalised) descriptor; dlib uses Euclidean distance < 0.6.")
    return model
