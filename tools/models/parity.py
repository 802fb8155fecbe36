#!/usr/bin/env python3
"""Numeric parity of each committed ONNX model with its original runtime, on real faces.

  python tools/models/parity.py [--eval ../shared/eval] [--tfjs-node-modules DIR] [--out results.json]

- MobileFaceNet (models/mobilefacenet/mobilefacenet.onnx) vs the TF Lite interpreter running the pinned
  MobileFaceNet.tflite, on ArcFace-aligned 112 crops of every face the reference pipeline finds.
- BlazeFace (blazeface.onnx) vs @tensorflow/tfjs (cpu backend, Node) running the pinned blazeface.json+bin,
  on the letterboxed 256 inputs of the images; compared raw and as decoded detections.
  Needs `npm install @tensorflow/tfjs@4.22.0` in some folder (--tfjs-node-modules); skipped without it.
- dlib ResNet (models/dlib/dlib_resnet.onnx) vs dlib's own face_recognition_model_v1.compute_face_descriptor
  (PyPI dlib-bin) on the 150-px chips the pipeline cuts; skipped when dlib is not installed.
The evaluation images are read in place (never copied)."""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import sources  # noqa: E402
from pipeline import Pack, load_rgb  # noqa: E402

TFLITE = "package/android/src/main/assets/MobileFaceNet.tflite"


def stat(ref, got):
    ref = np.asarray(ref, np.float64); got = np.asarray(got, np.float64)
    return dict(n=int(ref.shape[0]) if ref.ndim else 1, max_abs_diff=float(np.abs(ref - got).max()),
                mean_abs_diff=float(np.abs(ref - got).mean()), max_abs_ref=float(np.abs(ref).max()))


def cos_rows(a, b):
    a = np.asarray(a, np.float64).reshape(len(a), -1); b = np.asarray(b, np.float64).reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def eval_images(root):
    pats = ["deepface/*.jpg", "fr/*.jpg", "fr/*.png", "fr/*.jpeg", "calib/images/*/*/*"]
    files = sorted({f for p in pats for f in glob.glob(os.path.join(root, p))})
    return [f for f in files if f.lower().endswith((".jpg", ".jpeg", ".png"))]


def mobilefacenet_parity(pack, imgs, faces, cache):
    import tensorflow as tf
    crops = np.stack([pack.embedder.crop(imgs[i], f) for i, f in faces]).astype(np.float32)
    x = (crops - 127.5) / 128.0
    it = tf.lite.Interpreter(model_content=sources.extract(sources.EXPO, cache)[TFLITE], num_threads=1)
    it.allocate_tensors()
    xs = x if len(x) % 2 == 0 else np.concatenate([x, x[:1]])  # the tflite graph is frozen at batch 2
    ref = []
    for k in range(0, len(xs), 2):
        it.set_tensor(it.get_input_details()[0]["index"], xs[k:k + 2])
        it.invoke()
        ref.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
    ref = np.concatenate(ref)[:len(x)]
    got = pack.embedder.sess.run(["embedding"], {"input": x})[0]
    s = stat(ref, got)
    s["min_cosine"] = float(cos_rows(ref, got).min())
    s["reference"] = f"tf.lite.Interpreter (tensorflow {tf.__version__})"
    return s


