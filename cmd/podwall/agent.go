package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podwall/podwall/agent"
	"github.com/podwall/podwall/agent/netif"
	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/k8s"
	"github.com/podwall/podwall/loader"
)

// envPrefix starts the environment variable of each agent flag: --node-name is
// PODWALL_NODE_NAME.
const envPrefix = "PODWALL_"

type agentOptions struct {
	policyOptions
	kubeconfig  string
	kubeQPS     float32
	kubeBurst   int
	nodeName    string
	bpffs       string
	metricsAddr string
	logLevel    string
	logFormat   string
	podsFile    string
	podsConfirm time.Duration
	readyFile   string
	netns       string
	uninstall   bool
	conntrack   conntrackOptions
	mapSizes    map[string]int
	strict      []string
	xdp         []string
	chainCheck  time.Duration
	ruleMetrics string
	ruleTop     int
}

// conntrackOptions size conntrack and time its flows.
type conntrackOptions struct {
	size       uint32
	perPod     uint32
	gc         time.Duration
	synTimeout time.Duration
	finTimeout time.Duration
}

func (c *conntrackOptions) addFlags(f *pflag.FlagSet) {
	f.Uint32Var(&c.size, "conntrack-size", 262144, "flows each conntrack table holds, the IPv4 one and the IPv6 one (112 and 136 bytes a flow, preallocated); a restart with another size copies the pinned tables into ones of the new size, without a gap")
	f.Uint32Var(&c.perPod, "conntrack-per-pod", 65536, "flows one pod may hold in conntrack: a pod that floods new flows fills its own share, not the table")
	f.DurationVar(&c.gc, "conntrack-gc-interval", agent.DefaultConntrackGC, "how often expired conntrack entries are removed")
	f.DurationVar(&c.synTimeout, "conntrack-syn-timeout", time.Minute, "how long a TCP connection the other side never answered keeps its entry")
	f.DurationVar(&c.finTimeout, "conntrack-close-timeout", 10*time.Second, "how long a TCP connection keeps its entry after a FIN or RST")
}

// constants are the programs' settings that the flags give.
func (c conntrackOptions) constants() (map[string]any, error) {
	if c.perPod == 0 || c.size == 0 {
		return nil, errors.New("--conntrack-size and --conntrack-per-pod must be positive")
	}
	return map[string]any{
		"ct_endpoint_max":         c.perPod,
		"ct_timeout_tcp_syn_ns":   uint64(c.synTimeout.Nanoseconds()),
		"ct_timeout_tcp_close_ns": uint64(c.finTimeout.Nanoseconds()),
	}, nil
}

func newAgentCmd(d deps) *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: keep the kernel's maps in step with the cluster",
		Long: `Run the node agent: watch the pods and namespaces of the cluster (or, with --pods-file,
of a YAML file), compile their policy annotations, keep podwall's pinned BPF maps equal to the
result, and attach podwall to the host-side interface of every pod of this node.

Every flag can also be set by an environment variable: PODWALL_ and the flag's name in
capitals with "_" for "-" (PODWALL_NODE_NAME). NODE_NAME sets --node-name too, as the
downward API gives it. A flag on the command line wins over its variable.

On SIGTERM or SIGINT the agent exits and leaves enforcement in place: programs, links and
maps stay pinned under --bpffs, and the next agent takes them over without a gap.
--uninstall removes them all and exits.`,
		Example: `  # standalone, on a machine without a cluster
  podwall agent --pods-file pods.yaml --node-name node-1
  kubectl get pods,namespaces -A -o yaml > pods.yaml
  # remove every program, link and map podwall made
  podwall agent --uninstall`,
		Args: cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return flagsFromEnv(cmd.Flags(), os.LookupEnv)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), d)
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

