package agent

import (
	"cmp"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
)

// Metrics are the agent's Prometheus metrics.
type Metrics struct {
	Registry *prometheus.Registry

	applySeconds     prometheus.Histogram
	applyErrors      prometheus.Counter
	applyFailing     prometheus.Gauge
	attachErrors     prometheus.Counter
	sourceErrors     prometheus.Counter
	mapEntries       *prometheus.GaugeVec
	mapCapacity      *prometheus.GaugeVec
	endpoints        prometheus.Gauge
	identities       prometheus.Gauge
	policies         prometheus.Gauge
	pods             prometheus.Gauge
	namespaces       prometheus.Gauge
	invalidPolicies  prometheus.Gauge
	problems         *prometheus.GaugeVec
	interfaceMissing prometheus.Gauge
	interfacesHeld   prometheus.Gauge
	displaced        *prometheus.CounterVec
	ctEntries        *prometheus.GaugeVec
	ctCapacity       *prometheus.GaugeVec
	ctRemoved        *prometheus.CounterVec
	ctErrors         prometheus.Counter
}

const namespace = "podwall"

// NewMetrics makes the agent's metrics in a registry of their own, with the Go runtime's and
// the process's, and the data path's verdict counters, read at each scrape.
func NewMetrics(stats Stats) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "policy_apply_seconds",
			Help:    "Time from a change to the maps holding it: compiling the whole state and applying the difference.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "apply_errors_total",
			Help: "Applies of a compiled state to the maps that failed (the maps keep a whole earlier state).",
		}),
		applyFailing: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "apply_failing",
			Help: "Applies that failed in a row since the last that succeeded; /readyz fails while it is not 0.",
		}),
		attachErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "attach_errors_total",
			Help: "Failures to attach the programs to a pod's interface.",
		}),
		sourceErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "source_errors_total",
			Help: "Failures of the source of pods: a pods file that does not read or parse, a broken watch. The last good state stays enforced.",
		}),
		mapEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "map_entries",
			Help: "Entries in each map the agent writes.",
		}, []string{"map"}),
		mapCapacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "map_capacity",
			Help: "Maximum entries of each map the agent writes.",
		}, []string{"map"}),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "endpoints",
			Help: "Interfaces of this node's pods that podwall judges.",
		}),
		identities: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "identities",
			Help: "Pod identities (distinct namespace and label sets) in the cluster.",
		}),
		policies: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "policies",
			Help: "Distinct compiled policies of this node's pods.",
		}),
		pods: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "pods",
			Help: "Pods the source holds, on every node.",
		}),
		namespaces: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "namespaces",
			Help: "Namespaces the source holds.",
		}),
		invalidPolicies: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "invalid_policies",
			Help: "Pods isolated because their policy annotation is invalid (does not parse, or has too many rules).",
		}),
		problems: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "policy_problems",
			Help: "Pods that did not compile as written, by kind of problem.",
		}, []string{"kind"}),
		interfaceMissing: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "interfaces_not_found",
			Help: "Pods of this node with an address whose interface is not found (not yet guarded; retried).",
		}),
		interfacesHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "interfaces_held",
			Help: "Interfaces that --strict-interfaces matched which carry podwall's programs and no pod's entry yet: they pass nothing.",
		}),
		displaced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "programs_displaced_total",
			Help: "Hooks found with another program attached before podwall's, which could pass packets podwall never judged; outcome restored: podwall runs first again, failed: it could not.",
		}, []string{"outcome"}),
		ctEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "conntrack_entries",
			Help: "Live conntrack entries at the last run of the collector, in the table of each address family. Inserts that found no room count in podwall_verdicts_total{reason=\"ct-full\"}, and those over a pod's share in {reason=\"ct-quota\"}.",
		}, []string{"family"}),
		ctCapacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "conntrack_capacity",
			Help: "Entries the conntrack table of each address family holds at most (--conntrack-size).",
		}, []string{"family"}),
		ctRemoved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "conntrack_gc_removed_total",
			Help: "Conntrack entries the collector removed: expired, or flushed because an address of theirs left the cluster.",
		}, []string{"why"}),
		ctErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "conntrack_gc_errors_total",
			Help: "Runs of the conntrack collector that failed.",
		}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.applySeconds, m.applyErrors, m.applyFailing, m.attachErrors, m.sourceErrors, m.mapEntries, m.mapCapacity,
		m.endpoints, m.identities, m.policies, m.pods, m.namespaces, m.invalidPolicies, m.problems,
		m.interfaceMissing, m.interfacesHeld, m.displaced, m.ctEntries, m.ctCapacity, m.ctRemoved, m.ctErrors,
		&verdicts{desc: verdictsDesc, read: stats.Verdicts, hook: "tc"},
		&verdicts{desc: xdpDropsDesc, read: stats.XDPDrops, hook: "xdp", sparse: true},
		&verdicts{desc: auditsDesc, read: stats.Audits, hook: "audit", sparse: true},
	)
	m.displaced.WithLabelValues("restored")
	m.displaced.WithLabelValues("failed")
	m.ctRemoved.WithLabelValues("expired")
	m.ctRemoved.WithLabelValues("flushed")
	for _, family := range []string{"ipv4", "ipv6"} {
		m.ctEntries.WithLabelValues(family)
		m.ctCapacity.WithLabelValues(family)
	}
	for k := compiler.ProblemInvalid; k < compiler.NumProblemKinds; k++ {
		m.problems.WithLabelValues(k.String())
	}
	return m
}

