# A token endpoint for the distribution registry's `auth: token` mode, for veil's
# registry tests: signs ES256 JWTs with a fresh self-signed key whose certificate it
# writes to root.pem (the registry's rootcertbundle). User alice/secret gets what she
# asks for; anonymous callers get pull only; a wrong password gets 401.
#   python3 tokensrv.py PORT DIR
import base64, datetime, hashlib, json, sys, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

port, out_dir = int(sys.argv[1]), sys.argv[2]
USERS = {"alice": "secret"}
ISSUER = "veil-test-issuer"

key = ec.generate_private_key(ec.SECP256R1())
subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "veil test token signer")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder()
    .subject_name(subject)
    .issuer_name(subject)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(days=1))
    .not_valid_after(now + datetime.timedelta(days=30))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(key, hashes.SHA256())
)
with open(f"{out_dir}/root.pem", "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))


def key_id(public_key):
    # The registry finds the signing key by this ID: the first 240 bits of the SHA-256
    # of the DER public key, base32, in groups of four.
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


KID = key_id(key.public_key())


def scope(text):
    kind, rest = text.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    return {"type": kind, "name": name, "actions": actions.split(",")}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        user = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if USERS.get(user) != password:
                self.send_response(401)
                self.end_headers()
                return
        access = [scope(s) for v in query.get("scope", []) for s in v.split(" ")]
        if user is None:
            for a in access:
                a["actions"] = [x for x in a["actions"] if x == "pull"]
        t = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": query.get("service", [""])[0],
            "exp": t + 300,
            "nbf": t - 5,
            "iat": t,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": KID})
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print("ready", flush=True)
server.serve_forever()
