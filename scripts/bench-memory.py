#!/usr/bin/env python3
"""Memory bench: the attacks of issues 7 and 17 against a throwaway server.

  scripts/bench-memory.py                 # release build (PROFILE=debug for the debug one)
  BIN=path/to/facecompare ONLY=mix scripts/bench-memory.py   # one attack, a given binary

1. `large`: 32 concurrent compares of two ~14.5 MB JPEGs (a real photo
   padded with APP segments: ~29 MB bodies);
2. `deep`: 8 concurrent compares of a 8000x8000 16-bit RGBA PNG (~0.5 MB
   file, 512 MB if decoded whole) against a photo;
3. `mix`: the worst mix: 8 concurrent compares of two interlaced 6900x6900
   RGBA PNGs (tiny files, each decoded whole: 182 MB, just under the
   192 MB per-image limit) together with 4 of the large-upload compares
   (the body budget's worth of bodies held at once).
Prints, per attack, the status codes, the server's peak RSS (VmHWM, reset
between attacks by a fresh server) and its RSS after 30 s idle. Targets:
peak <= 512 MB (the documented container), <= 250 MB after idle, no 5xx but
503 overloaded.
Standard library only; needs the fetched fixtures, models/ and ONNX Runtime.
"""
import concurrent.futures as cf
import json, os, re, struct, subprocess, sys, tempfile, time, urllib.request, urllib.error, zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.environ.get("PROFILE", "release")
IDLE_S = float(os.environ.get("IDLE_S", "30"))


def padded_jpeg(path, size):
    """A real photo with APP15 segments of filler after SOI: decodes as the photo."""
    photo = open(path, "rb").read()
    filler = bytearray()
    seg = b"\xff\xef" + struct.pack(">H", 65535) + b"\x00" * 65533
    while len(photo) + len(filler) + len(seg) < size:
        filler += seg
    return photo[:2] + bytes(filler) + photo[2:]


def deep_png(side):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" + b"\x80" * (side * 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def interlaced_png(side):
    """An Adam7-interlaced 8-bit RGBA PNG of one colour: a decoder must hold it whole."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    comp = zlib.compressobj(9)
    data = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                           (1, 0, 2, 2), (0, 1, 1, 2)):
        w, h = -(-(side - x0) // dx), -(-(side - y0) // dy)
        if w and h:
            row = b"\x00" + b"\x60\x80\xa0\xff" * w
            data += b"".join(comp.compress(row) for _ in range(h))
    data += comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def multipart(source, target):
    b = "benchboundary7d"
    parts = []
    for name, data in (("source", source), ("target", target)):
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def post(url, key, body, ctype):
    req = urllib.request.Request(url + "/v1/face/compare", data=body, method="POST",
                                 headers={"x-api-key": key, "content-type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, "ok"
    except urllib.error.HTTPError as e:
        try:
            code = json.loads(e.read()).get("error", "?")
        except Exception:
            code = "?"
        return e.code, code
    except Exception as e:  # connection reset etc.
        return 0, type(e).__name__


def status_kb(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_attack(name, bin_path, bodies, n):
    """`n` concurrent compares, cycling through `bodies` ((body, content type) pairs)."""
    work = tempfile.mkdtemp()
    env = dict(os.environ,
               FACECOMPARE_DATABASE_URL=f"sqlite://{work}/bench.db?mode=rwc",
               FACECOMPARE_MODELS_DIR=os.environ.get("FACECOMPARE_MODELS_DIR", f"{ROOT}/models"),
               ORT_DYLIB_PATH=os.environ.get("ORT_DYLIB_PATH", f"{ROOT}/.ort/libonnxruntime.so.1.32.0"),
               FACECOMPARE_LISTEN="127.0.0.1:0", RUST_LOG="warn")
    subprocess.run([bin_path, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([bin_path, "org", "create", "bench", "--tokens", "100000", "--rate-limit", "100000/min", "--json"],
                   env=env, check=True, capture_output=True)
    key = json.loads(subprocess.run([bin_path, "key", "create", "--org", "bench", "--json"], env=env,
                                    check=True, capture_output=True).stdout)["key"]
    out = open(f"{work}/stdout", "w+")
    server = subprocess.Popen([bin_path, "serve"], env=env, stdout=out, stderr=subprocess.DEVNULL)
    try:
        url = None
        for _ in range(600):
            m = re.search(r"listening on (\S+)", open(f"{work}/stdout").read())
            if m:
                url = m.group(1)
                break
            time.sleep(0.1)
        assert url, "server did not start"
        start_rss = status_kb(server.pid, "VmRSS")
        t0 = time.time()
        with cf.ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda i: post(url, key, *bodies[i % len(bodies)]), range(n)))
        took = time.time() - t0
        peak = status_kb(server.pid, "VmHWM")
        time.sleep(IDLE_S)
        idle = status_kb(server.pid, "VmRSS")
        counts = {}
        for s, c in results:
            counts[f"{s} {c}"] = counts.get(f"{s} {c}", 0) + 1
        bad = [k for k in counts if k.startswith("5") and k != "503 overloaded" or k.startswith("0 ")]
        sizes = "/".join(f"{len(b) / 1e6:.1f}" for b, _ in bodies)
        print(f"{name}: {n} concurrent, {sizes} MB bodies, {took:.1f} s; answers {counts}")
        print(f"  RSS at start {start_rss / 1024:.0f} MB, peak {peak / 1024:.0f} MB (target <= 512), "
              f"after {IDLE_S:.0f} s idle {idle / 1024:.0f} MB (target <= 250)"
              + (f"; UNEXPECTED {bad}" if bad else ""))
    finally:
        server.terminate()
        server.wait()


def main():
    target = os.environ.get("CARGO_TARGET_DIR", f"{ROOT}/target")
    if "BIN" in os.environ:
        bin_path = os.environ["BIN"]
    else:
        flags = ["--release"] if PROFILE == "release" else []
        subprocess.run(["cargo", "build", *flags, "--quiet", "--bin", "facecompare"], cwd=ROOT, check=True)
        bin_path = f"{target}/{PROFILE}/facecompare"
    only = os.environ.get("ONLY", "large,deep,mix").split(",")
    photo = f"{ROOT}/tests/fixtures/fetched/obama.jpg"
    big = multipart(padded_jpeg(photo, 14_500_000), padded_jpeg(photo, 14_500_000))
    if "large" in only:
        run_attack("large uploads", bin_path, [big], 32)
    if "deep" in only:
        run_attack("16-bit PNG bombs", bin_path, [multipart(deep_png(8000), open(photo, "rb").read())], 8)
    if "mix" in only:
        png = interlaced_png(6900)
        bomb = multipart(png, png)
        run_attack("worst mix: interlaced PNGs at the decode limit + large uploads", bin_path,
                   [bomb, bomb, big], 12)


if __name__ == "__main__":
    sys.exit(main())
