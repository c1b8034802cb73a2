#!/usr/bin/env bash
# suite.sh TESTS: runs the data-path test binaries that run.sh built into TESTS on the running
# kernel, as root: in a test-kernels guest (init.sh runs it chrooted in the host's root) or
# on the host itself. It prints each package's result, then one result line that run.sh reads:
#   podwall-kernels: result=PASS|FAIL mode=tcx|clsact|unknown kernel=VERSION
# TESTS holds `packages` (one package directory per line, relative to the repository), a
# <dir with / as _>.test binary for each, and the attachmode probe. With PODWALL_SUITE_SECONDS
# set, every test binary's timeout ends that many seconds after the start; with PODWALL_SUITE_RUN
# set, only the tests that -test.run pattern selects run.
set -uo pipefail

tests="$1"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# The differential test sends a tenth of its usual packets here: about 10 s on an emulated
# kernel.
export PODWALL_DIFF_PACKETS="${PODWALL_DIFF_PACKETS:-10000}"
deadline=$((SECONDS + ${PODWALL_SUITE_SECONDS:-3600}))
result=PASS

# The loader's own probe decides tcx or clsact; it also loads the programs, so a verifier
# rejection shows here first, on its own.
if ! mode="$("$tests/attachmode")"; then
	mode=unknown
	result=FAIL
fi
echo "attach mode: $mode"

while read -r pkg; do
	start=$SECONDS
	# A test binary runs in its package's directory, as `go test` runs it. At its timeout it
	# fails and shows what every goroutine was doing.
	left=$((deadline - SECONDS))
	if (cd "$repo/$pkg" && "$tests/${pkg//\//_}.test" -test.count=1 -test.timeout="$((left > 10 ? left : 10))s" \
		${PODWALL_SUITE_RUN:+-test.run="$PODWALL_SUITE_RUN"}); then
		echo "ok   $pkg $((SECONDS - start))s"
	else
		echo "FAIL $pkg $((SECONDS - start))s"
		result=FAIL
	fi
done <"$tests/packages"

echo "podwall-kernels: result=$result mode=$mode kernel=$(uname -r)"
