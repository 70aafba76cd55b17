# The ORAS Python SDK as an independent registry client for veil's tests.
#   oras_client.py push HOST/REPO:TAG FILE [MEDIA_TYPE]   (SIF artifact layout)
#   oras_client.py pull HOST/REPO:TAG OUTDIR              prints the pulled path
#   oras_client.py manifest HOST/REPO:TAG                 prints the manifest JSON
#   oras_client.py put-manifest HOST/REPO:TAG FILE        uploads a raw manifest
# Plain HTTP; credentials from ORAS_USER / ORAS_PASSWORD when set.
import json, os, sys, urllib.request

import oras.provider

SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
SIF_LAYER = "application/vnd.sylabs.sif.layer.v1.sif"

cmd, target = sys.argv[1], sys.argv[2]
host = target.split("/", 1)[0]
reg = oras.provider.Registry(hostname=host, insecure=True, auth_backend="basic")
user, password = os.environ.get("ORAS_USER"), os.environ.get("ORAS_PASSWORD")
if user:
    reg.auth.set_basic_auth(user, password)

if cmd == "push":
    path = sys.argv[3]
    media = sys.argv[4] if len(sys.argv) > 4 else SIF_LAYER
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "oras-config.json")
    with open(config, "w") as f:
        f.write("{}")
    os.chdir(os.path.dirname(os.path.abspath(path)))
    reg.push(
        target=target,
        files=[f"{os.path.basename(path)}:{media}"],
        manifest_config=f"oras-config.json:{SIF_CONFIG}",
    )
elif cmd == "pull":
    out = reg.pull(target=target, outdir=sys.argv[3])
    print(out[0])
elif cmd == "manifest":
    print(json.dumps(reg.get_manifest(target)))
elif cmd == "put-manifest":
    repo_tag = target.split("/", 1)[1]
    repo, tag = repo_tag.rsplit(":", 1)
    with open(sys.argv[3], "rb") as f:
        body = f.read()
    req = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}",
        data=body,
        method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    urllib.request.urlopen(req).read()
else:
    sys.exit(f"unknown command {cmd}")
