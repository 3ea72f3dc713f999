"""A TLS front for a plain server of the suite (the mock Kubernetes API server, a registry behind
an https URL): clients speak HTTPS to it, it relays the bytes in clear to the server.

    python3 tls_proxy.py CERT KEY UPSTREAM_PORT

Listens on 127.0.0.1 on a port the kernel picks and prints "port N" once it does. It exits when
its standard input closes (the test that started it ended).
"""

import socket
import ssl
import sys
import threading

cert, key, upstream = sys.argv[1], sys.argv[2], int(sys.argv[3])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print("port", listener.getsockname()[1], flush=True)


def pump(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    for end in (source, sink):
        try:
            end.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def relay(client):
    try:
        secure = context.wrap_socket(client, server_side=True)
    except (ssl.SSLError, OSError):
        client.close()
        return
    try:
        plain = socket.create_connection(("127.0.0.1", upstream))
    except OSError:
        secure.close()
        return
    threading.Thread(target=pump, args=(plain, secure), daemon=True).start()
    pump(secure, plain)


def accept():
    while True:
        client, _ = listener.accept()
        threading.Thread(target=relay, args=(client,), daemon=True).start()


threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()
