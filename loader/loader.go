package loader

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/bpf"
)

var (
	// ErrLocked means another Loader (another agent) holds the pinned state.
	ErrLocked = errors.New("pinned state is locked by another loader")
	// ErrIncompatible means the pinned maps were made by a version with another map layout.
	ErrIncompatible = errors.New("pinned maps are incompatible with this version")
	// ErrNotBPFFS means the configured bpffs path is not a mounted bpf filesystem.
	ErrNotBPFFS = errors.New("not a bpf filesystem")
	// ErrHookTaken means another tool's filter holds the clsact priority and handle podwall
	// uses; podwall does not replace it.
	ErrHookTaken = errors.New("clsact filter slot taken by another program")
	// ErrUnknownConstant means Config.Constants names a constant the programs do not have.
	ErrUnknownConstant = errors.New("unknown constant")
	// ErrUnknownMap means Config.MapSizes names a map whose size cannot be set.
	ErrUnknownMap = errors.New("no map of a settable size")
	// ErrClosed means the Loader was closed.
	ErrClosed = errors.New("loader closed")
)

// DefaultBPFFS is where bpffs is usually mounted.
const DefaultBPFFS = "/sys/fs/bpf"

// Version names the layout of the pinned state. A change to a map's definition that makes
// old pins incompatible needs a new version (and a migration from the old folder).
const Version = "v1"

// Mode is how programs are attached to interfaces.
type Mode string

const (
	// ModeTCX attaches with tcx links (Linux 6.6 and later).
	ModeTCX Mode = "tcx"
	// ModeClsact attaches as bpf filters of a clsact qdisc, for older kernels.
	ModeClsact Mode = "clsact"
)

// Config says where the Loader keeps its state and how it attaches.
type Config struct {
	// BPFFS is the bpffs mount under which the podwall folder lives. Default DefaultBPFFS.
	BPFFS string
	// Netns is the path of the network namespace whose interfaces Attach refers to (for
	// example /run/netns/NAME). Empty means the namespace of the calling process.
	Netns string
	// ForceClsact attaches with clsact even when the kernel has tcx.
	ForceClsact bool
	// Constants sets the programs' `volatile const` globals by name before loading, for
	// example {"ct_timeout_udp_ns": uint64(...)}; the value's size must match the global's.
	Constants map[string]any
	// MapSizes sets the size of maps by name (bpf.PodwallMap*), for example conntrack's or the
	// ipcache's; the others keep the program's. A pinned map of another size is incompatible
	// (ErrIncompatible): --uninstall first.
	MapSizes map[string]uint32
	// Logger receives the lifecycle (mode, reattached and dropped attachments) and the full
	// verifier log on a load failure. Default: no logging.
	Logger *zap.Logger
}

// Loader owns podwall's programs and pinned state while the agent runs.
type Loader struct {
	log      *zap.Logger
	dir      string // <bpffs>/podwall/v1
	mode     Mode
	objs     bpf.PodwallObjects
	ns       netns.NsHandle // netns.None() for the process's own
	nl       *netlink.Handle
	lifeLock *os.File

	// spec is what objs was loaded from, shared every map of the load (the global
	// variables' too), and rest owns what objs does not: twins load programs from them.
	spec   *ebpf.CollectionSpec
	shared map[string]*ebpf.Map
	rest   *ebpf.Collection
	// twins holds a second load of the programs, on the same maps and globals, loaded the
	// first time one is needed (see twin).
	twins *ebpf.Collection
	// resized are the pinned maps this load resized, until their new maps take the pins.
	resized []resized

	mu       sync.Mutex
	attached map[hook]attachment
	xdp      map[int]link.Link // uplink ifindex -> from_world's link
}

// StateDir is the folder of the pinned state under a bpffs mount.
func StateDir(bpffs string) string { return filepath.Join(bpffs, "podwall", Version) }

func (l *Loader) mapsDir() string  { return filepath.Join(l.dir, "maps") }
func (l *Loader) linksDir() string { return filepath.Join(l.dir, "links") }