func (o *agentOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file of the cluster (default: the in-cluster configuration)")
	f.Float32Var(&o.kubeQPS, "kube-api-qps", defaultKubeQPS, "requests a second the agent's API client sends at most, beyond its burst (the pods' conditions and Events; the watches are not counted)")
	f.IntVar(&o.kubeBurst, "kube-api-burst", defaultKubeBurst, "requests the agent's API client may send at once above --kube-api-qps")
	f.StringVar(&o.nodeName, "node-name", "", "name of this node: its pods are the ones podwall guards (default: $NODE_NAME, else the host name)")
	f.StringVar(&o.bpffs, "bpffs", loader.DefaultBPFFS, "bpf filesystem where programs, links and maps are pinned, under <bpffs>/podwall (which may itself be a bind mount of a bpffs folder, as the DaemonSet mounts it)")
	o.policyOptions.addFlags(f)
	f.StringVar(&o.metricsAddr, "metrics-addr", "", "address to serve /metrics, /healthz, /readyz and /status (podwall status) on, e.g. :9402 (empty: none)")
	f.StringVar(&o.ruleMetrics, "rule-metrics", "top", "which rules' counters are series of podwall_rule_hits_total{namespace,pod,rule}: top (the --rule-metrics-top rules with the most packets), all (every rule of every local pod: a series each), or none")
	f.IntVar(&o.ruleTop, "rule-metrics-top", agent.DefaultRuleMetricsTop, "how many rules --rule-metrics=top makes series of")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "json", "json or console")
	f.DurationVar(&o.chainCheck, "chain-check-interval", agent.DefaultChainCheck, "how often the agent checks that its programs run first on every pod interface (tcx and clsact), and puts them first again where another tool attached ahead of them")
	f.StringSliceVar(&o.strict, "strict-interfaces", nil, "strict mode: name patterns of the pods' host-side interfaces (shell globs, e.g. cali*,lxc*); each is isolated from the moment it appears, before the cluster says whose it is, and passes nothing until its pod's policy is in the kernel (a new pod's first packets are dropped); an interface that matches and is no pod's passes nothing at all")
	f.StringSliceVar(&o.xdp, "xdp-devices", []string{agent.XDPAuto}, "uplinks whose XDP drops, in the driver, the packets to local pods that policy drops: interface names (a driver without native XDP falls back to generic XDP, which is no faster than tc), or auto: the interfaces holding the default routes, native XDP only (others are skipped); empty: no XDP")
	f.StringVar(&o.podsFile, "pods-file", "", "standalone mode: read Pods and Namespaces from this YAML file and follow its changes, instead of the cluster")
	f.DurationVar(&o.podsConfirm, "pods-file-confirm", k8s.DefaultConfirm, "how long a pods file that lost most pods at once must stay the same before it is taken (an empty file never is)")
	f.StringVar(&o.readyFile, "ready-file", "", "file to write once the first state is applied and every local pod is attached")
	f.StringVar(&o.netns, "netns", "", "network namespace (a path such as /run/netns/NAME) whose interfaces to attach to (default: the agent's own)")
	f.BoolVar(&o.uninstall, "uninstall", false, "remove every program, link and map podwall made, and exit")
	o.conntrack.addFlags(f)
	f.StringToIntVar(&o.mapSizes, "map-size", nil, "entries of maps by name, e.g. ipcache=524288,pol_port=131072 (endpoints, ipcache, pol_ident, pol_cidr, pol_port, pol_icmp, frags...); a restart with other sizes copies the pinned maps into maps of the new sizes, without a gap (it fails, and the running programs stay, when a map holds more than its new size)")
}

// sizes are the maps' sizes the flags give.
func (o agentOptions) sizes() (map[string]uint32, error) {
	out := map[string]uint32{bpf.PodwallMapConntrack4: o.conntrack.size, bpf.PodwallMapConntrack6: o.conntrack.size}
	for name, n := range o.mapSizes {
		if !loader.Sizable(name) || name == bpf.PodwallMapConntrack4 || name == bpf.PodwallMapConntrack6 {
			return nil, fmt.Errorf("--map-size %s: no such map whose size can be set (conntrack has --conntrack-size)", name)
		}
		if n <= 0 || n > 1<<26 {
			return nil, fmt.Errorf("--map-size %s=%d: want 1 to %d entries", name, n, 1<<26)
		}
		out[name] = uint32(n)
	}
	return out, nil
}

// flagsFromEnv sets each flag not given on the command line from its environment variable.
func flagsFromEnv(flags *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	flags.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" {
			return
		}
		names := []string{envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))}
		if f.Name == "node-name" {
			names = append(names, "NODE_NAME")
		}
		for _, name := range names {
			v, ok := lookup(name)
			if !ok {
				continue
			}
			if f.Value.Type() == "stringSlice" {
				// A list from the environment replaces the default rather than adding to it.
				if err := f.Value.(pflag.SliceValue).Replace(splitList(v)); err != nil {
					errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
				}
			} else if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
			return
		}
	})
	return errors.Join(errs...)
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (o agentOptions) logger(d deps) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(o.logLevel)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	cfg := zap.NewProductionEncoderConfig()
	cfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch o.logFormat {
	case "json":
		enc = zapcore.NewJSONEncoder(cfg)
	case "console":
		cfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(cfg)
	default:
		return nil, fmt.Errorf("unknown --log-format %q: want json or console", o.logFormat)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(d.stderr), level)), nil
}

