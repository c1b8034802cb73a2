package policy

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEscape(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"plain-Name.09", "plain-Name.09"},
		{"_", "__"},
		{"a_b", "a__b"},
		{"__", "____"},
		{"/", "_"},
		{"a/b=c", "a_b_c"},
		{"x y:z@", "x_y_z_"},
		{"é", "_"},         // one rune of two bytes: one "_"
		{"日本", "__"},       // two runes of three bytes each
		{"\xff\xfe", "__"}, // each byte of invalid UTF-8
		{"a_/b", "a___b"},  // "_" doubled, then "/" replaced
	} {
		require.Equal(t, tt.want, Escape(tt.in), tt.in)
	}
}

func TestTags(t *testing.T) {
	require.Equal(t, "namespace_production", NamespaceTag("production"))
	require.Equal(t, "namespace_my__ns", NamespaceTag("my_ns"))
	require.Equal(t, "production_pod1", PodTag("production", "pod1"))
	require.Equal(t, "production_role_backend", LabelTag("production", Label{"role", "backend"}))
	require.Equal(t, "production_version_v1.2.3", LabelTag("production", Label{"version", "v1.2.3"}))
	require.Equal(t, "my-ns_app.kubernetes.io_name_web", LabelTag("my-ns", Label{"app.kubernetes.io/name", "web"}))
	require.Equal(t, "ns_Tier_Front__End", LabelTag("ns", Label{"Tier", "Front_End"}))
}

func TestPodTags(t *testing.T) {
	// seed/KubernetesPolicy.md's example.
	require.Equal(t, []string{
		"namespace_production",
		"production_pod1",
		"production_role_backend",
		"production_version_v1.2.3",
	}, PodTags("production", "pod1", map[string]string{"version": "v1.2.3", "role": "backend"}))

	require.Equal(t, []string{"namespace_default", "default_web-0"}, PodTags("default", "web-0", nil))

	// Sorted by key in byte order: upper case before lower case, "a.b" before "a/b".
	require.Equal(t, []string{
		"namespace_ns", "ns_p",
		"ns_B_1", "ns_a.b_2", "ns_a_b_3", "ns_b_4",
	}, PodTags("ns", "p", map[string]string{"b": "4", "a/b": "3", "a.b": "2", "B": "1"}))
}
