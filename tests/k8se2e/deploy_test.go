package k8se2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podwall/podwall/tests/kapi"
)

// deployDir holds the manifests a cluster installs podwall with.
const deployDir = "../../deploy"

// TestDeployManifests validates deploy/ with kubectl, on the client and by the live API server
// (schema, defaulting, admission: the DaemonSet's priority class and privileged container, the
// RBAC objects), without persisting anything.
func TestDeployManifests(t *testing.T) {
	api := kapi.Start(t)
	objects := []string{
		"daemonset.apps/podwall",
		"serviceaccount/podwall",
		"clusterrole.rbac.authorization.k8s.io/podwall",
		"clusterrolebinding.rbac.authorization.k8s.io/podwall",
	}
	for _, tt := range []struct{ mode, says string }{
		{"client", "(dry run)"},
		{"server", "(server dry run)"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			out := kubectl(t, api, "apply", "--dry-run="+tt.mode, "-f", deployDir)
			for _, obj := range objects {
				require.Contains(t, out, obj+" created "+tt.says)
			}
			require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), len(objects), out)
		})
	}
}

func kubectl(t *testing.T, api *kapi.Cluster, args ...string) string {
	t.Helper()
	out, err := exec.Command(api.KubectlPath, append([]string{"--kubeconfig", api.Kubeconfig}, args...)...).CombinedOutput()
	require.NoError(t, err, "kubectl %s: %s", strings.Join(args, " "), out)
	return string(out)
}

// agentKubeconfig installs deploy/rbac.yaml and returns a kubeconfig with a token of its
// ServiceAccount: the agent then runs with exactly the rights the DaemonSet gives it.
func (e *env) agentKubeconfig() string {
	e.t.Helper()
	if e.kubeconfig != "" {
		return e.kubeconfig
	}
	kubectl(e.t, e.api, "apply", "-f", filepath.Join(deployDir, "rbac.yaml"))
	token := strings.TrimSpace(kubectl(e.t, e.api, "create", "token", "podwall", "--namespace", "kube-system", "--duration", "1h"))
	cfg, err := clientcmd.LoadFromFile(e.api.Kubeconfig)
	require.NoError(e.t, err)
	for _, auth := range cfg.AuthInfos {
		auth.Token = token
	}
	path := filepath.Join(e.t.TempDir(), "agent.kubeconfig")
	require.NoError(e.t, clientcmd.WriteToFile(*cfg, path))
	require.NoError(e.t, os.Chmod(path, 0o600))
	e.kubeconfig = path
	return path
}
