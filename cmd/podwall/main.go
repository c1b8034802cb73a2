// Command podwall enforces Calico's pod-annotation network policy in the kernel with eBPF.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], deps{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}))
}
