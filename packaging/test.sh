#!/usr/bin/env bash
# Sets up a Debian/Ubuntu machine and runs veil's whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/install-deps.sh
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
cargo test --workspace --locked
