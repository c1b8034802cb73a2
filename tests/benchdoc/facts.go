package benchdoc

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Flag is the value of the named flag (a test flag such as "test.bench", or a benchmark's
// own), quoted for a shell, so a report can print the command line that ran it; "" when no
// such flag is defined.
func Flag(name string) string {
	if f := flag.Lookup(name); f != nil {
		return ShellQuote(f.Value.String())
	}
	return ""
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9._/=:-]+$`)

// ShellQuote quotes s for a POSIX shell, leaving words that need no quoting bare so the
// printed command stays readable.
func ShellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Thousands prints n with a comma between each group of three digits.
func Thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// KernelRelease is the running kernel's release, as uname -r prints it.
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "(unknown kernel)"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// CPUModel is the model name of the machine's first CPU in /proc/cpuinfo.
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "(unknown CPU)"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "(unknown CPU)"
}

// Median is the median of xs (the mean of the two middle ones for an even count), 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return m
}
