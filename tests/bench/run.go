package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrOwnNetns is returned for a command pointed at the network namespace this process is in:
// rules and servers of the benchmark belong in the namespaces the test made, never in the
// machine's.
var ErrOwnNetns = errors.New("refusing to run in this process's own network namespace")

// Cmd is a command to run in the network namespace at path (a file under /run/netns).
func Cmd(netnsPath string, name string, args ...string) (*exec.Cmd, error) {
	own, err := netnsID("/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	target, err := netnsID(netnsPath)
	if err != nil {
		return nil, err
	}
	if own == target {
		return nil, fmt.Errorf("%s in %s: %w", name, netnsPath, ErrOwnNetns)
	}
	return exec.Command("nsenter", append([]string{"--net=" + netnsPath, "--", name}, args...)...), nil
}

// Run runs a command in the network namespace at path with stdin as its input, and returns
// its standard output; its standard error is in the error.
func Run(netnsPath, stdin, name string, args ...string) ([]byte, error) {
	cmd, err := Cmd(netnsPath, name, args...)
	if err != nil {
		return nil, err
	}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// netnsID identifies a network namespace by its file's device and inode.
func netnsID(path string) ([2]uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return [2]uint64{}, fmt.Errorf("stat netns %s: %w", path, err)
	}
	return [2]uint64{st.Dev, st.Ino}, nil
}
