package k8s

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
)

// UseProtobuf has a client of cfg read and write the built-in types in protobuf, JSON for
// the others: every agent lists and watches every pod of the cluster, and a pod in protobuf
// is about a third of its JSON, for the API server to encode and send and for the agent to
// decode (docs/SCALE.md).
func UseProtobuf(cfg *rest.Config) {
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
}
