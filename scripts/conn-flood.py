#!/usr/bin/env python3
"""Connection-flood probe (docs/operations.md, "Connections").

Opens N idle and N/2 slow-header connections against a running server, then
times GET /healthz on a fresh connection and counts how many flood
connections the server still holds. Usage: conn-flood.py HOST:PORT [N]
"""
import socket, sys, time

addr = sys.argv[1].replace("http://", "").rstrip("/")
host, port = addr.rsplit(":", 1)
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000


def healthz():
    t = time.monotonic()
    try:
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        line = s.recv(64).split(b"\r\n")[0].decode()
    except OSError as e:
        line = f"error: {e}"
    return line, time.monotonic() - t


conns = []
t = time.monotonic()
for i in range(n + n // 2):
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
    except OSError as e:
        print(f"connect #{i}: {e}")
        break
    if i >= n:
        s.sendall(b"POST /v1/face/compare HTTP/1.1\r\n")
    conns.append(s)
print(f"opened {len(conns)} connections ({n} idle, {n // 2} slow-header) in {time.monotonic() - t:.2f} s")
line, dt = healthz()
print(f"/healthz during the flood: {line!r} in {dt * 1000:.1f} ms")


def still_open():
    open_ = 0
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(1) != b"":
                open_ += 1
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    return open_


print(f"flood connections the server still holds: {still_open()}")
for wait in (15, 60):
    time.sleep(wait - (15 if wait == 60 else 0))
    print(f"after {wait} s: {still_open()} still open; /healthz {healthz()[1] * 1000:.1f} ms")