// observeState records what a successful apply left in the maps.
func (m *Metrics) observeState(s *compiler.State, fill []datapath.Fill) {
	m.endpoints.Set(float64(len(s.Endpoints)))
	m.identities.Set(float64(len(s.Identities)))
	m.policies.Set(float64(len(s.Policies)))
	for _, f := range fill {
		m.mapEntries.WithLabelValues(f.Map).Set(float64(f.Entries))
		m.mapCapacity.WithLabelValues(f.Map).Set(float64(f.Max))
	}
	counts := map[compiler.ProblemKind]int{}
	for _, p := range s.Problems {
		counts[p.Kind]++
	}
	for k := compiler.ProblemInvalid; k < compiler.NumProblemKinds; k++ {
		m.problems.WithLabelValues(k.String()).Set(float64(counts[k]))
	}
	m.invalidPolicies.Set(float64(counts[compiler.ProblemInvalid] + counts[compiler.ProblemTooManyRules]))
}

// observeConntrack records a run of the conntrack collector.
func (m *Metrics) observeConntrack(c datapath.Collection) {
	m.ctEntries.WithLabelValues("ipv4").Set(float64(c.Live4))
	m.ctEntries.WithLabelValues("ipv6").Set(float64(c.Live6))
	m.ctCapacity.WithLabelValues("ipv4").Set(float64(c.Capacity4))
	m.ctCapacity.WithLabelValues("ipv6").Set(float64(c.Capacity6))
	m.ctRemoved.WithLabelValues("expired").Add(float64(c.Expired))
	m.ctRemoved.WithLabelValues("flushed").Add(float64(c.Flushed))
}

// Stats reads the data path's verdict counters (Datapath).
type Stats interface {
	Verdicts() ([bpf.NumReasons]uint64, error)
	XDPDrops() ([bpf.NumReasons]uint64, error)
	Audits() ([bpf.NumReasons]uint64, error)
}

// verdicts reads one of the data path's verdict counters (tc's, XDP's drops, audits) when
// scraped.
type verdicts struct {
	desc   *prometheus.Desc
	read   func() ([bpf.NumReasons]uint64, error)
	hook   string // the hook label of its read errors
	sparse bool   // counts few reasons (XDP's drops, audits): the others are no series of it
}

var verdictsDesc = prometheus.NewDesc(namespace+"_verdicts_total",
	"Packets to pods judged by tc on the pods' interfaces, by the reason of their verdict (reason event-lost counts events the ring buffer had no room for).",
	[]string{"reason"}, nil)

var xdpDropsDesc = prometheus.NewDesc(namespace+"_xdp_drops_total",
	"Packets to pods dropped by XDP on the node's uplinks, before the kernel built an skb, by reason; they never reach tc.",
	[]string{"reason"}, nil)

