package policy

import (
	"errors"
	"testing"
)

// FuzzParse checks that no input panics, that errors are SyntaxErrors pointing inside the
// input, and that whatever parses formats to text that parses to the same rules.
func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		f.Add(tt.in)
	}
	for _, tt := range errorTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		rules, err := Parse(in)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q): %T is not a *SyntaxError", in, err)
			}
			if se.Offset < 0 || se.Offset > len(in) || se.Rule < 1 {
				t.Fatalf("Parse(%q): %v points outside the input", in, err)
			}
			_ = err.Error()
			return
		}
		for i, r := range rules {
			if r.Index != i+1 || r.Text != in[r.Offset:r.Offset+len(r.Text)] {
				t.Fatalf("Parse(%q): rule %d has source %d %d %q", in, i, r.Index, r.Offset, r.Text)
			}
		}
		requireRoundTrip(t, in)
	})
}
