#!/usr/bin/env bash
# Builds the .deb and the .rpm (docs/install.md, The package): stages `make
# install` under build/pkgroot with PREFIX=/usr and runs the pinned nfpm over
# it for each. Prints the .deb's path, then the .rpm's.
# Usage: scripts/package.sh [OUTDIR]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="/usr/local/go/bin:${HOME:-/root}/go/bin:$PATH"
NFPM_VERSION=v2.48.0
out=${1:-$top/build}
mkdir -p "$out"

# nfpm at the pinned version, installed once (install-deps.sh does it too).
nfpm=$(command -v nfpm || true)
if [ -z "$nfpm" ] || [ "$("$nfpm" --version 2>/dev/null | awk '/GitVersion/ {print $2}')" != "${NFPM_VERSION#v}" ]; then
  GOFLAGS= GOWORK=off go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
  nfpm=$(go env GOPATH)/bin/nfpm
fi

# A Debian version from git describe: v1.2.3 -> 1.2.3, v1.2.3-4-gabc ->
# 1.2.3+4.gabc, no tag -> 0.0.0~git<commit date>.<hash>; a dirty tree is
# marked, never passed off as the commit.
desc=$(git describe --tags --long --dirty --match 'v[0-9]*' 2>/dev/null || true)
if [[ $desc =~ ^v([0-9][0-9A-Za-z.~+]*)-([0-9]+)-g([0-9a-f]+)(-dirty)?$ ]]; then
  ver=${BASH_REMATCH[1]}
  [ "${BASH_REMATCH[2]}" = 0 ] || ver+="+${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
  dirty=${BASH_REMATCH[4]}
else
  ver="0.0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short HEAD)"
  dirty=$(git diff --quiet HEAD 2>/dev/null || echo -dirty)
fi
[ -z "$dirty" ] || ver+="+dirty"
export PKG_VERSION=$ver PKG_ARCH=$(dpkg --print-architecture 2>/dev/null || go env GOARCH)
root=$top/build/pkgroot # packaging/nfpm.yaml names it

rm -rf "$root"
# -s -w: no symbol table and DWARF in the packaged binaries (what Debian's
# dh_strip does; Go's stack traces keep their function names and lines).
make --no-print-directory install DESTDIR="$root" PREFIX=/usr \
  ZSHCOMPDIR=/usr/share/zsh/vendor-completions VERSION="$ver" \
  LDFLAGS="-s -w -X terok.dev/sandbox/common/version.Version=$ver" >&2
deb="$out/terok-sandbox_${PKG_VERSION}_${PKG_ARCH}.deb"
# nfpm names the rpm architecture itself (amd64 -> x86_64); release 1.
rpm="$out/terok-sandbox-${PKG_VERSION}-1.$(uname -m).rpm"
rm -f "$deb" "$rpm"
"$nfpm" package --config packaging/nfpm.yaml --packager deb --target "$deb" >&2
"$nfpm" package --config packaging/nfpm.yaml --packager rpm --target "$rpm" >&2
echo "$deb"
echo "$rpm"
