#!/usr/bin/env python3
"""Engine-fairness probe (issue 17; docs/operations.md, "Fairness").

Organisation A floods the uncharged POST /v1/face/detect with a costly WebP
(within its rate limit: the default 60/min, waiting out each 429's
Retry-After) while organisation B sends compares one after another. Prints
B's compare latency (p50/p95/max) and statuses before and during the flood,
A's statuses, and the server's CPU-seconds and peak RSS (VmHWM).

  scripts/attack-engine.py --webp big.webp [--bin target/debug/facecompare]
                           [--seconds 60] [--flooders 16] [--workers 2]

Standard library only. It starts its own throwaway server (SQLite, the
models in models/, ONNX Runtime from .ort/); it needs the fetched fixtures
for B's photos. Making a WebP needs an encoder, e.g. Pillow:
  python3 -c "from PIL import Image; Image.linear_gradient('L').resize((5200, 5200))\
.convert('RGB').save('big.webp', quality=60)"     # ~50 KB, 27 MP
"""
import argparse, json, os, re, subprocess, sys, tempfile, threading, time, urllib.error, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def multipart(fields):
    b = "attackboundary17"
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
             for name, data in fields]
    return b"".join(parts) + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def post(url, key, body, ctype, timeout=120):
    """(status, error code or "ok", Retry-After seconds or None)."""
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"x-api-key": key, "content-type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status, "ok", None
    except urllib.error.HTTPError as e:
        try:
            code = json.loads(e.read()).get("error", "?")
        except Exception:
            code = "?"
        return e.code, code, e.headers.get("retry-after")
    except Exception as e:  # connection reset, timeout
        return 0, type(e).__name__, None


def proc_status_kb(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def tally(results):
    counts = {}
    for status, code, *_ in results:
        counts[f"{status} {code}"] = counts.get(f"{status} {code}", 0) + 1
    return dict(sorted(counts.items()))


class Server:
    def __init__(self, bin_path, workers):
        self.work = tempfile.mkdtemp(prefix="attack-engine-")
        self.bin = bin_path
        self.env = dict(os.environ,
                        FACECOMPARE_DATABASE_URL=f"sqlite://{self.work}/attack.db?mode=rwc",
                        FACECOMPARE_MODELS_DIR=os.environ.get("FACECOMPARE_MODELS_DIR", f"{ROOT}/models"),
                        ORT_DYLIB_PATH=os.environ.get("ORT_DYLIB_PATH", f"{ROOT}/.ort/libonnxruntime.so.1.32.0"),
                        FACECOMPARE_LISTEN="127.0.0.1:0", FACECOMPARE_WORKERS=str(workers), RUST_LOG="warn")
        subprocess.run([bin_path, "migrate"], env=self.env, check=True, capture_output=True)

    def org(self, name, extra=()):
        subprocess.run([self.bin, "org", "create", name, "--tokens", "1000000", "--json", *extra],
                       env=self.env, check=True, capture_output=True)
        out = subprocess.run([self.bin, "key", "create", "--org", name, "--json"], env=self.env,
                             check=True, capture_output=True).stdout
        return json.loads(out)["key"]

    def start(self):
        out = open(f"{self.work}/stdout", "w+")
        self.proc = subprocess.Popen([self.bin, "serve"], env=self.env, stdout=out, stderr=subprocess.DEVNULL)
        for _ in range(600):
            m = re.search(r"listening on (\S+)", open(f"{self.work}/stdout").read())
            if m:
                self.url = m.group(1).rstrip("/")
                return
            time.sleep(0.1)
        raise SystemExit("server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--webp", required=True, help="the costly image organisation A sends to /v1/face/detect")
    ap.add_argument("--bin", default=f"{ROOT}/target/debug/facecompare")
    ap.add_argument("--seconds", type=float, default=60, help="length of the flood")
    ap.add_argument("--flooders", type=int, default=16, help="A's concurrent clients")
    ap.add_argument("--workers", type=int, default=2, help="FACECOMPARE_WORKERS of the server")
    ap.add_argument("--baseline", type=int, default=10, help="B's compares before the flood")
    args = ap.parse_args()

    webp = open(args.webp, "rb").read()
    src = open(f"{ROOT}/tests/fixtures/fetched/obama.jpg", "rb").read()
    tgt = open(f"{ROOT}/tests/fixtures/fetched/obama2.jpg", "rb").read()
    s = Server(args.bin, args.workers)
    key_a = s.org("org-a")  # the default rate limit, 60/min
    key_b = s.org("org-b", ["--rate-limit", "100000/min"])
    s.start()
    detect_body, detect_type = multipart([("image", webp)])
    compare_body, compare_type = multipart([("source", src), ("target", tgt)])

    def b_compare():
        t = time.monotonic()
        status, code, _ = post(s.url + "/v1/face/compare", key_b, compare_body, compare_type)
        return status, code, time.monotonic() - t

    try:
        base = [b_compare() for _ in range(args.baseline)]
        cpu0, t0 = cpu_seconds(s.proc.pid), time.monotonic()
        stop = threading.Event()
        a_results, lock = [], threading.Lock()

        def flood():
            while not stop.is_set():
                status, code, retry = post(s.url + "/v1/face/detect", key_a, detect_body, detect_type)
                with lock:
                    a_results.append((status, code, time.monotonic() - t0))
                if status in (429, 503) and retry:
                    stop.wait(float(retry))

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(args.flooders)]
        for th in threads:
            th.start()
        time.sleep(1.0)  # A's burst is queued
        during = []
        while time.monotonic() - t0 < args.seconds:
            during.append(b_compare())
        stop.set()
        for th in threads:
            th.join(timeout=180)
        cpu = cpu_seconds(s.proc.pid) - cpu0
        wall = time.monotonic() - t0
        peak = proc_status_kb(s.proc.pid, "VmHWM")
    finally:
        s.stop()

    def lat(results):
        ok = [r[2] for r in results if r[0] == 200]
        return (f"p50 {pct(ok, 50):.2f} s, p95 {pct(ok, 95):.2f} s, max {max(ok, default=float('nan')):.2f} s"
                f" over {len(ok)} answered 200")

    print(f"binary {args.bin}; {args.workers} workers; A floods /v1/face/detect with {args.webp} "
          f"({len(webp) / 1e3:.0f} KB) from {args.flooders} clients for {args.seconds:.0f} s")
    print(f"B compare, no flood:     {lat(base)}; answers {tally(base)}")
    print(f"B compare, during flood: {lat(during)}; answers {tally(during)}")
    print(f"A detect:                {len(a_results)} requests; answers {tally(a_results)}")
    print(f"server: {cpu:.1f} CPU-seconds over {wall:.0f} s of flood ({cpu / wall:.2f} cores); "
          f"peak RSS (VmHWM) {peak / 1024:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
