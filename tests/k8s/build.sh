#!/usr/bin/env bash
# build.sh builds the Kubernetes binaries podwall's tests run from their Go
# modules, into a per-machine cache keyed by version:
#   ${PODWALL_CACHE:-/var/cache/podwall}/k8s-<version>/
# etcd, kube-apiserver and kubectl for the API tests (package tests/kapi); the
# controller-manager, scheduler, kubelet and kube-proxy for the node
# (tests/node). It does nothing when all are there, so `make test` can always
# call it.
# A cold build takes several minutes and a few GB of Go caches.
set -euo pipefail

mod="$(cd "$(dirname "${BASH_SOURCE[0]}")/build" && pwd)"
# The version comes from the build module's go.mod, so the cache key cannot
# drift from what is built.
version="$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$mod/go.mod")"
if [[ ! $version =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]]; then
	echo "build.sh: no k8s.io/kubernetes release version in $mod/go.mod" >&2
	exit 1
fi
major="${BASH_REMATCH[1]}"
minor="${BASH_REMATCH[2]}"
cache="${PODWALL_CACHE:-/var/cache/podwall}"
dest="$cache/k8s-$version"
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

complete() {
	local b
	for b in "${bins[@]}"; do [[ -x $dest/$b ]] || return 1; done
}
complete && exit 0

mkdir -p "$cache"
# Several test runs may start at once: one builds, the others wait for it.
exec 9>"$cache/.k8s-$version.lock"
flock 9
complete && exit 0

echo "build.sh: building ${bins[*]} $version into $dest (cold: several minutes)" >&2
tmp="$(mktemp -d "$cache/.k8s-$version.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# kubectl refuses a server (and itself) without a release version, so stamp
# both the component-base and the client-go version packages.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean"
done

cd "$mod"
CGO_ENABLED=0 go build -buildvcs=false -ldflags "$ldflags" -o "$tmp/" \
	./etcd $(printf 'k8s.io/kubernetes/cmd/%s ' "${bins[@]:1}")

# Publish them all at once, so a reader never sees a partial set.
rm -rf "$dest"
mv "$tmp" "$dest"
chmod 755 "$dest"
trap - EXIT
