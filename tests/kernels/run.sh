#!/usr/bin/env bash
# run.sh (make test-kernels) runs podwall's data-path tests on several kernels: Debian's
# linux-image packages booted under qemu with software emulation (there is no usable KVM),
# and the host's own kernel. It prints one line per kernel,
#   kernel VERSION: PASS (tcx|clsact) in Ns
# with the guest's whole output after a FAIL, and exits non-zero if any kernel failed.
#
# A guest boots a small initramfs (init.sh) that mounts the host's root read-only over 9p, and
# this checkout on its own at /run/podwall-src (so the checkout may be anywhere on the host, /tmp
# included), and runs suite.sh from there with the test binaries built here, so the guest runs
# exactly what the host built. It has no network device and a hard timeout. The host's kernel
# is booted the same way when its image and modules are on disk; otherwise (the kernel of a
# VM, given by its hypervisor) the suite runs on the host directly, and the line says so.
#
# Cached under ${PODWALL_CACHE:-/var/cache/podwall}/kernels: the downloaded .debs (debs/),
# each kernel unpacked with its module index, initramfs and last output (VERSION/), and the
# test binaries (tests/, rebuilt every run). Kernels unused for 30 days (superseded by a newer
# package) are pruned.
#
# Settings (environment):
#   PODWALL_KERNEL_PACKAGES  Debian packages to boot; a meta-package stands for the kernel it
#                            pulls (default: linux-image-amd64 linux-image-6.12-amd64, which
#                            are 6.1 and 6.12 on bookworm)
#   PODWALL_KERNEL_TIMEOUT   seconds a guest may run, boot included (default 900: the whole suite
#                            took 494 s on an emulated 6.1 and 507 s on 6.12, against 387 and
#                            436 before conntrack's table per family, which made the verifier
#                            walk 28% more instructions for the programs)
#   PODWALL_KERNEL_MEMORY    guest memory in MiB (default 1536)
#   PODWALL_KERNEL_CPUS      guest CPUs (default 2)
#   PODWALL_DIFF_PACKETS     packets of the differential test (default: suite.sh's)
#   PODWALL_TEST_SLOWDOWN    how many times longer e2e waits for traffic that must pass, in guests (4)
#   PODWALL_KERNEL_SUITE     the data-path packages to run, blank-separated (default: all of them)
#   PODWALL_KERNEL_RUN       only the tests this -test.run pattern selects (no blanks)
#   PODWALL_KERNEL_HOST      0: boot the packages' kernels only, not the host's (default 1)
set -euo pipefail
shopt -s inherit_errexit

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# Where the guest mounts the checkout: on the fresh tmpfs it mounts at /run (the host's root
# is read-only there), whatever the checkout's path on the host.
guest_repo=/run/podwall-src
cache="${PODWALL_CACHE:-/var/cache/podwall}/kernels"
read -r -a packages <<<"${PODWALL_KERNEL_PACKAGES:-linux-image-amd64 linux-image-6.12-amd64}"
timeout_s="${PODWALL_KERNEL_TIMEOUT:-900}"
memory="${PODWALL_KERNEL_MEMORY:-1536}"
cpus="${PODWALL_KERNEL_CPUS:-2}"
# The data-path packages, in this order; those without tests (yet) are left out.
read -r -a suite_packages <<<"${PODWALL_KERNEL_SUITE:-bpf loader maps datapath tests/topo tests/e2e tests/differential}"
run_pattern="${PODWALL_KERNEL_RUN:-}"

# What the guest needs before it can reach the host's root: the 9p filesystem over virtio.
boot_modules=(virtio_pci 9pnet_virtio 9p)

log() { echo "test-kernels: $*" >&2; }
die() {
	log "$*"
	exit 1
}

