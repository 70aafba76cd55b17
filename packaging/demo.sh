#!/usr/bin/env bash
# Sets up a Debian/Ubuntu machine, builds veil, and runs its main job so far: a SIF image
# assembled with veil and run rootless — no root, no setuid, no fusermount — through
# veil's own FUSE server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/install-deps.sh
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
cargo build --release --locked
veil=$(pwd)/target/release/veil

work=$(mktemp -d /tmp/veil-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
root="$work/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/.singularity.d/env"
cp "$(command -v busybox)" "$root/bin/busybox"
for t in sh cat echo id; do ln -s busybox "$root/bin/$t"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
printf '#!/bin/sh\necho "Hello from a SIF container, running as $(id -un) ($(id -u)) with args: $*"\n' \
  > "$root/.singularity.d/runscript"
chmod 755 "$root/.singularity.d/runscript"
mksquashfs "$root" "$work/root.sqfs" -quiet -noappend -all-root -no-progress >/dev/null

arch=$(case "$(uname -m)" in x86_64) echo 2;; aarch64) echo 4;; riscv64) echo 12;; *) echo 2;; esac)
$veil sif new --launch-script '#!/usr/bin/env run-singularity\n' "$work/demo.sif"
$veil sif add "$work/demo.sif" "$work/root.sqfs" --datatype 4 --partfs 1 --parttype 2 --partarch "$arch" --groupid 1
chmod 644 "$work/demo.sif"
echo "== veil sif list"; $veil sif list "$work/demo.sif"
echo "== siftool list (Sylabs' reference tool reads veil's file)"; siftool list "$work/demo.sif"

# The run itself is rootless: as root, drop to an unprivileged user first.
as_user=()
if [ "$(id -u)" -eq 0 ]; then
  cp "$veil" "$work/veil"; chmod 755 "$work/veil"; veil="$work/veil"
  as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$work")
fi
echo "== veil run (rootless)"
(cd "$work" && "${as_user[@]}" "$veil" run "$work/demo.sif" one two)
