/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The contract between the data path and the Go side: every struct stored in a map or sent
 * through the ring buffer is defined here once. Go uses the types bpf2go generates from them
 * (policy*, loader.*); nothing in Go mirrors them by hand.
 */
#ifndef PODWALL_H
#define PODWALL_H

/* The constants of the contract are enums, not #defines, so that bpf2go exports them (-type)
 * and Go uses them from package bpf. Those no map or program names as a type are made to exist
 * in BTF by struct contract, at the end. */

/* A policy has at most MAX_RULES rules: each rule is one bit of a vector of VEC_WORDS u64. */
enum limits {
	MAX_RULES = 1024,
	VEC_WORDS = MAX_RULES / 64,
	/* Slots of rule_counters: each counted endpoint holds nrules + 1 of them (below). */
	RULE_SLOTS = 16384,
};

/* Address families as stored in keys (not AF_*: one byte, and 0 is never valid). */
enum family {
	FAM_V4 = 4,
	FAM_V6 = 6,
};

/* Protocol classes: the index of a policy's per-protocol rule masks. A packet of IPv4 with
 * protocol 58, or of IPv6 with next header 1, is of class OTHER: icmp is IPv4-only and icmpv6
 * is IPv6-only (SPEC 3). */
enum proto_class {
	PC_TCP = 0,
	PC_UDP = 1,
	PC_ICMP = 2, /* ICMP for IPv4, ICMPv6 for IPv6 */
	PC_OTHER = 3,
	PC_MAX = 4,
};

/* Port directions in port_key.dir. */
enum port_dir {
	DIR_SRC = 0, /* "from ports": the remote side's port */
	DIR_DST = 1, /* "to ports": the pod's port */
};

/* Reserved identities. Pod identities are allocated from ID_FIRST_POD up. */
enum reserved_identity {
	ID_WORLD = 0, /* any source the agent does not know: no labels */
	ID_HOST = 1,  /* the node's own addresses */
	ID_FIRST_POD = 256,
};

/* endpoint.mode */
enum endpoint_mode {
	MODE_ENFORCE = 0, /* judge with endpoint_entry.rules */
	MODE_OPEN = 1,    /* accept everything (open namespaces, --default-policy=allow) */
	MODE_ISOLATE = 2, /* only replies, the node, and neighbour discovery (SPEC 3.1-3.3) */
};

/* endpoint.flags */
enum endpoint_flag {
	EP_ALLOW_HOST = 1, /* SPEC 3.2: traffic from the node passes */
	/* Audit mode: what the policy drops (a deny rule, no allow rule, an isolated pod) passes
	 * with VERDICT_AUDIT. The threat model's drops (forged sources, unparsable or tagged
	 * frames, no entry) are never audited. */
	EP_AUDIT = 2,
};

/* policy.flags: which fields at least one rule constrains; a field no rule constrains needs
 * no lookup (its vector is the wildcard mask). */
enum policy_flag {
	PF_IDENT = 1,
	PF_CIDR = 2,
	PF_SPORT = 4,
	PF_DPORT = 8,
	PF_ICMP = 16,
};

/* icmp_key.code when a rule states a type but no code. */
enum icmp_code {
	ICMP_ANY_CODE = 0xffff,
};

/* An IP address of either family: IPv4 in the first 4 bytes, the rest zero. Aligned to 4 (every
 * struct holds it at such an offset already) so that addr_eq compares words. */
struct ip_addr {
	__u8 family; /* FAM_V4 or FAM_V6 */
	__u8 pad[3];
	__u8 addr[16];
} __attribute__((aligned(4)));

/* A local pod, as its endpoint_entry holds it. */
struct endpoint {
	__u32 policy;     /* policy id, with mode MODE_ENFORCE */
	__u32 generation; /* bumped by the agent whenever what judges this pod changes */
	__u8 mode;
	__u8 flags;
	/* The first of the pod's slots in rule_counters: rule i counts at counters + i, and the
	 * packets no rule decided (no allow rule matched, isolated) at counters + nrules. 0: the
	 * pod is not counted. */
	__u16 counters;
	/* The pod's own addresses, the only sources from_pod lets its packets carry (SPEC 8);
	 * family 0 when the pod has none of that family. */
	struct ip_addr addr4;
	struct ip_addr addr6;
};

/* A compiled policy's record, in the entry of each endpoint it judges. Rule bit i is rule i
 * of the compiled policy. */
struct policy {
	/* Rules that can match a packet of this family (v4, v6) and protocol class: the protocol,
	 * the address family of its cidrs, and its folded "to" clause (the pod's own labels and
	 * address) all allow it. */
	__u64 proto[2][PC_MAX][VEC_WORDS];
	/* Per field, the rules that do not constrain it: the vector when a lookup misses. */
	__u64 wild_ident[VEC_WORDS];
	__u64 wild_cidr[VEC_WORDS];
	__u64 wild_sport[VEC_WORDS];
	__u64 wild_dport[VEC_WORDS];
	__u64 wild_icmp[VEC_WORDS];
	/* The deny rules: a packet matched by any of them is dropped, whatever else matches. */
	__u64 deny[VEC_WORDS];
	__u32 flags; /* PF_* */
	__u32 nrules;
};

