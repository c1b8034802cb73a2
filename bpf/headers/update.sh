#!/usr/bin/env bash
# Regenerates the committed BPF headers: vmlinux.h from the running kernel's BTF (it has
# TCX_NEXT, which Debian's 6.1 uapi headers lack) and the libbpf helper headers from libbpf-dev.
# The objects built with them load unchanged on 6.1, 6.12 and 6.18.
set -euo pipefail
cd "$(dirname "$0")"
bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h
cp /usr/include/bpf/bpf_helpers.h /usr/include/bpf/bpf_helper_defs.h /usr/include/bpf/bpf_endian.h .
