#!/usr/bin/env python3
"""Measures what one compare costs, for the capacity model (docs/capacity.md).

Starts on loopback, all of them its own (nothing of the machine's is used):
  - a private PostgreSQL cluster (initdb into a temporary folder, its own port,
    shared_preload_libraries=pg_stat_statements, otherwise PostgreSQL's defaults),
  - s3s-fs (a real S3 server over a folder) behind a small TCP proxy that
    counts the requests the servers send to it,
  - N `facecompare serve` replicas on that one database and store,
then sends compares spread round-robin over the replicas, in phases:
  inline   multipart with two image files, no Idempotency-Key
  s3       JSON with two S3 keys of the organisation's prefix
  idem     inline, each with its own Idempotency-Key
and per phase reports, per successful compare:
  - CPU seconds of the replicas (utime+stime from /proc/PID/stat; the server
    exports no process_cpu_seconds_total) and of the PostgreSQL processes,
  - database statements and their execution time (pg_stat_statements, reset
    before each phase),
  - requests to the S3 store by method (counted at the proxy).
Peak RSS per replica (VmHWM) at the end. Wall-clock rates are printed too, but
on a shared machine only the CPU-second figures are robust.

Usage (from the repository root, after `cargo build` or `cargo build --release`):
  ORT_DYLIB_PATH=$PWD/.ort/libonnxruntime.so.1.32.0 S3S_FS_BIN=.../s3s-fs \\
    python3 scripts/capacity.py [--bin target/release/facecompare] [--replicas 3]
        [--compares 120] [--concurrency 6] [--workers 1] [--json out.json]
Needs: PostgreSQL 15 binaries (FACECOMPARE_TEST_PG_BIN, default
/usr/lib/postgresql/15/bin) with pg_stat_statements, s3s-fs (S3S_FS_BIN or
PATH), the fixtures (scripts/fetch-fixtures.sh). Runs as root (PostgreSQL then
runs as `postgres`, through runuser) or as an ordinary user.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
ACCESS_KEY, SECRET_KEY, BUCKET = "capacity", "capacity-secret-key", "faces"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_root():
    return os.geteuid() == 0


def as_pg_user(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd if is_root() else cmd


def cpu_seconds(pid, children=False):
    """utime+stime (and, with children, the reaped children's) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def child_pids(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# ------------------------------------------------------------- PostgreSQL ---
class Postgres:
    def __init__(self, work):
        self.bin = Path(os.environ.get("FACECOMPARE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
        if not (self.bin / "pg_ctl").is_file():
            sys.exit(f"capacity: no PostgreSQL in {self.bin} (set FACECOMPARE_TEST_PG_BIN)")
        self.dir = work / "pg"
        self.dir.mkdir()
        if is_root():
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.data = self.dir / "data"
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all "
            "-c max_connections=200"
        )
        self.run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/facecompare"
        self.psql("postgres", "CREATE DATABASE facecompare")
        self.psql("facecompare", "CREATE EXTENSION pg_stat_statements")
        with open(self.data / "postmaster.pid") as f:
            self.postmaster = int(f.readline())

    def run(self, tool, *args):
        subprocess.run(as_pg_user([str(self.bin / tool), *args]), check=True, capture_output=True)

    def psql(self, db, sql):
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
             "-v", "ON_ERROR_STOP=1", "-AtF", "\t", "-c", sql],
            check=True, capture_output=True, text=True,
        )
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def cpu(self):
        """CPU seconds (whole cluster, the facecompare database's sessions).

        The cluster: postmaster (with its reaped children) and live children,
        background writers and autovacuum included. Sessions: the backends
        whose title names the database (the servers' pooled connections live
        through a phase, so their counters cover it).
        """
        total = cpu_seconds(self.postmaster, children=True)
        sessions = 0.0
        for pid in child_pids(self.postmaster):
            try:
                cpu = cpu_seconds(pid)
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read().decode(errors="replace")
            except (FileNotFoundError, ProcessLookupError):
                continue
            total += cpu
            if " facecompare " in title:
                sessions += cpu
        return total, sessions

    def reset_statements(self):
        self.psql("facecompare", "SELECT pg_stat_statements_reset()")

    def statements(self):
        rows = self.psql(
            "facecompare",
            "SELECT s.calls, s.total_exec_time, s.rows, regexp_replace(s.query, '\\s+', ' ', 'g') "
            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = 'facecompare' AND s.query NOT ILIKE '%pg_stat_statements%' "
            "ORDER BY s.calls DESC, s.total_exec_time DESC",
        )
        return [(int(c), float(t), int(r), q) for c, t, r, q in rows]

    def stop(self):
        subprocess.run(as_pg_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
                       capture_output=True)


