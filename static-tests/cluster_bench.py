#!/usr/bin/env python3
"""Cluster figures of the release a8registry on this machine (not a test: it asserts nothing).

    python3 static-tests/cluster_bench.py [BIN]

Prints: (1) the time a new node takes to sync 100,000 instances from a peer; (2) heartbeat
throughput of one node alone and of one node with 2 peers attached (wrk, 10,000 ids, 10 s each);
(3) propagation latency p50/p99 of registrations from one node to another of 3, measured while
wrk sends heartbeats to the first; (4) bytes sent per heartbeat per peer (as one peer received them);
(5) the replication traffic of a link between two nodes that agree on 100,000 instances (digests
every 10 s, pings); (6) write latency p99 of one node with every peer up and with one peer
stopped (SIGSTOP) while 15,000 registrations with 900-byte metadata go through. Every process
binds 127.0.0.1 and is killed by its PID at the end.
"""
import json, os, re, shutil, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/a8registry")
WORK = tempfile.mkdtemp(prefix="a8cluster-bench.")
PROCS = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, extra):
    log = open(os.path.join(WORK, name + ".log"), "w+")
    began = time.monotonic()
    proc = subprocess.Popen([BIN, "--api_bind", "127.0.0.1", "--api_port", "0", "--max_ttl", "10m",
                             "--default_ttl", "10m"] + extra, stdout=subprocess.DEVNULL, stderr=log)
    PROCS.append(proc)
    while True:
        text = open(log.name).read()
        found = re.search(r'msg="listening" address="127.0.0.1:(\d+)"', text)
        if found:
            return proc, int(found.group(1)), time.monotonic() - began, text
        if proc.poll() is not None:
            sys.exit("the server did not start:\n" + text)
        time.sleep(0.005)


def node(name, directory, extra=()):
    port = free_port()
    return start(name, ["--replication", "--replication_bind", "127.0.0.1", "--replication_port",
                        str(port), "--cluster_dir", directory, "--sync_timeout", "60s"] + list(extra))


def read_response(reader):
    status = int(reader.readline().split()[1])
    length = 0
    while True:
        line = reader.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, reader.read(length)


def register_many(port, service, count, batch=256):
    conn = socket.create_connection(("127.0.0.1", port))
    reader = conn.makefile("rb")
    ids = []
    for start_index in range(0, count, batch):
        raw = b""
        for i in range(start_index, min(count, start_index + batch)):
            body = json.dumps({"service_name": service, "endpoint": {"type": "tcp", "value":
                               "10.%d.%d.%d:80" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)},
                               "ttl": 600})
            raw += ("POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    "\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)).encode()
        conn.sendall(raw)
        for _ in range(start_index, min(count, start_index + batch)):
            status, body = read_response(reader)
            assert status == 201, body
            ids.append(json.loads(body)["id"])
    conn.close()
    return ids


def get(port, path):
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        return read_response(conn.makefile("rb"))


def wrk_heartbeats(port, ids, seconds=10):
    script = os.path.join(WORK, "hb.lua")
    with open(script, "w") as f:
        f.write("ids = {%s}\n" % ",".join('"%s"' % i for i in ids))
        f.write("local n = 0\nfunction request()\n n = n + 1\n return wrk.format('PUT', "
                "'/api/v1/instances/' .. ids[n % #ids + 1] .. '/heartbeat')\nend\n")
    return subprocess.Popen(["wrk", "-t2", "-c64", "-d%ds" % seconds, "-s", script,
                             "http://127.0.0.1:%d" % port], stdout=subprocess.PIPE, text=True)


def rps(wrk):
    out = wrk.communicate()[0]
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def received_bytes(pid):
    # Bytes the TCP sockets of a peer received (`ss -ti`): a peer has no HTTP clients here, so
    # this is its replication traffic.
    out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True,
                         text=True).stdout.splitlines()
    total = 0
    for head, info in zip(out[::2], out[1::2]):
        if "pid=%d," % pid in head:
            found = re.search(r"bytes_received:(\d+)", info)
            total += int(found.group(1)) if found else 0
    return total


