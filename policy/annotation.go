package policy

import "fmt"

// The annotation keys policy is read from (SPEC 1).
const (
	AnnotationKey       = "projectcalico.org/policy"
	LegacyAnnotationKey = "policy"
	// AuditAnnotationKey, "true" on a Pod or its Namespace, puts the pod in audit mode: what
	// its policy would drop passes and is reported. Not Calico's: podwall's own.
	AuditAnnotationKey = "podwall.io/audit"
)

// Audit reads the audit annotation of a Pod or Namespace: set is false when it is absent.
// Only "true" and "false" are values: anything else is an error, and the caller enforces,
// so that a typo never opens a pod.
func Audit(annotations map[string]string) (on, set bool, err error) {
	v, ok := annotations[AuditAnnotationKey]
	switch {
	case !ok:
		return false, false, nil
	case v == "true":
		return true, true, nil
	case v == "false":
		return false, true, nil
	}
	return false, true, fmt.Errorf("annotation %s: %q is neither \"true\" nor \"false\"", AuditAnnotationKey, v)
}

// PolicyAnnotation picks a pod's policy annotation: AnnotationKey, else LegacyAnnotationKey
// when legacy is on. key says which one was used; ok is false when the pod has neither, in
// which case the default policy applies. A present but empty value is a policy with no rules.
func PolicyAnnotation(annotations map[string]string, legacy bool) (value, key string, ok bool) {
	if v, ok := annotations[AnnotationKey]; ok {
		return v, AnnotationKey, true
	}
	if legacy {
		if v, ok := annotations[LegacyAnnotationKey]; ok {
			return v, LegacyAnnotationKey, true
		}
	}
	return "", "", false
}