# ------------------------------------------------------------------- S3 ---
class CountingProxy:
    """TCP proxy in front of the store: counts request lines sent to it by method."""

    LINE = re.compile(rb"(GET|HEAD|PUT|POST|DELETE) /[^ \r\n]* HTTP/1\.[01]\r\n")

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.counts = {}
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            inbound, _ = self.sock.accept()
            try:
                outbound = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                inbound.close()
                continue
            threading.Thread(target=self.pipe, args=(inbound, outbound, True), daemon=True).start()
            threading.Thread(target=self.pipe, args=(outbound, inbound, False), daemon=True).start()

    def pipe(self, src, dst, count):
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    # Bodies of S3 reads are empty: request lines never hide in one.
                    buf = tail + data
                    with self.lock:
                        for m in self.LINE.finditer(buf):
                            if m.end() > len(tail):
                                method = m.group(1).decode()
                                self.counts[method] = self.counts.get(method, 0) + 1
                    tail = buf[-64:]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self):
        with self.lock:
            counts, self.counts = self.counts, {}
        return counts


def start_s3s(work):
    binary = os.environ.get("S3S_FS_BIN") or shutil.which("s3s-fs")
    if not binary:
        sys.exit("capacity: s3s-fs not found (S3S_FS_BIN, or cargo install s3s-fs --version 0.14.1 --features binary --locked)")
    root = work / "s3"
    (root / BUCKET).mkdir(parents=True)
    port = free_port()
    log = open(work / "s3s-fs.log", "wb")
    proc = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", str(port), "--access-key", ACCESS_KEY,
         "--secret-key", SECRET_KEY, str(root)],
        stdout=log, stderr=log,
    )
    wait_port(port, proc, "s3s-fs")
    return proc, root, port


