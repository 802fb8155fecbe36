#!/usr/bin/env python3
"""Reference outputs of the age model (faceres) for the Rust parity test: tests/fixtures/age_reference.json.

  python tools/models/age_fixtures.py --tfjs-node-modules DIR   # DIR holds @tensorflow/tfjs@4.22.0

For every lossless (PNG) fetched fixture with a face: the largest face's box (reference pipeline), the age crop
cut from it (the Rust crop, `src/faces/age.rs`, in float64), and the outputs of the *original* model
(human's faceres.json + .bin run by @tensorflow/tfjs, cpu backend) on that crop: the 100 age probabilities,
gender, and the expected age. PNGs only: JPEG decoders differ by a level or two per pixel, which would
blur a 1e-5 parity check. onnxruntime's outputs on the same crop are printed for comparison."""
import argparse
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
from pipeline import Pack, load_rgb, session  # noqa: E402

SIZE = 224
BOX_SCALE = 1.4


def taps(start, step, n, limit):
    """Weights matrix [n, limit]: output i covers source [start + i step, start + (i+1) step] (area average
    when step >= 1) or samples start + (i + 0.5) step - 0.5 bilinearly (step < 1); zero outside the image."""
    w = np.zeros((n, limit))
    for i in range(n):
        if step >= 1.0:
            lo, hi = start + i * step, start + (i + 1) * step
            for j in range(max(int(np.floor(lo)), 0), min(int(np.ceil(hi)), limit)):
                ov = min(j + 1.0, hi) - max(float(j), lo)
                if ov > 0:
                    w[i, j] = ov / step
        else:
            s = start + (i + 0.5) * step - 0.5
            j0 = int(np.floor(s)); f = s - j0
            if 0 <= j0 < limit:
                w[i, j0] += 1 - f
            if 0 <= j0 + 1 < limit:
                w[i, j0 + 1] += f
    return w


def age_crop(img, box):
    """Square of BOX_SCALE x the box's longer side around its centre, resampled to SIZE; float 0..255."""
    x1, y1, x2, y2 = [float(v) for v in box]
    side = BOX_SCALE * max(x2 - x1, y2 - y1)
    left, top = (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2
    step = side / SIZE
    wy = taps(top, step, SIZE, img.shape[0]); wx = taps(left, step, SIZE, img.shape[1])
    im = img.astype(np.float64)
    return np.stack([wy @ im[:, :, c] @ wx.T for c in range(3)], -1)


def expected_age(p):
    return float((np.asarray(p, np.float64) * np.arange(len(p))).sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=os.path.join(REPO, "tests", "fixtures", "fetched"))
    ap.add_argument("--models", default=os.path.join(REPO, "models"))
    ap.add_argument("--cache", default=sources.default_cache())
    ap.add_argument("--tfjs-node-modules", required=True)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "age_reference.json"))
    a = ap.parse_args()
    pack = Pack(os.path.join(a.models, "mobilefacenet"))
    names = sorted(n for n in os.listdir(a.images) if n.lower().endswith(".png"))
    items = []
    for n in names:
        img = load_rgb(os.path.join(a.images, n))
        faces = pack.detector.faces(img)
        if not faces:
            continue
        box = [round(float(v), 4) for v in faces[0]["box"]]  # stored rounded: crop from the stored numbers
        items.append((n, box, age_crop(img, box)))
    x = np.stack([c for _, _, c in items]).astype(np.float32)
    d = tempfile.mkdtemp(prefix="fc-age-")
    files = sources.extract(sources.HUMAN, a.cache)
    for member in ("package/models/faceres.json", "package/models/faceres.bin"):
        with open(os.path.join(d, os.path.basename(member)), "wb") as f:
            f.write(files[member])
    x.tofile(os.path.join(d, "in.f32"))
    env = dict(os.environ, TFJS_NODE_MODULES=a.tfjs_node_modules)
    r = subprocess.run(["node", os.path.join(HERE, "run_tfjs.js"), os.path.join(d, "faceres.json"),
                        os.path.join(d, "in.f32"), ",".join(map(str, x.shape)), os.path.join(d, "out"),
                        "age_pred/Softmax,gender_pred/Sigmoid"], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(r.stderr[-3000:])
    meta = json.load(open(os.path.join(d, "out.json")))
    age = np.fromfile(os.path.join(d, "out.0.f32"), np.float32).reshape(len(x), 100)
    gender = np.fromfile(os.path.join(d, "out.1.f32"), np.float32).reshape(len(x))
    sess = session(os.path.join(a.models, "mobilefacenet", pack.manifest["age"]["file"]))
    o_age, o_gender = sess.run(["age", "gender"], {"input": x})
    print("onnxruntime vs tfjs: age max abs diff", float(np.abs(o_age - age).max()),
          "gender", float(np.abs(o_gender[:, 0] - gender).max()))
    out = {"reference": f"@tensorflow/tfjs {meta['tfjs']} ({meta['backend']} backend) on npm @vladmandic/human@3.3.6 "
                        "models/faceres.json+bin", "size": SIZE, "box_scale": BOX_SCALE, "faces": {}}
    for k, (n, box, _) in enumerate(items):
        out["faces"][n] = {"box": box,
                           "age_probabilities": [float(f"{v:.9g}") for v in age[k]],
                           "gender": float(f"{gender[k]:.9g}"), "expected_age": round(expected_age(age[k]), 4)}
        print(f"{n:24s} expected age {expected_age(age[k]):5.1f} argmax {int(age[k].argmax())} gender {gender[k]:.3f}")
    with open(a.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
