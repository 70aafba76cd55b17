#!/usr/bin/env python3
"""Pull throughput from a registry on loopback: veil against skopeo and the ORAS Python
SDK, the same blob from the same registry in one run, the clients taking turns.

    benches/registry.py [--size-mib 1024] [--runs 3] [--veil PATH]

Starts Debian's docker-registry on 127.0.0.1 with its storage in a temporary directory
(on the same file system as the downloads), pushes one SIF of --size-mib MiB of random
data with veil, then pulls it with each client --runs times, in turns:

  veil     veil pull --no-https --force DEST oras://HOST/bench/blob:1
  skopeo   skopeo copy --preserve-digests docker://HOST/bench/blob:1 oci:DIR (the layout
           holds the same blob; --preserve-digests keeps skopeo from recompressing it)
  oras-py  oras.provider.Registry.pull(HOST/bench/blob:1, outdir=DIR)

and prints each client's median time and throughput and veil's throughput as a ratio to
the others' (goal: at least 0.9 of both).
"""

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def find_veil(arg):
    if arg:
        return arg
    target = subprocess.run(
        ["bash", "-c", f". {HERE.parent}/packaging/target.sh >/dev/null; echo $VEIL_TARGET"],
        capture_output=True, text=True).stdout.strip()
    for p in [HERE.parent / "target" / target / "release/veil", HERE.parent / "target/release/veil"]:
        if p.is_file():
            return str(p)
    sys.exit("no release build of veil: . packaging/target.sh; cargo build --release --target $VEIL_TARGET")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(tmp):
    """Debian's docker-registry on a free loopback port, its storage under `tmp`; returns
    HOST:PORT and the process once it accepts connections."""
    port = free_port()
    host = f"127.0.0.1:{port}"
    (tmp / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'data'}\n"
        f"http:\n  addr: {host}\n  secret: bench\n")
    reg = subprocess.Popen(["docker-registry", "serve", str(tmp / "config.yml")],
                           stderr=subprocess.DEVNULL)
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return host, reg


def timed(cmd, **kw):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--veil")
    a = ap.parse_args()
    veil = find_veil(a.veil)
    for tool in ["docker-registry", "skopeo"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    try:
        import oras.provider  # noqa: F401
    except ImportError:
        sys.exit("the ORAS Python SDK is not installed (pip install oras)")

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        tmp = Path(tmp)
        host, reg = start_registry(tmp)
        try:
            # A SIF holding one generic object of random bytes.
            data = tmp / "data.bin"
            with open(data, "wb") as f:
                for _ in range(a.size_mib):
                    f.write(os.urandom(1 << 20))
            sif = tmp / "blob.sif"
            subprocess.run([veil, "sif", "new", str(sif)], check=True)
            subprocess.run([veil, "sif", "add", "--datatype", "7", str(sif), str(data)], check=True)
            data.unlink()
            size = sif.stat().st_size
            uri = f"oras://{host}/bench/blob:1"
            push = timed([veil, "push", "-q", "--no-https", str(sif), uri])
            digest = hashlib.sha256(sif.read_bytes()).hexdigest()

            out = tmp / "out"
            clients = {
                "veil": lambda: timed([veil, "pull", "-q", "--no-https", "--force",
                                       str(out / "blob.sif"), uri]),
                "skopeo": lambda: timed(["skopeo", "copy", "-q", "--preserve-digests",
                                         "--src-tls-verify=false",
                                         f"docker://{host}/bench/blob:1", f"oci:{out / 'layout'}:1"]),
                "oras-py": lambda: timed([sys.executable, "-c",
                                          "import sys, oras.provider;"
                                          "oras.provider.Registry(hostname=sys.argv[1], insecure=True)"
                                          ".pull(target=sys.argv[1] + '/bench/blob:1', outdir=sys.argv[2])",
                                          host, str(out / "oras")]),
            }
            times = {k: [] for k in clients}
            for _ in range(a.runs):
                for name, run in clients.items():
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    subprocess.run(["sync"])
                    times[name].append(run())
            # Every client got the same bytes.
            got = hashlib.sha256((out / "oras" / "blob.sif").read_bytes()).hexdigest()
            assert got == digest, "oras-py pulled other bytes"
        finally:
            reg.terminate()
            reg.wait()

    mib = size / (1 << 20)
    print(f"registry pull, {mib:.0f} MiB SIF, loopback docker-registry, {a.runs} runs each, in turns")
    print(f"(veil push of the same file: {push:.2f} s, {mib / push:.0f} MiB/s)")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        runs = ", ".join(f"{x:.2f}" for x in times[name])
        print(f"  {name:8} median {t:6.2f} s  {mib / t:7.0f} MiB/s   (runs: {runs})")
    for other in ["skopeo", "oras-py"]:
        print(f"  veil throughput / {other}: {med[other] / med['veil']:.2f}x (goal >= 0.9)")


if __name__ == "__main__":
    main()