def wait_port(port, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"capacity: {what} exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"capacity: {what} did not listen on {port}")


# ---------------------------------------------------------------- servers ---
class Replica:
    def __init__(self, binary, env, log_path):
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.PIPE, stderr=self.log)
        self.addr = self.metrics = None
        deadline = time.time() + 240
        while self.addr is None or self.metrics is None:
            line = self.proc.stdout.readline().decode()
            if not line:
                sys.exit(f"capacity: a replica exited at start; see {log_path}")
            if line.startswith("listening on "):
                self.addr = line.split("://", 1)[1].strip().rstrip("/")
            elif line.startswith("metrics on "):
                self.metrics = line.split("://", 1)[1].split("/", 1)[0]
            if time.time() > deadline:
                sys.exit("capacity: a replica did not start within 240 s")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def tokens_charged(self):
        host, port = self.metrics.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        m = re.search(r"^facecompare_tokens_charged_total (\S+)", text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cli(binary, env, *args):
    out = subprocess.run([binary, *args], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def multipart(fields):
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.jpg"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def run_phase(name, replicas, keys, n, concurrency, make_request):
    """Sends n compares from `concurrency` threads, request i to replica i mod N; returns status counts and wall seconds."""
    statuses, lock, next_i = {}, threading.Lock(), [0]

    def worker():
        conns = {}
        while True:
            with lock:
                i = next_i[0]
                if i >= n:
                    return
                next_i[0] += 1
            r = replicas[i % len(replicas)]
            body, ctype, extra = make_request(i)
            headers = {"x-api-key": keys[i % len(keys)], "content-type": ctype, **extra}
            for attempt in range(2):
                c = conns.get(r.addr)
                if c is None:
                    host, port = r.addr.rsplit(":", 1)
                    c = conns[r.addr] = http.client.HTTPConnection(host, int(port), timeout=120)
                try:
                    c.request("POST", "/v1/face/compare", body=body, headers=headers)
                    resp = c.getresponse()
                    resp.read()
                    status = resp.status
                    break
                except (http.client.HTTPException, OSError):
                    c.close()
                    conns.pop(r.addr, None)
                    status = "conn_error"
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    started = time.time()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses, time.time() - started


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_bin = REPO / "target/release/facecompare"
    if not default_bin.exists():
        default_bin = REPO / "target/debug/facecompare"
    ap.add_argument("--bin", default=str(default_bin))
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="FACECOMPARE_WORKERS per replica")
    ap.add_argument("--compares", type=int, default=120, help="compares per phase")
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--orgs", type=int, default=4, help="organisations the compares are spread over")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    fixtures = Path(os.environ.get("FIXTURES_DIR", REPO / "tests/fixtures/fetched"))
    src, dst = (fixtures / "obama.jpg").read_bytes(), (fixtures / "obama2.jpg").read_bytes()
    work = Path(tempfile.mkdtemp(prefix="facecompare-capacity-"))
    os.chmod(work, 0o755)
    pg = s3 = None
    replicas = []
    try:
        pg = Postgres(work)
        s3, s3_root, s3_port = start_s3s(work)
        proxy = CountingProxy(s3_port)

        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("FACECOMPARE_", "AWS_"))}
        base_env.update(FACECOMPARE_DATABASE_URL=pg.url, RUST_LOG="warn")
        subprocess.run([args.bin, "migrate"], env=base_env, check=True)
        keys = []
        for i in range(args.orgs):
            prefix = f"orgs/cap{i}/"
            org = cli(args.bin, base_env, "org", "create", f"cap{i}", "--tokens", "1000000",
                      "--rate-limit", "100000/min", "--s3-prefix", prefix, "--json")
            keys.append(cli(args.bin, base_env, "key", "create", "--org", org["id"], "--json")["key"])
            folder = s3_root / BUCKET / prefix
            folder.mkdir(parents=True)
            (folder / "a.jpg").write_bytes(src)
            (folder / "b.jpg").write_bytes(dst)

        env = dict(base_env)
        env.update(
            FACECOMPARE_LISTEN="127.0.0.1:0",
            FACECOMPARE_METRICS_LISTEN="127.0.0.1:0",
            FACECOMPARE_WORKERS=str(args.workers),
            FACECOMPARE_MODELS_DIR=os.environ.get("FACECOMPARE_MODELS_DIR", str(REPO / "models")),
            FACECOMPARE_S3_BUCKET=BUCKET,
            FACECOMPARE_S3_ENDPOINT=f"http://127.0.0.1:{proxy.port}",
            AWS_REGION="us-east-1",
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_EC2_METADATA_DISABLED="true",
            RUST_LOG="warn",
        )
        env.setdefault("ORT_DYLIB_PATH", str(REPO / ".ort/libonnxruntime.so.1.32.0"))
        for i in range(args.replicas):
            replicas.append(Replica(args.bin, env, work / f"replica-{i}.log"))
        print(f"capacity: {args.replicas} replicas x {args.workers} worker(s), binary {args.bin}, "
              f"PostgreSQL on :{pg.port}, s3s-fs on :{s3_port} (proxy :{proxy.port})", file=sys.stderr)

        inline_body = multipart([("source", src), ("target", dst)])

        def inline(i):
            return inline_body[0], inline_body[1], {}

        def s3keys(i):
            prefix = f"orgs/cap{i % args.orgs}/"
            body = json.dumps({"source": prefix + "a.jpg", "target": prefix + "b.jpg"}).encode()
            return body, "application/json", {}

        def idem(i):
            return inline_body[0], inline_body[1], {"idempotency-key": uuid.uuid4().hex}

        # Warm-up at full concurrency: every replica warms its sessions and
        # opens the database connections the phases will use.
        run_phase("warmup", replicas, keys, 2 * args.concurrency, args.concurrency, inline)
        proxy.take()

        results = {}
        for name, make in (("inline", inline), ("s3", s3keys), ("idem", idem)):
            pg.reset_statements()
            proxy.take()
            charged0 = sum(r.tokens_charged() for r in replicas)
            cpu0 = [cpu_seconds(r.proc.pid) for r in replicas]
            pg0 = pg.cpu()
            statuses, wall = run_phase(name, replicas, keys, args.compares, args.concurrency, make)
            cpu1 = [cpu_seconds(r.proc.pid) for r in replicas]
            pg1 = pg.cpu()
            charged = sum(r.tokens_charged() for r in replicas) - charged0
            stmts = pg.statements()
            sessions = int(pg.psql("facecompare", "SELECT count(*) FROM pg_stat_activity "
                                   "WHERE datname = 'facecompare' AND pid <> pg_backend_pid()")[0][0])
            s3_counts = proxy.take()
            ok = statuses.get(200, 0)
            per = max(ok, 1)
            results[name] = {
                "statuses": {str(k): v for k, v in statuses.items()},
                "tokens_charged": charged,
                "wall_s": round(wall, 2),
                "compares_per_s_wall": round(ok / wall, 2),
                "server_cpu_s_per_compare": round((sum(cpu1) - sum(cpu0)) / per, 4),
                "server_cpu_s_per_replica": [round(b - a, 2) for a, b in zip(cpu0, cpu1)],
                "postgres_cpu_s_per_compare": round((pg1[0] - pg0[0]) / per, 5),
                "postgres_session_cpu_s_per_compare": round((pg1[1] - pg0[1]) / per, 5),
                "database_sessions_open": sessions,
                "statements_per_compare": round(sum(s[0] for s in stmts) / per, 2),
                "statement_ms_per_compare": round(sum(s[1] for s in stmts) / per, 3),
                "statements": [
                    {"calls_per_compare": round(c / per, 2), "mean_ms": round(t / max(c, 1), 3),
                     "rows": r, "query": q[:160]}
                    for c, t, r, q in stmts
                ],
                "s3_requests_per_compare": {m: round(v / per, 2) for m, v in sorted(s3_counts.items())},
            }
        peak = [round(peak_rss_mb(r.proc.pid), 1) for r in replicas]
        report = {
            "binary": args.bin,
            "replicas": args.replicas,
            "workers_per_replica": args.workers,
            "compares_per_phase": args.compares,
            "concurrency": args.concurrency,
            "cores": os.cpu_count(),
            "peak_rss_mb_per_replica": peak,
            "phases": results,
        }
        print_report(report)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    finally:
        for r in replicas:
            r.stop()
        if s3 is not None:
            s3.kill()
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def print_report(rep):
    print(f"\n{rep['replicas']} replicas x {rep['workers_per_replica']} worker(s) on {rep['cores']} cores, "
          f"{rep['compares_per_phase']} compares per phase, {rep['concurrency']} concurrent clients")
    print(f"peak RSS per replica: {rep['peak_rss_mb_per_replica']} MB")
    for name, p in rep["phases"].items():
        print(f"\n== {name}: statuses {p['statuses']}, tokens charged {p['tokens_charged']:.0f}, "
              f"{p['compares_per_s_wall']} compares/s wall")
        print(f"  server CPU per compare   {p['server_cpu_s_per_compare'] * 1000:.1f} ms "
              f"(per replica {p['server_cpu_s_per_replica']} s)")
        print(f"  PostgreSQL CPU per compare {p['postgres_cpu_s_per_compare'] * 1000:.2f} ms "
              f"(the servers' sessions: {p['postgres_session_cpu_s_per_compare'] * 1000:.2f} ms)")
        print(f"  database sessions open   {p['database_sessions_open']} (all replicas, at the end)")
        print(f"  statements per compare   {p['statements_per_compare']} "
              f"({p['statement_ms_per_compare']} ms execution)")
        for s in p["statements"]:
            print(f"    {s['calls_per_compare']:6.2f} x {s['mean_ms']:7.3f} ms  {s['query'][:110]}")
        print(f"  S3 requests per compare  {p['s3_requests_per_compare'] or 'none'}")


if __name__ == "__main__":
    main()
