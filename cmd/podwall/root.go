package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// deps is what the commands touch outside the process, so tests run them in-process.
type deps struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

func newRoot(d deps) *cobra.Command {
	root := &cobra.Command{
		Use:           "podwall",
		Short:         "Enforce Calico's pod-annotation network policy in the kernel with eBPF",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(d.stdin)
	root.SetOut(d.stdout)
	root.SetErr(d.stderr)
	root.AddCommand(newPolicyCmd(d), newTagsCmd(d), newMapsCmd(d), newMonitorCmd(d), newExplainCmd(d), newStatusCmd(d))
	root.AddCommand(newAgentCmd(d))
	return root
}

// run executes the command line and returns the process exit status.
func run(args []string, d deps) int {
	root := newRoot(d)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(d.stderr, "podwall:", err)
		return 1
	}
	return 0
}
