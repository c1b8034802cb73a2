package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/k8s"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/topo"
)

// pinnedState pins a data path under a temporary bpffs folder with one isolated endpoint at
// ifindex 1 (where BPF_PROG_TEST_RUN puts its packets), and sends one TCP SYN to it through
// to_pod: the packet is dropped, counted and reported as an event. It returns the folder.
func pinnedState(t *testing.T) string {
	dir, run := pinned(t, compiler.Input{
		Pods: []compiler.Pod{
			{Namespace: "shop", Name: "web", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.2")},
				Annotations: map[string]string{policy.AnnotationKey: ""}},
			{Namespace: "shop", Name: "front", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.3")}},
		},
		Endpoints: []compiler.Endpoint{{Ifindex: 1, Namespace: "shop", Name: "web"}},
	})
	require.Equal(t, uint32(2), run(tcpSYN("10.0.0.3", "10.0.0.2", 40000, 80)), "TC_ACT_SHOT")
	return dir
}

// pinned pins a data path holding the compiled input under a temporary bpffs folder, and
// returns the folder and a function that runs a frame through a second copy of to_pod on the
// pinned maps, as the attached one would, returning its action.
func pinned(t *testing.T, in compiler.Input) (string, func([]byte) uint32) {
	dir := topo.BPFFS(t)
	dp, err := datapath.Open(loader.Config{BPFFS: dir})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, dp.Uninstall()) })
	require.NoError(t, dp.Apply(compiler.Compile(in)))

	spec, err := bpf.LoadPodwall()
	require.NoError(t, err)
	replace := map[string]*ebpf.Map{}
	for name := range spec.Maps {
		m, err := ebpf.LoadPinnedMap(filepath.Join(loader.StateDir(dir), "maps", name), nil)
		if err != nil {
			continue // data sections are not pinned
		}
		t.Cleanup(func() { m.Close() })
		replace[name] = m
	}
	var progs bpf.PodwallPrograms
	require.NoError(t, spec.LoadAndAssign(&progs, &ebpf.CollectionOptions{MapReplacements: replace}))
	t.Cleanup(func() { progs.Close() })
	return dir, func(frame []byte) uint32 {
		ret, err := progs.ToPod.Run(&ebpf.RunOptions{Data: frame})
		require.NoError(t, err)
		return ret
	}
}

// tcpSYN is an Ethernet frame with an IPv4 TCP SYN; checksums are not checked on the way to
// the program.
func tcpSYN(src, dst string, sport, dport uint16) []byte {
	pkt := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(pkt[12:], 0x0800)
	ip := pkt[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8] = 64
	ip[9] = 6
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	return pkt
}

func TestMapsPrintsThePinnedState(t *testing.T) {
	// BPF_PROG_TEST_RUN takes ifindex 1, loopback, of the caller's namespace: a new one.
	topo.NewNetns(t, "cli").Enter(t)
	dir := pinnedState(t)
	out, stderr, code := runInProcess([]string{"maps", "--bpffs", dir}, "")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `(?m)^conntrack epoch 2 \(established flows pass on it\)$`, out)
	require.Regexp(t, `(?m)^1\s+isolate\s+false\s+-\s+0x[0-9a-f]+\s+false\s+slot 1$`, out)
	require.Regexp(t, `(?m)^10\.0\.0\.2\s+0x[0-9a-f]+$`, out)
	require.Regexp(t, `(?m)^isolated\s+1\s+0\s+0$`, out)
	require.Regexp(t, `(?m)^IPv4 flows\s+0\s+0\s+\d+$`, out)
	require.Regexp(t, `(?m)^IPv6 flows\s+0\s+0\s+\d+$`, out)

	out, stderr, code = runInProcess([]string{"maps", "--bpffs", dir, "stats"}, "")
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, out, "ENDPOINT")
	require.Contains(t, out, "REASON")
}

func TestMapsRejectsAnUnknownSectionAndAMissingState(t *testing.T) {
	_, stderr, code := runInProcess([]string{"maps", "routes"}, "")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `invalid argument "routes"`)

	_, stderr, code = runInProcess([]string{"maps", "--bpffs", t.TempDir()}, "")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "open pinned maps")
}

func TestMonitorPrintsTheDrop(t *testing.T) {
	topo.NewNetns(t, "cli").Enter(t)
	dir := pinnedState(t)
	out, stderr, code := runInProcess([]string{"monitor", "--bpffs", dir, "-c", "1"}, "")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `^\d\d:\d\d:\d\d\.\d{3} DROP isolated\s+at=tc if=1 tcp 10\.0\.0\.3:40000 -> 10\.0\.0\.2:80 identity=0x[0-9a-f]+\n$`, out)
}