var auditsDesc = prometheus.NewDesc(namespace+"_audits_total",
	"Packets to pods in audit mode that their policy drops, which passed, by the reason that would have dropped them.",
	[]string{"reason"}, nil)

var statsErrorDesc = prometheus.NewDesc(namespace+"_stats_read_errors",
	"1 when the last scrape could not read a stats map.", []string{"hook"}, nil)

func (v *verdicts) Describe(ch chan<- *prometheus.Desc) {
	ch <- v.desc
	if !v.sparse {
		ch <- statsErrorDesc
	}
}

func (v *verdicts) Collect(ch chan<- prometheus.Metric) {
	counts, err := v.read()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(statsErrorDesc, prometheus.GaugeValue, 1, v.hook)
		return
	}
	for r, n := range counts {
		if v.sparse && n == 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(v.desc, prometheus.CounterValue, float64(n), bpf.Reason(r).String())
	}
	ch <- prometheus.MustNewConstMetric(statsErrorDesc, prometheus.GaugeValue, 0, v.hook)
}

// RuleMetrics says which rules' counters are series of podwall_rule_hits_total and
// podwall_rule_flows_total. A series is a rule of a local pod, labelled with its text, so that
// it lives as long as the counts do (they follow a rule's text). Every rule of every pod is
// opt-in (All): a node of 250 pods with 20 rules each makes 5,000 series. By default only the
// Top rules by packets are (0: DefaultRuleMetricsTop), bounded whatever the node holds;
// negative and not All: none.
type RuleMetrics struct {
	All bool
	Top int
}

// DefaultRuleMetricsTop is the default of RuleMetrics.Top.
const DefaultRuleMetricsTop = 20

var (
	ruleHitsDesc = prometheus.NewDesc(namespace+"_rule_hits_total",
		"Packets a rule of a local pod decided (allow: passed; deny and \"(no rule matched)\": dropped, or passed in audit mode), from the kernel's per-CPU counters; the top N rules by packets unless every rule is asked for (--rule-metrics).",
		[]string{"namespace", "pod", "rule"}, nil)
	ruleFlowsDesc = prometheus.NewDesc(namespace+"_rule_flows_total",
		"Flows a rule of a local pod decided (allow: admitted; deny: packets that would have opened one); the same series as podwall_rule_hits_total.",
		[]string{"namespace", "pod", "rule"}, nil)
)

// ruleHits reads the rules' counters when scraped.
type ruleHits struct {
	status func() ([]PodStatus, error)
	cfg    RuleMetrics
	log    *zap.Logger
}

func (r *ruleHits) Describe(ch chan<- *prometheus.Desc) {
	ch <- ruleHitsDesc
	ch <- ruleFlowsDesc
}

func (r *ruleHits) Collect(ch chan<- prometheus.Metric) {
	top := cmp.Or(r.cfg.Top, DefaultRuleMetricsTop)
	if !r.cfg.All && top < 0 {
		return
	}
	pods, err := r.status()
	if err != nil {
		r.log.Warn("read the rule counters for a scrape", zap.Error(err))
		return
	}
	type series struct {
		namespace, pod, rule string
		packets, flows       uint64
	}
	var all []series
	for _, p := range pods {
		// Rules of one text are one series: the same rule written twice.
		byText := map[string]int{}
		for _, rule := range p.Rules {
			i, ok := byText[rule.Text]
			if !ok {
				i = len(all)
				byText[rule.Text] = i
				all = append(all, series{namespace: p.Namespace, pod: p.Name, rule: rule.Text})
			}
			all[i].packets += rule.Packets
			all[i].flows += rule.Flows
		}
	}
	if !r.cfg.All && len(all) > top {
		slices.SortStableFunc(all, func(a, b series) int { return cmp.Compare(b.packets, a.packets) })
		all = all[:top]
	}
	for _, s := range all {
		ch <- prometheus.MustNewConstMetric(ruleHitsDesc, prometheus.CounterValue, float64(s.packets), s.namespace, s.pod, s.rule)
		ch <- prometheus.MustNewConstMetric(ruleFlowsDesc, prometheus.CounterValue, float64(s.flows), s.namespace, s.pod, s.rule)
	}
}
