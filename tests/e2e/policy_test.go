package e2e

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/loader/loadertest"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/topo"
)

// TestSeedExamplesAndDefaults checks the examples of the seed document, the annotation keys
// (SPEC 1), and what SPEC 4 says of pods without a usable policy: the namespace default, the
// open kube-system namespace, isolation by an empty or an invalid annotation, the
// --default-policy choices, and traffic from the node (SPEC 3.2) with AllowHost on and off.
func TestSeedExamplesAndDefaults(t *testing.T) {
	c := newCluster(t, topo.Routed, loadertest.Best(t))
	backendPod := c.addPod(t, "backend", nsProd, labels("role", "backend"), nil)
	frontendPod := c.addPod(t, "frontend", nsProd, labels("role", "frontend"), nil)
	strangerPod := c.addPod(t, "stranger", nsDev, labels("role", "backend"), nil)
	seed1 := c.addPod(t, "seed1", nsProd, labels("role", "db"), policyOf("allow tcp from label role=backend"))
	seed2 := c.addPod(t, "seed2", nsProd, labels("role", "etcd"),
		policyOf("allow from label role=backend; allow tcp to ports 2379,443"))
	plain := c.addPod(t, "plain", nsProd, labels("role", "web"), nil)
	system := c.addPod(t, "system", nsSystem, labels("k8s-app", "dns"), policyOf("deny"))
	isolated := c.addPod(t, "isolated", nsProd, nil, policyOf(""))
	blank := c.addPod(t, "blank", nsProd, nil, policyOf(" ; ;\t;"))
	invalid := c.addPod(t, "invalid", nsProd, labels("role", "backend"), policyOf("allow tcp form label role=backend"))
	legacy := c.addPod(t, "legacy", nsProd, nil, map[string]string{policy.LegacyAnnotationKey: "allow udp"})
	bothKeys := c.addPod(t, "both-keys", nsProd, nil, map[string]string{
		policy.LegacyAnnotationKey: "allow udp",
		policy.AnnotationKey:       "allow tcp",
	})
	cl := c.tp.AddClient("client", remoteIPv4, remoteIPv6, worldIPv4, worldIPv6)
	c.addRemote("remote-backend", nsProd, labels("role", "backend"), remoteIPv4, remoteIPv6)
	c.apply(t)

	backend, frontend, stranger := podPeer(backendPod), podPeer(frontendPod), podPeer(strangerPod)
	remote := extraPeer("remote-backend", cl, remoteIPv4, remoteIPv6)
	outside, node := clientPeer(cl), c.node()

	require.True(t, c.problem(system, compiler.ProblemIgnored), "the annotation in kube-system is ignored")
	require.True(t, c.problem(invalid, compiler.ProblemInvalid), "the invalid annotation is reported")

	t.Run("policies", func(t *testing.T) {
		c.verify(t,
			// allow tcp from label role=backend
			passes(backend, seed1, tcpTo(portWeb), tcpTo(portAlt)),
			passes(remote, seed1, tcpTo(portWeb)),
			drops(backend, seed1, udpTo(portWeb), ping),
			drops(frontend, seed1, tcpTo(portWeb)),
			drops(stranger, seed1, tcpTo(portWeb)), // role=backend, but of another namespace
			drops(outside, seed1, tcpTo(portWeb)),
			// allow from label role=backend; allow tcp to ports 2379,443
			passes(backend, seed2, everything...),
			passes(remote, seed2, udpTo(portAlt), ping),
			passes(frontend, seed2, tcpTo(portEtcd), tcpTo(portHTTPS)),
			passes(outside, seed2, tcpTo(portHTTPS)),
			drops(frontend, seed2, tcpTo(portWeb), udpTo(portHTTPS), udpTo(portEtcd), ping),
			drops(stranger, seed2, everything...),
			// no annotation: pods of the own namespace only, wherever they run
			passes(backend, plain, everything...),
			passes(frontend, plain, everything...),
			passes(remote, plain, tcpTo(portWeb)),
			drops(stranger, plain, everything...),
			drops(outside, plain, everything...),
			// kube-system accepts everything, whatever its annotation says
			passes(stranger, system, everything...),
			passes(outside, system, everything...),
			// no rules, or a policy that does not parse: isolated
			drops(backend, isolated, everything...),
			drops(outside, isolated, tcpTo(portWeb)),
			drops(backend, blank, everything...),
			drops(backend, invalid, everything...),
			drops(remote, invalid, tcpTo(portWeb)),
			// the legacy key, unless the namespaced one is there too
			passes(outside, legacy, udpTo(portWeb)),
			drops(outside, legacy, tcpTo(portWeb), ping),
			passes(outside, bothKeys, tcpTo(portWeb)),
			drops(outside, bothKeys, udpTo(portWeb)),
			// the node reaches every pod
			passes(node, seed1, everything...),
			passes(node, seed2, everything...),
			passes(node, plain, everything...),
			passes(node, isolated, everything...),
			passes(node, invalid, tcpTo(portWeb)),
		)
	})

	t.Run("verdicts are counted by reason", func(t *testing.T) {
		c.counted(t, []bpf.Reason{bpf.ReasonNoRule}, []bpf.Reason{bpf.ReasonAllowRule},
			func() { c.verify(t, drops(frontend, seed1, tcpTo(portWeb).v4())) })
		c.counted(t, []bpf.Reason{bpf.ReasonAllowRule, bpf.ReasonEstablished}, nil,
			func() { c.verify(t, passes(backend, seed1, tcpTo(portWeb).v6())) })
		c.counted(t, []bpf.Reason{bpf.ReasonIsolated}, nil,
			func() { c.verify(t, drops(backend, invalid, ping.v6())) })
		c.counted(t, []bpf.Reason{bpf.ReasonOpen}, nil,
			func() { c.verify(t, passes(outside, system, udpTo(portWeb).v4())) })
		c.counted(t, []bpf.Reason{bpf.ReasonHost}, nil,
			func() { c.verify(t, passes(node, isolated, ping.v4())) })
	})

	t.Run("default policy allow", func(t *testing.T) {
		c.opts.DefaultPolicy = compiler.DefaultAllow
		c.apply(t)
		c.verify(t,
			passes(stranger, plain, everything...),
			passes(outside, plain, everything...),
			drops(outside, seed1, tcpTo(portWeb)),
			drops(backend, isolated, tcpTo(portWeb)),
		)
	})

	t.Run("default policy deny", func(t *testing.T) {
		c.opts.DefaultPolicy = compiler.DefaultDeny
		c.apply(t)
		c.verify(t,
			drops(backend, plain, everything...),
			drops(frontend, plain, tcpTo(portWeb)),
			passes(node, plain, everything...),
			passes(backend, seed1, tcpTo(portWeb)),
			passes(outside, system, tcpTo(portWeb)),
		)
	})

	t.Run("traffic from the node dropped without AllowHost", func(t *testing.T) {
		c.opts = defaultOptions()
		c.opts.AllowHost = false
		c.apply(t)
		c.verify(t,
			drops(node, plain, everything...),
			drops(node, seed1, tcpTo(portWeb)),
			drops(node, isolated, everything...),
			passes(node, system, everything...), // an open namespace accepts everything
			passes(backend, plain, tcpTo(portWeb)),
			passes(backend, seed1, tcpTo(portWeb)),
		)
	})
}
