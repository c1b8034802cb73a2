#!/usr/bin/env bash
# build.sh builds what the test node runs besides Kubernetes from their Go
# modules (tests/node/build): containerd 2, its runc shim, ctr, runc (with
# seccomp, as distributions ship it) and the CNI plugins ptp, bridge,
# host-local and loopback, into a per-machine cache keyed by the
# module's go.sum:
#   ${PODWALL_CACHE:-/var/cache/podwall}/node-<hash>/{bin,cni}
# It does nothing when they are there. runc needs cgo and libseccomp-dev.
set -euo pipefail

mod="$(cd "$(dirname "${BASH_SOURCE[0]}")/build" && pwd)"
key="$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-12)"
cache="${PODWALL_CACHE:-/var/cache/podwall}"
dest="$cache/node-$key"
bins=(bin/containerd bin/containerd-shim-runc-v2 bin/ctr bin/runc cni/ptp cni/bridge cni/host-local cni/loopback)

complete() {
	local b
	for b in "${bins[@]}"; do [[ -x $dest/$b ]] || return 1; done
}
if complete; then echo "$dest"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/.node-$key.lock"
flock 9
if complete; then echo "$dest"; exit 0; fi

echo "build.sh: building containerd, runc and the CNI plugins into $dest (cold: a few minutes)" >&2
tmp="$(mktemp -d "$cache/.node-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/cni"

cd "$mod"
ctrd=github.com/containerd/containerd/v2
ctrdver="$(awk -v m=$ctrd '$1 == m { print $2 }' go.mod)"
CGO_ENABLED=0 go build -buildvcs=false -tags no_btrfs,no_devmapper,no_zfs \
	-ldflags "-s -w -X $ctrd/version.Version=$ctrdver" -o "$tmp/bin/" \
	$ctrd/cmd/containerd $ctrd/cmd/containerd-shim-runc-v2 $ctrd/cmd/ctr
CGO_ENABLED=1 go build -buildvcs=false -tags seccomp -ldflags "-s -w" -o "$tmp/bin/runc" \
	github.com/opencontainers/runc
CGO_ENABLED=0 go build -buildvcs=false -ldflags "-s -w" -o "$tmp/cni/" \
	github.com/containernetworking/plugins/plugins/main/{ptp,bridge,loopback} \
	github.com/containernetworking/plugins/plugins/ipam/host-local

rm -rf "$dest"
mv "$tmp" "$dest"
chmod 755 "$dest"
trap - EXIT
echo "$dest"
