# Writes an OCI image layout for veil's docker:// tests, for skopeo to copy into a
# registry: an image index with a linux/amd64 and a linux/arm64 image over the same
# root file system (ROOTFS, a directory), each with three layers:
#   1. ROOTFS itself, plus /etc/arch (the platform), /opt/old1, /opt/old2, /tmp/gone,
#      gzip;
#   2. a whiteout of /tmp/gone, an opaque /opt with /opt/new in it, zstd (by the zstd
#      command);
#   3. /etc/hello, uncompressed.
# The configuration sets Env (FOO=bar), Cmd and WorkingDir.
# And "bomb": one gzip layer of 256 KiB that unpacks to a 256 MiB file of zeros.
#   python3 make_layout.py ROOTFS OUTDIR
import gzip, hashlib, io, json, os, subprocess, sys, tarfile

rootfs, out = sys.argv[1], sys.argv[2]
os.makedirs(f"{out}/blobs/sha256", exist_ok=True)


def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(f"{out}/blobs/sha256/{digest}", "wb") as f:
        f.write(data)
    return f"sha256:{digest}", len(data)


def tar_of(add):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        add(t)
    return buf.getvalue()


def file(t, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    t.addfile(info, io.BytesIO(data))


def dir_entry(t, name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    t.addfile(info)


def image(arch):
    def base(t):
        t.add(rootfs, arcname=".", filter=lambda i: (setattr(i, "uid", 0), setattr(i, "gid", 0), i)[2])
        file(t, "etc/arch", f"{arch}\n".encode())
        dir_entry(t, "opt")
        file(t, "opt/old1", b"old\n")
        file(t, "opt/old2", b"old\n")
        dir_entry(t, "tmp")
        file(t, "tmp/gone", b"gone\n")

    def second(t):
        dir_entry(t, "tmp")
        file(t, "tmp/.wh.gone", b"")
        dir_entry(t, "opt")
        file(t, "opt/.wh..wh..opq", b"")
        file(t, "opt/new", b"new\n")

    def third(t):
        file(t, "etc/hello", b"hello from a layer\n")

    plain = [tar_of(base), tar_of(second), tar_of(third)]
    z = subprocess.run(["zstd", "-q", "-c"], input=plain[1], capture_output=True, check=True).stdout
    stored = [
        (gzip.compress(plain[0], mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"),
        (z, "application/vnd.oci.image.layer.v1.tar+zstd"),
        (plain[2], "application/vnd.oci.image.layer.v1.tar"),
    ]
    layers = []
    for data, media in stored:
        d, n = blob(data)
        layers.append({"mediaType": media, "digest": d, "size": n})
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin", "FOO=bar"], "Cmd": ["cat", "/etc/arch"], "WorkingDir": "/opt"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(p).hexdigest() for p in plain]},
    }
    cd, cn = blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": layers,
    }
    md, mn = blob(json.dumps(manifest).encode())
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
            "platform": {"architecture": arch, "os": "linux"}}


def bomb():
    size = 256 << 20
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as g:
        info = tarfile.TarInfo("zeros")
        info.size = size
        info.mode = 0o644
        g.write(info.tobuf(format=tarfile.PAX_FORMAT))
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            g.write(chunk)
        g.write(bytes(1024))  # the end-of-archive blocks
    d, n = blob(buf.getvalue())
    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n}]
    config = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}
    cd, cn = blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": layers,
    }
    md, mn = blob(json.dumps(manifest).encode())
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
            "annotations": {"org.opencontainers.image.ref.name": "bomb"}}


entries = [image("amd64"), image("arm64")]
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
xd, xn = blob(json.dumps(index).encode())
top = {
    "schemaVersion": 2,
    "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": xd, "size": xn,
         "annotations": {"org.opencontainers.image.ref.name": "multi"}},
        dict(entries[0], annotations={"org.opencontainers.image.ref.name": "single"}),
        bomb(),
    ],
}
with open(f"{out}/index.json", "w") as f:
    json.dump(top, f)
with open(f"{out}/oci-layout", "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
