#!/usr/bin/env bash
# Sets up a Debian/Ubuntu machine, builds veil, and shows its main job so far: a SIF
# image assembled and inspected with veil, and read back by Sylabs' siftool.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/install-deps.sh
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
cargo build --release --locked
veil=target/release/veil

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin"
echo 'hello from a SIF container' > "$work/rootfs/hello.txt"
mksquashfs "$work/rootfs" "$work/root.sqfs" -quiet -noappend -all-root
printf 'Bootstrap: scratch\n' > "$work/def"

$veil sif new --launch-script '#!/usr/bin/env run-singularity\n' "$work/demo.sif"
$veil sif add "$work/demo.sif" "$work/def" --datatype 1 --groupid 1
$veil sif add "$work/demo.sif" "$work/root.sqfs" --datatype 4 --partfs 1 --parttype 2 \
  --partarch "$(case $(uname -m) in x86_64) echo 2;; aarch64) echo 4;; *) echo 2;; esac)" --groupid 1
echo "== veil sif list"; $veil sif list "$work/demo.sif"
echo "== veil sif header"; $veil sif header "$work/demo.sif"
echo "== siftool list (the reference tool reads veil's file)"; siftool list "$work/demo.sif"
$veil sif dump 2 "$work/demo.sif" | cmp - "$work/root.sqfs" && echo "== partition dumps back byte for byte"
