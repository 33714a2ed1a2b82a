"""Runs the spec's Flask receiver for the integration tests.

flask_receiver.py is a verbatim copy of the "Python Flask Webhook Handler"
in spec/webhooks.md. It is imported, not run, so its
`if __name__ == '__main__'` block (0.0.0.0:3000, debug, reloader) stays
out; its `app` is served here on 127.0.0.1:$PORT (PORT=0: a free port
chosen by the OS) by werkzeug, threaded, without debug or reloader.

Printed on stdout: `LISTENING 127.0.0.1:<port>` once it accepts
connections, then `REQ <method> <path> <status>` for every request once its
status is known (from a WSGI wrapper, so a 500 from an exception in the
snippet is logged too). CCTELEGRAM_WEBHOOK_SECRET is read by the snippet
itself. With EXIT_ON_STDIN_EOF=1 the process exits when its stdin closes.
"""

import logging
import os
import sys
import threading


class _WholeLines:
    """Requests are handled on several threads, and print() (ours and the
    verbatim snippet's) writes the text and the newline separately, so lines
    from two threads could interleave. This keeps each thread's text until
    its newline and writes whole lines under a lock."""

    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()
        self.local = threading.local()

    def write(self, text):
        pending = getattr(self.local, "pending", "") + text
        *lines, self.local.pending = pending.split("\n")
        if lines:
            with self.lock:
                self.out.write("".join(line + "\n" for line in lines))
                self.out.flush()
        return len(text)

    def flush(self):
        with self.lock:
            self.out.flush()


sys.stdout = _WholeLines(sys.stdout)


def say(line):
    print(line, flush=True)


HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))


def fail(code, message):
    print(f"run_flask: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def main():
    port = int(os.environ.get("PORT", "0"))
    if not os.environ.get("CCTELEGRAM_WEBHOOK_SECRET"):
        fail(2, "CCTELEGRAM_WEBHOOK_SECRET is not set")
    try:
        import flask  # noqa: F401
        from werkzeug.serving import make_server
    except ImportError as e:
        fail(3, f"missing Python package ({e}); install it with "
                "`pip install -r tests/receivers/requirements.txt`")

    sys.path.insert(0, HERE)
    import flask_receiver

    app = flask_receiver.app

    def log_requests(wsgi_app):
        def logged(environ, start_response):
            method = environ.get("REQUEST_METHOD", "?")
            path = environ.get("PATH_INFO", "?")

            def start(status, headers, exc_info=None):
                say(f"REQ {method} {path} {status.split(' ')[0]}")
                return start_response(status, headers, exc_info)

            return wsgi_app(environ, start)

        return logged

    app.wsgi_app = log_requests(app.wsgi_app)
    # Werkzeug's own access log would repeat each request on stderr.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    try:
        server = make_server(HOST, port, app, threaded=True)
    except OSError as e:
        fail(1, f"cannot listen on {HOST}:{port}: {e}")

    if os.environ.get("EXIT_ON_STDIN_EOF") == "1":
        def watch_stdin():
            while sys.stdin.buffer.read(4096):
                pass
            os._exit(0)

        threading.Thread(target=watch_stdin, daemon=True).start()

    print(f"LISTENING {HOST}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