/* endpoints: key the ifindex of the pod's host-side interface. The endpoint and its policy's
 * record are one value: one lookup finds both (a second, in a map of records by policy id,
 * cost a new flow 15-20 ns), and one update replaces both at once. */
struct endpoint_entry {
	struct endpoint ep;
	struct policy rules; /* MODE_ENFORCE: the record of policy ep.policy; else zero */
};

/* A vector of rule bits: the value of every per-field classifier map. */
struct rule_vec {
	__u64 bits[VEC_WORDS];
};

/* pol_ident: the rules of a policy whose "from label" tag the identity has, plus the rules
 * with no "from label". */
struct ident_key {
	__u32 policy;
	__u32 identity;
};

/* pol_cidr (LPM trie): prefixlen counts the bits after itself, so it is 64 + the CIDR's
 * length. Values hold the rules whose "from cidr" contains the prefix, plus the rules with no
 * "from cidr". */
struct cidr_key {
	__u32 prefixlen;
	__u32 policy;
	struct ip_addr ip;
};

/* pol_port (LPM trie): prefixlen is 48 + the port prefix length (0-16): policy, proto_class
 * and dir are 48 bits; port is big endian.
 * Values hold the rules whose ports of that protocol and direction hold the port, plus the
 * rules that state no ports for that direction. */
struct port_key {
	__u32 prefixlen;
	__u32 policy;
	__u8 proto_class; /* PC_TCP or PC_UDP */
	__u8 dir;         /* DIR_SRC or DIR_DST */
	__u16 port;       /* network byte order */
};

/* pol_icmp: exact type and code, or code ICMP_ANY_CODE for the rules that state only the
 * type. Values hold the matching rules plus the rules that state no type. */
struct icmp_key {
	__u32 policy;
	__u8 family;
	__u8 type;
	__u16 code;
};

/* conntrack4 and conntrack6 (hashes, no eviction: see ARCHITECTURE "Conntrack under pressure"),
 * one per address family, so that an IPv4 flow's key is 20 bytes and not the 52 of one key
 * for both (ARCHITECTURE "Per-packet costs"). A key is oriented from the pod, whichever side
 * opened the flow, and bound to the pod's interface, so an entry only ever passes packets to
 * the interface whose packets made it (SPEC 8). What both keys hold besides the addresses
 * comes first, at the same offsets in both. */
struct ct_head {
	__u16 pod_port;    /* ICMP echo: the identifier; network byte order */
	__u16 remote_port; /* ICMP echo: 0 */
	__u8 proto;        /* IP protocol number */
	__u8 pad[3];
	__u32 ifindex; /* the pod's host-side interface */
};

struct ct_key4 {
	struct ct_head h;
	__u8 pod[4];
	__u8 remote[4];
};

struct ct_key6 {
	struct ct_head h;
	__u8 pod[16];
	__u8 remote[16];
};

/* ct_key is the key of the one conntrack map of earlier versions (pinned as "conntrack"),
 * which the loader reads once to move its flows into conntrack4 and conntrack6. */
struct ct_key {
	struct ip_addr pod;
	struct ip_addr remote;
	__u16 pod_port;
	__u16 remote_port;
	__u8 proto;
	__u8 pad[3];
	__u32 ifindex;
};

/* ct_entry.flags */
enum ct_flag {
	CT_OUT = 1,      /* the pod opened it: the other side's packets are replies (SPEC 3.1) */
	CT_IN = 2,       /* opened from outside and allowed under ct_entry.generation */
	CT_ANSWERED = 4, /* the side that did not open it sent a packet */
	CT_CLOSING = 8,  /* TCP: a FIN or RST was seen */
	CT_AUDIT = 16,   /* CT_IN: audit mode let it in; its policy drops it */
};

struct ct_entry {
	__u64 last_seen; /* bpf_jiffies64, or with jiffy_ns 0 bpf_ktime_get_coarse_ns */
	__u32 generation; /* CT_IN: the endpoint's generation that allowed the flow */
	__u32 epoch;      /* CT_IN: the node's epoch when generation was last found current */
	__u8 flags;
	__u8 pad;
	/* CT_IN: the rule_counters slot of the rule that allowed the flow (or audited it), which
	 * counts its packets; 0: none. */
	__u16 counter;
	__u8 pad2[4];
};

/* epoch (array of one u32): the node's conntrack epoch. maps.Applier makes it odd before it
 * changes any endpoint and even (and new) once every endpoint is written; it never repeats. A
 * CT_IN entry whose epoch is the current even epoch was allowed under its endpoint's current
 * generation, so step 6 passes it without looking the endpoint up. */
#define EPOCH_CHANGING(e) ((e) & 1)

/* frags (LRU hash): the verdict of a datagram's first fragment, for the ones that follow. */
struct frag_key {
	struct ip_addr src;
	struct ip_addr dst;
	__u32 id;    /* the IP identification, host byte order (16 bits for IPv4) */
	__u8 proto;  /* IPv4 protocol; IPv6: the next header field of the fragment header */
	__u8 pad[3];
};

