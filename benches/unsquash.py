#!/usr/bin/env python3
"""veil's FUSE-less start (the image unpacked into a ramfs: `veil exec --unsquash IMAGE
true`) against the real alternative, measured in one run on the same squashfs:
`unsquashfs -d DIR IMAGE` into a tmpfs (/dev/shm) and its removal, what Apptainer's
`--unsquash` does around a run (in its temporary directory), and, for scale, `veil exec
IMAGE true` served by FUSE.

The tree is e2e.py's (small text files and big half-random files). The squashfs is made
by mksquashfs and put into a SIF by `veil build` unchanged, so every column reads the
same bytes. Goal: veil's unpacked run of `true` in at most 1.5x the time of unsquashfs
and the removal (veil also checks memory and starts the container).

Usage: benches/unsquash.py [--veil PATH] [--big-mib 16] [--files 5000] [--runs 5]
Runs as a normal user, or as root (then veil runs as nobody, as rootless as it is
meant to be; unsquashfs as root too, which only changes ownership work).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import default_veil, make_tree  # noqa: E402


def timed(cmd, runs, before=None, **kw):
    """The median wall time of `cmd` over `runs` runs, `before` run first each time."""
    times = []
    for _ in range(runs):
        if before:
            before()
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--veil", default=None)
    ap.add_argument("--big-mib", type=int, default=16)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    veil = os.path.abspath(a.veil or default_veil())
    for tool in ["mksquashfs", "unsquashfs", "busybox"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    work = tempfile.mkdtemp(prefix="veil-unsquash-bench-")
    os.chmod(work, 0o755)
    try:
        tree = f"{work}/tree"
        make_tree(tree, a.big_mib, a.files, shutil.which("busybox"))
        sqfs = f"{work}/img.sqfs"
        subprocess.run(["mksquashfs", tree, sqfs, "-noappend", "-quiet", "-all-root", "-no-progress"],
                       check=True, stdout=subprocess.DEVNULL)
        sif = f"{work}/img.sif"
        subprocess.run([veil, "build", "-q", sif, sqfs], check=True)
        os.chmod(sif, 0o644)
        user = []
        if os.geteuid() == 0:
            shutil.copy(veil, f"{work}/veil")
            os.chmod(f"{work}/veil", 0o755)
            veil = f"{work}/veil"
            os.makedirs(f"{work}/home")
            os.chown(f"{work}/home", 65534, 65534)
            user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "env", f"HOME={work}/home"]
        out = "/dev/shm/veil-unsquash-bench"

        def clean():
            shutil.rmtree(out, ignore_errors=True)

        # Extracted and removed again, as Apptainer's --unsquash does around a run (veil's
        # ramfs goes with its mount namespace when the container ends, in its time).
        unsq = timed(["sh", "-c", f"unsquashfs -q -n -d {out} {sqfs} && rm -rf {out}"],
                     a.runs, before=clean)
        clean()
        veil_unsq = timed(user + [veil, "-q", "exec", "--unsquash", sif, "true"], a.runs, cwd=work)
        veil_fuse = timed(user + [veil, "exec", sif, "true"], a.runs, cwd=work)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tree) for f in fs)
        print(f"tree: {a.files} small files, 4 x {a.big_mib} MiB; {size / 2**20:.0f} MiB; "
              f"squashfs {os.path.getsize(sqfs) / 2**20:.0f} MiB; median of {a.runs}")
        print(f"unsquashfs -d /dev/shm; rm -rf   {unsq * 1000:8.0f} ms")
        print(f"veil exec --unsquash IMAGE true  {veil_unsq * 1000:8.0f} ms  "
              f"({veil_unsq / unsq:.2f}x unsquashfs; goal <= 1.5x: "
              f"{'met' if veil_unsq <= 1.5 * unsq else 'NOT met'})")
        print(f"veil exec IMAGE true (FUSE)      {veil_fuse * 1000:8.0f} ms  "
              f"({veil_fuse / veil_unsq:.3f}x the unpacked start)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree("/dev/shm/veil-unsquash-bench", ignore_errors=True)


if __name__ == "__main__":
    main()
