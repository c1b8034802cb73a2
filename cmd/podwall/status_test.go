package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/agent"
	"github.com/podwall/podwall/bpf"
)

func TestStatusPrintsTheAgentsView(t *testing.T) {
	since := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	pods := []agent.PodStatus{
		{Namespace: "shop", Name: "web", Interface: "veth1", Ifindex: 7, Attach: "tcx", Mode: "audit", Policy: "0x1234abcd",
			Generation: 0x42, EnforcedSince: &since, Allowed: 7, Audited: 5,
			Rules: []agent.RuleStatus{
				{Rule: "1", Text: "allow udp to ports 8080", Packets: 7, Flows: 1},
				{Rule: "2", Text: "deny udp to ports 9090", Deny: true, Packets: 5, Flows: 5, Audited: 5},
				{Rule: "-", Text: "(no rule matched)", Deny: true},
			}},
		{Namespace: "shop", Name: "new", Mode: "none", Why: "interface not found"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/status", r.URL.Path)
		require.NoError(t, json.NewEncoder(w).Encode(pods))
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")

	out, stderr, code := runInProcess([]string{"status", "--agent-addr", addr, "--rules"}, "")
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 8)
	require.Regexp(t, `^POD\s+INTERFACE\s+ATTACH\s+MODE\s+POLICY\s+RULES\s+GENERATION\s+ENFORCED SINCE\s+ALLOWED\s+DROPPED\s+AUDITED\s+WHY$`, lines[0])
	require.Regexp(t, `^shop/web\s+veth1\s+tcx\s+audit\s+0x1234abcd\s+2\s+0x00000042\s+2026-12-06T05:00:00Z\s+7\s+0\s+5\s+-$`, lines[1])
	require.Regexp(t, `^shop/new\s+-\s+-\s+none\s+-\s+-\s+-\s+-\s+0\s+0\s+0\s+interface not found$`, lines[2])
	require.Empty(t, lines[3])
	require.Regexp(t, `^POD\s+RULE\s+PACKETS\s+FLOWS\s+AUDITED\s+TEXT$`, lines[4])
	require.Regexp(t, `^shop/web\s+1\s+7\s+1\s+0\s+allow udp to ports 8080$`, lines[5])
	require.Regexp(t, `^shop/web\s+2\s+5\s+5\s+5\s+deny udp to ports 9090$`, lines[6])
	require.Regexp(t, `^shop/web\s+-\s+0\s+0\s+0\s+\(no rule matched\)$`, lines[7])

	out, stderr, code = runInProcess([]string{"status", "--agent-addr", addr, "-o", "json"}, "")
	require.Equal(t, 0, code, stderr)
	var got []agent.PodStatus
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Equal(t, pods, got)

	_, stderr, code = runInProcess([]string{"status", "--agent-addr", "127.0.0.1:1", "--timeout", "1s"}, "")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "is it running with --metrics-addr?")
}

func TestAgentURL(t *testing.T) {
	t.Setenv("PODWALL_METRICS_ADDR", "")
	for addr, want := range map[string]string{
		"":               "http://127.0.0.1:9402/status",
		":9402":          "http://127.0.0.1:9402/status",
		"0.0.0.0:9402":   "http://127.0.0.1:9402/status",
		"10.0.0.1:9402":  "http://10.0.0.1:9402/status",
		"[fd00::1]:9402": "http://[fd00::1]:9402/status",
	} {
		require.Equal(t, want, agentURL(addr), addr)
	}
	t.Setenv("PODWALL_METRICS_ADDR", "10.0.0.2:9402")
	require.Equal(t, "http://10.0.0.2:9402/status", agentURL(""))
}

func TestMonitorNamesTheVerdict(t *testing.T) {
	n := &namer{}
	for verdict, want := range map[uint8]string{bpf.VerdictPass: "PASS", bpf.VerdictDrop: "DROP", bpf.VerdictAudit: "AUDIT"} {
		v := n.view(bpf.PodwallEvent{Verdict: verdict, Reason: uint8(bpf.ReasonDenyRule), Proto: 17}, time.Now())
		require.Equal(t, want, v.Verdict)
		keep := eventFilter{verdict: strings.ToLower(want)}
		require.NoError(t, keep.check())
		require.True(t, keep.keep(v))
	}
}
