// Command etcd is the etcd server, built from its Go module so the tests need
// no release tarball: it only hands its arguments to etcdmain.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
