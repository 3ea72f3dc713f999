#!/usr/bin/env python3
"""The scale figures of `BENCH_ONLY=scale static-tests/bench.sh`: one registry holding INSTANCES
instances in SERVICES services (1,000,000 in 1,000 by default).

Usage: scale.py BINARY [INSTANCES [SERVICES]]

Prints a Markdown table: registration time over pipelined keep-alive connections, RSS, heartbeat
throughput cycling over every id against the same server at 10,000 ids, one full fetch of each
full listing (time, bytes, RSS before, at its peak and after), heartbeat latency while four
clients fetch full listings in a loop, and whether any instance expired meanwhile; also one
gzip fetch and CONCURRENT_FETCHES concurrent fetches of the Eureka JSON listing. Every server
and client it starts binds 127.0.0.1 and is stopped by its PID at the end.
"""
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

CONNECTIONS, BATCH = 4, 512
CONCURRENT_FETCHES = 8
WRK = ["wrk", "-t2", "-c64", "-d10s", "--latency"]
LISTINGS = [
    ("/eureka/v2/apps (JSON)", "/eureka/v2/apps", "application/json"),
    ("/eureka/v2/apps (XML)", "/eureka/v2/apps", "application/xml"),
    ("/api/v1/instances", "/api/v1/instances", "application/json"),
]


def print_table(heading, rows):
    """Prints (name, value) rows as a two-column Markdown table."""
    print("| %s | Result |" % heading)
    print("|---|---|")
    for name, value in rows:
        print("| %s | %s |" % (name, value))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mib(kib):
    return "%.0f MiB" % (kib / 1024)


def read_head(reader, chunked=None):
    """The status and Content-Length of a response; with `chunked` (a list), appends whether
    the body is chunked."""
    status = int(reader.readline().split()[1])
    length, is_chunked = 0, False
    while True:
        line = reader.readline()
        if line in (b"\r\n", b""):
            if chunked is not None:
                chunked.append(is_chunked)
            return status, length
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        if name.strip().lower() == b"transfer-encoding":
            is_chunked = value.strip().lower() == b"chunked"


def body_pieces(reader, chunked):
    """The pieces of a body that ends with the connection (`Connection: close`), chunked or not."""
    if not chunked:
        while True:
            piece = reader.read(1 << 20)
            if not piece:
                return
            yield piece
    while True:
        size = int(reader.readline().split(b";")[0], 16)
        if size == 0:
            reader.readline()
            return
        yield reader.read(size)
        reader.readline()


