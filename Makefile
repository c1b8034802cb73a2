# podwall: every set-up step lives here, so a fresh machine (root, Debian, Go) needs nothing else.
SHELL := /bin/bash
GO ?= go
CLANG ?= clang-14
# CFLAGS for the BPF objects, pinned here once; gen.go passes them to bpf2go.
export BPF_CLANG := $(CLANG)
export BPF_CFLAGS := -O2 -g -Wall -Werror -Wno-unused-function
APT_PACKAGES := clang-14 llvm-14 bpftool libbpf-dev iproute2 iputils-ping iperf3 ethtool iptables ipset nftables
FUZZTIME ?= 30s

.PHONY: all deps bpffs build generate check-generate lint test unit fuzz bench demo image clean

all: build

# deps installs what the build and the tests need; it does nothing when all is there.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

bpffs:
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

build:
	$(GO) build -o bin/podwall ./cmd/podwall

# image builds the agent's image without Docker or a registry (deploy/image): a static podwall
# as the only file, tagged with the version git describes, written to bin/podwall-image.tar
# for `ctr -n k8s.io images import`, `docker load` or `podman load`. deploy/Dockerfile builds
# the same entrypoint for those who have Docker.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE ?= ghcr.io/podwall/podwall:$(VERSION)
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o bin/podwall-static ./cmd/podwall
	cd deploy/image && $(GO) run . -binary ../../bin/podwall-static -tag $(IMAGE) -o ../../bin/podwall-image.tar
	@echo "bin/podwall-image.tar: $(IMAGE)"

# test-node runs the DaemonSet of deploy/, with the image `make image` built, on a real
# one-node cluster (tests/node): etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet and kube-proxy built from their Go modules (tests/k8s/build.sh), containerd 2, runc
# and the CNI plugins from theirs (tests/node/build.sh), the node in a network namespace of
# its own; once with the ptp CNI and once with bridge.
NODE_APT_PACKAGES := libseccomp-dev
.PHONY: test-node
test-node: deps bpffs k8s-bins image
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(NODE_APT_PACKAGES)"
	tests/node/build.sh >/dev/null
	$(GO) test -tags node -count=1 -timeout 30m -v ./tests/node \
		-args -agent-image $(IMAGE) -agent-image-tar $(CURDIR)/bin/podwall-image.tar

generate: deps
	$(GO) generate ./...

# check-generate fails when the committed bpf2go output is not what the sources build.
check-generate: generate
	@if [ -n "$$(git status --porcelain -- '*_bpfel.go' '*_bpfel.o')" ]; then \
		git status --porcelain -- '*_bpfel.go' '*_bpfel.o'; \
		echo "generated BPF files are stale: run make generate and commit them"; exit 1; fi

# golangci-lint (.golangci.yml), pinned, built once per machine into the cache: a few minutes
# the first time, then nothing.
GOLANGCI_LINT_VERSION := v2.15.0
PODWALL_CACHE ?= /var/cache/podwall
GOLANGCI_LINT := $(PODWALL_CACHE)/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
.PHONY: golangci-lint
golangci-lint:
	@[ -x $(GOLANGCI_LINT) ] || { echo "building golangci-lint $(GOLANGCI_LINT_VERSION) into $(dir $(GOLANGCI_LINT))"; \
		GOBIN=$(dir $(GOLANGCI_LINT)) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); }

# The modules of the repository: the root; tests/bench, which holds the benchmarks'
# dependencies; deploy/image, which builds the image (tests/k8s/build only builds binaries,
# with build.sh).
MODULES := . tests/bench deploy/image

lint: golangci-lint
	@for m in $(MODULES); do (cd $$m && $(GO) mod tidy -diff) || { echo "go.mod of $$m is not tidy: run go mod tidy there"; exit 1; }; done
	@for m in $(MODULES); do (cd $$m && $(GO) vet -tags node ./...) || exit 1; done
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && $(GOLANGCI_LINT) run ./...) || exit 1; done

unit:
	@for m in $(MODULES); do (cd $$m && $(GO) test -count=1 ./...) || exit 1; done

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./policy

# k8s-bins builds the kube-apiserver, etcd and kubectl the Kubernetes tests run (tests/kapi)
# into ${PODWALL_CACHE:-/var/cache/podwall}/k8s-<version>; several minutes once per machine,
# then nothing.
.PHONY: k8s-bins
k8s-bins:
	tests/k8s/build.sh

test: deps bpffs check-generate lint k8s-bins unit fuzz

# test-kernels runs the data-path tests on Debian's 6.1 and 6.12 kernels, booted under qemu
# (software emulation), and on the host's kernel; one line per kernel (tests/kernels/run.sh).
# Its Debian packages are installed for this target only; the .debs and unpacked kernels are
# cached under ${PODWALL_CACHE:-/var/cache/podwall}/kernels.
KERNEL_APT_PACKAGES := qemu-system-x86 busybox-static kmod xz-utils
.PHONY: test-kernels
test-kernels: deps bpffs
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(KERNEL_APT_PACKAGES)"
	tests/kernels/run.sh

bench: deps bpffs k8s-bins
	$(GO) test -run '^$$' -bench '^BenchmarkVerdict$$' -benchtime 1000000x -count 15 ./tests/differential \
		-args -benchmarks-md ../../docs/BENCHMARKS.md
	$(GO) test -run '^$$' -bench '^BenchmarkConntrackCandidates$$' -benchtime 1000000x -count 5 ./tests/differential
	cd tests/bench && $(GO) test -run '^$$' -bench '^BenchmarkEnforcers$$' -benchtime 1x -timeout 30m . \
		-args -benchmarks-md ../../docs/BENCHMARKS.md -iperf-seconds 2 -repetitions 5
	cd tests/bench && $(GO) test -run '^$$' -bench '^BenchmarkFlood$$' -benchtime 1x -timeout 30m . \
		-args -benchmarks-md ../../docs/BENCHMARKS.md -repetitions 3 -flood-seconds 3 -flood-streams 4
	$(GO) test -run '^$$' -bench '^BenchmarkAgent$$' -benchtime 1x -timeout 90m ./tests/agentbench \
		-args -benchmarks-md ../../docs/BENCHMARKS.md
	$(GO) test -run '^$$' -bench '^BenchmarkMapMemory$$' -benchtime 1x ./maps
	$(GO) test -run '^$$' -bench '^BenchmarkPodMemory$$' -benchtime 1x ./k8s

# demo runs the agent in standalone mode on pods in network namespaces it makes, prints which
# connections pass and why, changes an annotation and prints it again, then removes it all.
demo: deps bpffs build
	$(GO) run ./tests/demo -podwall bin/podwall

clean:
	rm -rf bin
