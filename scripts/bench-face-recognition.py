#!/usr/bin/env python3
"""Times face_recognition (PyPI, dlib) on one image pair, the way its README
compares two photos: load both, find the faces, encode them, compare.

Used by scripts/bench-speed.sh for the comparison figure of docs/performance.md; the tests
never need it. Setup (no dlib compile):
    python3 -m venv .venv-fr
    .venv-fr/bin/pip install dlib-bin numpy pillow click
    .venv-fr/bin/pip install --no-deps face_recognition face_recognition_models

Usage: bench-face-recognition.py SOURCE TARGET [RUNS]   (prints the median)
"""
import statistics
import sys
import time

import face_recognition


def compare(a, b):
    encs = []
    for path in (a, b):
        img = face_recognition.load_image_file(path)
        boxes = face_recognition.face_locations(img)  # HOG, upsample 1 (the default)
        encs.append(face_recognition.face_encodings(img, boxes))
    if not encs[0] or not encs[1]:
        return None
    return float(face_recognition.face_distance(encs[1], encs[0][0]).min())


def main():
    a, b = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    distance = compare(a, b)  # warm-up (model load)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        compare(a, b)
        times.append((time.perf_counter() - t0) * 1000)
    print(
        f"face_recognition: {statistics.median(times):.0f} ms per compare "
        f"(median of {runs}, one process, distance {distance})"
    )


if __name__ == "__main__":
    main()
