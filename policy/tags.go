package policy

import (
	"maps"
	"slices"
	"strings"
)

// Escape is SPEC 5's escape: every "_" doubled, then every character outside
// [A-Za-z0-9._-] replaced by one "_". A character is a rune, so a non-ASCII letter of
// several bytes becomes a single "_"; each byte of invalid UTF-8 counts as one character.
func Escape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == '_':
			b.WriteString("__")
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// NamespaceTag is the tag every pod of namespace ns carries.
func NamespaceTag(ns string) string { return Escape("namespace=" + ns) }

// PodTag is the tag of pod name in namespace ns.
func PodTag(ns, pod string) string { return Escape(ns + "/" + pod) }

// LabelTag is the tag of label l on a pod of namespace ns, and what `label K=V` in a rule
// of a pod of namespace ns stands for.
func LabelTag(ns string, l Label) string { return Escape(ns + "/" + l.Key + "=" + l.Value) }

// PodTags lists a pod's tags in SPEC 5 order: the namespace tag, the pod tag, then one tag
// per label sorted by label key in byte order.
func PodTags(ns, pod string, labels map[string]string) []string {
	tags := make([]string, 0, 2+len(labels))
	tags = append(tags, NamespaceTag(ns), PodTag(ns, pod))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		tags = append(tags, LabelTag(ns, Label{Key: k, Value: labels[k]}))
	}
	return tags
}
