#!/usr/bin/env bash
# Checks the packages build-packages.sh made, as root on a Debian machine (CI):
#   - the AppArmor profile parses with an AppArmor 4 parser in its no-load mode, and
#     postinst puts it in /etc/apparmor.d where AppArmor 4 is (and postrm removes it)
#     (Debian 12's parser, 3.0, predates the `userns` rule Ubuntu 23.10+ needs, so the
#     current Debian release's apparmor and libc6 are fetched through apt and run
#     from a scratch directory, not installed);
#   - the .rpm lists what it should (rpm -qlp) and its digests check (rpm -K);
#   - the .deb installs (dpkg -i), its man pages and completions are in place, and the
#     main job runs from the installed /usr/bin/veil as an unprivileged user;
#   - the .deb removes cleanly (dpkg --purge).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/packages
deb=$(ls "$out"/veil_*.deb)
rpm_file=$(ls "$out"/veil-*.rpm)
scratch=$(mktemp -d /tmp/veil-pkgcheck.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

fail() { echo "check-packages: $*" >&2; exit 1; }

echo "== AppArmor profile: apparmor_parser --skip-kernel-load (AppArmor 4)"
# The archive this machine's apt uses, with the next Debian release's suite.
mirror=$(apt-get -qq --print-uris download base-files | head -1 | cut -d"'" -f2 | sed 's#/pool/.*##')
[ -n "$mirror" ] || fail "cannot tell which Debian archive apt uses"
aa=$scratch/apt
mkdir -p "$aa/lists/partial" "$aa/archives/partial" "$aa/root"
# apt downloads as its unprivileged _apt user, into directories that user may write.
chmod 755 "$scratch"
if id _apt >/dev/null 2>&1; then
  chown _apt "$aa" "$aa/lists/partial" "$aa/archives/partial"
fi
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$aa/sources.list"
apt_private=(-o "Dir::Etc::SourceList=$aa/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$aa/lists" -o "Dir::Cache::Archives=$aa/archives"
  -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
  -o Acquire::AllowInsecureRepositories=false -o APT::Get::AllowUnauthenticated=false)
apt-get -qq "${apt_private[@]}" update
(cd "$aa" && apt-get -qq "${apt_private[@]}" download apparmor libc6)
for p in "$aa"/*.deb; do dpkg-deb -x "$p" "$aa/root"; done
chmod -R a+rX "$scratch"
ldso=$(ls "$aa"/root/usr/lib/*/ld-linux*.so.* | head -1)
lib=$(dirname "$ldso")
# Run as nobody: a downloaded program needs no root to parse a file.
parser() {
  setpriv --reuid=65534 --regid=65534 --clear-groups "$ldso" --library-path "$lib" \
    "$aa/root/usr/sbin/apparmor_parser" --config-file /dev/null "$@"
}
parser --version | head -1
# The package's profile with the parser's own abi and tunables; a profile with a
# broken rule must fail the same way (the check can fail).
mkdir -p "$scratch/profile"
dpkg-deb -x "$deb" "$scratch/profile"
chmod -R a+rX "$scratch/profile"
profile=$scratch/profile/usr/share/veil/apparmor/veil
[ -f "$profile" ] || fail "the .deb has no /usr/share/veil/apparmor/veil"
grep -q '^profile veil /usr/bin/veil ' "$profile" || fail "the profile does not name /usr/bin/veil"
aa_check() {
  parser --skip-kernel-load --skip-cache --base "$aa/root/etc/apparmor.d" \
    -I "$aa/root/etc/apparmor.d" "$1" >/dev/null
}
aa_check "$profile" || fail "apparmor_parser rejects the profile"
sed 's/^  userns,$/  userns bogus,/' "$profile" > "$scratch/broken"
if aa_check "$scratch/broken" 2>/dev/null; then fail "the parser accepts a broken profile: the check proves nothing"; fi
echo "profile ok"

