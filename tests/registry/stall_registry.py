# A registry that stalls: it serves a SIF artifact's manifest (stall/app) or a
# container image's manifest and configuration (stall/img), then sends the first
# megabyte of the SIF or of the image's layer and nothing more, for tests of
# interrupted downloads.
#   python3 stall_registry.py   prints "ready PORT"
import hashlib, json, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIZE = 64 << 20
LAYER = "sha256:" + hashlib.sha256(b"never sent in full").hexdigest()
CONFIG = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
MANIFEST = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.sylabs.sif.config.v1+json", "digest": CONFIG, "size": 2},
    "layers": [{"mediaType": "application/vnd.sylabs.sif.layer.v1.sif", "digest": LAYER, "size": SIZE}],
}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
IMG_CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
IMG_CONFIG_DIGEST = "sha256:" + hashlib.sha256(IMG_CONFIG).hexdigest()
IMG_MANIFEST = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": IMG_CONFIG_DIGEST,
               "size": len(IMG_CONFIG)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": LAYER, "size": SIZE}],
}).encode()
IMG_MANIFEST_DIGEST = "sha256:" + hashlib.sha256(IMG_MANIFEST).hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, body, ctype, digest=None, status=200):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if self.path == "/v2/":
            return self.answer(b"{}", "application/json")
        if "/manifests/" in self.path and "/stall/img/" in self.path:
            return self.answer(IMG_MANIFEST, "application/vnd.oci.image.manifest.v1+json", IMG_MANIFEST_DIGEST)
        if IMG_CONFIG_DIGEST in self.path:
            return self.answer(IMG_CONFIG, "application/octet-stream", IMG_CONFIG_DIGEST)
        if "/manifests/" in self.path:
            return self.answer(MANIFEST, "application/vnd.oci.image.manifest.v1+json", MANIFEST_DIGEST)
        if "/blobs/" in self.path:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(SIZE))
            self.end_headers()
            self.wfile.write(b"\0" * (1 << 20))
            self.wfile.flush()
            time.sleep(3600)
            return
        self.answer(b'{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}', "application/json", status=404)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print("ready", server.server_address[1], flush=True)
server.serve_forever()
