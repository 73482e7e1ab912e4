"""A minimal upstream for deploy/check.sh: answers every POST with 200 and
the allow answer, on 127.0.0.1:PORT. Stops by itself after LIFETIME seconds.

Usage: python3 upstream.py PORT [LIFETIME]
"""

import http.server
import sys
import threading

ALLOW = b'{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}'


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(ALLOW)))
        self.end_headers()
        self.wfile.write(ALLOW)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    lifetime = float(sys.argv[2]) if len(sys.argv) > 2 else 600
    threading.Timer(lifetime, server.shutdown).start()
    server.serve_forever()
