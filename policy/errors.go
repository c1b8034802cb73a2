package policy

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrNoNamespace is returned by MarshalRulesJSON without a namespace: label tags are
// namespaced, so a rule's `label K=V` has no tag without one.
var ErrNoNamespace = errors.New("no namespace")

// maxQuotedWord bounds how much of the offending word an error message quotes, so a
// garbage annotation does not make a garbage-sized Kubernetes Event. SyntaxError.Word keeps
// the whole word.
const maxQuotedWord = 64

// SyntaxError is why an annotation does not parse. Its message is part of podwall's
// interface (SPEC 2): the agent reports it in the InvalidPolicy Event, and tests check it
// byte for byte.
type SyntaxError struct {
	// Rule is the 1-based number of the rule, not counting skipped empty segments.
	Rule int
	// Offset is the byte offset of Word in the whole annotation; for a word missing at the
	// end of a rule, the offset just past the rule's last word.
	Offset int
	// Word is the offending word (or the offending entry of a ports list); empty when the
	// rule ended where a word was needed.
	Word string
	// Expected says what would have been accepted at Offset.
	Expected string
	// Hint, when not empty, says why a word that is valid elsewhere is not valid here.
	Hint string
}

func (e *SyntaxError) Error() string {
	word := "end of rule"
	if e.Word != "" {
		word = fmt.Sprintf("%q", shorten(e.Word))
	}
	msg := fmt.Sprintf("rule %d, offset %d (%s): expected %s", e.Rule, e.Offset, word, e.Expected)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// shorten cuts s to at most maxQuotedWord bytes on a rune boundary and marks the cut.
func shorten(s string) string {
	if len(s) <= maxQuotedWord {
		return s
	}
	cut := maxQuotedWord - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