// TestMonitorNamesAndFilters: with the pods, monitor names both ends; -o json prints the
// event's fields; filters select by verdict, hook and pod.
func TestMonitorNamesAndFilters(t *testing.T) {
	topo.NewNetns(t, "cli").Enter(t)
	dir := pinnedState(t)
	out, stderr, code := runInProcess([]string{"monitor", "--bpffs", dir, "-c", "1", "-f", "testdata/explain-pods.yaml",
		"-o", "json", "--verdict", "drop", "--hook", "tc", "--pod", "shop/web"}, "")
	require.Equal(t, 0, code, stderr)
	var ev map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &ev), out)
	delete(ev, "time")
	require.Equal(t, map[string]any{
		"verdict": "DROP", "reason": "isolated", "hook": "tc", "ifindex": 1.0, "proto": "tcp",
		"src": "10.0.0.3", "dst": "10.0.0.2", "src_port": 40000.0, "dst_port": 80.0,
		"identity": ev["identity"], "src_pod": "shop/front", "dst_pod": "shop/web",
	}, ev)

	for _, tt := range []cliTest{
		{name: "a filter by pod needs the pods", args: []string{"monitor", "--bpffs", dir, "--pod", "shop/web"}, code: 1,
			stderr: "podwall: --namespace and --pod need the pods (-f)\n"},
		{name: "an unknown verdict", args: []string{"monitor", "--bpffs", dir, "--verdict", "maybe"}, code: 1,
			stderr: "podwall: --verdict \"maybe\": drop, pass or audit\n"},
		{name: "an unknown output", args: []string{"monitor", "--bpffs", dir, "-o", "yaml"}, code: 1,
			stderr: "podwall: -o \"yaml\": text or json\n"},
	} {
		t.Run(tt.name, func(t *testing.T) { requireCLI(t, tt) })
	}
}

// TestMapsPrintsRuleCounters checks that `maps policies` counts what each rule decided, with
// the rules' text from a pods file, and that `maps stats` shows what audit mode let through.
func TestMapsPrintsRuleCounters(t *testing.T) {
	topo.NewNetns(t, "cli").Enter(t)
	const pods = `apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {podwall.io/audit: "%s"}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, annotations: {projectcalico.org/policy: "allow tcp to ports 80; deny tcp to ports 22"}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: front, namespace: shop}
status: {podIP: 10.0.0.3}
`
	for _, audit := range []bool{false, true} {
		t.Run(fmt.Sprintf("audit %t", audit), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "pods.yaml")
			require.NoError(t, os.WriteFile(file, fmt.Appendf(nil, pods, strconv.FormatBool(audit)), 0o600))
			snap, err := k8s.ParseFile(fmt.Appendf(nil, pods, strconv.FormatBool(audit)))
			require.NoError(t, err)
			in := compiler.Input{NamespaceAnnotations: snap.NamespaceAnnotations,
				Endpoints: []compiler.Endpoint{{Ifindex: 1, Namespace: "shop", Name: "web"}}}
			for _, p := range snap.Pods {
				in.Pods = append(in.Pods, p.Pod)
			}
			dir, run := pinned(t, in)
			const pass, shot = ^uint32(0), 2
			denied := uint32(shot)
			if audit {
				denied = pass
			}
			for port := range uint16(3) {
				require.Equal(t, pass, run(tcpSYN("10.0.0.3", "10.0.0.2", 40000+port, 80)))
			}
			for port := range uint16(2) {
				require.Equal(t, denied, run(tcpSYN("10.0.0.3", "10.0.0.2", 40000+port, 22)))
			}
			require.Equal(t, denied, run(tcpSYN("10.0.0.3", "10.0.0.2", 40000, 443)))

			out, stderr, code := runInProcess([]string{"maps", "--bpffs", dir, "policies", "-f", file}, "")
			require.Equal(t, 0, code, stderr)
			audits := map[bool][2]int{false: {0, 0}, true: {2, 1}}[audit]
			require.Regexp(t, `(?m)^0x[0-9a-f]+\s+1\s+3\s+3\s+0\s+allow tcp to ports 80$`, out)
			require.Regexp(t, fmt.Sprintf(`(?m)^0x[0-9a-f]+\s+2\s+2\s+2\s+%d\s+deny tcp to ports 22$`, audits[0]), out)
			require.Regexp(t, fmt.Sprintf(`(?m)^0x[0-9a-f]+\s+-\s+1\s+1\s+%d\s+\(no rule matched\)$`, audits[1]), out)

			out, stderr, code = runInProcess([]string{"maps", "--bpffs", dir, "stats", "endpoints"}, "")
			require.Equal(t, 0, code, stderr)
			if audit {
				require.Regexp(t, `(?m)^deny-rule\s+0\s+0\s+2$`, out)
				require.Regexp(t, `(?m)^no-rule\s+0\s+0\s+1$`, out)
				require.Regexp(t, `(?m)^1\s+enforce\s+true\s`, out)
			} else {
				require.Regexp(t, `(?m)^deny-rule\s+2\s+0\s+0$`, out)
				require.Regexp(t, `(?m)^1\s+enforce\s+false\s`, out)
			}
		})
	}
}
