"""A webhook receiver that checks deliveries with the reference Standard
Webhooks library (PyPI `standardwebhooks`), for the integration tests.

Every POST, on any path, is verified with
`standardwebhooks.webhooks.Webhook(key).verify(body, headers)`: 204 when it
passes, 401 (with the library's reason) when it does not. Other methods get
405. It listens on 127.0.0.1:$PORT (PORT=0: a free port chosen by the OS).

The key: CONTRACT.md section 6 says the Standard Webhooks key is the
secret's UTF-8 bytes, or, for a secret written `whsec_<base64>`, the decoded
base64. The library always base64-decodes a string secret, so a plain
secret is handed to it as `whsec_` + base64(its UTF-8 bytes).

Printed on stdout: `LISTENING 127.0.0.1:<port>` once it accepts
connections, then `REQ <method> <path> <status>` per request (and the
reason of each 401 on stderr). The secret comes from
CCTELEGRAM_WEBHOOK_SECRET. With EXIT_ON_STDIN_EOF=1 the process exits when
its stdin closes.
"""

import base64
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# Requests are handled on several threads; print() writes the text and the
# newline separately, so lines from two threads could interleave. One write
# of the whole line under a lock keeps each line whole.
_say_lock = threading.Lock()


def say(line):
    with _say_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


HOST = "127.0.0.1"


def fail(code, message):
    print(f"standard_verify: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def library_secret(secret):
    if secret.startswith("whsec_"):
        return secret
    return "whsec_" + base64.b64encode(secret.encode("utf-8")).decode("ascii")


def main():
    port = int(os.environ.get("PORT", "0"))
    secret = os.environ.get("CCTELEGRAM_WEBHOOK_SECRET")
    if not secret:
        fail(2, "CCTELEGRAM_WEBHOOK_SECRET is not set")
    try:
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError
    except ImportError as e:
        fail(3, f"missing Python package ({e}); install it with "
                "`pip install -r tests/receivers/requirements.txt`")
    webhook = Webhook(library_secret(secret))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass  # one REQ line per request instead

        def read_body(self):
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline().strip():
                            pass  # trailers
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))

        def answer(self, status, body=b""):
            path = self.path.split("?")[0]
            self.send_response(status)
            if status != 204:
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 204:
                self.wfile.write(body)
            self.wfile.flush()
            say(f"REQ {self.command} {path} {status}")

        def do_POST(self):
            body = self.read_body()
            headers = {k: v for k, v in self.headers.items()}
            try:
                webhook.verify(body, headers, json_parse=False)
            except (WebhookVerificationError, ValueError) as e:
                # ValueError: a malformed signature list or base64.
                print(f"standard_verify: {self.path}: rejected: {e}",
                      file=sys.stderr, flush=True)
                self.answer(401, f"{e}\n".encode("utf-8"))
                return
            self.answer(204)

        def do_GET(self):
            self.answer(405, b"POST only\n")

        do_PUT = do_GET
        do_DELETE = do_GET

    try:
        server = ThreadingHTTPServer((HOST, port), Handler)
    except OSError as e:
        fail(1, f"cannot listen on {HOST}:{port}: {e}")
    server.daemon_threads = True

    if os.environ.get("EXIT_ON_STDIN_EOF") == "1":
        def watch_stdin():
            while sys.stdin.buffer.read(4096):
                pass
            os._exit(0)

        threading.Thread(target=watch_stdin, daemon=True).start()

    print(f"LISTENING {HOST}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
