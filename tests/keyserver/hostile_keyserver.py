# A keyserver that misbehaves in one way, for tests of veil's defences.
#   python3 hostile_keyserver.py MODE [KEYFILE]   prints "ready PORT"
# MODE:
#   wrongkey  every op=get answers with KEYFILE's key, whatever was asked for
#   huge      every answer is 6 MiB of armor-looking text
#   badindex  op=index answers with one good key among malformed lines
#   stall     accepts, reads the request, never answers
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[1]
KEY = open(sys.argv[2], "rb").read() if len(sys.argv) > 2 else b""

INDEX = (b"info:1:3\r\n"
         b"pub:garbage:x:y:z::\r\nuid:belongs to garbage:1::\r\n"
         b"pub:AB60BF8FD61BB9FE0CAFD31DD0E6C4F452A71A51:1:2048:1796658481::\r\n"
         b"uid:Good Key %3Cgood@example.org%3E:1796658481::\r\n"
         b"what is this line\r\n"
         b"uid:Escape %1b[2J attempt:1::\r\n")


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *a):
        pass

    def answer(self, body, ctype="text/plain"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if MODE == "stall":
            time.sleep(120)
            return
        if MODE == "huge":
            self.send_response(200)
            self.send_header("Content-Type", "application/pgp-keys")
            self.end_headers()
            line = b"A" * 63 + b"\n"
            try:
                for _ in range((6 << 20) // 64):
                    self.wfile.write(line)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if "op=index" in self.path and MODE == "badindex":
            return self.answer(INDEX)
        if "op=get" in self.path and MODE == "wrongkey":
            return self.answer(KEY, "application/pgp-keys")
        self.send_response(404)
        self.end_headers()

    do_POST = do_GET


srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
print("ready", srv.server_address[1], flush=True)
srv.serve_forever()