echo "== rpm -qlp / rpm -K $(basename "$rpm_file")"
listing=$(rpm -qlp "$rpm_file")
for f in /usr/bin/veil /usr/libexec/veil/veil-registry /usr/share/man/man1/veil.1.gz \
  /usr/share/man/man1/veil-key-newpair.1.gz /usr/share/bash-completion/completions/veil \
  /usr/share/zsh/site-functions/_veil /usr/share/fish/vendor_completions.d/veil.fish \
  /usr/share/doc/veil/README.md /usr/share/doc/veil/compat.md; do
  grep -qx "$f" <<<"$listing" || fail "the .rpm lacks $f"
done
echo "$(wc -l <<<"$listing") files"
rpm -K "$rpm_file" | tee "$scratch/rpmk"
grep -q "digests OK" "$scratch/rpmk" || fail "rpm -K does not find its digests OK"

echo "== dpkg -i $(basename "$deb")"
if dpkg -s veil >/dev/null 2>&1; then fail "a veil package is installed already"; fi
# postinst installs the profile where AppArmor 4 is: a machine without AppArmor gets
# the AppArmor 4 abi file for the length of the check, so that this path runs too.
made_abi=""
if [ ! -e /etc/apparmor.d ]; then
  install -D -m 644 "$aa/root/etc/apparmor.d/abi/4.0" /etc/apparmor.d/abi/4.0
  made_abi=1
fi
cleanup() {
  dpkg --purge veil >/dev/null 2>&1 || true
  if [ -n "$made_abi" ]; then rm -rf /etc/apparmor.d; fi
  rm -rf "$scratch"
}
trap cleanup EXIT
dpkg -i "$deb"
[ "$(command -v veil)" = /usr/bin/veil ] || fail "veil on PATH is $(command -v veil), not /usr/bin/veil"
veil version
for f in /usr/libexec/veil/veil-registry /usr/share/man/man1/veil-run.1.gz \
  /usr/share/bash-completion/completions/veil /usr/share/zsh/vendor-completions/_veil \
  /usr/share/fish/vendor_completions.d/veil.fish /usr/share/doc/veil/copyright; do
  [ -e "$f" ] || fail "the installed package lacks $f"
done
# Every page renders, and the run page documents a flag of run.
man_pages=$(dpkg -L veil | grep -c '/man1/veil.*\.1\.gz$')
[ "$man_pages" -ge 40 ] || fail "only $man_pages man pages"
zcat /usr/share/man/man1/veil-run.1.gz | grep -q 'pem\\-path' || fail "veil-run(1) does not document --pem-path"
bash -c '. /usr/share/bash-completion/completions/veil && complete -p veil' >/dev/null \
  || fail "the bash completion does not register for veil"
# The registry helper is found from /usr/bin/veil (../libexec/veil).
setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/nonexistent \
  veil pull "$scratch/x.sif" oras://127.0.0.1:9/none:tag 2>"$scratch/pull.err" && fail "a pull from a closed port succeeded"
if ! grep -q "Connection refused" "$scratch/pull.err"; then
  cat "$scratch/pull.err" >&2; fail "the installed veil did not reach the network through its registry helper"
fi

if [ -e /etc/apparmor.d/abi/4.0 ]; then
  cmp -s /etc/apparmor.d/veil "$profile" || fail "postinst did not install /etc/apparmor.d/veil where AppArmor 4 is"
elif [ -e /etc/apparmor.d/veil ]; then
  fail "postinst installed the profile for an AppArmor without the 4.0 abi"
fi

echo "== the main job, from /usr/bin/veil, as an unprivileged user"
bash packaging/main-job.sh /usr/bin/veil

echo "== dpkg --purge veil"
dpkg --purge veil
[ ! -e /usr/bin/veil ] && [ ! -e /etc/apparmor.d/veil ] || fail "files left after purge"
echo "packages ok"
