#!/bin/busybox sh
# init.sh is PID 1 of a `make test-kernels` guest (run.sh puts it in the initramfs as /init,
# beside a static busybox and the modules that mounting 9p needs).
#
# It mounts the host's root read-only over 9p at /host, gives it fresh proc, sys, dev, bpffs
# and writable tmpfs /tmp and /run, mounts the checkout (shared on its own, read-only) at
# podwall.repo there, and runs the suite (suite.sh, from the checkout) chrooted in it, so the
# guest runs the host's own binaries and test binaries. Its output goes to the
# serial console, which run.sh reads; suite.sh prints the result line. Then it powers off.
#
# Kernel command line (set by run.sh):
#   podwall.repo=DIR     where to mount the checkout (mount tag podwallrepo) in the chroot: a
#                        path under its fresh /run or /tmp, since the rest is read-only
#   podwall.modules=DIR  base of the kernel's module tree on the host (DIR/lib/modules/VERSION)
#   podwall.suite=FILE   the suite script, as the chroot sees it (in the checkout)
#   podwall.tests=DIR    the test binaries on the host
#   podwall.env=K=V      exported to the suite (repeatable)
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
	echo "init: $*"
	poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

repo='' modules='' suite='' tests='' env=''
# shellcheck disable=SC2013 # the command line is read as words, on purpose.
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	podwall.repo=*) repo="${arg#*=}" ;;
	podwall.modules=*) modules="${arg#*=}" ;;
	podwall.suite=*) suite="${arg#*=}" ;;
	podwall.tests=*) tests="${arg#*=}" ;;
	podwall.env=*) env="$env ${arg#*=}" ;;
	esac
done
if [ -z "$repo" ] || [ -z "$modules" ] || [ -z "$suite" ] || [ -z "$tests" ]; then
	fail "podwall.repo, podwall.modules, podwall.suite and podwall.tests must be on the kernel command line"
fi

# The modules listed in /modules/order (dependencies first) are what mounting 9p needs.
while read -r m; do
	insmod "/modules/$m" || fail "insmod $m"
done </modules/order

mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /host ||
	fail "mount the host's root over 9p"
for fs in proc:/proc sysfs:/sys bpf:/sys/fs/bpf devtmpfs:/dev tmpfs:/tmp tmpfs:/run; do
	mount -t "${fs%%:*}" "${fs%%:*}" "/host${fs#*:}" || fail "mount ${fs%%:*} on ${fs#*:} in the host's root"
done
# The checkout, at a path of its own: wherever it is on the host (under /tmp, say, which the
# fresh tmpfs hides), the guest finds it at podwall.repo.
mkdir -p "/host$repo" || fail "make the mount point $repo for the checkout"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 podwallrepo "/host$repo" ||
	fail "mount the checkout $repo over 9p"

# Every other module comes from the kernel's own tree on the host, through the host's kmod
# (which reads .ko.xz); the kernel's own requests (a qdisc, a link type) go the same way,
# because the kernel runs /sbin/modprobe of this initramfs, not of the chroot.
cat >/sbin/modprobe <<EOF
#!/bin/sh
exec chroot /host /sbin/modprobe -d "$modules" "\$@"
EOF
chmod 755 /sbin/modprobe
echo /sbin/modprobe >/proc/sys/kernel/modprobe
# Loaded up front so that a missing one stops here, not as a netlink error inside a test:
# veth pairs, clsact (sch_ingress), bpf filters (cls_bpf) and the bridged topology.
/sbin/modprobe -a veth sch_ingress cls_bpf bridge || fail "modprobe veth sch_ingress cls_bpf bridge"

# shellcheck disable=SC2086 # env holds K=V words, split on purpose.
chroot /host /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp $env \
	/bin/bash "$suite" "$tests"
poweroff -f
