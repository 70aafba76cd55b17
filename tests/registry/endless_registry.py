# A registry whose answers never end, for the registry helper's memory bound.
#   python3 endless_registry.py token   its token endpoint's answer never ends
#   python3 endless_registry.py error   its error answer to an upload never ends
# Prints "ready PORT".
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[1]
CHUNK = b"x" * (1 << 20)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def small(self, status, body=b"{}", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def endless(self, status):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b'{"errors":[{"code":"DENIED","message":"')
        try:
            while True:
                self.wfile.write(CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        port = self.server.server_address[1]
        if self.path == "/v2/":
            if MODE == "token":
                realm = f'Bearer realm="http://127.0.0.1:{port}/token",service="endless"'
                return self.small(401, headers=[("WWW-Authenticate", realm)])
            return self.small(200)
        if self.path.startswith("/token") and MODE == "token":
            return self.endless(200)
        self.small(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}')

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if MODE == "error":
            return self.endless(400)
        self.small(404)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print("ready", server.server_address[1], flush=True)
server.serve_forever()
