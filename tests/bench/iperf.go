package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrIperf is wrapped when iperf3 reports an error of its own; ErrServerBusy when that
// error is that its server still runs the previous test (try again).
var (
	ErrIperf      = errors.New("iperf3 failed")
	ErrServerBusy = errors.New("iperf3 server busy")
)

// Iperf is what the benchmark reads of an iperf3 client's JSON report (-J).
type Iperf struct {
	// Seconds the test sent for.
	Seconds float64
	// ReceivedBitsPerSecond is the payload rate the server received.
	ReceivedBitsPerSecond float64
	// SenderCPU and ReceiverCPU are the CPU time the client and the server process used,
	// in CPUs (seconds per second of the test). With the kernel's tick-based accounting this
	// includes the softirq work done in the process's context: on veth pairs, the node's
	// forwarding and filtering of what the client sends.
	SenderCPU, ReceiverCPU float64
}

type iperfReport struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Seconds float64 `json:"seconds"`
		} `json:"sum_sent"`
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		CPU struct {
			Host   float64 `json:"host_total"`
			Remote float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
}

// ParseIperf reads an iperf3 client's JSON report.
func ParseIperf(out []byte) (Iperf, error) {
	var r iperfReport
	if err := json.Unmarshal(out, &r); err != nil {
		return Iperf{}, fmt.Errorf("parse iperf3 report: %w", err)
	}
	if r.Error != "" {
		if strings.Contains(r.Error, "busy") {
			return Iperf{}, fmt.Errorf("%w: %w: %s", ErrIperf, ErrServerBusy, r.Error)
		}
		return Iperf{}, fmt.Errorf("%w: %s", ErrIperf, r.Error)
	}
	if r.End.SumSent.Seconds <= 0 || r.End.CPU.Host <= 0 || r.End.CPU.Remote <= 0 {
		return Iperf{}, fmt.Errorf("%w: report has no test duration or CPU use", ErrIperf)
	}
	return Iperf{
		Seconds:               r.End.SumSent.Seconds,
		ReceivedBitsPerSecond: r.End.SumReceived.BitsPerSecond,
		SenderCPU:             r.End.CPU.Host / 100,
		ReceiverCPU:           r.End.CPU.Remote / 100,
	}, nil
}
