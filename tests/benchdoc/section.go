package benchdoc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

// ErrMarkers is a markdown file whose section markers are missing or out of order.
var ErrMarkers = errors.New("markers missing or out of order")

// Section is a generated part of a markdown file: whatever lies between Begin and End
// belongs to the benchmark that writes it.
type Section struct {
	Begin, End string
}

// Replace replaces the text between the section's markers in the file at path with text; the
// file must have the markers.
func (s Section) Replace(path, text string) error {
	return s.write(path, text, false)
}

// Write is Replace, except that a file without either marker (or no file) gets the markers
// with text appended, so the first run of a benchmark adds its section.
func (s Section) Write(path, text string) error {
	return s.write(path, text, true)
}

func (s Section) write(path, text string, add bool) error {
	doc, err := os.ReadFile(path)
	if err != nil && (!add || !errors.Is(err, os.ErrNotExist)) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	begin, end := bytes.Index(doc, []byte(s.Begin)), bytes.Index(doc, []byte(s.End))
	var out bytes.Buffer
	switch {
	case add && begin < 0 && end < 0:
		out.Write(doc)
		if len(doc) > 0 && !bytes.HasSuffix(doc, []byte("\n\n")) {
			out.WriteString("\n")
		}
		out.WriteString(s.Begin + "\n" + text + s.End + "\n")
	case begin < 0 || end < begin:
		return fmt.Errorf("section %q to %q of %s: %w", s.Begin, s.End, path, ErrMarkers)
	default:
		out.Write(doc[:begin+len(s.Begin)])
		out.WriteString("\n" + text)
		out.Write(doc[end:])
	}
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
