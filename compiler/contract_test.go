package compiler

import (
	"encoding/binary"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
)

// The Go constants must be the header's: every integer #define of podwall.h has its Go
// twin here, and enum reason matches Reason value by value.
func TestConstantsMatchHeader(t *testing.T) {
	src, err := os.ReadFile("../bpf/podwall.h")
	require.NoError(t, err)

	want := map[string]int64{
		"MAX_RULES":     MaxRules,
		"VEC_WORDS":     VecWords,
		"FAM_V4":        FamV4,
		"FAM_V6":        FamV6,
		"PC_TCP":        ClassTCP,
		"PC_UDP":        ClassUDP,
		"PC_ICMP":       ClassICMP,
		"PC_OTHER":      ClassOther,
		"PC_MAX":        NumClasses,
		"DIR_SRC":       DirSrc,
		"DIR_DST":       DirDst,
		"ID_WORLD":      IDWorld,
		"ID_HOST":       IDHost,
		"ID_FIRST_POD":  IDFirstPod,
		"MODE_ENFORCE":  ModeEnforce,
		"MODE_OPEN":     ModeOpen,
		"MODE_ISOLATE":  ModeIsolate,
		"EP_ALLOW_HOST": EPAllowHost,
		"PF_IDENT":      PFIdent,
		"PF_CIDR":       PFCIDR,
		"PF_SPORT":      PFSport,
		"PF_DPORT":      PFDport,
		"PF_ICMP":       PFICMP,
		"ICMP_ANY_CODE": ICMPAnyCode,
		"CT_OUT":        CTOut,
		"CT_IN":         CTIn,
		"CT_ANSWERED":   CTAnswered,
		"CT_CLOSING":    CTClosing,
		"VERDICT_PASS":  VerdictPass,
		"VERDICT_DROP":  VerdictDrop,
	}
	got := map[string]int64{}
	for _, m := range regexp.MustCompile(`(?m)^#define[ \t]+(\w+)[ \t]+(.+?)[ \t]*(/\*.*)?$`).FindAllStringSubmatch(string(src), -1) {
		name, value := m[1], m[2]
		if name == "VEC_WORDS" {
			require.Equal(t, "(MAX_RULES / 64)", value)
			got[name] = want["MAX_RULES"] / 64
			continue
		}
		n, err := strconv.ParseInt(value, 0, 64)
		require.NoError(t, err, "#define %s %s", name, value)
		got[name] = n
	}
	require.Equal(t, want, got)

	body := regexp.MustCompile(`(?s)enum reason \{(.*?)\};`).FindStringSubmatch(string(src))
	require.NotNil(t, body, "enum reason")
	var names []string
	for _, line := range strings.Split(body[1], "\n") {
		if m := regexp.MustCompile(`^\s*(REASON_\w+)\s*(= (\d+))?,`).FindStringSubmatch(line); m != nil {
			if m[3] != "" {
				require.Equal(t, strconv.Itoa(len(names)), m[3], m[1])
			}
			names = append(names, m[1])
		}
	}
	require.Len(t, names, int(NumReasons)+1, "enum reason ends with REASON_MAX")
	require.Equal(t, "REASON_MAX", names[NumReasons])
	for r := range NumReasons {
		name := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(names[r]), "reason_"), "_", "-")
		if r == ReasonND {
			name = "neighbour-discovery"
		}
		require.Equal(t, name, r.String(), "Reason(%d) is %s", r, names[r])
	}
}

// Every generated type has the size its map was declared with, and the LPM key layouts
// give the prefix offsets the compiler uses.
func TestMapTypesMatchSpec(t *testing.T) {
	spec, err := bpf.LoadPodwall()
	require.NoError(t, err)
	sizes := []struct {
		name       string
		key, value any
	}{
		{bpf.PodwallMapEndpoints, uint32(0), bpf.PodwallEndpointEntry{}},
		{bpf.PodwallMapIpcache, bpf.PodwallIpAddr{}, uint32(0)},
		{bpf.PodwallMapPolIdent, bpf.PodwallIdentKey{}, bpf.PodwallRuleVec{}},
		{bpf.PodwallMapPolCidr, bpf.PodwallCidrKey{}, bpf.PodwallRuleVec{}},
		{bpf.PodwallMapPolPort, bpf.PodwallPortKey{}, bpf.PodwallRuleVec{}},
		{bpf.PodwallMapPolIcmp, bpf.PodwallIcmpKey{}, bpf.PodwallRuleVec{}},
		{bpf.PodwallMapConntrack, bpf.PodwallCtKey{}, bpf.PodwallCtEntry{}},
		{bpf.PodwallMapFrags, bpf.PodwallFragKey{}, bpf.PodwallFragEntry{}},
		{bpf.PodwallMapStats, uint32(0), uint64(0)},
	}
	for _, s := range sizes {
		m := spec.Maps[s.name]
		require.NotNil(t, m, s.name)
		require.Equal(t, uint32(binary.Size(s.key)), m.KeySize, "%s key", s.name)
		require.Equal(t, uint32(binary.Size(s.value)), m.ValueSize, "%s value", s.name)
	}
	require.Equal(t, uint32(NumReasons), spec.Maps[bpf.PodwallMapStats].MaxEntries)
	require.Equal(t, ebpf.LPMTrie, spec.Maps[bpf.PodwallMapPolCidr].Type)
	require.Equal(t, ebpf.LPMTrie, spec.Maps[bpf.PodwallMapPolPort].Type)

	var ck bpf.PodwallCidrKey
	require.Equal(t, uintptr(cidrKeyBits/8), unsafe.Offsetof(ck.Ip)+unsafe.Offsetof(ck.Ip.Addr)-unsafe.Sizeof(ck.Prefixlen))
	var pk bpf.PodwallPortKey
	require.Equal(t, uintptr(portKeyBits/8), unsafe.Offsetof(pk.Port)-unsafe.Sizeof(pk.Prefixlen))
	require.Len(t, bpf.PodwallRuleVec{}.Bits, VecWords)
}
