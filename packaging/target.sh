# Sourced by the other scripts: picks the Rust target veil is built for, and where the
# binary lands.
#
# The static (musl) build where its toolchain is there (install-deps.sh installs it):
# one binary that runs on any Linux, and that starts faster than a glibc one. glibc's
# start-up probes the CPU's caches with dozens of cpuid instructions, and in a virtual
# machine every cpuid traps to the hypervisor (9 µs each on the CI VM, where it added
# 0.6 ms to each `veil exec`). Elsewhere, the host's own target.
VEIL_TARGET="$(uname -m)-unknown-linux-musl"
# (grep without -q reads all of rustup's output: under pipefail, a grep that stopped
# early would fail rustup with SIGPIPE and the test with it.)
if command -v musl-gcc >/dev/null 2>&1 \
  && rustup target list --installed 2>/dev/null | grep -x "$VEIL_TARGET" >/dev/null; then
  # The C sources (libdeflate, zstd, xz) are compiled with musl-gcc, the wrapper
  # Debian's musl-tools installs on every architecture (the cc crate would otherwise
  # look for an aarch64-linux-musl-gcc cross compiler on arm64).
  export "CC_${VEIL_TARGET//-/_}=musl-gcc"
else
  VEIL_TARGET=$(rustc -vV | sed -n 's/^host: //p')
fi
VEIL_BIN="$(pwd)/target/$VEIL_TARGET/release/veil"
export VEIL_TARGET VEIL_BIN