// Open loads the programs against the pinned maps (creating and pinning the missing ones),
// decides the attach mode, and moves every pinned attachment to the new programs. Pinned
// attachments of interfaces that no longer exist are dropped.
func Open(cfg Config) (_ *Loader, err error) {
	if cfg.BPFFS == "" {
		cfg.BPFFS = DefaultBPFFS
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if err := checkBPFFS(cfg.BPFFS); err != nil {
		return nil, err
	}
	l := &Loader{
		log:      cfg.Logger,
		dir:      StateDir(cfg.BPFFS),
		ns:       netns.None(),
		attached: map[hook]attachment{},
		xdp:      map[int]link.Link{},
	}
	for _, d := range []string{l.mapsDir(), l.linksDir(), l.xdpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	l.lifeLock, err = lock(filepath.Dir(l.dir), unix.LOCK_EX|unix.LOCK_NB)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = l.Close()
		}
	}()
	stateLock, err := lock(l.dir, unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer stateLock.Close()

	if cfg.Netns != "" {
		if l.ns, err = netns.GetFromPath(cfg.Netns); err != nil {
			return nil, fmt.Errorf("open netns %s: %w", cfg.Netns, err)
		}
	}
	if l.nl, err = netlink.NewHandleAt(l.ns); err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", cfg.Netns, err)
	}
	if err := l.load(cfg.Constants, cfg.MapSizes); err != nil {
		return nil, err
	}
	if l.mode, err = probeMode(l.objs.ToPod, cfg.ForceClsact); err != nil {
		return nil, err
	}
	mig, err := l.openLegacyConntrack()
	if err != nil {
		return nil, err
	}
	if mig != nil {
		defer mig.old.Close()
		n, err := mig.copy(l.objs.Conntrack4, l.objs.Conntrack6)
		if err != nil {
			return nil, err
		}
		l.log.Info("moving the flows of an earlier version's conntrack into a table per family",
			zap.String("map", mig.pin), zap.Int("flows", n))
	}
	l.log.Info("loaded podwall", zap.String("mode", string(l.mode)), zap.String("state", l.dir))
	if err := l.reattach(); err != nil {
		return nil, err
	}
	if err := l.reattachXDP(); err != nil {
		return nil, err
	}
	// Every hook runs the new programs: the resized maps take their pins.
	for _, r := range l.resized {
		err := r.commit()
		r.close()
		if err != nil {
			return nil, err
		}
	}
	l.resized = nil
	if mig != nil {
		if err := mig.commit(l.objs.Conntrack4, l.objs.Conntrack6); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func checkBPFFS(path string) error {
	// podwall's own folder may be a bpffs of its own, or a bind mount of a folder of one (a
	// DaemonSet mounts only /sys/fs/bpf/podwall): then that is what must be bpffs.
	if own := filepath.Join(path, "podwall"); dirExists(own) {
		path = own
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("%s: %w (mount -t bpf bpf %s)", path, ErrNotBPFFS, path)
	}
	return nil
}

func dirExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// load creates the programs and maps, reusing the pinned maps. Nothing attached changes
// here, so a failure (an incompatible pinned map, a verifier rejection) leaves the running
// programs as they are.
func (l *Loader) load(constants map[string]any, sizes map[string]uint32) error {
	spec, err := bpf.LoadPodwall()
	if err != nil {
		return fmt.Errorf("load spec: %w", err)
	}
	for name, n := range sizes {
		ms, ok := spec.Maps[name]
		if !ok || isDataSection(name) || !Sizable(name) {
			return fmt.Errorf("size map %s: %w", name, ErrUnknownMap)
		}
		if n == 0 {
			return fmt.Errorf("size map %s: 0 entries", name)
		}
		ms.MaxEntries = n
	}
	// Every endpoint has at most an address of each family.
	spec.Maps[bpf.PodwallMapLocalPods].MaxEntries = 2 * spec.Maps[bpf.PodwallMapEndpoints].MaxEntries
	for name, m := range spec.Maps {
		if isDataSection(name) {
			continue
		}
		m.Pinning = ebpf.PinByName
	}
	// Conntrack counts in jiffies once their length is known (Constants may still set it).
	if jns, err := bpf.JiffyNS(); err != nil {
		l.log.Warn("kernel tick unknown: conntrack reads the clock on every packet", zap.Error(err))
	} else if err := spec.Variables["jiffy_ns"].Set(jns); err != nil {
		return fmt.Errorf("set jiffy_ns: %w", err)
	}
	for name, v := range constants {
		vs, ok := spec.Variables[name]
		if !ok || !vs.Constant() {
			return fmt.Errorf("set %s: %w", name, ErrUnknownConstant)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	// A pinned map the flags resize is copied into a new one, which these programs use.
	resized, err := l.resize(spec)
	if err != nil {
		return err
	}
	replace := map[string]*ebpf.Map{}
	for _, r := range resized {
		replace[r.name] = r.new
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Maps:            ebpf.MapOptions{PinPath: l.mapsDir()},
		MapReplacements: replace,
	})
	if err != nil {
		for _, r := range resized {
			r.close()
		}
	}
	if err == nil {
		l.resized = resized
		l.spec, l.shared = spec, maps.Clone(coll.Maps)
		if err = coll.Assign(&l.objs); err != nil {
			coll.Close()
			return fmt.Errorf("assign podwall: %w", err)
		}
		l.rest = coll
	}
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("load podwall against %s: %w: %w", l.mapsDir(), ErrIncompatible, err)
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		l.log.Error("verifier rejected podwall", zap.String("log", fmt.Sprintf("%+v", verr)))
	}
	if err != nil {
		return fmt.Errorf("load podwall: %w", err)
	}
	return nil
}

// Sizable says whether the size of the map name may be set (Config.MapSizes): the maps
// whose room depends on the cluster and the node, not those of a fixed shape (epoch, stats,
// events).
func Sizable(name string) bool {
	switch name {
	case bpf.PodwallMapEndpoints, bpf.PodwallMapIpcache, bpf.PodwallMapPolIdent, bpf.PodwallMapPolCidr,
		bpf.PodwallMapPolPort, bpf.PodwallMapPolIcmp, bpf.PodwallMapConntrack4, bpf.PodwallMapConntrack6, bpf.PodwallMapCtUsed,
		bpf.PodwallMapCtFlush, bpf.PodwallMapFrags:
		return true
	}
	return false
}

// isDataSection says whether a map holds a section of the object's global variables
// (".rodata", ".data", ".bss"): those belong to one load of the programs and are never
// pinned, or a restart would keep the constants of the previous one.
func isDataSection(name string) bool { return strings.HasPrefix(name, ".") }

// probeMode asks the kernel whether it has tcx: attaching to ifindex 0, which never exists,
// fails with ENODEV where tcx exists and with link.ErrNotSupported where it does not.
func probeMode(prog *ebpf.Program, forceClsact bool) (Mode, error) {
	if forceClsact {
		return ModeClsact, nil
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: 0, Program: prog, Attach: ebpf.AttachTCXEgress})
	switch {
	case errors.Is(err, link.ErrNotSupported):
		return ModeClsact, nil
	case errors.Is(err, unix.ENODEV):
		return ModeTCX, nil
	case err == nil:
		_ = l.Close()
		return "", errors.New("probe tcx: attach to ifindex 0 succeeded")
	default:
		return "", fmt.Errorf("probe tcx: %w", err)
	}
}

// Mode says how this Loader attaches: ModeTCX or ModeClsact.
func (l *Loader) Mode() Mode { return l.mode }

// Maps are the pinned maps, valid until Close.
func (l *Loader) Maps() *bpf.PodwallMaps { return &l.objs.PodwallMaps }

// Objects are the loaded programs and the pinned maps, valid until Close.
func (l *Loader) Objects() *bpf.PodwallObjects { return &l.objs }

// Attached lists the ifindexes with podwall attached, in order.
func (l *Loader) Attached() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for h := range l.attached {
		if !slices.Contains(out, h.ifindex) {
			out = append(out, h.ifindex)
		}
	}
	slices.Sort(out)
	return out
}

