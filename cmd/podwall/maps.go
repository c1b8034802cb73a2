package main

import (
	"fmt"
	"maps"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"text/tabwriter"

	"github.com/cilium/ebpf"
	"github.com/spf13/cobra"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/loader"
	pwmaps "github.com/podwall/podwall/maps"
)

// mapSections are the parts of the pinned state `podwall maps` can print, in print order.
var mapSections = []string{"endpoints", "policies", "ipcache", "conntrack", "stats"}

func newMapsCmd(d deps) *cobra.Command {
	var (
		bpffs string
		file  string
		o     policyOptions
	)
	cmd := &cobra.Command{
		Use:   "maps [SECTION...]",
		Short: "Print what the pinned maps hold",
		Long: `Print the state the data path judges with, read from the pinned maps (read-only, with a
shared lock, so it works while the agent runs). SECTION is any of: endpoints, policies,
ipcache, conntrack, stats; all of them by default.

policies lists each policy's rules with what they decided on this node, summed over the pods
that use the policy: packets, flows (allow: flows admitted; deny and "no rule": packets that
would have opened one), and the packets of those that audit mode passed. With -f, the pods of a file such as "kubectl get
pods,namespaces -A -o yaml" prints give the rules' text (compiled with the policy flags, as
the agent does).`,
		Example: `  podwall maps
  podwall maps endpoints stats
  kubectl get pods,namespaces -A -o yaml | podwall maps policies -f -`,
		ValidArgs: mapSections,
		Args:      cobra.OnlyValidArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = mapSections
			}
			m, err := loader.OpenMaps(bpffs)
			if err != nil {
				return fmt.Errorf("open pinned maps: %w", err)
			}
			defer m.Close()
			// One read of the endpoints map serves both sections that show it, so that they
			// agree.
			var endpoints map[uint32]bpf.PodwallEndpointEntry
			if slices.Contains(args, "endpoints") || slices.Contains(args, "policies") {
				if endpoints, err = readEndpoints(m.Endpoints); err != nil {
					return err
				}
			}
			n, err := namerOf(d, o, file)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(d.stdout, 0, 4, 2, ' ', 0)
			for _, s := range mapSections {
				if !slices.Contains(args, s) {
					continue
				}
				if err := printSection(w, m, endpoints, n, s); err != nil {
					return err
				}
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&bpffs, "bpffs", loader.DefaultBPFFS, "the bpffs mount holding podwall's pinned state")
	cmd.Flags().StringVarP(&file, "filename", "f", "", `Pods and Namespaces, YAML or JSON ("-": stdin), to print the rules' text`)
	o.addFlags(cmd.Flags())
	return cmd
}

// printSection prints one section; endpoints is what the endpoints map holds.
func printSection(w *tabwriter.Writer, m *bpf.PodwallMaps, endpoints map[uint32]bpf.PodwallEndpointEntry, n *namer, section string) error {
	switch section {
	case "endpoints":
		epoch, changing, err := pwmaps.ReadEpoch(m.Epoch)
		if err != nil {
			return err
		}
		printEndpoints(w, endpoints, epoch, changing)
		return nil
	case "policies":
		return printPolicies(w, m.RuleCounters, endpoints, n)
	case "ipcache":
		return printIPCache(w, m.Ipcache)
	case "conntrack":
		return printConntrack(w, m.Conntrack4, m.Conntrack6)
	case "stats":
		return printStats(w, m.Stats, m.XdpStats, m.AuditStats)
	}
	return fmt.Errorf("unknown section %q", section)
}

var modeNames = map[uint8]string{bpf.ModeEnforce: "enforce", bpf.ModeOpen: "open", bpf.ModeIsolate: "isolate"}