struct frag_entry {
	__u64 seen;   /* ct_clock() of the first fragment: the entry counts for frag_timeout_ns */
	__u8 verdict; /* VERDICT_* */
	__u8 pad[7];
};

/* ct_used: per pod interface, the conntrack entries it holds, against ct_endpoint_max. The
 * data path adds, the garbage collector (ct_gc) subtracts; signed, since a race of the two
 * may leave it a little off, and a count under the truth only lets a pod have a few more. */
struct ct_count {
	__s64 entries;
};

/* ct_flush values: which entries of an address one run of ct_gc removes. */
enum flush_scope {
	FLUSH_ALL = 0,     /* the address left the cluster: every flow of it */
	FLUSH_INBOUND = 1, /* its identity changed: the flows it opened, to be judged again */
};

/* The argument and result of one run of ct_gc. */
struct ct_gc_run {
	__u32 flush;   /* in: also remove the entries of the addresses in ct_flush */
	__u32 live4;   /* out: entries kept in conntrack4 */
	__u32 live6;   /* out: entries kept in conntrack6 */
	__u32 expired; /* out: entries removed because they expired */
	__u32 flushed; /* out: entries removed because an address of theirs is in ct_flush */
};

/* Why a packet got its verdict: event.reason and the index of the stats map. */
enum reason {
	/* An interface with podwall's programs and no entry (its pod not compiled yet, or no
	 * room for it): everything is dropped, both ways (SPEC 8: doubt isolates). */
	REASON_NO_ENTRY = 0,
	REASON_OPEN,
	REASON_REPLY,       /* SPEC 3.1: a connection the pod opened */
	REASON_ESTABLISHED, /* an inbound flow allowed under the current generation */
	REASON_ICMP_ERROR,  /* SPEC 3.1: an ICMP error about a tracked flow */
	REASON_HOST,        /* SPEC 3.2 */
	REASON_ND,          /* SPEC 3.3 */
	REASON_FRAGMENT,    /* the verdict of the first fragment */
	REASON_ALLOW_RULE,
	REASON_DENY_RULE,
	REASON_NO_RULE, /* no allow rule matched */
	REASON_ISOLATED,
	REASON_MALFORMED, /* headers that cannot be parsed: fail closed */
	REASON_CT_FULL,   /* a conntrack or fragment insert failed (the packet keeps its verdict) */
	REASON_NOT_IP,    /* neither IPv4, IPv6 nor ARP: dropped unless the pod is open */
	REASON_EVENT_LOST, /* an event was not sent: the ring buffer was full (not a verdict) */
	REASON_SPOOFED,    /* from_pod: a source that is not the pod's own address (SPEC 8) */
	REASON_VLAN,       /* an 802.1Q/802.1ad tagged frame: dropped unless the pod is open */
	REASON_ARP,        /* ARP: passed */
	REASON_CT_QUOTA,   /* a new flow was not recorded: its pod holds ct_endpoint_max entries */
	REASON_MAX,
};

enum verdict {
	VERDICT_PASS = 1,
	VERDICT_DROP = 2,
	VERDICT_AUDIT = 3, /* passed in audit mode; the reason says what would have dropped it */
};

/* rule_counters (per-CPU array of RULE_SLOTS): what one rule of one pod decided. */
struct rule_count {
	__u64 packets;
	__u64 flows;   /* allow: flows it admitted; deny and no rule: packets that would open one */
	__u64 audited; /* of the packets, those audit mode passed */
};

/* Where a verdict was made: tc on a pod's interface, or XDP on an uplink (from_world). */
enum hook {
	HOOK_TC = 0,
	HOOK_XDP = 1,
};

/* events (ring buffer): drops and the first packet of each newly allowed inbound flow. */
struct event {
	__u64 timestamp; /* CLOCK_MONOTONIC ns at tick precision */
	__u32 ifindex;
	__u32 policy;
	__u32 rule; /* index of the deciding rule when reason is ALLOW_RULE or DENY_RULE */
	__u32 identity;
	struct ip_addr src;
	struct ip_addr dst;
	__u16 sport; /* network byte order; ICMP(v6): the type and code bytes */
	__u16 dport; /* network byte order; ICMP(v6) echo: the identifier */
	__u8 proto;
	__u8 verdict;
	__u8 reason;
	__u8 hook; /* enum hook */
};

/* Names every enum of the contract, and struct ct_key, so that clang puts them in BTF even
 * where no map or program uses one as a type; podwall.c declares one pointer to it, which
 * nothing reads. */
struct contract {
	struct ct_key ct_key; /* no map of this version has it (see ct_key) */
	enum limits limits;
	enum hook hook;
	enum family family;
	enum proto_class proto_class;
	enum port_dir port_dir;
	enum reserved_identity reserved_identity;
	enum endpoint_mode endpoint_mode;
	enum endpoint_flag endpoint_flag;
	enum policy_flag policy_flag;
	enum icmp_code icmp_code;
	enum ct_flag ct_flag;
	enum flush_scope flush_scope;
	enum verdict verdict;
	enum reason reason;
};

#endif
