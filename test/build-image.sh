#!/usr/bin/env bash
# Builds the rootfs tarball of the e2e test image without any registry:
# busybox-static for the basic applets plus host binaries (git, ssh, curl,
# socat, nc, wget, bash) with every library `ldd` lists, and a non-root user
# `dev` (uid/gid 1000) like the task images the runner targets.
#
#   test/build-image.sh OUT.tar            # then: podman import OUT.tar TAG
#
# The Go harness (runner/internal/testharness) tags the image with a hash of
# this file, so changing the recipe rebuilds the image and nothing else does.
set -euo pipefail

out=${1:?usage: build-image.sh OUT.tar}

# Required: the test suite cannot work without them. Optional: copied when the
# host has them (busybox supplies a weaker applet otherwise).
required=(dash git ssh ssh-keygen ssh-add curl socat)
optional=(bash wget nc scp env timeout nft)

for b in busybox "${required[@]}"; do
  if ! command -v "$b" >/dev/null 2>&1; then
    echo "build-image: required host binary '$b' is missing; run scripts/install-deps.sh" >&2
    exit 1
  fi
done
if ldd "$(command -v busybox)" >/dev/null 2>&1; then
  echo "build-image: busybox is dynamically linked; install busybox-static" >&2
  exit 1
fi

root=$(mktemp -d /tmp/terok-e2e-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT

# usrmerge layout like Debian 12.
mkdir -p "$root"/usr/{bin,sbin,lib,lib64,share} "$root"/{etc,tmp,var/tmp,root,proc,sys,dev,run,workspace,home/dev/.ssh}
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"

# Copy an ELF file and the shared libraries it needs (dereferenced, at the
# path the dynamic loader resolved).
copy_libs() {
  local f=$1 lib
  ldd "$f" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
    [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
  done
}

copy_bin() {
  local src
  src=$(command -v "$1") || return 1
  src=$(readlink -f "$src")
  cp -L "$src" "$root/usr/bin/$1"
  copy_libs "$src"
}

for b in "${required[@]}"; do copy_bin "$b"; done
for b in "${optional[@]}"; do copy_bin "$b" || echo "build-image: optional '$b' not on host, busybox applet used" >&2; done

# git runs helpers (git-remote-http for smart HTTP, upload-pack …) from its
# exec path; cp -a keeps the hard links, so this costs about one git binary.
gitexec=$(git --exec-path)
mkdir -p "$root$(dirname "$gitexec")"
cp -a "$gitexec" "$root$gitexec"
find "$gitexec" -type f -perm -u+x | while read -r f; do
  if head -c4 "$f" | grep -q 'ELF'; then copy_libs "$f"; fi
done
[ -d /usr/share/git-core ] && cp -a /usr/share/git-core "$root/usr/share/"

# glibc loads these at run time without ldd seeing them.
for lib in /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libnss_dns.so.2 /lib/x86_64-linux-gnu/libresolv.so.2; do
  [ -e "$lib" ] && [ ! -e "$root$lib" ] && cp -L "$lib" "$root$lib"
done

# /bin/sh is dash, not busybox: Debian's busybox-static prefers its own
# applets inside `sh -c`, which would shadow the real wget/nc copied above.
ln -s dash "$root/usr/bin/sh"

# busybox for everything else (ls, cat, id, grep, sleep, …).
cp "$(command -v busybox)" "$root/usr/bin/busybox"
for applet in $(busybox --list); do
  [ -e "$root/usr/bin/$applet" ] || [ -e "$root/usr/sbin/$applet" ] || ln -s busybox "$root/usr/bin/$applet"
done

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
dev:x:1000:1000:dev:/home/dev:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
dev:x:1000:
nogroup:x:65534:
EOF
cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF
mkdir -p "$root/etc/ssh"
: >"$root/etc/ssh/ssh_config"
echo "terok-e2e" >"$root/etc/hostname"

chmod 0755 "$root"   # mktemp made it 0700: non-root users could not traverse /
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root" "$root/home/dev/.ssh"
chown -R 1000:1000 "$root/home/dev" "$root/workspace"

tar --numeric-owner -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "build-image: wrote $out ($(du -h "$out" | cut -f1))"
