"""A TLS-terminating front for a plain HTTP server, for the tests of https registries.

    python3 tls_front.py CERT KEY UPSTREAM_PORT

Listens on 127.0.0.1 on a port the system picks, prints that port on a line of its own, then for
every connection completes the TLS handshake with CERT and KEY and pipes the decrypted bytes to
127.0.0.1:UPSTREAM_PORT and back. It ends when its standard input closes (the test is gone).
"""

import socket
import ssl
import sys
import threading

cert, key, upstream_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)


def pipe(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    for s in (source, sink):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(raw):
    raw.settimeout(10)
    try:
        client = context.wrap_socket(raw, server_side=True)
    except (OSError, ssl.SSLError):
        # A client that does not trust the certificate gives up here.
        raw.close()
        return
    client.settimeout(None)
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
    pipe(client, upstream)


def accept():
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=serve, args=(raw,), daemon=True).start()


threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()