[[ $run_pattern != *[[:space:]]* ]] || die "PODWALL_KERNEL_RUN: a pattern goes on the kernel command line, which is split at blanks"
mkdir -p "$cache/debs"
cache="$(cd "$cache" && pwd -P)"
# The guest sees the host's files at the same paths, except under what it mounts afresh (its
# own /tmp, /run, /proc, /sys and /dev), and the cache's path goes on the kernel command line,
# which is split at blanks. The checkout is shared on its own at $guest_repo: its path on the
# host matters to the guest not at all.
case "$cache/" in
/tmp/* | /run/* | /proc/* | /sys/* | /dev/*) die "PODWALL_CACHE $cache is hidden in the guest (it mounts its own /tmp, /run, /proc, /sys and /dev)" ;;
*[[:space:]]*) die "PODWALL_CACHE $cache: blanks in the path cannot go on a kernel command line" ;;
esac
# One run at a time: runs share the unpacked kernels and the test binaries.
exec 9>"$cache/.lock"
flock 9
trap 'rm -rf "$cache"/.tmp.*' EXIT

# build_tests compiles each data-path package's tests, and the attachmode probe, into
# $cache/tests, with the list of packages in $cache/tests/packages.
build_tests() {
	local tests="$cache/tests" pkg
	rm -rf "$tests"
	mkdir -p "$tests"
	(cd "$repo" && go build -o "$tests/attachmode" ./tests/kernels/attachmode) || die "build the attachmode probe"
	for pkg in "${suite_packages[@]}"; do
		compgen -G "$repo/$pkg/*_test.go" >/dev/null || continue
		(cd "$repo" && go test -c -o "$tests/${pkg//\//_}.test" "./$pkg") || die "build the tests of $pkg"
		echo "$pkg" >>"$tests/packages"
	done
	[[ -s $tests/packages ]] || die "no data-path test package found"
	log "built the tests of: $(tr '\n' ' ' <"$tests/packages")"
}

# resolve prints the kernel package a package name stands for (a meta-package such as
# linux-image-amd64 is resolved to the linux-image-VERSION it depends on); it fails when apt
# does not know the name.
resolve() {
	local pkg="$1" dep
	apt-cache show "$pkg" >/dev/null 2>&1 || return 1
	dep="$(apt-cache depends "$pkg" | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')"
	echo "${dep:-$pkg}"
}

# fetch_deb downloads a package's .deb into $cache/debs (once) and prints its path; it fails
# when the download does.
fetch_deb() {
	local pkg="$1" deb
	deb="$(compgen -G "$cache/debs/${pkg}_*.deb" | head -n1 || true)"
	if [[ -z $deb ]]; then
		(cd "$cache/debs" && apt-get download -q "$pkg" >&2) || return 1
		deb="$(compgen -G "$cache/debs/${pkg}_*.deb" | head -n1)" || return 1
	fi
	echo "$deb"
}

# unpack makes $cache/VERSION from a kernel .deb: the kernel image, and the module tree with
# the index (modules.dep) that the package leaves to its postinst.
unpack() {
	local deb="$1" version="$2" dest="$cache/$2" tmp
	[[ -f $dest/boot/vmlinuz-$version ]] && return 0
	log "unpacking $(basename "$deb")"
	tmp="$(mktemp -d "$cache/.tmp.XXXXXX")"
	dpkg-deb -x "$deb" "$tmp"
	[[ -f $tmp/boot/vmlinuz-$version ]] || die "$deb has no boot/vmlinuz-$version"
	depmod -b "$tmp" "$version"
	rm -rf "$dest"
	mv "$tmp" "$dest"
}

# initramfs prints the path of the initramfs, kept in dir, for a kernel whose module tree is
# under base: busybox, init.sh and the boot modules (uncompressed, since busybox's insmod
# reads them whole) with the order to load them in. It is cached by a hash of its contents.
initramfs() {
	local version="$1" base="$2" dir="$3" order m path key out tmp
	order="$(for m in "${boot_modules[@]}"; do
		modprobe -d "$base" -S "$version" --show-depends "$m" || die "no module $m for $version in $base"
	done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }')"
	key="$( (cat "$here/init.sh" /bin/busybox && echo "$order") | sha256sum | cut -c1-16)"
	out="$dir/initramfs-$key.cpio.gz"
	if [[ ! -f $out ]]; then
		tmp="$(mktemp -d "$cache/.tmp.XXXXXX")"
		mkdir -p "$tmp"/{bin,sbin,proc,sys,dev,modules} "$dir"
		install -m 755 /bin/busybox "$tmp/bin/busybox"
		install -m 755 "$here/init.sh" "$tmp/init"
		for path in $order; do
			m="$(basename "$path")"
			case "$m" in
			*.ko.xz) xz -dc "$path" >"$tmp/modules/${m%.xz}" && m="${m%.xz}" ;;
			*.ko) cp "$path" "$tmp/modules/$m" ;;
			*) die "cannot uncompress module $path" ;;
			esac
			echo "$m" >>"$tmp/modules/order"
		done
		rm -f "$dir"/initramfs-*.cpio.gz
		(cd "$tmp" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$out.tmp")
		mv "$out.tmp" "$out"
	fi
	echo "$out"
}

results=()
failed=0

# report records a kernel's result from the suite's output; after a failure it shows the
# whole output.
report() {
	local version="$1" output="$2" seconds="$3" note="$4" line mode result
	line="$(tr -d '\r' <"$output" | grep -a '^podwall-kernels: result=' | tail -n1 || true)"
	result="$(sed -n 's/.* result=\([A-Z]*\).*/\1/p' <<<"$line")"
	mode="$(sed -n 's/.* mode=\([a-z]*\).*/\1/p' <<<"$line")"
	if [[ $result == PASS ]]; then
		line="kernel $version: PASS ($mode) in ${seconds}s$note"
	else
		failed=1
		line="kernel $version: FAIL (${mode:-no result}) in ${seconds}s$note"
		echo "----- output of kernel $version -----"
		tr -d '\r' <"$output"
		echo "----- end of output of kernel $version -----"
	fi
	echo "$line"
	results+=("$line")
}

