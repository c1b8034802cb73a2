package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Serve serves the metrics on /metrics, liveness on /healthz, readiness on /readyz and the
// local pods' status (Agent.Status, JSON; `podwall status`) on /status at
// addr until ctx is done. It returns once it listens (with the address it listens on, for
// a port 0) or fails to; the channel then gives the server's error, or nil once it has shut
// down after ctx is done.
func Serve(ctx context.Context, addr string, a *Agent) (net.Addr, <-chan error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.cfg.Metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", probe(a.Healthy, "the loop is stuck"))
	mux.HandleFunc("/readyz", probe(a.Ready, "no state applied yet"))
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		s, err := a.Status()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(s); err != nil {
			a.log.Warn("write /status", zap.Error(err))
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	done := make(chan error, 1)
	go func() { //nolint:gosec // G118: the shutdown outlives ctx on purpose: ctx is what ended
		select {
		case err := <-served:
			done <- err
		case <-ctx.Done():
			// Shutdown returns once every request in flight is answered: after done, no
			// scrape reads the data path any more, and it may be closed.
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := srv.Shutdown(shutdown)
			if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
				err = errors.Join(err, serr)
			}
			done <- err
		}
	}()
	return ln.Addr(), done, nil
}

func probe(ok func() bool, why string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if !ok() {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}
}
