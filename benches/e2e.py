#!/usr/bin/env python3
"""End-to-end comparison of veil's FUSE server with the anchors, measured in one run on
the same images: squashfuse_ll (user space) and the kernel's squashfs over a loop device
(needs root).

Measured for each: `exec true` latency (veil only: the anchors have no runtime), a tree
walk on a fresh mount and a repeated walk, a read of every small file, and a read of the
big files. Prints a table and the ratios against the kernel and squashfuse_ll.

Usage: benches/e2e.py [--veil target/release/veil] [--big-mib 64] [--files 20000] [--runs 5]
Run as root for the kernel anchor; without root the kernel column is skipped.
"""
import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def median_time(fn, runs):
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def make_tree(root, big_mib, files, busybox):
    os.makedirs(f"{root}/bin")
    shutil.copy(busybox, f"{root}/bin/busybox")
    for tool in ["sh", "find", "cat", "xargs", "true"]:
        os.symlink("busybox", f"{root}/bin/{tool}")
    rng = random.Random(7)
    os.makedirs(f"{root}/data/tree")
    for i in range(4):
        with open(f"{root}/data/big{i}", "wb") as f:
            # Half incompressible, half text: both stored and compressed blocks.
            f.write(rng.randbytes(big_mib << 19))
            line = b"a line of text in a big file, compressible %d\n"
            chunk = b"".join(line % j for j in range(20000))
            left = big_mib << 19
            while left > 0:
                f.write(chunk[:left])
                left -= len(chunk)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"zeta"]
    for i in range(files):
        d = f"{root}/data/tree/d{i // 100:03d}"
        os.makedirs(d, exist_ok=True)
        n = rng.randint(100, 8000)
        body = b" ".join(rng.choice(words) for _ in range(n // 6))[:n]
        with open(f"{d}/f{i:05d}.txt", "wb") as f:
            f.write(body)


WALK = "find {m}/data/tree > /dev/null"
SMALL = "find {m}/data/tree -type f | xargs cat > /dev/null"
BIG = "cat {m}/data/big0 {m}/data/big1 {m}/data/big2 {m}/data/big3 > /dev/null"


class Anchor:
    """A mounted image the host's busybox reads directly."""

    def __init__(self, name, mount_cmd, image, mnt, busybox):
        self.name, self.mount_cmd, self.image, self.mnt, self.bb = name, mount_cmd, image, mnt, busybox

    def mount(self):
        sh(self.mount_cmd + [self.image, self.mnt], stdout=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.ismount(self.mnt):
                return
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} did not mount")

    def umount(self):
        sh(["umount", self.mnt])

    def fresh(self, script):
        self.mount()
        try:
            t = time.perf_counter()
            sh([self.bb, "sh", "-c", script.format(m=self.mnt)])
            return time.perf_counter() - t
        finally:
            self.umount()

    def repeated(self, script):
        self.mount()
        try:
            sh([self.bb, "sh", "-c", script.format(m=self.mnt)])
            t = time.perf_counter()
            sh([self.bb, "sh", "-c", script.format(m=self.mnt)])
            return time.perf_counter() - t
        finally:
            self.umount()


class Veil:
    def __init__(self, veil, image, args):
        self.veil, self.image, self.args = veil, image, args

    def run(self, script):
        sh([self.veil, "exec"] + self.args + [self.image, "sh", "-c", script], cwd="/")

    def fresh(self, script, base):
        t = time.perf_counter()
        self.run(script.format(m=""))
        return time.perf_counter() - t - base

    def repeated(self, script, base):
        s = script.format(m="")
        one = self.fresh(script, base)
        t = time.perf_counter()
        self.run(f"{s}; {s}")
        return time.perf_counter() - t - base - one


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--veil", default="target/release/veil")
    ap.add_argument("--big-mib", type=int, default=64, help="size of each of the 4 big files")
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--comp", default="gzip")
    a = ap.parse_args()
    veil = os.path.abspath(a.veil)
    busybox = shutil.which("busybox")
    if not busybox or not os.path.exists(veil):
        sys.exit("needs busybox and a built veil (cargo build --release)")
    root = os.geteuid() == 0
    work = tempfile.mkdtemp(prefix="veil-bench-", dir="/tmp")
    try:
        print(f"building the images ({a.files} small files, 4 x {a.big_mib} MiB, {a.comp}) ...", flush=True)
        make_tree(f"{work}/rootfs", a.big_mib, a.files, busybox)
        img = f"{work}/img.sqfs"
        sh(["mksquashfs", f"{work}/rootfs", img, "-comp", a.comp, "-noappend", "-quiet", "-all-root", "-no-progress"],
           stdout=subprocess.DEVNULL)
        sif = f"{work}/img.sif"
        sh([veil, "sif", "new", sif])
        sh([veil, "sif", "add", sif, img, "--datatype", "4", "--partfs", "1", "--parttype", "2", "--partarch", "2"])
        mnt = f"{work}/mnt"
        os.mkdir(mnt)
        big_mb = 4 * a.big_mib * 1.048576

        results = {}
        v = Veil(veil, sif, ["--fuse"] if root else [])
        base = median_time(lambda: v.run("true"), max(a.runs * 4, 20))
        results["veil"] = {
            "exec true (ms)": base * 1000,
            "walk fresh (s)": statistics.median(v.fresh(WALK, base) for _ in range(a.runs)),
            "walk repeated (s)": statistics.median(v.repeated(WALK, base) for _ in range(a.runs)),
            "small files (s)": statistics.median(v.fresh(SMALL, base) for _ in range(a.runs)),
            "big read (MB/s)": big_mb / statistics.median(v.fresh(BIG, base) for _ in range(a.runs)),
        }
        anchors = []
        if shutil.which("squashfuse_ll"):
            anchors.append(Anchor("squashfuse_ll", ["squashfuse_ll"], img, mnt, busybox))
        if root:
            anchors.append(Anchor("kernel", ["mount", "-t", "squashfs", "-o", "loop,ro"], img, mnt, busybox))
        else:
            print("(not root: no kernel squashfs anchor)")
        for an in anchors:
            results[an.name] = {
                "exec true (ms)": float("nan"),
                "walk fresh (s)": statistics.median(an.fresh(WALK) for _ in range(a.runs)),
                "walk repeated (s)": statistics.median(an.repeated(WALK) for _ in range(a.runs)),
                "small files (s)": statistics.median(an.fresh(SMALL) for _ in range(a.runs)),
                "big read (MB/s)": big_mb / statistics.median(an.fresh(BIG) for _ in range(a.runs)),
            }

        names = list(results)
        metrics = list(results["veil"])
        print()
        print(f"{'metric':<20}" + "".join(f"{n:>16}" for n in names))
        for m in metrics:
            print(f"{m:<20}" + "".join(f"{results[n][m]:>16.3f}" for n in names))
        print()
        for ref in [n for n in names if n != "veil"]:
            print(f"veil / {ref}:")
            for m in metrics[1:]:
                r = results["veil"][m] / results[ref][m]
                note = "(higher is better)" if "MB/s" in m else "(lower is better)"
                print(f"  {m:<20} {r:6.2f}x {note}")
    finally:
        if os.path.ismount(f"{work}/mnt"):
            subprocess.run(["umount", f"{work}/mnt"])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