try:
    # (1) sync of 100,000 instances.
    d1 = os.path.join(WORK, "sync")
    a, a_port, _, _ = node("sync-a", d1)
    register_many(a_port, "bulk", 100_000)
    b, b_port, took, log = node("sync-b", d1)
    line = re.search(r'initial sync complete: (\d+) records from (\d+) peers in ([^"]+)"', log)
    listed = len(json.loads(get(b_port, "/api/v1/services/bulk")[1])["instances"])
    print("| new node syncs 100,000 instances | %s (process start to API open: %.2f s; %d listed) |"
          % (line.group(3) if line else "?", took, listed))
    time.sleep(2)
    before = received_bytes(b.pid)
    time.sleep(30)
    idle = received_bytes(b.pid) - before
    print("| bytes a peer receives per 10 s, 2 nodes agreeing on 100,000 instances (digests, pings) | %.0f |"
          % (idle / 3))
    for p in (a, b):
        p.kill()
        p.wait()

    # (2) heartbeat throughput alone and with 2 peers.
    alone, alone_port, _, _ = start("alone", [])
    ids = register_many(alone_port, "hb", 10_000)
    single = rps(wrk_heartbeats(alone_port, ids))
    alone.kill()
    alone.wait()
    d2 = os.path.join(WORK, "hb")
    first, first_port, _, _ = node("hb-a", d2)
    others = [node("hb-%d" % i, d2) for i in (1, 2)]
    time.sleep(3)
    ids = register_many(first_port, "hb", 10_000)
    time.sleep(1)
    before = received_bytes(others[0][0].pid)
    with_peers = rps(wrk_heartbeats(first_port, ids))
    sent = received_bytes(others[0][0].pid) - before
    beats = with_peers * 10
    print("| heartbeats/s, one node alone | %.0f |" % single)
    print("| heartbeats/s, one node with 2 peers | %.0f (%.2f x alone) |" % (with_peers, with_peers / single))
    print("| bytes sent per heartbeat per peer (10,000 ids cycled, leases coalesced) | %.1f |" % (sent / beats))

    # (3) propagation latency under heartbeat load.
    target_port = others[0][1]
    load = wrk_heartbeats(first_port, ids, seconds=15)
    time.sleep(1)
    latencies = []
    for i in range(200):
        began = time.monotonic()
        new_id = register_many(first_port, "probe-%d" % i, 1)[0]
        while True:
            status, body = get(target_port, "/api/v1/services/probe-%d" % i)
            if status == 200:
                break
        latencies.append(time.monotonic() - began)
    load_rps = rps(load)
    latencies.sort()
    print("| propagation register -> listed on another node, 3 nodes, under %.0f heartbeats/s | p50 %.1f ms, p99 %.1f ms (200 probes, incl. the HTTP round trips) |"
          % (load_rps, latencies[100] * 1000, latencies[197] * 1000))

    # (6) write latency with every peer up, then with one stopped.
    load.wait()
    def timed_registrations(port, first, count):
        conn = socket.create_connection(("127.0.0.1", port))
        reader = conn.makefile("rb")
        pad = "x" * 900
        took = []
        for i in range(first, first + count):
            body = json.dumps({"service_name": "latency", "endpoint": {"type": "tcp", "value":
                               "10.%d.%d.%d:80" % (100 + (i >> 16), (i >> 8) & 255, i & 255)},
                               "metadata": {"pad": pad}})
            raw = ("POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                   "\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)).encode()
            began = time.monotonic()
            conn.sendall(raw)
            status, _ = read_response(reader)
            took.append(time.monotonic() - began)
            assert status == 201
        conn.close()
        took.sort()
        return took[len(took) * 99 // 100], took[-1]
    up_p99, _ = timed_registrations(first_port, 0, 3_000)
    os.kill(others[1][0].pid, 19)  # SIGSTOP
    stopped_p99, stopped_max = timed_registrations(first_port, 3_000, 15_000)
    os.kill(others[1][0].pid, 18)  # SIGCONT
    print("| write latency p99 of one node of 3, every peer up vs one peer stopped (15,000 writes of ~1.3 KB) | %.2f ms vs %.2f ms (slowest %.1f ms) |"
          % (up_p99 * 1000, stopped_p99 * 1000, stopped_max * 1000))
finally:
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(WORK, ignore_errors=True)
