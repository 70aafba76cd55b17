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
df -h . /tmp 2>/dev/null || true
cargo test --workspace --locked --no-fail-fast --target "$VEIL_TARGET" -- --nocapture 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
  echo "== failed; free space =="
  df -h . /tmp 2>/dev/null || true
  grep -E "^test .* FAILED$|^error: test failed" "$log" || true
fi
echo
echo "== skipped tests and why =="
# A skip is allowed only for what the machine cannot have (.ci/allowed-skips); in CI
# any other skip fails the run, since CI installs every tool and makes every fixture.
allowed=.ci/allowed-skips
skips=$(grep -h "SKIP" "$log" | sort | uniq || true)
if [ -z "$skips" ]; then
  echo "(none)"
else
  unexpected=$(printf '%s\n' "$skips" | grep -v -E -f <(grep -v -e '^#' -e '^$' "$allowed") || true)
  expected=$(printf '%s\n' "$skips" | grep -E -f <(grep -v -e '^#' -e '^$' "$allowed") || true)
  if [ -n "$expected" ]; then
    echo "allowed (this machine cannot have it):"
    printf '%s\n' "$expected" | sed 's/^/  /'
  fi
  if [ -n "$unexpected" ]; then
    echo "NOT allowed (a tool or fixture the setup should provide):"
    printf '%s\n' "$unexpected" | sed 's/^/  /'
    if [ "${CI:-}" = "true" ]; then
      echo "CI fails on skips that are not in $allowed" >&2
      [ "$status" -ne 0 ] || status=1
    fi
  fi
fi
exit "$status"
