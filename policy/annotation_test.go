package policy

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPolicyAnnotation(t *testing.T) {
	for _, tt := range []struct {
		name        string
		annotations map[string]string
		legacy      bool
		value, key  string
		ok          bool
	}{
		{"none", nil, true, "", "", false},
		{"other annotations", map[string]string{"x": "allow"}, true, "", "", false},
		{"namespaced", map[string]string{AnnotationKey: "allow tcp"}, true, "allow tcp", AnnotationKey, true},
		{"namespaced without legacy", map[string]string{AnnotationKey: "allow tcp"}, false, "allow tcp", AnnotationKey, true},
		{"legacy", map[string]string{"policy": "deny"}, true, "deny", LegacyAnnotationKey, true},
		{"legacy off", map[string]string{"policy": "deny"}, false, "", "", false},
		{"namespaced wins", map[string]string{"policy": "deny", AnnotationKey: "allow"}, true, "allow", AnnotationKey, true},
		{"empty namespaced wins", map[string]string{"policy": "deny", AnnotationKey: ""}, true, "", AnnotationKey, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			value, key, ok := PolicyAnnotation(tt.annotations, tt.legacy)
			require.Equal(t, tt.value, value)
			require.Equal(t, tt.key, key)
			require.Equal(t, tt.ok, ok)
		})
	}
	require.Equal(t, "projectcalico.org/policy", AnnotationKey)
	require.Equal(t, "policy", LegacyAnnotationKey)
}
