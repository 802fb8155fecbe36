#!/usr/bin/env python3
"""Crowding-out probe for issue #17 (docs/operations.md, "Connections" and
"Memory"): runs three attacks against a running server and prints what the
VICTIM got (status counts, latency percentiles), plus the server's CPU
seconds and peak RSS when --pid is given.

  A  draining bodies: --conns clients (default 900) post
     /v1/face/compare with no key and Content-Length: 1000000, trickled one
     byte a second, reconnecting when answered; meanwhile /healthz probes
     (57) and a keyed client's compares (10).
  B  the body budget: the ATTACKER organisation opens --slow native uploads
     (its API key, 32 MiB declared, 1 KiB/s) and --aws-slow Rekognition
     uploads (its access key id, a wrong signature, ~14 MB declared);
     meanwhile another organisation (the VICTIM key) sends 25 compares.
  C  three chunked JSON compares at once (the victim key).

Python 3 standard library only. Example:

  scripts/attack-connections.py --url http://127.0.0.1:8080 \\
      --victim-key fc_... --attacker-key fc_... --aws-key-id AKIA... \\
      --source tests/fixtures/fetched/obama.jpg \\
      --target tests/fixtures/fetched/obama2.jpg --pid 12345
"""
import argparse
import base64
import collections
import datetime
import os
import selectors
import socket
import threading
import time
import urllib.parse


def percentiles(latencies):
    if not latencies:
        return "-"
    xs = sorted(latencies)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return "p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms" % (
        pick(0.5) * 1000, pick(0.9) * 1000, pick(0.99) * 1000, xs[-1] * 1000)


def report(name, results):
    counts = collections.Counter(r[0] for r in results)
    print("  %-28s %s; %s" % (name, dict(sorted(counts.items(), key=str)),
                              percentiles([r[1] for r in results])))


def proc_stats(pid):
    """(cpu seconds, peak RSS in KiB) of the server process."""
    if not pid:
        return None
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    hwm = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return ticks / os.sysconf("SC_CLK_TCK"), hwm


class Target:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80

    def connect(self, timeout=30.0):
        return socket.create_connection((self.host, self.port), timeout=timeout)


def read_answer(s):
    """Status (int, or 'closed'/'timeout'/'error') of one response on s."""
    buf = b""
    try:
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                return "closed" if not buf else "partial"
            buf += chunk
    except socket.timeout:
        return "timeout"
    except OSError:
        return "reset"
    line = buf.split(b"\r\n", 1)[0].split()
    try:
        return int(line[1])
    except (IndexError, ValueError):
        return "error"


def request(target, raw, timeout=30.0):
    """(status, seconds) of one request on a fresh connection."""
    started = time.monotonic()
    try:
        s = target.connect(timeout)
    except OSError:
        return ("connect-failed", time.monotonic() - started)
    try:
        s.settimeout(timeout)
        s.sendall(raw)
        status = read_answer(s)
    except socket.timeout:
        status = "timeout"
    except OSError:
        status = "reset"
    finally:
        s.close()
    return (status, time.monotonic() - started)


