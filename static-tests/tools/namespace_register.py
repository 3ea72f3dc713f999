#!/usr/bin/env python3
"""Registers COUNT instances over 4 pipelined keep-alive connections, with `--auth_mode trusted`
tokens: all in namespace `ns` ("one"), or each in a namespace of its own ("spread"). With `read`,
reads instead the service of each of those namespaces once (`GET /api/v1/services/svc`, which
the registry then caches). Not a test; static-tests/tools/namespace_memory.sh uses it to measure
what a namespace costs.

    namespace_register.py PORT COUNT one|spread [read]
"""
import json, socket, sys, threading, time
port, count, spread = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "spread"
reading = sys.argv[4:] == ["read"]
CONNECTIONS, BATCH = 4, 256
def request(i):
    ns = "ns-%d" % i if spread else "ns"
    if reading:
        return ("GET /api/v1/services/svc HTTP/1.1\r\nHost: localhost\r\n"
                "Authorization: Bearer %s\r\n\r\n" % ns).encode()
    value = "10.%d.%d.%d:80" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
    body = json.dumps({"service_name": "svc", "endpoint": {"type": "tcp", "value": value}, "ttl": 600})
    return ("POST /api/v1/instances HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (ns, len(body), body)).encode()
def read_response(reader):
    status = int(reader.readline().split()[1]); length = 0
    while True:
        line = reader.readline()
        if line in (b"\r\n", b""): break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length": length = int(value)
    reader.read(length); return status
bad = []
def worker(n):
    idx = range(n, count, CONNECTIONS)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        r = conn.makefile("rb")
        for s in range(0, len(idx), BATCH):
            b = idx[s:s+BATCH]; conn.sendall(b"".join(request(i) for i in b))
            for _ in b:
                st = read_response(r)
                if st != (200 if reading else 201): bad.append(st)
t0 = time.time()
ts = [threading.Thread(target=worker, args=(n,)) for n in range(CONNECTIONS)]
[t.start() for t in ts]; [t.join() for t in ts]
print("read" if reading else "registered", count, "spread" if spread else "one", "in %.1fs" % (time.time()-t0), "errors", len(bad))
