#!/usr/bin/env python3
"""Build-time benchmark of `veil build`, measured in one run against the anchor:

  mksquashfs SRC out.sqfs -comp C -processors N   (squashfs only, no SIF)
  veil build --threads N --compression C plain.sif SRC          (squashfs + layout + SIF + verification)
  veil build --threads N --compression C --pem-path K enc.sif SRC  (+ LUKS2 encryption)

Goals (issue #7): plain veil build <= 1.2x mksquashfs; encrypted <= 1.1x plain.
Each command runs --runs times (median); the source tree is read once first so every
run starts from a warm page cache. Outputs go to --out (default: a temporary directory
under /var/tmp, on disk rather than tmpfs).

Usage: benches/build.py [--veil PATH] [--src /usr/share] [--comp gzip]
                        [--threads N] [--runs 3]
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from e2e import default_veil


def cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, runs, cleanup):
    """Median wall time, the samples, and the median CPU time (user + system) of the
    command: on a shared machine the CPU time is the load-independent comparison."""
    samples, cpus = [], []
    for _ in range(runs):
        cleanup()
        c = cpu()
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - t)
        cpus.append(cpu() - c)
    return statistics.median(samples), samples, statistics.median(cpus)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--veil", default=default_veil(),
                    help="the binary to measure (default: the static build if there is one)")
    ap.add_argument("--src", default="/usr/share")
    ap.add_argument("--comp", default="gzip", choices=["gzip", "zstd", "xz", "lz4"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    for tool in ["mksquashfs", "openssl"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed")
    out = a.out or tempfile.mkdtemp(prefix="veil-build-bench-", dir="/var/tmp")
    os.makedirs(out, exist_ok=True)
    key = os.path.join(out, "key.pem")
    pub = os.path.join(out, "pub.pem")
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", key, "2048"], check=True,
                   stderr=subprocess.DEVNULL)
    subprocess.run(["openssl", "rsa", "-in", key, "-RSAPublicKey_out", "-out", pub], check=True,
                   stderr=subprocess.DEVNULL)
    # Warm the page cache.
    subprocess.run(["tar", "-cf", "/dev/null", "-C", a.src, "."], stderr=subprocess.DEVNULL)
    sq = os.path.join(out, "anchor.sqfs")
    plain = os.path.join(out, "plain.sif")
    enc = os.path.join(out, "enc.sif")

    def rm(*paths):
        def f():
            for p in paths:
                if os.path.exists(p):
                    os.remove(p)
        return f

    mk = ["mksquashfs", a.src, sq, "-noappend", "-no-progress", "-quiet", "-all-root",
          "-comp", a.comp, "-processors", str(a.threads)]
    vb = [a.veil, "build", "-q", "--threads", str(a.threads), "--compression", a.comp]
    t_mk, s_mk, c_mk = timed(mk, a.runs, rm(sq))
    t_plain, s_plain, c_plain = timed(vb + [plain, a.src], a.runs, rm(plain))
    t_enc, s_enc, c_enc = timed(vb + ["--pem-path", pub, enc, a.src], a.runs, rm(enc))
    size_mk = os.path.getsize(sq)
    size_plain = os.path.getsize(plain)
    print(f"source: {a.src}, compressor {a.comp}, {a.threads} threads, {a.runs} runs (median)")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'':32}{'wall s':>8}{'CPU s':>8}{'size MiB':>10}  wall samples")
    print(f"{'mksquashfs':32}{t_mk:8.2f}{c_mk:8.2f}{size_mk / 2**20:10.1f}  {[round(x, 2) for x in s_mk]}")
    print(f"{'veil build (plain SIF)':32}{t_plain:8.2f}{c_plain:8.2f}{size_plain / 2**20:10.1f}  {[round(x, 2) for x in s_plain]}")
    print(f"{'veil build (encrypted, PEM)':32}{t_enc:8.2f}{c_enc:8.2f}{os.path.getsize(enc) / 2**20:10.1f}  {[round(x, 2) for x in s_enc]}")
    print(f"plain / mksquashfs:     wall {t_plain / t_mk:.2f}x, CPU {c_plain / c_mk:.2f}x (goal <= 1.2x)")
    print(f"encrypted / plain:      wall {t_enc / t_plain:.2f}x, CPU {c_enc / c_plain:.2f}x (goal <= 1.1x)")
    if not a.out:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
