package k8se2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/tests/kapi"
)

// deployDir holds the manifests a cluster installs podwall with.
const deployDir = "../../deploy"

// TestDeployManifests validates deploy/ with kubectl, on the client and by the live API server
// (schema, defaulting, admission: the DaemonSet's priority class and capabilities, the RBAC
// objects), without persisting anything.
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

// TestManifestsGrantTheLeast checks deploy/ against what the agent needs and no more: the
// capabilities TestLeastPrivilege (tests/standalone) runs it with instead of privileged, only
// podwall's folder of the host's bpffs, a pinned image, metrics on the node's address, and
// RBAC of the calls the agent makes (the tests here run it with that ServiceAccount's token).
func TestManifestsGrantTheLeast(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "daemonset.yaml"))
	require.NoError(t, err)
	var ds appsv1.DaemonSet
	require.NoError(t, yaml.UnmarshalStrict(b, &ds))
	spec := ds.Spec.Template.Spec
	require.Len(t, spec.Containers, 1)
	agent := spec.Containers[0]
	sc := agent.SecurityContext
	require.NotNil(t, sc)
	require.False(t, ptr.Deref(sc.Privileged, true), "not privileged")
	require.False(t, ptr.Deref(sc.AllowPrivilegeEscalation, true))
	require.True(t, ptr.Deref(sc.ReadOnlyRootFilesystem, false))
	require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	require.ElementsMatch(t, []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN"}, sc.Capabilities.Add)
	require.Empty(t, spec.InitContainers)

	require.Len(t, spec.Volumes, 1, "one volume")
	require.NotNil(t, spec.Volumes[0].HostPath)
	require.Equal(t, "/sys/fs/bpf/podwall", spec.Volumes[0].HostPath.Path, "podwall's folder of the host's bpffs only")

	image, tag, ok := strings.Cut(agent.Image, ":")
	require.True(t, ok, "image %s has a tag", agent.Image)
	require.Equal(t, "ghcr.io/podwall/podwall", image)
	require.Regexp(t, `^\d+\.\d+\.\d+$`, tag, "a pinned release, not latest")

	env := map[string]corev1.EnvVar{}
	for _, e := range agent.Env {
		env[e.Name] = e
	}
	require.Equal(t, "status.hostIP", env["HOST_IP"].ValueFrom.FieldRef.FieldPath)
	require.Equal(t, "$(HOST_IP):9402", env["PODWALL_METRICS_ADDR"].Value, "metrics on the node's address")
	for _, probe := range []*corev1.Probe{agent.LivenessProbe, agent.ReadinessProbe} {
		require.Empty(t, probe.HTTPGet.Host, "probes reach the node's address")
		require.Equal(t, 9402, probe.HTTPGet.Port.IntValue())
	}

	b, err = os.ReadFile(filepath.Join(deployDir, "rbac.yaml"))
	require.NoError(t, err)
	var role *rbacv1.ClusterRole
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var obj rbacv1.ClusterRole
		require.NoError(t, yaml.Unmarshal([]byte(doc), &obj))
		if obj.Kind == "ClusterRole" {
			role = &obj
		}
	}
	require.NotNil(t, role)
	require.Equal(t, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"pods/status"}, Verbs: []string{"patch"}},
	}, role.Rules)
}
