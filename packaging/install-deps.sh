#!/usr/bin/env bash
# Installs what building and testing veil needs on Debian or Ubuntu, then makes sure a
# Rust toolchain (1.89 or newer) is on PATH.
#
# RHEL family (Rocky, Alma, RHEL 9, with EPEL enabled) equivalents:
#   dnf install gcc make pkgconf-pkg-config squashfs-tools squashfuse fuse3 cryptsetup gocryptfs \
#       python3 python3-cryptography python3-argon2-cffi busybox gnupg2 openssl attr \
#       util-linux shadow-utils musl-gcc slurm-slurmctld slurm-slurmd munge
#   sks (the keyserver tests) is not packaged there either.
#   siftool is not packaged there: build it from Sylabs' sif repository with Go.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(
  build-essential pkg-config   # C compiler for the bundled libdeflate, zstd and xz sources
                               # (no OpenSSL headers or libclang: veil's crypto is pure Rust)
  musl-tools                   # musl-gcc: the static build (packaging/target.sh)
  siftool                      # Sylabs' reference SIF tool: interop tests
  squashfs-tools squashfuse    # mksquashfs/unsquashfs: fixtures and checks; squashfuse_ll: benchmark anchor
  libsquashfs-dev              # squashfs-tools-ng's libsquashfs: the squashfs writer of veil build
  fuse3                        # /dev/fuse, fusermount3
  cryptsetup-bin               # LUKS2 interop (no device-mapper needed)
  gocryptfs                    # Apptainer's unprivileged encrypted format: interop and benchmark anchor
  python3 python3-cryptography python3-argon2  # shared/interop scripts
  python3-pip                  # the registry tests' Python modules (below)
  busybox-static               # a tiny rootfs for container tests
  gnupg openssl                # signature and crypto cross-checks (the openssl command makes test keys)
  attr                         # setfattr/getfattr: xattr fixtures
  openssh-client               # ssh-keygen: OpenSSH key fixtures, protected and not
  uidmap util-linux            # newuidmap/newgidmap, unshare
  docker-registry skopeo       # a real OCI registry on loopback for the registry tests; a second client
  podman runc                  # tests/podman.rs: veil inside a rootless container, with and without /dev/fuse
  rpm                          # rpmbuild, rpm -qlp/-K: the .rpm (build-packages.sh, check-packages.sh)
  sks                          # a real HKP keyserver, started by the tests on loopback (tests/common/sks.rs)
  slurm-wlm munge              # a real one-node Slurm (slurmctld, slurmd, srun, sbatch) with its own
                               # munged, started by the tests on loopback (tests/common/slurm.rs)
  curl ca-certificates git
)

missing=()
for p in "${packages[@]}"; do
  case "$p" in \#*) continue ;; esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python modules of the registry tests: the ORAS Python SDK (the independent ORAS
# client), and the token endpoint's and htpasswd's crypto, for the python3 on PATH.
py_modules="oras==0.2.43 pyjwt cryptography bcrypt"
if ! python3 -c "import oras, jwt, cryptography, bcrypt" >/dev/null 2>&1; then
  echo "installing Python modules: $py_modules"
  # shellcheck disable=SC2086
  python3 -m pip install --quiet $py_modules >/dev/null 2>&1 \
    || python3 -m pip install --quiet --break-system-packages $py_modules >/dev/null
fi

# tests/podman.rs runs rootless podman as this user: podman needs a named user with
# subordinate ids (as root only; elsewhere the test uses the caller if it has them).
if [ "$(id -u)" -eq 0 ]; then
  if ! id veil-podman >/dev/null 2>&1; then
    useradd --system --create-home --home-dir /var/lib/veil-podman --shell /usr/sbin/nologin veil-podman
  fi
  if ! grep -q '^veil-podman:' /etc/subuid 2>/dev/null; then
    usermod --add-subuids 1000000-1065535 --add-subgids 1000000-1065535 veil-podman
  fi
fi

# /dev/fuse must exist and be usable by unprivileged users for rootless runs.
if [ ! -e /dev/fuse ]; then
  $SUDO mknod -m 0666 /dev/fuse c 10 229 || echo "warning: could not create /dev/fuse"
elif [ "$(stat -c %a /dev/fuse)" != "666" ]; then
  $SUDO chmod 0666 /dev/fuse || echo "warning: could not make /dev/fuse accessible"
fi

# Rust: use the one on PATH if it is new enough, else install rustup's stable toolchain.
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
need_rust=1
if command -v cargo >/dev/null 2>&1; then
  v=$(rustc --version | awk '{print $2}')
  if [ "$(printf '%s\n1.89.0\n' "$v" | sort -V | head -1)" = "1.89.0" ]; then need_rust=0; fi
fi
if [ "$need_rust" -eq 1 ]; then
  echo "installing the Rust toolchain with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  . "$HOME/.cargo/env"
fi

# The static build's standard library (packaging/target.sh says why). Without rustup
# (a distribution's Rust), the scripts build for the host's own target instead.
if command -v rustup >/dev/null 2>&1; then
  rustup target add "$(uname -m)-unknown-linux-musl" >/dev/null 2>&1 \
    || echo "warning: could not add the musl target; building for the host's target"
fi
