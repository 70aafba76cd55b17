#!/usr/bin/env bash
# veil's main job, run with the veil given (demo.sh builds one): an encrypted
# SIF built and run with no root at all — no setuid helper, no dm-crypt, no fusermount.
# The image is encrypted for an RSA key exactly as `apptainer build --encrypt` does it
# (LUKS2 around squashfs, RSA-OAEP key message), and veil serves it to the container
# through its own FUSE server, decrypting in memory. Needs busybox, openssl and siftool
# (install-deps.sh). The package check runs it with the installed /usr/bin/veil.
set -euo pipefail
veil=${1:?usage: main-job.sh PATH-TO-VEIL}

work=$(mktemp -d /tmp/veil-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"

# Everything below runs as an unprivileged user: as root, drop to nobody first.
as_user=()
if [ "$(id -u)" -eq 0 ]; then
  # A veil the unprivileged user cannot reach (a build tree under a private home)
  # is copied; an installed one runs where it is.
  if ! setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$veil"; then
    cp "$veil" "$work/veil"; chmod 755 "$work/veil"; veil="$work/veil"
  fi
  mkdir "$work/home"; chown 65534:65534 "$work" "$work/home"
  as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$work/home")
else
  mkdir "$work/home"
fi
run() { (cd "$work" && "${as_user[@]}" "$@"); }

# A tiny root filesystem (busybox) with a runscript and a secret only the image holds.
marker="veil-demo-secret-$RANDOM$RANDOM"
run sh -c "
  set -e
  mkdir -p rootfs/bin rootfs/etc rootfs/.singularity.d
  cp '$(command -v busybox)' rootfs/bin/busybox
  for t in sh cat echo id; do ln -s busybox rootfs/bin/\$t; done
  echo 'root:x:0:0:root:/root:/bin/sh' > rootfs/etc/passwd
  echo '$marker' > rootfs/etc/secret
  printf '#!/bin/sh\necho \"Hello from an encrypted SIF container, running as \$(id -un) (\$(id -u)) with args: \$*\"\necho \"The image says: \$(cat /etc/secret)\"\n' > rootfs/.singularity.d/runscript
  chmod 755 rootfs/.singularity.d/runscript
"

# An RSA key pair in the form Apptainer uses (PKCS#1).
run openssl genrsa -traditional -out "$work/key.pem" 2048 2>/dev/null
run openssl rsa -in "$work/key.pem" -RSAPublicKey_out -out "$work/key.pub.pem" 2>/dev/null

echo "== veil build --pem-path key.pub.pem enc.sif rootfs/   (rootless, encrypted)"
run "$veil" build --pem-path "$work/key.pub.pem" "$work/enc.sif" "$work/rootfs"
rm -rf "$work/rootfs"
echo "== siftool list enc.sif   (Sylabs' reference tool reads veil's file)"
siftool list "$work/enc.sif"
echo "== veil inspect --encryption enc.sif   (no key needed)"
run "$veil" inspect --encryption "$work/enc.sif"
if grep -q "$marker" "$work/enc.sif"; then
  echo "FAIL: the secret is readable in the image file" >&2; exit 1
fi
echo "== the secret is not in the image file: encrypted at rest"

echo "== veil run --pem-path key.pem enc.sif one two   (rootless: user namespace + veil's FUSE server)"
run "$veil" run --pem-path "$work/key.pem" "$work/enc.sif" one two
