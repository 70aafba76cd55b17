#!/usr/bin/env bash
# Sets up a Debian/Ubuntu machine, builds veil, and runs its main job: an encrypted SIF
# container built and run with no root at all — no setuid helper, no dm-crypt, no
# fusermount. The image is encrypted for an RSA key exactly as `apptainer build
# --encrypt` does it (LUKS2 around squashfs, RSA-OAEP key message), and veil serves it
# to the container through its own FUSE server, decrypting in memory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/install-deps.sh
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
. packaging/target.sh
cargo build --release --locked --target "$VEIL_TARGET"
bash packaging/main-job.sh "$VEIL_BIN"
