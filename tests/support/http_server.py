#!/usr/bin/env python3
"""A tiny HTTP/1.1 server in a process of its own, for tests that SIGKILL or SIGSTOP it.

    http_server.py NAME

Binds 127.0.0.1 on a free port, prints the port on one line, then serves: `/healthz`
answers 200 "ok"; every other GET answers 200 with NAME as the body and an `x-server`
header. Keep-alive, one thread per connection, no logging. Only the standard library.
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"ok" if self.path == "/healthz" else NAME.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-server", NAME)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    # The default backlog of 5 drops SYNs when 8 clients connect at once; a frozen
    # server must also keep accepting connects into its backlog, like a real one.
    request_queue_size = 128
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client gone mid-answer (a check that timed out) is no news.
        pass


if __name__ == "__main__":
    NAME = sys.argv[1]
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
