package standalone

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/tests/pinned"
	"github.com/podwall/podwall/tests/topo"
)

// TestBrokenPodsFileLeavesNoPodOpen writes the pods file the ways that once unguarded pods:
// emptied in place (what `kubectl get ... > pods.yaml` does first), gone, cut at a line end
// inside a pod's status, cut inside a quoted string, replaced by unrelated files, and shrunk
// to one pod of four. No pod is opened by any of them:
// what the agent does not trust leaves the last state enforced, and a pod that lost its
// address or left the file stays isolated while its interface lives.
func TestBrokenPodsFileLeavesNoPodOpen(t *testing.T) {
	c := newCluster(t, topo.Routed)
	c.confirm = 3 * time.Second
	guarded, open, other, client := c.addPod("guarded"), c.addPod("open"), c.addPod("other"), c.addPod("client")
	specs := []podSpec{
		{ns: "shop", name: "guarded", tp: guarded, annotations: policyOf("allow tcp from label role=frontend")},
		{ns: "shop", name: "open", tp: open},
		{ns: "shop", name: "other", tp: other},
		{ns: "shop", name: "client", tp: client},
	}
	c.write(specs, "shop")
	a := c.startAgent(defaults)
	c.awaitApplied(defaults)
	enforced := func(openPasses bool) {
		t.Helper()
		topo.Expect(t,
			topo.TCP("to the guarded pod: its policy refuses", client.NS, none, guarded.IPv4, port, false),
			topo.TCP("to the guarded pod over IPv6", client.NS, none, guarded.IPv6, port, false),
			topo.UDP("to the guarded pod over UDP", client.NS, none, guarded.IPv4, port, false),
			topo.TCP("to the open pod", client.NS, none, open.IPv4, port, openPasses),
		)
	}
	enforced(true)
	topo.Expect(t, topo.TCP("from the guarded pod: its policy has no outbound rule", guarded.NS, none, open.IPv4, port, true))
	errors := 0.0
	failed := func(why string) {
		t.Helper()
		errors++
		a.awaitMetric(t, errors, "podwall_source_errors_total")
		require.Contains(t, a.logText(), why)
	}

	// Emptied in place: distrusted, the last content stays.
	state := c.expected(defaults)
	require.NoError(t, os.Truncate(c.file, 0))
	failed("is empty: the last content stays")
	pinned.Await(t, c.bpffs, state, applyWait)
	enforced(true)

	// Gone: reported once, read again with a backoff rather than in a loop.
	require.NoError(t, os.Remove(c.file))
	failed("read pods file")
	time.Sleep(time.Second)
	require.Equal(t, errors, a.metric("podwall_source_errors_total"), "a missing file is one failure, not one per read")
	pinned.Await(t, c.bpffs, state, applyWait)
	enforced(true)

	// Back, then cut in place at a line end inside the last pod's status. kubectl prints a
	// list's kind after its items: the cut list is an error, and the last content stays.
	c.write(specs, "shop")
	c.awaitApplied(defaults)
	state = c.expected(defaults)
	specs[0], specs[3] = specs[3], specs[0] // the guarded pod last
	list := render(t, specs, []string{"shop"}, nil)
	require.NoError(t, os.WriteFile(c.file, cutInLastStatus(t, list), 0o644))
	failed("an object without a kind")
	pinned.Await(t, c.bpffs, state, applyWait)
	enforced(true)

	// A file of one document per pod, cut the same way, parses: the guarded pod has no
	// address in it and stays isolated.
	cut := cutInLastStatus(t, documents(t, list))
	require.NoError(t, os.WriteFile(c.file, cut, 0o644))
	c.last = cut
	c.awaitApplied(defaults)
	enforced(true)
	topo.Expect(t, topo.TCP("from the guarded pod, isolated now", guarded.NS, none, open.IPv4, port, false))

	// kubectl's JSON cut inside a quoted string, and files of something else: a text, and a
	// ConfigMap (it parses, and lists no pod at all). None is taken.
	c.write(specs, "shop")
	c.awaitApplied(defaults)
	state = c.expected(defaults)
	j, err := yaml.YAMLToJSON(render(t, specs, []string{"shop"}, nil))
	require.NoError(t, err)
	at := bytes.Index(j, []byte(`"allow tcp`))
	require.Positive(t, at)
	require.NoError(t, os.WriteFile(c.file, j[:at+len(`"allow`)], 0o644))
	failed("parse pods file")
	require.NoError(t, os.WriteFile(c.file, []byte("127.0.0.1 localhost\n::1 localhost\n"), 0o644))
	failed("parse pods file")
	require.NoError(t, os.WriteFile(c.file, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pods}\ndata: {a: b}\n"), 0o644))
	failed("4 fewer than the last content")
	pinned.Await(t, c.bpffs, state, applyWait)
	enforced(true)

	// Shrunk to one pod of four: distrusted until it stayed the same for confirm, then the
	// three that left stay isolated while their interfaces live.
	c.write(specs, "shop")
	c.awaitApplied(defaults)
	state = c.expected(defaults)
	c.write(specs[:1], "shop")
	failed("3 fewer than the last content")
	pinned.Await(t, c.bpffs, state, applyWait)
	enforced(true)
	c.awaitApplied(defaults)
	enforced(false)
}

// cutInLastStatus cuts b at the line end after the last pod's "status:".
func cutInLastStatus(t *testing.T, b []byte) []byte {
	t.Helper()
	at := bytes.LastIndex(b, []byte("\n  status:\n"))
	if at < 0 {
		at = bytes.LastIndex(b, []byte("\nstatus:\n"))
	}
	require.Positive(t, at, "no status in %s", b)
	end := at + 1 + bytes.IndexByte(b[at+1:], '\n') + 1
	return b[:end]
}

// documents prints a List's items as documents of their own.
func documents(t *testing.T, list []byte) []byte {
	t.Helper()
	var l struct{ Items []any }
	require.NoError(t, yaml.Unmarshal(list, &l))
	var out []byte
	for _, item := range l.Items {
		b, err := yaml.Marshal(item)
		require.NoError(t, err)
		out = append(append(out, "---\n"...), b...)
	}
	return out
}
