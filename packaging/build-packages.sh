#!/usr/bin/env bash
# Builds veil's .deb and .rpm from the static release build, into target/packages/:
# /usr/bin/veil, the registry helper in /usr/libexec/veil/, one man page per command
# and subcommand, bash/zsh/fish completions, the docs, and (in the .deb) the AppArmor
# profile that lets /usr/bin/veil create user namespaces on Ubuntu 23.10 and later.
# Needs dpkg-deb and rpmbuild (install-deps.sh installs rpm). packaging/check-packages.sh
# checks and installs what this makes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
. packaging/target.sh
# The packages promise a static binary that needs nothing from the system.
case "$VEIL_TARGET" in
  *-musl) ;;
  *) echo "build-packages.sh: no musl toolchain (install-deps.sh installs musl-tools and the target); the packages need the static build" >&2; exit 1 ;;
esac
command -v dpkg-deb >/dev/null && command -v rpmbuild >/dev/null \
  || { echo "build-packages.sh: needs dpkg-deb and rpmbuild (Debian/Ubuntu: apt-get install dpkg-dev rpm)" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
release=1
cargo build --release --locked --target "$VEIL_TARGET" --bin veil --bin veil-registry \
  --bin veil-docgen -p veil -p veil-docgen
bin=target/$VEIL_TARGET/release
out=target/packages
rm -rf "$out"
mkdir -p "$out"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The tree both packages share, zsh's completion aside (each family looks elsewhere).
stage() {
  local root=$1 zsh_dir=$2
  # Stripped: the symbols and line tables are three quarters of the build's size.
  install -s -D -m 755 "$bin/veil" "$root/usr/bin/veil"
  install -s -D -m 755 "$bin/veil-registry" "$root/usr/libexec/veil/veil-registry"
  mkdir -p "$root/usr/share/man/man1"
  "$bin/veil-docgen" man "$root/usr/share/man/man1" >/dev/null
  gzip -9n "$root"/usr/share/man/man1/*.1
  local comp=$scratch/completions
  mkdir -p "$comp"
  "$bin/veil-docgen" completions "$comp"
  install -D -m 644 "$comp/veil" "$root/usr/share/bash-completion/completions/veil"
  install -D -m 644 "$comp/_veil" "$root/$zsh_dir/_veil"
  install -D -m 644 "$comp/veil.fish" "$root/usr/share/fish/vendor_completions.d/veil.fish"
  rm -rf "$comp"
  install -D -m 644 README.md "$root/usr/share/doc/veil/README.md"
  install -m 644 docs/*.md "$root/usr/share/doc/veil/"
  chmod -R u=rwX,go=rX "$root"
}

# .deb
deb_arch=$(dpkg --print-architecture)
root=$out/deb-root
stage "$root" usr/share/zsh/vendor-completions
install -D -m 644 packaging/copyright "$root/usr/share/doc/veil/copyright"
# The AppArmor profile: postinst puts it in /etc/apparmor.d where AppArmor 4 is.
install -D -m 644 packaging/apparmor/veil "$root/usr/share/veil/apparmor/veil"
mkdir -p "$root/DEBIAN"
install -m 755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
cat > "$root/DEBIAN/control" <<CONTROL
Package: veil
Version: $version-$release
Architecture: $deb_arch
Maintainer: veil developers <veil@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Section: admin
Priority: optional
Description: rootless runtime for SIF containers, including encrypted ones
 veil runs SIF images (the Singularity Image Format of SingularityCE and
 Apptainer), including LUKS2- and gocryptfs-encrypted ones, with no root and no
 setuid helper: it enters a user namespace and serves the image through its own
 in-process FUSE filesystem, decrypting in memory. It also builds, signs,
 verifies, pushes and pulls images. The binary is static.
CONTROL
dpkg-deb --root-owner-group -Zxz --build "$root" "$out/veil_${version}-${release}_${deb_arch}.deb" >/dev/null

# .rpm
rpm_arch=$(uname -m)
root=$out/rpm-root
stage "$root" usr/share/zsh/site-functions
top=$scratch/rpmbuild
rpmbuild -bb --quiet --nodeps \
  --define "_topdir $top" \
  --define "_rpmdir $(pwd)/$out" \
  --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
  --define "stage $(pwd)/$root" \
  --define "veil_version $version" \
  --define "veil_arch $rpm_arch" \
  packaging/rpm/veil.spec
rm -rf "$out/deb-root" "$out/rpm-root"
ls -l "$out"
