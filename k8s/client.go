package k8s

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
)

// UseProtobuf has a client of cfg read and write the built-in types in protobuf, JSON for
// the others: every agent lists and watches every pod of the cluster, and a pod decodes about
// three times faster from protobuf than from JSON and is smaller on the wire
// (BenchmarkDecodePod, docs/SCALE.md).
func UseProtobuf(cfg *rest.Config) {
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
}
