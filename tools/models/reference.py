#!/usr/bin/env python3
"""Reference outputs of the Python pipeline (tools/models/pipeline.py) for the Rust side to compare with.

  python tools/models/reference.py fixtures   # -> tests/fixtures/reference_embeddings.json
  python tools/models/reference.py pairs CSV  # cosine distribution of a pairs file (columns a,b,same)

fixtures: for every image in tests/fixtures/fetched (run scripts/fetch-fixtures.sh) and every pack under
models/, the largest face's box, 6 keypoints and L2-normalised embedding. Images without a face are left out.
Schema: {"<pack>": {"<file>": {"box": [x1,y1,x2,y2], "kps": [[x,y]*6], "embedding": [...]}}}"""
import argparse
import csv
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from pipeline import Pack, load_rgb  # noqa: E402

PACKS = ["mobilefacenet", "dlib"]
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def r(x, nd):
    return [round(float(v), nd) for v in x]


def fixtures(a):
    out = {}
    names = sorted(n for n in os.listdir(a.images) if n.lower().endswith(IMAGE_EXT))
    if not names:
        sys.exit(f"no images in {a.images}: run scripts/fetch-fixtures.sh first")
    imgs = {n: load_rgb(os.path.join(a.images, n)) for n in names}
    for p in PACKS:
        pack = Pack(os.path.join(a.models, p))
        out[p] = {}
        for n in names:
            got = pack.largest_face(imgs[n])
            if got is None:
                print(f"{p:14s} {n:24s} no face")
                continue
            f, e = got
            out[p][n] = {"box": r(f["box"], 3), "kps": [r(k, 3) for k in f["kps"]], "embedding": r(e, 7)}
            print(f"{p:14s} {n:24s} score {f['score']:.3f} box {np.round(f['box']).astype(int).tolist()}")
    with open(a.out, "w") as fh:
        json.dump(out, fh, separators=(",", ":"))
        fh.write("\n")
    print("wrote", a.out)
    # same-person vs different-person sanity check on what the fixtures offer
    for p in PACKS:
        e = {n: np.array(v["embedding"]) for n, v in out[p].items()}
        pairs = [("obama.jpg", "obama2.jpg"), ("obama.jpg", "obama3.jpg"), ("obama2.jpg", "obama3.jpg"),
                 ("obama.jpg", "biden.jpg"), ("obama.jpg", "astronaut.png"), ("biden.jpg", "Tom_Hanks_54745.png")]
        print(p, "  ".join(f"{x}~{y}={e[x] @ e[y]:.3f}" for x, y in pairs if x in e and y in e))


def pairs(a):
    base = os.path.dirname(os.path.abspath(a.csv))
    with open(a.csv) as fh:
        rows = list(csv.DictReader(fh))
    paths = sorted({row[k] for row in rows for k in ("a", "b")})
    res = {}
    for p in PACKS:
        pack = Pack(os.path.join(a.models, p))
        emb = {}
        for path in paths:
            got = pack.largest_face(load_rgb(os.path.join(base, path)))
            emb[path] = None if got is None else got[1]
        gen, imp, missing = [], [], 0
        for row in rows:
            ea, eb = emb[row["a"]], emb[row["b"]]
            if ea is None or eb is None:
                missing += 1
                continue
            (gen if row["same"].strip().lower() in ("1", "true", "yes") else imp).append(float(ea @ eb))
        gen, imp = np.array(gen), np.array(imp)
        thr = np.sort(imp)[-max(1, int(np.floor(len(imp) * 1e-3)))] if len(imp) else float("nan")
        res[p] = dict(
            images=len(paths), no_face=sum(v is None for v in emb.values()), pairs_skipped=missing,
            genuine=len(gen), impostor=len(imp),
            genuine_p1=float(np.percentile(gen, 1)), genuine_p5=float(np.percentile(gen, 5)),
            genuine_p50=float(np.percentile(gen, 50)), genuine_min=float(gen.min()),
            impostor_p50=float(np.percentile(imp, 50)), impostor_p99=float(np.percentile(imp, 99)),
            impostor_max=float(imp.max()),
            tar_at_fmr_1e3=float((gen > thr).mean()), threshold_fmr_1e3=float(thr),
        )
        print(p, json.dumps(res[p], indent=1))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(res, fh, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=os.path.join(REPO, "models"))
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixtures")
    f.add_argument("--images", default=os.path.join(REPO, "tests", "fixtures", "fetched"))
    f.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "reference_embeddings.json"))
    f.set_defaults(fn=fixtures)
    q = sub.add_parser("pairs")
    q.add_argument("csv")
    q.add_argument("--out")
    q.set_defaults(fn=pairs)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
