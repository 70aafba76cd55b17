#!/usr/bin/env bash
# Sets up a Debian/Ubuntu machine and runs veil's whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/install-deps.sh
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
. packaging/target.sh
echo "testing the $VEIL_TARGET build"
# Test output is shown (--nocapture) so that every skipped test's reason is in the
# log; the reasons are repeated at the end.
mkdir -p target
log=target/test-output.log
status=0
cargo test --workspace --locked --target "$VEIL_TARGET" -- --nocapture 2>&1 | tee "$log" || status=$?
echo
echo "== skipped tests and why =="
grep -h "SKIP" "$log" | sort | uniq || echo "(none)"
exit "$status"
