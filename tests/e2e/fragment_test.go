package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/loader/loadertest"
	"github.com/podwall/podwall/tests/topo"
)

// TestFragmentsShareTheirDatagramsVerdict checks SPEC 3 on IP fragments: a 4000-byte UDP
// datagram (three fragments on these links) that a port rule allows arrives whole, in both
// families, and one that no rule allows is dropped whole: not one of its fragments reaches
// the pod, so the pod never even starts reassembling it.
func TestFragmentsShareTheirDatagramsVerdict(t *testing.T) {
	for _, kind := range []topo.Kind{topo.Routed, topo.Bridged} {
		t.Run(kind.String(), func(t *testing.T) {
			c := newCluster(t, kind, loadertest.Best(t))
			udpPort := c.addPod(t, "udp-port", nsProd, nil, policyOf("allow udp to ports 8080"))
			udpSource := c.addPod(t, "udp-source", nsProd, nil, policyOf("allow udp from ports 40300"))
			tcpOnly := c.addPod(t, "tcp-only", nsProd, nil, policyOf("allow tcp"))
			plain := c.addPod(t, "plain", nsProd, nil, nil)
			backendPod := c.addPod(t, "backend", nsProd, labels("role", "backend"), nil)
			cl := c.tp.AddClient("client")
			c.apply(t)
			outside, backend := clientPeer(cl), podPeer(backendPod)

			c.verify(t,
				passes(outside, udpPort, bigUDPTo(portWeb)),
				passes(backend, plain, bigUDPTo(portWeb)),
				passes(outside, udpSource, bigUDPTo(portAlt).from(40300)),
				drops(outside, udpSource, bigUDPTo(portAlt).from(40301)),
			)
			for _, v6 := range []bool{false, true} {
				fam := map[bool]string{false: "v4", true: "v6"}[v6]
				t.Run("allowed datagram arrives whole "+fam, func(t *testing.T) {
					before := reassemblies(t, udpPort, v6)
					c.counted(t, []bpf.Reason{bpf.ReasonFragment, bpf.ReasonAllowRule}, nil, func() {
						c.verify(t, passes(outside, udpPort, only(bigUDPTo(portWeb), v6)))
					})
					require.Greater(t, reassemblies(t, udpPort, v6), before, "the pod reassembled fragments")
				})
				t.Run("denied datagram dropped whole "+fam, func(t *testing.T) {
					for _, target := range []*pod{udpPort, tcpOnly} {
						before := reassemblies(t, target, v6)
						c.counted(t, []bpf.Reason{bpf.ReasonFragment, bpf.ReasonNoRule}, nil, func() {
							c.verify(t, drops(outside, target, only(bigUDPTo(portAlt), v6)))
						})
						require.Equal(t, before, reassemblies(t, target, v6), "fragments reached %s", target.Name)
					}
				})
			}
		})
	}
}

func only(f flow, v6 bool) flow {
	if v6 {
		return f.v6()
	}
	return f.v4()
}

// reassemblies is how many fragments the pod's kernel has received for reassembly
// (ReasmReqds of /proc/net/snmp, Ip6ReasmReqds of /proc/net/snmp6).
func reassemblies(t *testing.T, p *pod, v6 bool) uint64 {
	t.Helper()
	var n uint64
	err := p.NS.Do(func() error {
		var err error
		if v6 {
			n, err = snmp6Counter("Ip6ReasmReqds")
		} else {
			n, err = snmpCounter("Ip", "ReasmReqds")
		}
		return err
	})
	require.NoError(t, err, "read reassembly counter of %s", p.Name)
	return n
}

// snmpCounter reads a counter of /proc/net/snmp, where each group is a line of names
// followed by a line of values, for the calling thread's network namespace.
func snmpCounter(group, name string) (uint64, error) {
	b, err := os.ReadFile("/proc/thread-self/net/snmp")
	if err != nil {
		return 0, fmt.Errorf("read snmp: %w", err)
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != group+":" || len(values) != len(names) {
			continue
		}
		for j, n := range names {
			if n == name {
				return strconv.ParseUint(values[j], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s %s in snmp", group, name)
}

// snmp6Counter reads a counter of /proc/net/snmp6 ("NAME VALUE" lines) for the calling
// thread's network namespace.
func snmp6Counter(name string) (uint64, error) {
	b, err := os.ReadFile("/proc/thread-self/net/snmp6")
	if err != nil {
		return 0, fmt.Errorf("read snmp6: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in snmp6", name)
}
