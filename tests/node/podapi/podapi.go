// Package podapi is what the test pod (tests/node/testpod) answers on its control port, for
// the pod and the tests that read it.
package podapi

import "time"

// ControlPort is the test pod's control API; the node's own traffic reaches it whatever the
// pod's policy (SPEC 3, rule 2).
const ControlPort = 9999

// The outcomes of one probe exchange. A refusal means the packet got through.
const (
	Echo    = "echo"
	Refused = "refused"
	Timeout = "timeout"
)

// Probe is the answer to /probe.
type Probe struct {
	Outcome string `json:"outcome"`
}

// Counters are what a stream saw, the answer to /stream/stop; a message counts as echoed when
// its own number comes back.
type Counters struct {
	TCPSent, TCPEchoed, TCPErrors int64
	UDPSent, UDPEchoed            int64
	DeniedSent, DeniedEchoed      int64
	LongestTCPWait                time.Duration
	FirstTCPError                 string
}