// Close releases the Loader's programs, maps and locks. Everything attached and pinned stays
// in the kernel and keeps enforcing until a new Loader takes it over.
func (l *Loader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, r := range l.resized {
		r.close() // an Open that failed before the new maps took the pins: the old ones stay
	}
	l.resized = nil
	for h, a := range l.attached {
		if err := a.close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", h, err))
		}
	}
	for ifindex, lk := range l.xdp {
		if err := lk.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close xdp of ifindex %d: %w", ifindex, err))
		}
	}
	l.attached, l.xdp = nil, nil
	errs = append(errs, l.release())
	return errors.Join(errs...)
}

// release closes what Open acquired, in reverse order.
func (l *Loader) release() error {
	var errs []error
	if err := l.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close programs and maps: %w", err))
	}
	l.objs = bpf.PodwallObjects{}
	for _, c := range []*ebpf.Collection{l.twins, l.rest} {
		if c != nil {
			c.Close()
		}
	}
	l.twins, l.rest = nil, nil
	if l.nl != nil {
		l.nl.Close()
		l.nl = nil
	}
	if l.ns.IsOpen() {
		if err := l.ns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close netns: %w", err))
		}
		l.ns = netns.None()
	}
	if l.lifeLock != nil {
		if err := l.lifeLock.Close(); err != nil {
			errs = append(errs, fmt.Errorf("release lock: %w", err))
		}
		l.lifeLock = nil
	}
	return errors.Join(errs...)
}

// Uninstall detaches podwall from every interface, removes every pin and the state folder,
// and closes the Loader.
func (l *Loader) Uninstall() error {
	stateLock, err := lock(l.dir, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer stateLock.Close()
	l.mu.Lock()
	if l.attached == nil {
		l.mu.Unlock()
		return ErrClosed
	}
	var errs []error
	for h, a := range l.attached {
		if err := a.detach(); err != nil {
			errs = append(errs, fmt.Errorf("detach %s: %w", h, err))
		}
		delete(l.attached, h)
	}
	for ifindex, lk := range l.xdp {
		if err := detachLink(lk, l.xdpPin(ifindex)); err != nil {
			errs = append(errs, fmt.Errorf("detach xdp of ifindex %d: %w", ifindex, err))
		}
		delete(l.xdp, ifindex)
	}
	l.mu.Unlock()
	// Removing a pin unpins it: the maps, and any leftover of a crashed attach, go with the
	// folder.
	if err := os.RemoveAll(l.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", l.dir, err))
	}
	// The parent holds other versions' folders, if any: keep it then; and it stays where it
	// is a mount point (EBUSY).
	if err := os.Remove(filepath.Dir(l.dir)); err != nil && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EBUSY) {
		errs = append(errs, fmt.Errorf("remove %s: %w", filepath.Dir(l.dir), err))
	}
	errs = append(errs, l.Close())
	return errors.Join(errs...)
}
