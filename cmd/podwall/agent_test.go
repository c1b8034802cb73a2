package main

import (
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

func TestAgentFlagsFromEnv(t *testing.T) {
	defaultConntrack := conntrackOptions{size: 262144, perPod: 65536, gc: 10 * time.Second, synTimeout: time.Minute, finTimeout: 10 * time.Second}
	smaller := defaultConntrack
	smaller.size, smaller.perPod = 1024, 100
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want agentOptions
		err  string
	}{
		{name: "defaults", want: agentOptions{kubeQPS: defaultKubeQPS, kubeBurst: defaultKubeBurst, bpffs: "/sys/fs/bpf", policyOptions: policyOptions{defaultPolicy: "namespace", openNamespaces: []string{"kube-system"}, allowHost: true, legacyKey: true, budget: 8192}, logLevel: "info", logFormat: "json", podsConfirm: 30 * time.Second, xdp: []string{"auto"}, chainCheck: 10 * time.Second, ruleMetrics: "top", ruleTop: 20, conntrack: defaultConntrack}},
		{name: "environment", env: map[string]string{
			"PODWALL_NODE_NAME": "n1", "PODWALL_ALLOW_HOST": "false", "PODWALL_OPEN_NAMESPACES": "a, b",
			"PODWALL_METRICS_ADDR": ":9402", "PODWALL_DEFAULT_POLICY": "deny",
		}, want: agentOptions{kubeQPS: defaultKubeQPS, kubeBurst: defaultKubeBurst, nodeName: "n1", bpffs: "/sys/fs/bpf", policyOptions: policyOptions{defaultPolicy: "deny", openNamespaces: []string{"a", "b"}, allowHost: false, legacyKey: true, budget: 8192}, metricsAddr: ":9402",
			logLevel: "info", logFormat: "json", podsConfirm: 30 * time.Second, xdp: []string{"auto"}, chainCheck: 10 * time.Second, ruleMetrics: "top", ruleTop: 20, conntrack: defaultConntrack}},
		{name: "NODE_NAME from the downward API", env: map[string]string{"NODE_NAME": "n2"},
			want: agentOptions{kubeQPS: defaultKubeQPS, kubeBurst: defaultKubeBurst, nodeName: "n2", bpffs: "/sys/fs/bpf", policyOptions: policyOptions{defaultPolicy: "namespace", openNamespaces: []string{"kube-system"}, allowHost: true, legacyKey: true, budget: 8192}, logLevel: "info", logFormat: "json", podsConfirm: 30 * time.Second, xdp: []string{"auto"}, chainCheck: 10 * time.Second, ruleMetrics: "top", ruleTop: 20, conntrack: defaultConntrack}},
		{name: "PODWALL_NODE_NAME wins over NODE_NAME, the command line over both",
			args: []string{"--node-name", "cli", "--open-namespaces", "x"},
			env:  map[string]string{"NODE_NAME": "n2", "PODWALL_NODE_NAME": "n3", "PODWALL_OPEN_NAMESPACES": "y"},
			want: agentOptions{kubeQPS: defaultKubeQPS, kubeBurst: defaultKubeBurst, nodeName: "cli", bpffs: "/sys/fs/bpf", policyOptions: policyOptions{defaultPolicy: "namespace", openNamespaces: []string{"x"}, allowHost: true, legacyKey: true, budget: 8192}, logLevel: "info", logFormat: "json", podsConfirm: 30 * time.Second, xdp: []string{"auto"}, chainCheck: 10 * time.Second, ruleMetrics: "top", ruleTop: 20, conntrack: defaultConntrack}},
		{name: "conntrack sizes", env: map[string]string{"PODWALL_CONNTRACK_SIZE": "1024", "PODWALL_CONNTRACK_PER_POD": "100"},
			want: agentOptions{kubeQPS: defaultKubeQPS, kubeBurst: defaultKubeBurst, bpffs: "/sys/fs/bpf", policyOptions: policyOptions{defaultPolicy: "namespace", openNamespaces: []string{"kube-system"}, allowHost: true, legacyKey: true, budget: 8192}, logLevel: "info", logFormat: "json", podsConfirm: 30 * time.Second, xdp: []string{"auto"}, chainCheck: 10 * time.Second, ruleMetrics: "top", ruleTop: 20, conntrack: smaller}},
		{name: "no XDP", env: map[string]string{"PODWALL_XDP_DEVICES": ""},
			want: agentOptions{kubeQPS: defaultKubeQPS, kubeBurst: defaultKubeBurst, bpffs: "/sys/fs/bpf", policyOptions: policyOptions{defaultPolicy: "namespace", openNamespaces: []string{"kube-system"}, allowHost: true, legacyKey: true, budget: 8192}, logLevel: "info", logFormat: "json", podsConfirm: 30 * time.Second, chainCheck: 10 * time.Second, ruleMetrics: "top", ruleTop: 20, conntrack: defaultConntrack}},
		{name: "bad value", env: map[string]string{"PODWALL_UNINSTALL": "maybe"}, err: `PODWALL_UNINSTALL="maybe"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var o agentOptions
			fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
			o.addFlags(fs)
			require.NoError(t, fs.Parse(tt.args))
			err := flagsFromEnv(fs, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, o)
		})
	}
}

func TestAgentCLI(t *testing.T) {
	stdout, stderr, code := runBinary(t, []string{"agent", "--help"}, "")
	require.Equal(t, 0, code, stderr)
	for _, flag := range []string{"--kubeconfig", "--node-name", "--bpffs", "--default-policy", "--open-namespaces",
		"--allow-host", "--legacy-policy-key", "--metrics-addr", "--log-level", "--log-format", "--pods-file",
		"--ready-file", "--netns", "--uninstall", "--strict-interfaces", "--xdp-devices", "--policy-budget", "--map-size",
		"--pods-file-confirm", "PODWALL_NODE_NAME"} {
		require.Contains(t, stdout, flag)
	}
	for _, tt := range []cliTest{
		{name: "bad default policy", args: []string{"agent", "--pods-file", "x", "--default-policy", "open"}, code: 1,
			stderr: "podwall: unknown --default-policy \"open\": want namespace, allow or deny\n"},
		{name: "bad log format", args: []string{"agent", "--log-format", "xml"}, code: 1,
			stderr: "podwall: unknown --log-format \"xml\": want json or console\n"},
		{name: "bad strict pattern", args: []string{"agent", "--pods-file", "x", "--strict-interfaces", "veth*,cali["}, code: 1,
			stderr: "podwall: --strict-interfaces \"cali[\": syntax error in pattern\n"},
	} {
		t.Run(tt.name, func(t *testing.T) { requireCLI(t, tt) })
	}
}
