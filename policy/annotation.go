package policy

// The annotation keys policy is read from (SPEC 1).
const (
	AnnotationKey       = "projectcalico.org/policy"
	LegacyAnnotationKey = "policy"
)

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
