#!/usr/bin/env python3
"""The soak figures of `BENCH_ONLY=soak static-tests/bench.sh`: INSTANCES instances (100,000 by
default) with a ttl of 30 s, each heartbeating every 10 s (ttl/3), for MINUTES minutes (30), with
reads and churn mixed in.

Usage: soak.py BINARY [MINUTES [INSTANCES]]

Heartbeats go out from four processes, each owning a quarter of the ids and sending them in
pipelined batches over one keep-alive connection once per round of 10 s. Beside them one process
reads (a service, a filtered listing, the service list) and churns (registers new short-lived
instances and deregisters them) without pause. Every 10 s the main process records the server's
RSS, and every 30 s it counts the soak instances the registry lists. A heartbeat answered 404 is a
false expiry: the instance was dropped although it heartbeated in time. Prints a Markdown table.
"""
import multiprocessing
import os
import socket
import sys
import tempfile
import time

from scale import count_instances, mib, print_table, read_head, register, rss_kib, start

TTL, ROUND, SERVICES, BATCH = 30, 10.0, 100, 512


def exchange(conn, reader, requests):
    """Sends the requests pipelined and returns their statuses."""
    conn.sendall("".join(requests).encode())
    statuses = []
    for _ in requests:
        status, length = read_head(reader)
        reader.read(length)
        statuses.append(status)
    return statuses


def heartbeater(port, ids, end, results):
    counts, late_rounds, next_round = {}, 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        reader = conn.makefile("rb")
        while time.monotonic() < end:
            for start_at in range(0, len(ids), BATCH):
                batch = ["PUT /api/v1/instances/%s/heartbeat HTTP/1.1\r\nHost: localhost\r\n"
                         "Content-Length: 0\r\n\r\n" % i for i in ids[start_at:start_at + BATCH]]
                for status in exchange(conn, reader, batch):
                    counts[status] = counts.get(status, 0) + 1
            next_round += ROUND
            pause = next_round - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                late_rounds += 1
    results.put(("heartbeats", counts, late_rounds))


def reader_and_churner(port, end, results):
    counts, reads, churned, serial = {}, 0, 0, 0
    with socket.create_connection(("127.0.0.1", port)) as conn:
        reader = conn.makefile("rb")
        while time.monotonic() < end:
            n = serial % SERVICES
            requests = [
                "GET /api/v1/services/soak-%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % n,
                "GET /api/v1/instances?service_name=soak-%d&fields=id HTTP/1.1\r\n"
                "Host: localhost\r\n\r\n" % n,
                "GET /api/v1/services HTTP/1.1\r\nHost: localhost\r\n\r\n",
            ]
            for status in exchange(conn, reader, requests):
                counts[status] = counts.get(status, 0) + 1
            reads += len(requests)
            body = ('{"service_name":"churn","endpoint":{"type":"tcp","value":"192.168.%d.%d:80"},'
                    '"ttl":%d}' % ((serial >> 8) & 255, serial & 255, TTL))
            conn.sendall(("POST /api/v1/instances HTTP/1.1\r\nHost: localhost\r\n"
                          "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(body), body)).encode())
            status, length = read_head(reader)
            answer = reader.read(length)
            counts[status] = counts.get(status, 0) + 1
            if status == 201:
                churn_id = answer.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
                requests = ["DELETE /api/v1/instances/%s HTTP/1.1\r\nHost: localhost\r\n\r\n"
                            % churn_id]
                for status in exchange(conn, reader, requests):
                    counts[status] = counts.get(status, 0) + 1
                churned += 1
            serial += 1
            time.sleep(0.01)
    results.put(("reads", counts, reads, churned))


def main():
    binary = sys.argv[1]
    minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 30
    instances = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    work = tempfile.mkdtemp(prefix="a8soak.")
    server, port = start(binary, os.path.join(work, "soak.log"))
    try:
        ids, seconds = register(port, instances, SERVICES, ttl=TTL, prefix="soak")
        began = time.monotonic()
        end = began + minutes * 60
        results = multiprocessing.Queue()
        quarter = (len(ids) + 3) // 4
        workers = [multiprocessing.Process(target=heartbeater,
                                           args=(port, ids[q * quarter:(q + 1) * quarter], end,
                                                 results)) for q in range(4)]
        workers.append(multiprocessing.Process(target=reader_and_churner,
                                               args=(port, end, results)))
        for worker in workers:
            worker.start()
        rss, counts_listed = [], []
        while time.monotonic() < end:
            time.sleep(10)
            rss.append((time.monotonic() - began, rss_kib(server.pid)))
            if len(rss) % 3 == 0:
                counts_listed.append(count_instances(port))
        heartbeat_counts, late_rounds, read_counts, reads, churned = {}, 0, {}, 0, 0
        for _ in workers:
            report = results.get()
            if report[0] == "heartbeats":
                for status, n in report[1].items():
                    heartbeat_counts[status] = heartbeat_counts.get(status, 0) + n
                late_rounds += report[2]
            else:
                read_counts, reads, churned = report[1], report[2], report[3]
        for worker in workers:
            worker.join()
        final = count_instances(port)
    finally:
        server.terminate()
        server.wait()
    after_first_minute = [kib for at, kib in rss if at >= 60] or [kib for _, kib in rss]
    # The trend: the sample nearest each of a few minutes.
    marks = []
    for minute in sorted({1, 2, 5, 10, 15, 20, 25, 30, int(minutes)}):
        if minute <= minutes and rss:
            marks.append((minute, min(rss, key=lambda sample: abs(sample[0] - minute * 60))[1]))
    low, high = min(after_first_minute), max(after_first_minute)
    sent = sum(heartbeat_counts.values())
    good = heartbeat_counts.get(200, 0)
    other = {s: n for s, n in read_counts.items() if not 200 <= s < 300}
    rows = [
        ("instances, ttl, heartbeat period, duration",
         "%d in %d services (registered in %.1f s), %d s, every %d s, %.0f min"
         % (instances, SERVICES, seconds, TTL, ROUND, minutes)),
        ("heartbeats sent / answered 200 / answered 404 (false expiries) / other",
         "%d / %d / %d / %d" % (sent, good, heartbeat_counts.get(404, 0),
                                sent - good - heartbeat_counts.get(404, 0))),
        ("heartbeat rounds that overran their 10 s", "%d" % late_rounds),
        ("instances listed every 30 s (the soak's, and at most one churning): min / max / at the end",
         "%d / %d / %d of %d" % (min(counts_listed or [final]), max(counts_listed or [final]),
                                 final, instances)),
        ("reads and churn: requests, registrations deregistered again, non-2xx",
         "%d reads, %d churned, %d non-2xx" % (reads, churned, sum(other.values()))),
        ("RSS after the first minute: min / max (spread)",
         "%s / %s (%.1f %%)" % (mib(low), mib(high), (high - low) * 100.0 / low)),
        ("RSS at minutes " + ", ".join(str(m) for m, _ in marks),
         ", ".join(mib(kib) for _, kib in marks)),
    ]
    print_table("Soak figure", rows)


if __name__ == "__main__":
    main()