// readEndpoints reads the endpoints map: each endpoint with its policy's record.
func readEndpoints(m *ebpf.Map) (map[uint32]bpf.PodwallEndpointEntry, error) {
	var (
		k uint32
		v bpf.PodwallEndpointEntry
	)
	rows := map[uint32]bpf.PodwallEndpointEntry{}
	it := m.Iterate()
	for it.Next(&k, &v) {
		rows[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read map endpoints: %w", err)
	}
	return rows, nil
}

// printEndpoints prints the endpoints and the conntrack epoch, whose parity says whether an
// agent is changing them (docs/ARCHITECTURE.md, "Conntrack epoch").
func printEndpoints(w *tabwriter.Writer, rows map[uint32]bpf.PodwallEndpointEntry, epoch uint32, changing bool) {
	state := "established flows pass on it"
	if changing {
		state = "odd: endpoints are being changed, or an apply failed midway; flows are judged on their generation"
	}
	fmt.Fprintf(w, "conntrack epoch %d (%s)\n", epoch, state)
	fmt.Fprintf(w, "ENDPOINT (ifindex)\tMODE\tAUDIT\tPOLICY\tGENERATION\tALLOW HOST\tCOUNTERS\n")
	for _, k := range slices.Sorted(maps.Keys(rows)) {
		v := rows[k].Ep
		policy := "-" // only enforce mode reads a policy
		if v.Mode == bpf.ModeEnforce {
			policy = fmt.Sprintf("%#08x", v.Policy)
		}
		counters := "-"
		if v.Counters != 0 {
			counters = fmt.Sprintf("slot %d", v.Counters)
		}
		fmt.Fprintf(w, "%d\t%s\t%t\t%s\t%#08x\t%t\t%s\n", k, modeNames[v.Mode], v.Flags&bpf.EPAudit != 0, policy, v.Generation,
			v.Flags&bpf.EPAllowHost != 0, counters)
	}
	fmt.Fprintln(w)
}

// printPolicies lists the policies the endpoints in enforce mode hold, each once, then each
// policy's rules with their counters summed over its endpoints, named by n.
func printPolicies(w *tabwriter.Writer, counters *ebpf.Map, rows map[uint32]bpf.PodwallEndpointEntry, n *namer) error {
	fmt.Fprintf(w, "POLICY\tENDPOINTS\tRULES\tDENY RULES\tFIELDS LOOKED UP\n")
	records := map[uint32]bpf.PodwallPolicy{}
	users := map[uint32]int{}
	hits := map[uint32][]pwmaps.RuleCount{}
	for _, e := range rows {
		if e.Ep.Mode != bpf.ModeEnforce {
			continue
		}
		records[e.Ep.Policy] = e.Rules
		users[e.Ep.Policy]++
		counts, err := pwmaps.ReadRuleCounts(counters, e)
		if err != nil {
			return err
		}
		sum := hits[e.Ep.Policy]
		if sum == nil {
			sum = make([]pwmaps.RuleCount, len(counts))
		}
		for i, c := range counts {
			if i < len(sum) {
				sum[i].Packets += c.Packets
				sum[i].Flows += c.Flows
				sum[i].Audited += c.Audited
			}
		}
		hits[e.Ep.Policy] = sum
	}
	ids := slices.Sorted(maps.Keys(records))
	for _, id := range ids {
		v := records[id]
		denys := 0
		for _, word := range v.Deny {
			denys += bits.OnesCount64(word)
		}
		fmt.Fprintf(w, "%#08x\t%d\t%d\t%d\t%s\n", id, users[id], v.Nrules, denys, policyFields(v.Flags))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "POLICY\tRULE\tPACKETS\tFLOWS\tAUDITED\tTEXT\n")
	for _, id := range ids {
		sources := n.rules[id]
		for i, c := range hits[id] {
			rule, text := strconv.Itoa(i+1), ""
			switch {
			case i == len(hits[id])-1:
				rule, text = "-", "(no rule matched)"
			case i < len(sources):
				rule, text = ruleNumber(sources[i]), sources[i].Text
			}
			fmt.Fprintf(w, "%#08x\t%s\t%d\t%d\t%d\t%s\n", id, rule, c.Packets, c.Flows, c.Audited, text)
		}
	}
	fmt.Fprintln(w)
	return nil
}

// ruleNumber is the rule's number in its annotation, "default" for the namespace default's.
func ruleNumber(r compiler.RuleSource) string {
	if r.Index == 0 {
		return "default"
	}
	return strconv.Itoa(r.Index)
}

func policyFields(flags uint32) string {
	names := []struct {
		bit  uint32
		name string
	}{{bpf.PFIdent, "label"}, {bpf.PFCIDR, "cidr"}, {bpf.PFSport, "from-ports"}, {bpf.PFDport, "to-ports"}, {bpf.PFICMP, "icmp"}}
	out := ""
	for _, n := range names {
		if flags&n.bit != 0 {
			if out != "" {
				out += ","
			}
			out += n.name
		}
	}
	if out == "" {
		return "-"
	}
	return out
}

func printIPCache(w *tabwriter.Writer, m *ebpf.Map) error {
	fmt.Fprintf(w, "ADDRESS\tIDENTITY\n")
	var (
		k bpf.PodwallIpAddr
		v uint32
	)
	rows := map[netip.Addr]uint32{}
	it := m.Iterate()
	for it.Next(&k, &v) {
		rows[bpf.KeyAddr(k)] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read map ipcache: %w", err)
	}
	for _, a := range slices.SortedFunc(maps.Keys(rows), netip.Addr.Compare) {
		fmt.Fprintf(w, "%s\t%s\n", a, identityName(rows[a]))
	}
	fmt.Fprintln(w)
	return nil
}

func identityName(id uint32) string {
	switch id {
	case bpf.IDWorld:
		return "world"
	case bpf.IDHost:
		return "host"
	}
	return fmt.Sprintf("%#08x", id)
}

func printConntrack(w *tabwriter.Writer, v4, v6 *ebpf.Map) error {
	fmt.Fprintf(w, "CONNTRACK\tOPENED BY THE POD\tOPENED FROM OUTSIDE\tMAX\n")
	for _, t := range []struct {
		name string
		m    *ebpf.Map
		key  any
	}{{"IPv4 flows", v4, new(bpf.PodwallCtKey4)}, {"IPv6 flows", v6, new(bpf.PodwallCtKey6)}} {
		var (
			v       bpf.PodwallCtEntry
			in, out int
		)
		it := t.m.Iterate()
		for it.Next(t.key, &v) {
			if v.Flags&bpf.CTOut != 0 {
				out++
			} else {
				in++
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("read the conntrack of %s: %w", t.name, err)
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\n", t.name, out, in, t.m.MaxEntries())
	}
	fmt.Fprintln(w)
	return nil
}

// printStats prints the packets counted under each reason: by to_pod and from_pod on the pods'
// interfaces (tc), by from_world on the uplinks (xdp), which only drops, and by to_pod for
// pods in audit mode (audit): passed, though their policy drops them for that reason.
func printStats(w *tabwriter.Writer, tc, xdp, audit *ebpf.Map) error {
	tcCounts, err := datapath.ReadStats(tc)
	if err != nil {
		return fmt.Errorf("read map stats: %w", err)
	}
	xdpCounts, err := datapath.ReadStats(xdp)
	if err != nil {
		return fmt.Errorf("read map xdp_stats: %w", err)
	}
	auditCounts, err := datapath.ReadStats(audit)
	if err != nil {
		return fmt.Errorf("read map audit_stats: %w", err)
	}
	fmt.Fprintf(w, "REASON\tTC\tXDP\tAUDIT\n")
	for r := range bpf.NumReasons {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\n", r, tcCounts[r], xdpCounts[r], auditCounts[r])
	}
	fmt.Fprintln(w)
	return nil
}