func (o agentOptions) run(ctx context.Context, d deps) error {
	log, err := o.logger(d)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	constants, err := o.conntrack.constants()
	if err != nil {
		return err
	}
	sizes, err := o.sizes()
	if err != nil {
		return err
	}
	for _, pattern := range o.strict {
		if _, err := path.Match(pattern, ""); err != nil {
			return fmt.Errorf("--strict-interfaces %q: %w", pattern, err)
		}
	}
	ldr := loader.Config{BPFFS: o.bpffs, Netns: o.netns, Logger: log.Named("loader"),
		Constants: constants, MapSizes: sizes}
	if o.uninstall {
		dp, err := datapath.Open(ldr)
		if err != nil {
			return err
		}
		if err := dp.Uninstall(); err != nil {
			return fmt.Errorf("uninstall: %w", err)
		}
		log.Info("uninstalled: every program, link and map removed", zap.String("bpffs", o.bpffs))
		return nil
	}
	opts, err := o.compilerOptions()
	if err != nil {
		return err
	}
	var rules agent.RuleMetrics
	switch o.ruleMetrics {
	case "top":
		if o.ruleTop <= 0 {
			return fmt.Errorf("--rule-metrics-top %d: must be positive (--rule-metrics=none for no series)", o.ruleTop)
		}
		rules.Top = o.ruleTop
	case "all":
		rules.All = true
	case "none":
		rules.Top = -1
	default:
		return fmt.Errorf("--rule-metrics %q: top, all or none", o.ruleMetrics)
	}
	node := o.nodeName
	if node == "" {
		if node, err = os.Hostname(); err != nil {
			return fmt.Errorf("no --node-name, and no host name: %w", err)
		}
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var source agent.Source
	var events agent.Events
	var status agent.Status
	if o.podsFile != "" {
		source = k8s.NewFile(o.podsFile, o.podsConfirm)
		log.Info("standalone mode", zap.String("pods-file", o.podsFile))
	} else {
		client, err := o.client()
		if err != nil {
			return err
		}
		source = k8s.NewCluster(client)
		rec := k8s.NewRecorder(ctx, client, node)
		defer rec.Shutdown()
		events = rec
		status = k8s.NewStatusWriter(client)
	}

	dp, err := datapath.Open(ldr)
	if err != nil {
		return err
	}
	defer func() {
		if err := dp.Close(); err != nil {
			log.Error("close data path", zap.Error(err))
		}
		log.Info("stopped; enforcement stays pinned", zap.String("bpffs", o.bpffs))
	}()
	finder, err := netif.Open(o.netns)
	if err != nil {
		return err
	}
	defer finder.Close()

	a := agent.New(agent.Config{
		Node:        node,
		Options:     opts,
		Source:      source,
		Datapath:    dp,
		Finder:      finder,
		Events:      events,
		Status:      status,
		Logger:      log,
		ReadyFile:   o.readyFile,
		ConntrackGC: o.conntrack.gc,
		Strict:      o.strict,
		ChainCheck:  o.chainCheck,
		XDP:         o.xdp,
		RuleMetrics: rules,
	})
	var serveErr <-chan error // nil: no server, never ready
	if o.metricsAddr != "" {
		addr, errc, err := agent.Serve(ctx, o.metricsAddr, a)
		if err != nil {
			return err
		}
		serveErr = errc
		log.Info("serving metrics", zap.Stringer("addr", addr))
	}
	log.Info("agent started", zap.String("node", node), zap.String("mode", string(dp.Mode())),
		zap.String("default-policy", o.defaultPolicy), zap.Strings("open-namespaces", o.openNamespaces))
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	// The server is waited for before the data path closes (deferred above): no scrape may
	// read a closed map.
	select {
	case err := <-runErr:
		stop()
		if serveErr != nil {
			if serr := <-serveErr; serr != nil {
				err = errors.Join(err, fmt.Errorf("serve metrics: %w", serr))
			}
		}
		return err
	case err := <-serveErr:
		stop()
		if err != nil {
			return errors.Join(fmt.Errorf("serve metrics: %w", err), <-runErr)
		}
		return <-runErr // the server shut down because a signal ends the agent
	}
}

func (o agentOptions) client() (kubernetes.Interface, error) {
	return kubeClient(o.kubeconfig, "podwall-agent", func(cfg *rest.Config) { cfg.QPS, cfg.Burst = o.kubeQPS, o.kubeBurst })
}

// The agent's API client rate: client-go's own default (5 a second, 10 at once) would hold
// the conditions of a node's pods for seconds when many start together.
const (
	defaultKubeQPS   = 20
	defaultKubeBurst = 50
)

// kubeClient is a client of the cluster of a kubeconfig file, or of the in-cluster
// configuration without one.
func kubeClient(kubeconfig, userAgent string, tune ...func(*rest.Config)) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration (give --kubeconfig, or --pods-file for standalone mode): %w", err)
	}
	cfg.UserAgent = userAgent
	k8s.UseProtobuf(cfg)
	for _, f := range tune {
		f(cfg)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}