def blazeface_parity(pack, imgs, cache, node_modules):
    det = pack.detector
    files = sources.extract(sources.HUMAN, cache)
    d = tempfile.mkdtemp(prefix="fc-parity-")
    for member, data in files.items():
        with open(os.path.join(d, os.path.basename(member)), "wb") as f:
            f.write(data)
    pre = [det.preprocess(im) for im in imgs]
    x = np.concatenate([p[0] for p in pre]).astype(np.float32)
    x.tofile(os.path.join(d, "in.f32"))
    env = dict(os.environ, TFJS_NODE_MODULES=node_modules)
    r = subprocess.run(["node", os.path.join(HERE, "run_tfjs.js"), os.path.join(d, "blazeface.json"),
                        os.path.join(d, "in.f32"), ",".join(map(str, x.shape)), os.path.join(d, "out"),
                        "Identity,Identity_1,Identity_2,Identity_3"], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    meta = json.load(open(os.path.join(d, "out.json")))
    outs = []
    for k, name in enumerate(["Identity", "Identity_1", "Identity_2", "Identity_3"]):
        shp = meta["shapes"][name]
        outs.append(np.fromfile(os.path.join(d, f"out.{k}.f32"), np.float32).reshape([len(x)] + shp[1:]))
    c512, c384, r512, r384 = outs
    r_reg = np.concatenate([r512, r384], 1); r_cls = np.concatenate([c512, c384], 1)
    g = [det.infer(x[k:k + 1]) for k in range(len(x))]
    g_reg = np.stack([a for a, _ in g]); g_cls = np.stack([b for _, b in g])[..., None]
    res = {"reference": f"@tensorflow/tfjs {meta['tfjs']} ({meta['backend']} backend, Node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()})"}
    res["regressors_all_anchors"] = stat(r_reg, g_reg)
    res["logits_all_anchors"] = stat(r_cls, g_cls)
    live = 1 / (1 + np.exp(-np.clip(r_cls[..., 0], -80, 80))) >= 0.5
    res["regressors_on_anchors_score_ge_0.5"] = dict(stat(r_reg[live], g_reg[live]), n=int(live.sum()))
    # decoded detections (image pixels), same decode + NMS on both sides
    diffs, n_ref, n_got = [], 0, 0
    for k, (_, meta_k) in enumerate(pre):
        fr = det.postprocess(r_reg[k], r_cls[k, :, 0], meta_k)
        fg = det.postprocess(g_reg[k], g_cls[k, :, 0], meta_k)
        n_ref += len(fr); n_got += len(fg)
        if len(fr) == len(fg):
            for a, b in zip(fr, fg):
                diffs.append(max(np.abs(a["box"] - b["box"]).max(), np.abs(a["kps"] - b["kps"]).max()))
    res["detections"] = dict(images=len(imgs), faces_reference=n_ref, faces_onnx=n_got,
                             max_abs_diff_px=float(max(diffs)) if diffs else None)
    return res


def dlib_parity(pack, imgs, faces, cache):
    import dlib
    member = next(iter(sources.DLIB_MODELS["files"]))
    dat = os.path.join(tempfile.mkdtemp(prefix="fc-dlib-"), "dlib_face_recognition_resnet_model_v1.dat")
    with open(dat, "wb") as f:
        f.write(sources.extract(sources.DLIB_MODELS, cache)[member])
    rec = dlib.face_recognition_model_v1(dat)
    chips = np.stack([pack.embedder.crop(imgs[i], f) for i, f in faces])
    ref = np.array([np.array(rec.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips], np.float32)
    got = pack.embedder.sess.run(["embedding"], {"input": chips.astype(np.float32)})[0]
    s = stat(ref, got)
    s["min_cosine"] = float(cos_rows(ref, got).min())
    s["mean_ref_norm"] = float(np.linalg.norm(ref, axis=1).mean())
    s["reference"] = f"dlib {dlib.__version__} face_recognition_model_v1.compute_face_descriptor(chip)"
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval", default=os.path.join(os.path.dirname(REPO), "shared", "eval"))
    ap.add_argument("--models", default=os.path.join(REPO, "models"))
    ap.add_argument("--cache", default=sources.default_cache())
    ap.add_argument("--tfjs-node-modules", default=os.environ.get("TFJS_NODE_MODULES"))
    ap.add_argument("--max-images", type=int, default=120)
    ap.add_argument("--out")
    a = ap.parse_args()

    paths = eval_images(a.eval)
    # spread the sample over all sources
    step = max(1, len(paths) // a.max_images)
    paths = paths[::step][:a.max_images]
    imgs = [load_rgb(p) for p in paths]
    results = {"images": len(imgs), "eval_root": a.eval}

    mfn = Pack(os.path.join(a.models, "mobilefacenet"))
    faces = [(i, f) for i, im in enumerate(imgs) for f in mfn.detector.faces(im)]
    results["faces"] = len(faces)
    results["mobilefacenet"] = mobilefacenet_parity(mfn, imgs, faces, a.cache)
    if a.tfjs_node_modules:
        results["blazeface"] = blazeface_parity(mfn, imgs, a.cache, a.tfjs_node_modules)
    else:
        results["blazeface"] = "skipped: no --tfjs-node-modules (npm install @tensorflow/tfjs@4.22.0)"
    try:
        import dlib  # noqa: F401
    except ImportError:
        results["dlib_resnet"] = "skipped: dlib not installed (pip install dlib-bin)"
    else:
        results["dlib_resnet"] = dlib_parity(Pack(os.path.join(a.models, "dlib")), imgs, faces, a.cache)
    import onnxruntime
    results["onnxruntime"] = onnxruntime.__version__
    print(json.dumps(results, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
