package benchdoc

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSection(t *testing.T) {
	s := Section{Begin: "<!-- BEGIN X -->", End: "<!-- END X -->"}
	const none = "\x00" // no file
	cases := []struct {
		name   string
		add    bool // Write rather than Replace
		before string
		want   string
		err    error
	}{
		{"replace", false, "# t\n\n" + s.Begin + "\nold\n" + s.End + "\nafter\n",
			"# t\n\n" + s.Begin + "\nnew\n" + s.End + "\nafter\n", nil},
		{"write replaces", true, "# t\n\n" + s.Begin + "\nold\n" + s.End + "\nafter\n",
			"# t\n\n" + s.Begin + "\nnew\n" + s.End + "\nafter\n", nil},
		{"write appends", true, "# other\n", "# other\n\n" + s.Begin + "\nnew\n" + s.End + "\n", nil},
		{"write appends after a blank line", true, "# other\n\n", "# other\n\n" + s.Begin + "\nnew\n" + s.End + "\n", nil},
		{"write creates", true, none, s.Begin + "\nnew\n" + s.End + "\n", nil},
		{"replace needs the markers", false, "# other\n", "", ErrMarkers},
		{"replace needs the file", false, none, "", os.ErrNotExist},
		{"out of order", true, s.End + s.Begin, "", ErrMarkers},
		{"only one marker", true, s.Begin + "\n", "", ErrMarkers},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
			if c.before != none {
				require.NoError(t, os.WriteFile(path, []byte(c.before), 0o644))
			}
			write := s.Replace
			if c.add {
				write = s.Write
			}
			err := write(path, "new\n")
			if c.err != nil {
				require.ErrorIs(t, err, c.err)
				return
			}
			require.NoError(t, err)
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, c.want, string(b))
		})
	}
}

func TestFormat(t *testing.T) {
	cases := []struct {
		got, want string
	}{
		{Thousands(0), "0"},
		{Thousands(999), "999"},
		{Thousands(1000), "1,000"},
		{Thousands(1234567), "1,234,567"},
		{ShellQuote("./tests/bench"), "./tests/bench"},
		{ShellQuote("^Benchmark$"), `'^Benchmark$'`},
		{ShellQuote("it's"), `'it'\''s'`},
		{ShellQuote(""), "''"},
		{Flag("no-such-flag"), ""},
		{Flag("test.count"), "1"},
	}
	for _, c := range cases {
		require.Equal(t, c.want, c.got)
	}
	require.NotEqual(t, "(unknown kernel)", KernelRelease())
	require.NotEmpty(t, CPUModel())
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		require.Equal(t, tt.want, Median(tt.xs), "%v", tt.xs)
	}
}