def healthz(target):
    return request(target, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


def multipart_compare(key, source, target_img):
    boundary = "attackprobe"
    body = b""
    for name, data in (("source", source), ("target", target_img)):
        body += ("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s.jpg\"\r\n"
                 "Content-Type: image/jpeg\r\n\r\n" % (boundary, name, name)).encode()
        body += data + b"\r\n"
    body += ("--%s--\r\n" % boundary).encode()
    head = ("POST /v1/face/compare HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\n"
            "Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n"
            "Connection: close\r\n\r\n" % (key, boundary, len(body))).encode()
    return head + body


def chunked_json_compare(target, key, source, target_img, barrier, out):
    doc = ('{"source":"%s","target":"%s"}' % (
        base64.b64encode(source).decode(), base64.b64encode(target_img).decode())).encode()
    started = time.monotonic()
    try:
        s = target.connect(60)
        s.sendall(("POST /v1/face/compare HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\n"
                   "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                   "Connection: close\r\n\r\n" % key).encode())
        chunks = [doc[i:i + 16384] for i in range(0, len(doc), 16384)]
        send = lambda c: s.sendall(b"%x\r\n" % len(c) + c + b"\r\n")
        send(chunks[0])
        barrier.wait()
        for c in chunks[1:]:
            send(c)
        s.sendall(b"0\r\n\r\n")
        status = read_answer(s)
        s.close()
    except OSError as e:
        status = "reset" if not isinstance(e, socket.timeout) else "timeout"
    out.append((status, time.monotonic() - started))


def attack_a(args, target, source, target_img):
    print("A: %d clients, no key, Content-Length 1000000, trickled (%.0f s)" % (args.conns, args.duration))
    stop = threading.Event()
    answered = collections.Counter()

    def flood():
        sel = selectors.DefaultSelector()
        head = (b"POST /v1/face/compare HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")

        def open_one():
            try:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex((target.host, target.port))
                sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, [False])
            except OSError:
                pass

        for _ in range(args.conns):
            open_one()
        last_trickle = time.monotonic()
        while not stop.is_set():
            for key, ev in sel.select(timeout=0.2):
                s, state = key.fileobj, key.data
                if ev & selectors.EVENT_WRITE and not state[0]:
                    try:
                        s.send(head)
                        state[0] = True
                        sel.modify(s, selectors.EVENT_READ, state)
                    except OSError:
                        sel.unregister(s)
                        s.close()
                        open_one()
                    continue
                if ev & selectors.EVENT_READ:
                    try:
                        data = s.recv(4096)
                    except OSError:
                        data = b""
                    answered[data[9:12].decode(errors="replace") if data else "closed"] += 1
                    sel.unregister(s)
                    s.close()
                    open_one()
            if time.monotonic() - last_trickle >= 1.0:
                last_trickle = time.monotonic()
                for key in list(sel.get_map().values()):
                    if key.data[0]:
                        try:
                            key.fileobj.send(b" ")
                        except OSError:
                            pass
        for key in list(sel.get_map().values()):
            key.fileobj.close()

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    time.sleep(min(5.0, args.duration / 4))
    health, compares = [], []
    probe_end = time.monotonic() + args.duration

    def probe_compares():
        for _ in range(10):
            compares.append(request(target, multipart_compare(args.victim_key, source, target_img)))

    pc = threading.Thread(target=probe_compares)
    pc.start()
    for i in range(57):
        health.append(healthz(target))
        time.sleep(max(0.0, (probe_end - time.monotonic()) / max(1, 57 - i)))
    pc.join()
    stop.set()
    t.join()
    report("victim /healthz", health)
    report("victim compares (keyed)", compares)
    print("  attacker answers: %s" % dict(answered))


def attack_b(args, target, source, target_img):
    print("B: attacker org: %d native uploads of 32 MiB + %d Rekognition uploads (wrong signature), 1 KiB/s"
          % (args.slow, args.aws_slow))
    hogs = []
    for _ in range(args.slow):
        s = target.connect(60)
        s.sendall(("POST /v1/face/compare HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\n"
                   "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: %d\r\n\r\n--B\r\n"
                   % (args.attacker_key, 32 << 20)).encode())
        hogs.append(s)
    if args.aws_key_id:
        now = datetime.datetime.now(datetime.timezone.utc)
        day, stamp = now.strftime("%Y%m%d"), now.strftime("%Y%m%dT%H%M%SZ")
        for _ in range(args.aws_slow):
            s = target.connect(60)
            s.sendall(("POST / HTTP/1.1\r\nHost: %s:%d\r\nx-amz-date: %s\r\n"
                       "x-amz-target: RekognitionService.CompareFaces\r\n"
                       "content-type: application/x-amz-json-1.1\r\ncontent-length: 14046552\r\n"
                       "authorization: AWS4-HMAC-SHA256 Credential=%s/%s/us-east-1/rekognition/aws4_request, "
                       "SignedHeaders=host;x-amz-date;x-amz-target, Signature=%s\r\n\r\n{"
                       % (target.host, target.port, stamp, args.aws_key_id, day, "0" * 64)).encode())
            hogs.append(s)
    stop = threading.Event()

    def trickle():
        while not stop.wait(1.0):
            for s in hogs:
                try:
                    s.send(b"x" * 1024)
                except OSError:
                    pass

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    time.sleep(1.0)
    victims = [request(target, multipart_compare(args.victim_key, source, target_img)) for _ in range(25)]
    stop.set()
    t.join()
    attacker = []
    for s in hogs:
        s.settimeout(40)
        attacker.append((read_answer(s), 0.0))
        s.close()
    report("victim compares (other org)", victims)
    report("attacker uploads", attacker)


def attack_c(args, target, source, target_img):
    print("C: three chunked JSON compares at once")
    barrier, out = threading.Barrier(3), []
    ts = [threading.Thread(target=chunked_json_compare,
                           args=(target, args.victim_key, source, target_img, barrier, out))
          for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    report("chunked JSON compares", out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--victim-key", required=True)
    p.add_argument("--attacker-key", required=True)
    p.add_argument("--aws-key-id", default="")
    p.add_argument("--source", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--pid", type=int, default=0, help="server pid, for CPU seconds and VmHWM")
    p.add_argument("--conns", type=int, default=900)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--slow", type=int, default=5)
    p.add_argument("--aws-slow", type=int, default=5)
    p.add_argument("--attacks", default="ABC")
    args = p.parse_args()
    target = Target(args.url)
    source, target_img = open(args.source, "rb").read(), open(args.target, "rb").read()
    for name, run in (("A", attack_a), ("B", attack_b), ("C", attack_c)):
        if name not in args.attacks:
            continue
        before = proc_stats(args.pid)
        run(args, target, source, target_img)
        after = proc_stats(args.pid)
        if before and after:
            print("  server: %.1f CPU-seconds during %s, VmHWM %.0f MiB"
                  % (after[0] - before[0], name, after[1] / 1024))
        time.sleep(2.0)


if __name__ == "__main__":
    main()
