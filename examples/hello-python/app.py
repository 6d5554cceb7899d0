"""The quick-start app: stdlib only, so it deploys before any buildpack installs dependencies.

web:    answers every GET with "Hello from $DYNO" on $PORT (the router sends traffic there).
worker: writes a line to stdout every few seconds, to watch in `dynoctl logs --tail`.
"""

import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        body = f"Hello from {os.environ.get('DYNO', 'a dyno')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base signature
        # The router already logs every request; one line per request from the app too would double it.
        pass


def web() -> None:
    port = int(os.environ.get("PORT", "5000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Hello)
    print(f"listening on port {port}", flush=True)
    server.serve_forever()


def worker() -> None:
    beat = 0
    while True:
        beat += 1
        print(f"worker {os.environ.get('DYNO', '?')} heartbeat {beat}", flush=True)
        time.sleep(5)


if __name__ == "__main__":
    worker() if sys.argv[1:] == ["worker"] else web()