def register_part(args):
    """Registers every index in range(first, count, step) over one connection; returns the ids."""
    port, first, count, step, services, ttl, prefix = args
    ids = []
    with socket.create_connection(("127.0.0.1", port)) as conn:
        reader = conn.makefile("rb")
        indexes = range(first, count, step)
        for start in range(0, len(indexes), BATCH):
            batch = indexes[start:start + BATCH]
            out = []
            for i in batch:
                body = ('{"service_name":"%s-%d","endpoint":{"type":"tcp","value":'
                        '"10.%d.%d.%d:%d"},"ttl":%d}'
                        % (prefix, i % services, (i >> 16) & 255, (i >> 8) & 255, i & 255,
                           1024 + (i >> 24), ttl))
                out.append("POST /api/v1/instances HTTP/1.1\r\nHost: localhost\r\n"
                           "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(body), body))
            conn.sendall("".join(out).encode())
            for _ in batch:
                status, length = read_head(reader)
                body = reader.read(length)
                if status != 201:
                    raise SystemExit("scale.py: registration answered %d %r" % (status, body))
                ids.append(re.search(rb'"id":"([^"]+)"', body).group(1).decode())
    return ids


def register(port, count, services, ttl=600, prefix="scale"):
    """Registers `count` instances (ttl in seconds) in `services` services named prefix-N."""
    began = time.perf_counter()
    with multiprocessing.Pool(CONNECTIONS) as pool:
        parts = pool.map(register_part, [(port, n, count, CONNECTIONS, services, ttl, prefix)
                                         for n in range(CONNECTIONS)])
    return [i for part in parts for i in part], time.perf_counter() - began


def start(binary, log):
    server = subprocess.Popen(
        [binary, "--api_bind", "127.0.0.1", "--api_port", "0", "--max_ttl", "10m",
         "--default_ttl", "10m"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    for _ in range(1000):
        found = re.search(r'address="127\.0\.0\.1:(\d+)"', open(log).read())
        if found:
            return server, int(found.group(1))
        if server.poll() is not None:
            raise SystemExit("scale.py: the server stopped; see " + log)
        time.sleep(0.01)
    raise SystemExit("scale.py: the server did not start")


def heartbeat_script(work, ids):
    path = os.path.join(work, "heartbeat-%d.lua" % len(ids))
    with open(path, "w") as lua:
        lua.write("ids = {\n")
        lua.writelines('"%s",\n' % i for i in ids)
        lua.write("}\n")
        lua.write("""
local thread_count = 0
function setup(thread)
  thread:set("id", thread_count)
  thread_count = thread_count + 1
end
local next_index
function init(args)
  next_index = (id or 0) * math.floor(#ids / 2)
end
function request()
  next_index = next_index + 1
  return wrk.format("PUT", "/api/v1/instances/" .. ids[next_index % #ids + 1] .. "/heartbeat")
end
function done(summary, latency, requests)
  io.write(string.format("BENCH rps=%.0f p50=%d p99=%d non2xx=%d sockerr=%d\\n",
    summary.requests / (summary.duration / 1e6), math.floor(latency:percentile(50)),
    math.floor(latency:percentile(99)), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
""")
    return path


def heartbeats(port, script):
    out = subprocess.run(WRK + ["-s", script, "http://127.0.0.1:%d" % port],
                         capture_output=True, text=True).stdout
    line = re.search(r"BENCH rps=(\d+) p50=(\d+) p99=(\d+) non2xx=(\d+) sockerr=(\d+)", out)
    if not line:
        raise SystemExit("scale.py: wrk failed: " + out)
    return [int(v) for v in line.groups()]


def fetch(port, path, accept, extra="", exact=True):
    """One full fetch, read and counted but not kept; returns (status, body bytes, seconds).
    Without `exact` a chunked body is counted with its framing, which spares the client the work
    of reading it chunk by chunk (the loops that load the server while heartbeats are timed)."""
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nAccept: %s\r\n%s"
                      "Connection: close\r\n\r\n" % (path, accept, extra)).encode())
        reader = conn.makefile("rb")
        chunked = []
        status, _ = read_head(reader, chunked)
        size = sum(len(piece) for piece in body_pieces(reader, chunked[0] and exact))
    return status, size, time.perf_counter() - began


def peak_during(pid, work):
    """Runs work() while sampling the server's RSS every 20 ms; returns (result, peak KiB)."""
    peak, done = [rss_kib(pid)], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.02)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, max(peak[0], rss_kib(pid))