# boot runs the suite in a guest of the kernel vmlinuz, whose module tree is under base, and
# reports it; dir keeps its initramfs and output.
boot() {
	local version="$1" vmlinuz="$2" base="$3" dir="$4" note="$5" initrd output start rc=0 cmdline
	initrd="$(initramfs "$version" "$base" "$dir")"
	output="$dir/guest.log"
	# mitigations=off: page-table isolation makes every system call flush the emulated TLB,
	# about halving the guest's speed; root's BPF programs are verified the same either way
	# (CAP_PERFMON already skips the verifier's Spectre sanitation).
	cmdline="console=ttyS0 panic=-1 quiet mitigations=off podwall.modules=$base"
	cmdline+=" podwall.repo=$guest_repo podwall.suite=$guest_repo/tests/kernels/suite.sh podwall.tests=$cache/tests"
	# The suite ends its tests before the guest's timeout, so that a test that hangs shows where.
	cmdline+=" podwall.env=PODWALL_SUITE_SECONDS=$((timeout_s - 20))"
	# Emulated CPUs can be held for seconds by a program load: tests that wait for traffic
	# that must pass wait that much longer (tests/e2e passWait).
	cmdline+=" podwall.env=PODWALL_TEST_SLOWDOWN=${PODWALL_TEST_SLOWDOWN:-4}"
	[[ -n ${PODWALL_DIFF_PACKETS:-} ]] && cmdline+=" podwall.env=PODWALL_DIFF_PACKETS=$PODWALL_DIFF_PACKETS"
	[[ -n $run_pattern ]] && cmdline+=" podwall.env=PODWALL_SUITE_RUN=$run_pattern"
	log "booting $version (at most ${timeout_s}s)"
	start=$SECONDS
	# -nodefaults and -nic none: no network device at all, only the serial console and 9p.
	# thread=single: the guest's CPUs take turns on one host thread. With a thread each, a
	# guest CPU ran code another had just patched (a static key that attaching tc programs
	# turns on) and the 6.12 guest died of an "Oops: int3" in __netif_receive_skb_core; the
	# guest stays SMP either way.
	timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
		-accel tcg,thread=single -cpu max -machine pc -m "$memory" -smp "$cpus" \
		-nodefaults -nic none -display none -no-reboot -serial "file:$output" \
		-kernel "$vmlinuz" -initrd "$initrd" -append "$cmdline" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
		-virtfs local,path="${repo//,/,,}",mount_tag=podwallrepo,security_model=none,readonly=on,multidevs=remap \
		</dev/null || rc=$?
	case $rc in
	0) ;;
	124 | 137) note+=" (timed out after ${timeout_s}s)" ;;
	*) note+=" (qemu exited with status $rc)" ;;
	esac
	report "$version" "$output" "$((SECONDS - start))" "$note"
}

# host runs the suite on the running kernel: booted under qemu like the others when its image
# and modules are on disk, else right here.
host() {
	local version dir output start
	version="$(uname -r)"
	dir="$cache/host-$version"
	if [[ -f /boot/vmlinuz-$version && -f /lib/modules/$version/modules.dep ]]; then
		boot "$version" "/boot/vmlinuz-$version" / "$dir" " (host kernel)"
		return
	fi
	log "no /boot/vmlinuz-$version: running the suite on the host's kernel itself, without qemu"
	mkdir -p "$dir"
	output="$dir/host.log"
	start=$SECONDS
	PODWALL_SUITE_RUN="$run_pattern" bash "$here/suite.sh" "$cache/tests" >"$output" 2>&1 || true
	report "$version" "$output" "$((SECONDS - start))" " (host kernel, run directly: its image is not in /boot)"
}

# prune removes the .debs and unpacked kernels that no run used for 30 days: versions that a
# newer package superseded.
prune() {
	local d
	find "$cache/debs" -maxdepth 1 -name '*.deb' -mtime +30 -delete
	for d in "$cache"/*/boot; do
		[[ -e $d ]] || continue
		d="$(dirname "$d")"
		[[ -z $(find "$d" -maxdepth 0 -mtime +30) ]] || rm -rf "$d"
	done
}

build_tests
kernels=()
for p in "${packages[@]}"; do
	# Stale package lists name a kernel that is no longer on the mirror: update once, retry.
	if ! pkg="$(resolve "$p")" || ! deb="$(fetch_deb "$pkg")"; then
		log "updating the package lists for $p"
		apt-get update -qq
		pkg="$(resolve "$p")" || die "apt knows no package $p"
		deb="$(fetch_deb "$pkg")" || die "apt-get download $pkg failed"
	fi
	kernels+=("$pkg")
	unpack "$deb" "${pkg#linux-image-}"
	touch "$deb" "$cache/${pkg#linux-image-}"
done
prune
for pkg in "${kernels[@]}"; do
	version="${pkg#linux-image-}"
	boot "$version" "$cache/$version/boot/vmlinuz-$version" "$cache/$version" "$cache/$version" ""
done
[[ ${PODWALL_KERNEL_HOST:-1} == 0 ]] || host

echo "test-kernels:"
printf '  %s\n' "${results[@]}"
exit "$failed"
