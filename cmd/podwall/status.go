package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/podwall/podwall/agent"
)

func newStatusCmd(d deps) *cobra.Command {
	var (
		addr    string
		output  string
		rules   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print how each pod of this node is enforced, and what its rules decided",
		Long: `Print one line for each pod of this node, as the running agent knows it: its interface
and how the programs are attached to it (tcx or clsact), its mode (enforce; audit: what its
policy drops passes and is reported; open; isolated, and why; none: no entry in the kernel
yet, and why), its policy's id and generation, since when the kernel holds it, and the
packets its rules allowed, dropped and (in audit mode) would have dropped, read from the
kernel's counters. --rules adds each rule with its packets and flows.

The agent serves this on /status at its --metrics-addr: status asks it there (--agent-addr,
default $PODWALL_METRICS_ADDR as the DaemonSet sets it, else 127.0.0.1:9402).`,
		Example: `  kubectl -n kube-system exec ds/podwall -- podwall status
  podwall status --rules -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %q: text or json", output)
			}
			pods, err := fetchStatus(cmd.Context(), agentURL(addr), timeout)
			if err != nil {
				return err
			}
			if output == "json" {
				e := json.NewEncoder(d.stdout)
				e.SetIndent("", "  ")
				return e.Encode(pods)
			}
			return printStatus(d.stdout, pods, rules)
		},
	}
	cmd.Flags().StringVar(&addr, "agent-addr", "", "the agent's --metrics-addr (default $PODWALL_METRICS_ADDR, else 127.0.0.1:9402)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	cmd.Flags().BoolVar(&rules, "rules", false, "also print each pod's rules with their counters")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the agent")
	return cmd
}

// agentURL is the /status address of the agent listening on addr; an address without a host
// (":9402") is this host's.
func agentURL(addr string) string {
	if addr == "" {
		addr = os.Getenv("PODWALL_METRICS_ADDR")
	}
	if addr == "" {
		addr = "127.0.0.1:9402"
	}
	if host, port, err := net.SplitHostPort(addr); err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	return "http://" + addr + "/status"
}

func fetchStatus(ctx context.Context, url string, timeout time.Duration) ([]agent.PodStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("ask the agent at %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask the agent at %s (is it running with --metrics-addr?): %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }() // a read error is the one reported
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("ask the agent at %s: %s: %s", url, resp.Status, body)
	}
	var pods []agent.PodStatus
	if err := json.NewDecoder(resp.Body).Decode(&pods); err != nil {
		return nil, fmt.Errorf("read the agent's answer from %s: %w", url, err)
	}
	return pods, nil
}

func printStatus(out io.Writer, pods []agent.PodStatus, rules bool) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "POD\tINTERFACE\tATTACH\tMODE\tPOLICY\tRULES\tGENERATION\tENFORCED SINCE\tALLOWED\tDROPPED\tAUDITED\tWHY\n")
	for _, p := range pods {
		since := "-"
		if p.EnforcedSince != nil {
			since = p.EnforcedSince.UTC().Format(time.RFC3339)
		}
		nrules := "-"
		if p.Policy != "" {
			nrules = strconv.Itoa(len(p.Rules) - 1) // the last is "no rule matched"
		}
		counts := []string{strconv.FormatUint(p.Allowed, 10), strconv.FormatUint(p.Dropped, 10), strconv.FormatUint(p.Audited, 10)}
		if p.Uncounted {
			counts = []string{"uncounted", "-", "-"}
		}
		fmt.Fprintf(w, "%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, dash(p.Interface), dash(p.Attach),
			p.Mode, dash(p.Policy), nrules, generation(p.Generation), since, counts[0], counts[1], counts[2], dash(p.Why))
	}
	if rules {
		fmt.Fprintf(w, "\nPOD\tRULE\tPACKETS\tFLOWS\tAUDITED\tTEXT\n")
		for _, p := range pods {
			for _, r := range p.Rules {
				fmt.Fprintf(w, "%s/%s\t%s\t%d\t%d\t%d\t%s\n", p.Namespace, p.Name, r.Rule, r.Packets, r.Flows, r.Audited, r.Text)
			}
		}
	}
	return w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func generation(g uint32) string {
	if g == 0 {
		return "-"
	}
	return fmt.Sprintf("%#08x", g)
}