def count_instances(port):
    """How many instances the registry lists (ids only)."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET /api/v1/instances?fields=id HTTP/1.1\r\nHost: localhost\r\n"
                     b"Connection: close\r\n\r\n")
        reader = conn.makefile("rb")
        chunked = []
        read_head(reader, chunked)
        return b"".join(body_pieces(reader, chunked[0])).count(b'"id"')


def main():
    binary = sys.argv[1]
    instances = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    services = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    work = tempfile.mkdtemp(prefix="a8scale.")
    rows = []
    small, small_port = start(binary, os.path.join(work, "small.log"))
    big, port = start(binary, os.path.join(work, "big.log"))
    try:
        small_ids, _ = register(small_port, 10_000, 10)
        idle = rss_kib(big.pid)
        ids, seconds = register(port, instances, services)
        held = rss_kib(big.pid)
        rows.append(("registration of %d instances in %d services (%d pipelining keep-alive "
                     "connections)" % (instances, services, CONNECTIONS),
                     "%.1f s, %.0f registrations/s" % (seconds, instances / seconds)))
        rows.append(("RSS idle / holding them", "%s / %s" % (mib(idle), mib(held))))
        small_script = heartbeat_script(work, small_ids)
        big_script = heartbeat_script(work, ids)
        runs = {"small": [], "big": []}
        for name, server_port, script in [("small", small_port, small_script),
                                          ("big", port, big_script)] * 2:
            runs[name].append(heartbeats(server_port, script))
        best = {name: max(r[0] for r in runs[name]) for name in runs}
        rows.append(("heartbeats/s cycling over every id (wrk -t2 -c64 -d10s, 2 alternating runs "
                     "each, best)", "%d at %d ids vs %d at 10,000: %.2f x" %
                     (best["big"], instances, best["small"], best["big"] / best["small"])))
        small.send_signal(signal.SIGTERM)
        small.wait()
        for name, path, accept in LISTINGS:
            before = rss_kib(big.pid)
            cpu_before = cpu_seconds(big.pid)
            (status, size, took), peak = peak_during(big.pid, lambda: fetch(port, path, accept))
            cpu = cpu_seconds(big.pid) - cpu_before
            time.sleep(1)
            after = rss_kib(big.pid)
            rows.append(("one full fetch of %s: status, bytes, time, server CPU" % name,
                         "%d, %.1f MB, %.2f s, %.2f s" % (status, size / 1e6, took, cpu)))
            rows.append(("  RSS before / peak / 1 s after", "%s / %s / %s"
                         % (mib(before), mib(peak), mib(after))))
        path, accept = LISTINGS[0][1:]
        before = rss_kib(big.pid)
        cpu_before = cpu_seconds(big.pid)
        (status, size, took), peak = peak_during(
            big.pid, lambda: fetch(port, path, accept, "Accept-Encoding: gzip\r\n"))
        cpu = cpu_seconds(big.pid) - cpu_before
        time.sleep(1)
        rows.append(("one full fetch of %s with Accept-Encoding: gzip: status, compressed bytes, "
                     "time, server CPU" % LISTINGS[0][0],
                     "%d, %.1f MB, %.2f s, %.2f s" % (status, size / 1e6, took, cpu)))
        rows.append(("  RSS before / peak / 1 s after", "%s / %s / %s"
                     % (mib(before), mib(peak), mib(rss_kib(big.pid)))))
        results = []

        def fetch_once():
            results.append(fetch(port, path, accept))

        def concurrent_fetches():
            fetchers = [threading.Thread(target=fetch_once) for _ in range(CONCURRENT_FETCHES)]
            for fetcher in fetchers:
                fetcher.start()
            for fetcher in fetchers:
                fetcher.join()
        before = rss_kib(big.pid)
        began = time.perf_counter()
        _, peak = peak_during(big.pid, concurrent_fetches)
        took = time.perf_counter() - began
        time.sleep(1)
        rows.append(("%d concurrent full fetches of %s: statuses, bytes each, time for all"
                     % (CONCURRENT_FETCHES, LISTINGS[0][0]),
                     "%s, %.1f MB, %.2f s" % (",".join(sorted({str(r[0]) for r in results})),
                                              max(r[1] for r in results) / 1e6, took)))
        rows.append(("  RSS before / peak / 1 s after", "%s / %s / %s"
                     % (mib(before), mib(peak), mib(rss_kib(big.pid)))))
        stop = threading.Event()
        fetched = [0]

        def fetch_loop(path, accept):
            while not stop.is_set():
                fetch(port, path, accept, exact=False)
                fetched[0] += 1
        before = rss_kib(big.pid)
        loops = [threading.Thread(target=fetch_loop, args=LISTINGS[n % len(LISTINGS)][1:])
                 for n in range(4)]
        for loop in loops:
            loop.start()
        (rps, p50, p99, non2xx, sockerr), peak = peak_during(
            big.pid, lambda: heartbeats(port, big_script))
        stop.set()
        for loop in loops:
            loop.join()
        rows.append(("heartbeats while 4 clients fetch full listings in a loop: req/s, p50, "
                     "p99, non-2xx or socket errors (wrk's timeout: 2 s)", "%d, %.2f ms, %.2f ms, %d (%d full fetches done; RSS %s "
                     "before, %s at the peak)" % (rps, p50 / 1000, p99 / 1000, non2xx + sockerr,
                                                  fetched[0], mib(before), mib(peak))))
        left = count_instances(port)
        rows.append(("instances still listed at the end (none may expire: ttl 600 s)",
                     "%d of %d" % (left, instances)))
    finally:
        for server in (small, big):
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait()
    print_table("Scale figure", rows)


if __name__ == "__main__":
    main()
