package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// podwallBin is the binary TestMain builds, so CLI tests also check the real process:
// its exit status and what reaches stdout and stderr.
var podwallBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podwall-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "make temp dir:", err)
		os.Exit(1)
	}
	podwallBin = filepath.Join(dir, "podwall")
	if out, err := exec.Command("go", "build", "-o", podwallBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build podwall: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cliTest is one command line and everything it must produce.
type cliTest struct {
	name           string
	args           []string
	stdin          string
	stdout, stderr string
	code           int
}

// runInProcess runs the command line through run, as main does.
func runInProcess(args []string, stdin string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = run(args, deps{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errOut})
	return out.String(), errOut.String(), code
}

// runBinary runs the built binary.
func runBinary(t *testing.T, args []string, stdin string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	cmd := exec.Command(podwallBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		require.NoError(t, err)
	}
	return out.String(), errOut.String(), code
}

// requireCLI checks tt both in-process and through the binary.
func requireCLI(t *testing.T, tt cliTest) {
	t.Helper()
	for _, how := range []struct {
		name string
		run  func() (string, string, int)
	}{
		{"in-process", func() (string, string, int) { return runInProcess(tt.args, tt.stdin) }},
		{"binary", func() (string, string, int) { return runBinary(t, tt.args, tt.stdin) }},
	} {
		stdout, stderr, code := how.run()
		require.Equal(t, tt.stdout, stdout, "%s: stdout", how.name)
		require.Equal(t, tt.stderr, stderr, "%s: stderr", how.name)
		require.Equal(t, tt.code, code, "%s: exit status", how.name)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"},
		{"policy", "--help"},
		{"policy", "parse", "--help"},
		{"tags", "--help"},
	} {
		stdout, stderr, code := runBinary(t, args, "")
		require.Equal(t, 0, code, args)
		require.Empty(t, stderr, args)
		require.Contains(t, stdout, "Usage:", args)
	}
	stdout, _, _ := runBinary(t, []string{"--help"}, "")
	require.Contains(t, stdout, "policy")
	require.Contains(t, stdout, "tags")
}
