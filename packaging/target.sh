# Sourced by the other scripts: picks the Rust target veil is built for, and where the
# binary lands.
#
# The static (musl) build where its toolchain is there (install-deps.sh installs it):
# one binary that runs on any Linux, and that starts faster than a glibc one. glibc's
# start-up probes the CPU's caches with dozens of cpuid instructions, and in a virtual
# machine every cpuid traps to the hypervisor (9 µs each on the CI VM, where it added
# 0.6 ms to each `veil exec`). Elsewhere, the host's own target.
VEIL_TARGET="$(uname -m)-unknown-linux-musl"
if ! command -v musl-gcc >/dev/null 2>&1 \
  || ! rustup target list --installed 2>/dev/null | grep -qx "$VEIL_TARGET"; then
  VEIL_TARGET=$(rustc -vV | sed -n 's/^host: //p')
fi
VEIL_BIN="$(pwd)/target/$VEIL_TARGET/release/veil"
export VEIL_TARGET VEIL_BIN
