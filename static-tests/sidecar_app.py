"""The application the sidecar tests supervise: an HTTP server whose health can be flipped and
which can exit with a given code.

    python3 sidecar_app.py PORT [--unhealthy] [--ignore-term] [--report FILE --registry URL]
                                [--tls CERT KEY]

(with the registry token, if any, in the environment variable APP_TOKEN)

GET /health answers 200 while healthy, else 503; GET /moved redirects to /health. POST
/health/ok and /health/fail flip it.
POST /exit/N answers, then exits with status N. On SIGTERM it appends one line to the report
file, "SIGTERM <the registry's instance listing at that moment>", and exits 0 (or ignores the
signal with --ignore-term). It writes "pid <pid>" to the report file when it starts listening.
With --tls it serves HTTPS with that certificate and key.
"""

import http.server
import os
import signal
import ssl
import sys
import threading
import urllib.request

args = sys.argv[1:]
port = int(args[0])
state = {"healthy": "--unhealthy" not in args}
report = args[args.index("--report") + 1] if "--report" in args else None
registry = args[args.index("--registry") + 1] if "--registry" in args else None
token = os.environ.get("APP_TOKEN")


def note(line):
    if report:
        with open(report, "a") as f:
            f.write(line + "\n")


def listing():
    if not registry:
        return ""
    request = urllib.request.Request(registry + "/api/v1/instances")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.read().decode()
    except Exception as e:  # the report says what went wrong
        return "error " + str(e)


def on_term(signum, frame):
    note("SIGTERM " + listing())
    os._exit(0)


if "--ignore-term" in args:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_term)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *_):
        pass

    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        if self.path == "/health":
            self.answer(200 if state["healthy"] else 503)
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/health")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.answer(404)

    do_HEAD = do_GET

    def do_POST(self):
        if self.path == "/health/ok":
            state["healthy"] = True
            self.answer(200)
        elif self.path == "/health/fail":
            state["healthy"] = False
            self.answer(200)
        elif self.path.startswith("/exit/"):
            code = int(self.path[len("/exit/"):])
            self.answer(200)
            self.wfile.flush()
            threading.Timer(0.05, lambda: os._exit(code)).start()
        else:
            self.answer(404)


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
if "--tls" in args:
    at = args.index("--tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args[at + 1], args[at + 2])
    server.socket = context.wrap_socket(server.socket, server_side=True)
note("pid %d" % os.getpid())
server.serve_forever()
