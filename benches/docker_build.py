#!/usr/bin/env python3
"""Building a SIF from a docker:// image on a loopback registry: veil against the same
work done by the usual tools, in one run, taking turns.

    benches/docker_build.py [--mib 300] [--runs 3] [--veil PATH]

Makes a three-layer image of about --mib MiB (layer sizes 1/2, 1/3 and 1/6 of it; each
a mix of many small text files, which compress, and a few files of random bytes, which
do not; gzip), places it in Debian's docker-registry on 127.0.0.1 with skopeo, and then
builds a squashfs of it both ways, every run from an empty cache:

  veil     veil build -q --no-https OUT.sif docker://HOST/bench/img:1
  tools    skopeo copy docker://HOST/bench/img:1 oci:DIR:1, then `tar -xzf` of each
           layer in order into a root directory, then mksquashfs ROOT OUT.sqfs with
           veil's compressor (gzip, level 9, 128 KiB blocks)

and prints each side's median time and veil's as a ratio to the tools' (goal: at most
1.2). Run as root or not; both sides run as the same user.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registry import find_veil, start_registry, timed  # noqa: E402


def layer_tar(name, size, rng):
    """A layer of about `size` bytes under /NAME: half small text files, half random."""
    buf = io.BytesIO()
    words = [("".join(rng.choice("abcdefghij klmnop\n") for _ in range(64))).encode()
             for _ in range(256)]
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(path, data):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
        text, i = 0, 0
        while text < size // 2:
            data = b"".join(rng.choice(words) for _ in range(rng.randint(8, 256)))
            add(f"{name}/src/d{i // 100}/f{i}.txt", data)
            text += len(data)
            i += 1
        for j in range(max(1, size // 2 // (16 << 20))):
            add(f"{name}/data/blob{j}.bin", rng.randbytes(min(16 << 20, size // 2)))
    return buf.getvalue()


def make_layout(out, mib):
    """An OCI layout with one linux image of three gzip layers."""
    rng = random.Random(7)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data):
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    layers, diff_ids = [], []
    for name, share in [("base", 2), ("libs", 3), ("app", 6)]:
        tar = layer_tar(name, (mib << 20) // share, rng)
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        desc = blob(gzip.compress(tar, compresslevel=6))
        desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        layers.append(desc)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = blob(json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode())
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": layers,
    }).encode())
    manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest["annotations"] = {"org.opencontainers.image.ref.name": "1"}
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return sum(l["size"] for l in layers)


def tools_build(host, work):
    layout = work / "layout"
    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false",
                    f"docker://{host}/bench/img:1", f"oci:{layout}:1"], check=True)
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs/sha256" / digest).read_text())
    root = work / "root"
    root.mkdir()
    for l in manifest["layers"]:
        subprocess.run(["tar", "-xzf", str(layout / "blobs/sha256" / l["digest"].split(":")[1]),
                        "-C", str(root)], check=True)
    subprocess.run(["mksquashfs", str(root), str(work / "out.sqfs"), "-noappend", "-quiet",
                    "-comp", "gzip", "-Xcompression-level", "9", "-b", "131072"],
                   check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--veil")
    a = ap.parse_args()
    veil = find_veil(a.veil)
    for tool in ["docker-registry", "skopeo", "mksquashfs", "tar"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        tmp = Path(tmp)
        host, reg = start_registry(tmp)
        try:
            compressed = make_layout(tmp / "src", a.mib)
            subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                            f"oci:{tmp / 'src'}:1", f"docker://{host}/bench/img:1"], check=True)
            shutil.rmtree(tmp / "src")
            work = tmp / "work"
            env = dict(os.environ)

            def veil_build():
                env["VEIL_CACHEDIR"] = str(work / "cache")
                return timed([veil, "build", "-q", "--no-https", str(work / "out.sif"),
                              f"docker://{host}/bench/img:1"], env=env)

            sides = {"veil": veil_build, "tools": lambda: _tools(host, work)}
            times = {k: [] for k in sides}
            sizes = {}
            for _ in range(a.runs):
                for name, run in sides.items():
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir()
                    subprocess.run(["sync"])
                    times[name].append(run())
                    out = work / ("out.sif" if name == "veil" else "out.sqfs")
                    sizes[name] = out.stat().st_size
            shutil.rmtree(work, ignore_errors=True)
        finally:
            reg.terminate()
            reg.wait()

    print(f"docker:// build, 3 gzip layers of {compressed / (1 << 20):.0f} MiB "
          f"({a.mib} MiB unpacked), loopback docker-registry, {a.runs} runs each, in turns")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        runs = ", ".join(f"{x:.2f}" for x in times[name])
        print(f"  {name:6} median {t:6.2f} s   output {sizes[name] / (1 << 20):6.1f} MiB   (runs: {runs})")
    print(f"  veil time / tools: {med['veil'] / med['tools']:.2f}x (goal <= 1.2)")


def _tools(host, work):
    t = time.perf_counter()
    tools_build(host, work)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
