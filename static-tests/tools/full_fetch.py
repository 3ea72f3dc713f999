"""Bytes and server CPU of full fetches, plain and gzip (BENCH_ONLY=gzip in bench.sh).

Usage: full_fetch.py PORT SERVER_PID ROUNDS

For each listing and each encoding: the body's size on the wire, and the server's CPU time for one
fetch, as the sum over its threads of /proc/PID/task/*/schedstat (nanoseconds on the CPU). A
"built" fetch comes right after a change (one registration in a service of its own), so the
server renders the listing, and compresses it when gzip is asked for; a "cached" fetch repeats
it, and the server sends the body (and its gzip form) it kept. /api/v1/instances is not cached:
every fetch of it renders; nor is a listing streamed because its namespace is large (100,000
instances is over the threshold): its second fetch renders it again. Each figure is the median of ROUNDS fetches. Prints Markdown rows.
"""

import glob
import json
import socket
import statistics
import sys
import time

port, pid, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def cpu_ns():
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total


def request(method, path, headers, body=b""):
    with socket.create_connection(("127.0.0.1", port)) as conn:
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        for name, value in headers:
            head += f"{name}: {value}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        conn.sendall(head.encode() + b"\r\n" + body)
        reader = conn.makefile("rb")
        status = int(reader.readline().split()[1])
        length, encoding, chunked = 0, None, False
        while True:
            line = reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            if name.strip().lower() == "content-encoding":
                encoding = value.strip()
            if name.strip().lower() == "transfer-encoding":
                chunked = value.strip().lower() == "chunked"
        if not chunked:
            data = reader.read(length)
            assert len(data) == length, (path, len(data), length)
            return status, encoding, data
        # A streamed listing (a large namespace): its chunks, without their framing.
        pieces = []
        while True:
            size = int(reader.readline().split(b";")[0], 16)
            if size == 0:
                return status, encoding, b"".join(pieces)
            pieces.append(reader.read(size))
            reader.readline()


churn = 0


def change():
    global churn
    churn += 1
    body = json.dumps({"service_name": "bench-churn",
                       "endpoint": {"type": "tcp", "value": f"10.250.0.{churn}:80"}, "ttl": 600})
    status, _, _ = request("POST", "/api/v1/instances", [], body.encode())
    assert status == 201, status


def fetch(path, headers):
    """CPU ns of the server for one fetch, wall seconds, bytes, the coding."""
    before, began = cpu_ns(), time.perf_counter()
    status, encoding, data = request("GET", path, headers)
    wall = time.perf_counter() - began
    assert status == 200, (path, status)
    # The connection closed after the body: the server's part is done.
    time.sleep(0.05)
    return cpu_ns() - before, wall, len(data), encoding


LISTINGS = [
    ("GET /eureka/v2/apps (XML)", "/eureka/v2/apps", [], True),
    ("GET /eureka/v2/apps (JSON)", "/eureka/v2/apps", [("Accept", "application/json")], True),
    ("GET /api/v1/instances", "/api/v1/instances", [], False),
]

ms = lambda ns: f"{ns / 1e6:.0f} ms"
for name, path, headers, cached in LISTINGS:
    for coding in ("identity", "gzip"):
        asked = headers + ([("Accept-Encoding", "gzip")] if coding == "gzip" else [])
        built, cached_cpu, walls, size, seen = [], [], [], 0, None
        for _ in range(rounds):
            change()
            cpu, wall, size, seen = fetch(path, asked)
            built.append(cpu)
            walls.append(wall)
            if cached:
                cached_cpu.append(fetch(path, asked)[0])
        assert (seen == "gzip") == (coding == "gzip"), (path, coding, seen)
        again = ms(statistics.median(cached_cpu)) if cached else "(not cached)"
        print(f"| {name} | {coding} | {size:,} | {ms(statistics.median(built))} | {again} "
              f"| {statistics.median(walls) * 1000:.0f} ms |")
