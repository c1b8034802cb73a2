package proc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// StopTimeout is how long a server gets to exit after SIGTERM before it is killed.
const StopTimeout = 15 * time.Second

// Server is a process a test runs in the background (etcd, kube-apiserver, a kubelet, ...),
// its output going to a log file.
type Server struct {
	Name string
	// Log is the file that holds its stdout and stderr.
	Log  string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // its exit status, set before done is closed
}

// StartServer starts argv in its own process group, its output appended to logPath. The
// process dies with the test binary (Pdeathsig), so a test that panics leaves no server.
func StartServer(name, logPath string, argv ...string) (*Server, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer f.Close()                           // the child has its own copy of the descriptor
	cmd := exec.Command(argv[0], argv[1:]...) //nolint:gosec // G204: the tests' own servers
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so a stop reaches anything it forks; Pdeathsig, so a test
	// binary that dies (panic, timeout) takes its servers with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Server{Name: name, cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited and been reaped; Err then says how it ended.
func (p *Server) Done() <-chan struct{} { return p.done }

// Err is the process's exit status, once Done is closed.
func (p *Server) Err() error {
	<-p.done
	return p.err
}

// Pid is the process's id.
func (p *Server) Pid() int { return p.cmd.Process.Pid }

func (p *Server) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after StopTimeout, and returns once
// the process is reaped; it reports whether it had to kill. Stopping a stopped server does
// nothing.
func (p *Server) Stop() (killed bool) {
	if p.exited() {
		return false
	}
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return false
	case <-time.After(StopTimeout):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-p.done
		return true
	}
}

// LogTail returns the last lines of the process's output, for failure messages.
func (p *Server) LogTail(lines int) string {
	data, err := os.ReadFile(p.Log)
	if err != nil {
		return fmt.Sprintf("(read %s log: %v)", p.Name, err)
	}
	all := strings.Split(string(bytes.TrimRight(data, "\n")), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
