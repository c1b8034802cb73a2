//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* podwall's data path: the verdict on packets going to a pod (tc/tcx egress of the pod's
 * host-side interface), the record of connections the pod opens (tc/tcx ingress), and the
 * early drop, at the node's uplinks (XDP), of what the first would drop. */
#include "headers/vmlinux.h"
#include "headers/bpf_helpers.h"
#include "headers/bpf_endian.h"
#include "podwall.h"
#include "parse.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define TC_ACT_SHOT 2

#define NSEC_PER_SEC 1000000000ULL

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* ifindex */
	__type(value, struct endpoint_entry);
} endpoints SEC(".maps");

/* 524288: the addresses of 150,000 dual-stack pods and 5,000 nodes, with room (docs/SCALE.md);
 * entries are allocated as they come, so a small cluster pays for its buckets only. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 524288);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ip_addr);
	__type(value, __u32); /* identity */
} ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ident_key);
	__type(value, struct rule_vec);
} pol_ident SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cidr_key);
	__type(value, struct rule_vec);
} pol_cidr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct port_key);
	__type(value, struct rule_vec);
} pol_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct icmp_key);
	__type(value, struct rule_vec);
} pol_icmp SEC(".maps");

/* Hashes, not LRUs: an insert never evicts, so no flood of new flows can push out another
 * pod's idle connection; ct_gc removes what expired, and ct_used caps each pod's share. One
 * per family; the agent sizes both (--conntrack-size). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct_key4);
	__type(value, struct ct_entry);
} conntrack4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct_key6);
	__type(value, struct ct_entry);
} conntrack6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* the ifindex of ct_head */
	__type(value, struct ct_count);
} ct_used SEC(".maps");

/* ct_flush: the addresses whose entries the next ct_gc run with flush set removes: those that
 * left the ipcache, every entry (a pod that reuses one starts clean), and those whose identity
 * changed, the entries of the flows they opened, which are judged again by their new labels.
 * The agent fills and empties it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ip_addr);
	__type(value, __u8); /* enum flush_scope */
} ct_flush SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct frag_key);
	__type(value, struct frag_entry);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32); /* EPOCH_CHANGING while odd */
} epoch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASON_MAX);
	__type(key, __u32);  /* enum reason */
	__type(value, __u64); /* packets */
} stats SEC(".maps");

/* The same counts for from_world's verdicts at the uplinks (XDP). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASON_MAX);
	__type(key, __u32);  /* enum reason */
	__type(value, __u64); /* packets */
} xdp_stats SEC(".maps");

/* The packets the policy would have dropped for each reason and passed in audit mode (tc). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASON_MAX);
	__type(key, __u32);  /* enum reason */
	__type(value, __u64); /* packets */
} audit_stats SEC(".maps");

/* Per pod and rule, what the rule decided; the agent gives each counted endpoint its slots
 * (endpoint.counters) and reads them by the rules' text. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RULE_SLOTS);
	__type(key, __u32); /* slot */
	__type(value, struct rule_count);
} rule_counters SEC(".maps");

/* Each local pod's addresses (the endpoints' addr4 and addr6), for from_world to find the
 * interface, and with it the endpoint, that to_pod judges a packet on. The applier derives it
 * from the endpoints it writes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ip_addr);
	__type(value, __u32); /* ifindex */
} local_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__type(value, struct event);
} events SEC(".maps");

/* Per-node settings, set by the agent before load (ebpf.CollectionSpec.Variables). */

/* How long a conntrack entry lives without packets, per protocol (ICMP: both families): it
 * counts while younger than this, so 0 turns tracking off. */
volatile const __u64 ct_timeout_tcp_ns = 2 * 3600 * NSEC_PER_SEC;
volatile const __u64 ct_timeout_udp_ns = 120 * NSEC_PER_SEC;
volatile const __u64 ct_timeout_icmp_ns = 30 * NSEC_PER_SEC;
/* TCP before the side that did not open it answered (a SYN left unanswered), and after a FIN
 * or RST: a closed or refused connection is no pinhole for the 2 hours of an open one. */
volatile const __u64 ct_timeout_tcp_syn_ns = 60 * NSEC_PER_SEC;
volatile const __u64 ct_timeout_tcp_close_ns = 10 * NSEC_PER_SEC;
/* How long a first fragment's verdict holds for the fragments that follow (the kernel's own
 * reassembly gives up after ipfrag_time, 30 s). */
volatile const __u64 frag_timeout_ns = 30 * NSEC_PER_SEC;
/* The most conntrack entries one pod interface may hold: a pod that floods new flows fills its
 * own share, not the table (the agent sets it, --conntrack-per-pod). */
volatile const __u32 ct_endpoint_max = 65536;
/* Events: on average at most events_per_sec drops and as many newly allowed flows, in bursts of
 * at most events_burst each; 0 sends none. */
volatile const __u32 events_per_sec = 1000;
volatile const __u32 events_burst = 1000;
/* The kernel's tick (a jiffy) in ns, 1e9 / CONFIG_HZ, which the agent measures before load
 * (JiffyNS in Go). Set, conntrack counts time in jiffies: bpf_jiffies64 is a load the verifier
 * inlines, where bpf_ktime_get_coarse_ns is a helper call (measured: 0 against 18 ns a packet,
 * on an empty program of 37). 0 (unknown): conntrack uses the coarse clock, in ns. The
 * verifier knows the value and drops the other branch. */
volatile const __u64 jiffy_ns = 0;

/* Never read: it makes clang emit struct contract, and with it every enum of podwall.h, in
 * BTF, where bpf2go finds them. */
static const struct contract *unused_contract __attribute__((used));

/* The rate limit of events (GCRA): per kind (drops, allowed flows), the theoretical arrival
 * time of the next event. Shared by all CPUs without a lock: a race lets one extra event
 * through. A flood of drops only reads it, so its cache line is not bounced. */
static __u64 event_tat[2];

/* Everything the verdict on one packet is made of, and what events report. */
struct judge {
	__u64 now; /* ct_clock() */
	struct pkt p;
	__u32 policy;
	__u32 generation;
	__u32 epoch; /* read_epoch(), before the endpoint was looked up */
	__u32 identity;
	__u32 rule;
	__u32 slot; /* the rule_counters slot of the verdict: 0 when no rule or default decided */
	__u8 mode;
	__u8 ep_flags;
	__u8 frag_verdict; /* REASON_FRAGMENT: the verdict of the first fragment */
	__u8 new_flow;     /* an inbound flow was just allowed by a rule (or audited) */
	__u8 audited;      /* audit mode passes what the policy drops */
};

/* clock_ns is CLOCK_MONOTONIC at tick precision, for events: bpf_ktime_get_ns cost twice as
 * much per packet (measured: 32 ns against 17 in one VM). */
static __always_inline __u64 clock_ns(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* ct_clock is conntrack's time: jiffies when jiffy_ns is known, else clock_ns. Conntrack ages
 * are counted in seconds, so a tick is precision enough. */
static __always_inline __u64 ct_clock(void)
{
	if (jiffy_ns)
		return bpf_jiffies64();
	return clock_ns();
}

/* ct_age is the ns since e was last seen, from a now of ct_clock. Signed: another CPU may have
 * stored a last_seen a little after this CPU read now. */
static __always_inline __s64 ct_age(const struct ct_entry *e, __u64 now)
{
	__s64 age = now - e->last_seen;

	if (jiffy_ns)
		age *= jiffy_ns;
	return age;
}

static __always_inline void count(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &reason);

	if (n)
		*n += 1;
}

static __always_inline void count_xdp(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&xdp_stats, &reason);

	if (n)
		*n += 1;
}

static __always_inline void count_audit(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&audit_stats, &reason);

	if (n)
		*n += 1;
}

/* count_rule counts a packet, and a flow when flow, at slot (0: not counted); audited says
 * audit mode passed it. */
static __always_inline void count_rule(__u32 slot, bool flow, bool audited)
{
	struct rule_count *n;

	if (!slot)
		return;
	n = bpf_map_lookup_elem(&rule_counters, &slot);
	if (!n)
		return;
	n->packets += 1;
	if (flow)
		n->flows += 1;
	if (audited)
		n->audited += 1;
}

static __always_inline __u64 ct_timeout(const struct ct_entry *e, __u8 proto)
{
	if (proto == IPPROTO_TCP) {
		if (e->flags & CT_CLOSING)
			return ct_timeout_tcp_close_ns;
		if (!(e->flags & CT_ANSWERED))
			return ct_timeout_tcp_syn_ns;
		return ct_timeout_tcp_ns;
	}
	if (proto == IPPROTO_UDP)
		return ct_timeout_udp_ns;
	return ct_timeout_icmp_ns;
}

static __always_inline bool ct_live(const struct ct_entry *e, __u8 proto, __u64 now)
{
	return ct_age(e, now) < (__s64)ct_timeout(e, proto);
}

/* ct_observe notes what a packet of the flow says about it: a packet of the side that did not
 * open it (the pod's when from_pod and the entry has CT_IN, the remote's when to_pod and it
 * has CT_OUT) answers it; a TCP FIN or RST closes it. A store only when a bit is new. */
static __always_inline void ct_observe(struct ct_entry *e, const struct pkt *p, __u8 opener)
{
	__u8 add = e->flags & opener ? CT_ANSWERED : 0;

	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		add |= CT_CLOSING;
	if ((e->flags & add) != add)
		e->flags |= add;
}

/* is_syn: a TCP packet that opens a connection, a SYN without ACK. */
static __always_inline bool is_syn(const struct pkt *p)
{
	return p->proto == IPPROTO_TCP &&
	       (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

/* A flow's conntrack key, on the stack: the key of its family's map. */
struct ct_flow {
	union {
		struct ct_head h;
		struct ct_key4 v4;
		struct ct_key6 v6;
	};
	__u8 family;
};

/* ct_lookup and ct_update use the map of the flow's family. The empty asm after each call,
 * different in the two branches, keeps clang from merging the two calls into one on a map
 * pointer chosen at run time: the verifier inlines a hash lookup only where the map is known,
 * and calls the other through the map's operations, an indirect call (measured: 10 ns more an
 * established flow). */
static __always_inline struct ct_entry *ct_lookup(const struct ct_flow *f)
{
	struct ct_entry *e;

	if (f->family == FAM_V4) {
		e = bpf_map_lookup_elem(&conntrack4, &f->v4);
		asm volatile("" : "+r"(e));
	} else {
		e = bpf_map_lookup_elem(&conntrack6, &f->v6);
		asm volatile("" : "+r"(e) : : "memory");
	}
	return e;
}

static __always_inline long ct_update(const struct ct_flow *f, const struct ct_entry *v,
				      __u64 flags)
{
	long err;

	if (f->family == FAM_V4) {
		err = bpf_map_update_elem(&conntrack4, &f->v4, v, flags);
		asm volatile("" : "+r"(err));
	} else {
		err = bpf_map_update_elem(&conntrack6, &f->v6, v, flags);
		asm volatile("" : "+r"(err) : : "memory");
	}
	return err;
}

/* ct_insert records a new flow of the pod interface f->h.ifindex, within its share: 0, or the
 * reason it was not recorded (counted by the caller). Another CPU recording the same flow
 * first is no failure. */
static __always_inline int ct_insert(const struct ct_flow *f, const struct ct_entry *v)
{
	struct ct_count *n = bpf_map_lookup_elem(&ct_used, &f->h.ifindex);
	long err;

	if (!n) {
		struct ct_count zero = {};

		bpf_map_update_elem(&ct_used, &f->h.ifindex, &zero, BPF_NOEXIST);
		n = bpf_map_lookup_elem(&ct_used, &f->h.ifindex);
		if (!n)
			return REASON_CT_FULL;
	}
	if (n->entries >= (__s64)ct_endpoint_max)
		return REASON_CT_QUOTA;
	err = ct_update(f, v, BPF_NOEXIST);
	if (err == -17 /* EEXIST */)
		return 0;
	if (err)
		return REASON_CT_FULL;
	__sync_fetch_and_add(&n->entries, 1);
	return 0;
}

static __always_inline void ct_refresh(struct ct_entry *e, __u64 now)
{
	/* At most once a second: a store per packet would bounce the entry between CPUs. */
	if (ct_age(e, now) >= (__s64)NSEC_PER_SEC)
		e->last_seen = now;
}

/* ct_tuple fills f (zeroed by the caller) with the packet's flow oriented from the pod, which
 * is the destination when pod_is_dst, else the source, on the pod interface ifindex. It is
 * false for packets conntrack does not follow: non-first fragments, ICMP other than echo,
 * protocols other than TCP and UDP. */
static __always_inline bool ct_tuple(const struct pkt *p, const bool pod_is_dst, __u32 ifindex,
				     struct ct_flow *f)
{
	const struct ip_addr *pod = pod_is_dst ? &p->dst : &p->src;
	const struct ip_addr *remote = pod_is_dst ? &p->src : &p->dst;

	if (p->frag == FRAG_LATER)
		return false;
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
		f->h.pod_port = pod_is_dst ? p->dport : p->sport;
		f->h.remote_port = pod_is_dst ? p->sport : p->dport;
	} else if (is_echo_request(p) || is_echo_reply(p)) {
		f->h.pod_port = p->echo_id;
		f->h.remote_port = 0;
	} else {
		return false;
	}
	f->h.proto = p->proto;
	f->h.ifindex = ifindex;
	f->family = p->src.family;
	if (f->family == FAM_V4) {
		__builtin_memcpy(f->v4.pod, pod->addr, 4);
		__builtin_memcpy(f->v4.remote, remote->addr, 4);
	} else {
		__builtin_memcpy(f->v6.pod, pod->addr, 16);
		__builtin_memcpy(f->v6.remote, remote->addr, 16);
	}
	return true;
}

/* addr_eq: a and b are the same address of the same family. */
static __always_inline bool addr_eq(const struct ip_addr *a, const struct ip_addr *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return !((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4]));
}

/* An odd epoch: one no entry passes on, for a packet that read none. */
#define NO_EPOCH 1

/* read_epoch is the node's conntrack epoch. It must be read before the endpoint: an entry
 * stamped with an epoch is then never stamped with a generation older than that epoch (the
 * agent writes the odd epoch, then the endpoints, then the new even epoch). */
static __always_inline __u32 read_epoch(void)
{
	__u32 zero = 0, *v = bpf_map_lookup_elem(&epoch, &zero);

	/* Never missing (an array of one); if it were, no entry could vouch for itself. */
	return v ? *v : NO_EPOCH;
}

/* ct_passes: the entry lets the flow's packets reach the pod (step 6). A CT_IN entry passes
 * when it was allowed under the endpoint's current generation: its epoch is the current even
 * one, or its generation is the endpoint's. generation 0 is not known yet (the endpoint was
 * not looked up; a real generation is never 0). A SYN on a closing TCP flow opens a new
 * connection on the same ports: it is judged as new. */
static __always_inline int ct_passes(const struct ct_entry *e, __u8 proto, bool syn,
				     __u32 generation, __u32 epoch_now, __u64 now)
{
	if (!ct_live(e, proto, now))
		return 0;
	if ((e->flags & CT_CLOSING) && syn)
		return 0;
	if (e->flags & CT_OUT)
		return REASON_REPLY;
	if (!(e->flags & CT_IN))
		return 0;
	if (e->epoch == epoch_now && !EPOCH_CHANGING(epoch_now))
		return REASON_ESTABLISHED;
	if (generation && e->generation == generation)
		return REASON_ESTABLISHED;
	return 0;
}

/* track_in records an inbound flow that just passed, under the endpoint's generation. e is the
 * flow's entry if step 6 looked it up. A live entry keeps its CT_OUT and TCP bits; an expired
 * one, or a closing one that a SYN opens again, is a flow that ended, so it starts over,
 * replaced whole by one update (a store through e could land in an element the collector
 * freed and the map gave to another flow). */
static __always_inline void track_in(struct judge *c, const struct ct_flow *k, struct ct_entry *e)
{
	__u64 now = c->now;
	struct ct_entry fresh = {
		.last_seen = now,
		.generation = c->generation,
		.epoch = c->epoch,
		.flags = CT_IN | (c->audited ? CT_AUDIT : 0),
		.counter = c->slot,
	};
	int res;

	if (e && ct_live(e, k->h.proto, now) && !((e->flags & CT_CLOSING) && is_syn(&c->p))) {
		e->flags = (e->flags & ~CT_AUDIT) | fresh.flags;
		e->generation = c->generation;
		e->epoch = c->epoch;
		e->counter = c->slot;
		e->last_seen = now;
		return;
	}
	if (e) {
		ct_update(k, &fresh, BPF_EXIST);
		return;
	}
	res = ct_insert(k, &fresh);
	if (res)
		count(res);
}

static __always_inline bool is_icmp_error(const struct pkt *p)
{
	__u8 t = p->icmp_type;

	if (!is_icmp(p) || p->frag == FRAG_LATER)
		return false;
	if (p->src.family == FAM_V4)
		return t == 3 || t == 4 || t == 5 || t == 11 || t == 12;
	return t >= 1 && t <= 4;
}

/* icmp_error_passes: the ICMP error quotes a packet of a flow that step 6 would pass (step 7).
 *
 * This, classify and finish are global functions, like the parsers: the verifier checks each
 * once instead of once per state of its caller, and each has a stack frame of its own (the
 * 512 bytes of BPF stack are for the whole call chain). */
__noinline int icmp_error_passes(struct __sk_buff *skb, const struct judge *c)
{
	struct pkt in = {};
	struct ct_flow k = {};
	struct ct_entry *e;

	if (!skb || !c)
		return 0;
	/* The quoted packet is the pod's: its source is the pod the error goes to, and its flow
	 * is one of this interface. */
	if (parse_quoted(skb, c->p.l4_off + 8, c->p.src.family, c->p.end, &in) != PARSE_OK ||
	    !addr_eq(&in.src, &c->p.dst) ||
	    !ct_tuple(&in, false, skb->ifindex, &k))
		return 0;
	e = ct_lookup(&k);
	/* An ICMP error is not tracked, so no epoch was read before the endpoint: the
	 * generation alone vouches. */
	return e && ct_passes(e, k.h.proto, false, c->generation, NO_EPOCH, c->now);
}

static __always_inline __u8 proto_class(const struct pkt *p)
{
	if (p->proto == IPPROTO_TCP)
		return PC_TCP;
	if (p->proto == IPPROTO_UDP)
		return PC_UDP;
	if (is_icmp(p))
		return PC_ICMP;
	return PC_OTHER;
}

/* and_into sets r to a & b. */
static __always_inline void and_into(struct rule_vec *r, const __u64 *a, const __u64 *b)
{
#pragma unroll
	for (int i = 0; i < VEC_WORDS; i++)
		r->bits[i] = a[i] & b[i];
}

/* and_lookup sets r to a & the vector of key in map, or a & wild when the key is missing.
 * Each branch does its own AND so that the verifier sees the same state after both and
 * prunes. */
static __always_inline void and_lookup(struct rule_vec *r, const __u64 *a, void *map,
				       const void *key, const __u64 *wild)
{
	struct rule_vec *m = bpf_map_lookup_elem(map, key);

	if (m)
		and_into(r, a, m->bits);
	else
		and_into(r, a, wild);
}

/* lowest_bit is the index of the lowest bit set in w, which is not 0. clang-14 crashes on
 * __builtin_ctzll for BPF; popcount of the bits below the lowest set bit is the same number. */
static __always_inline int lowest_bit(__u64 w)
{
	return __builtin_popcountll((w & -w) - 1);
}

/* decide ends step 10: R = r & a & b, then deny before allow, the deciding rule being the
 * lowest set bit (c->rule). One pass over the words: it visits every word, since a deny bit
 * in the last word beats an allow bit in the first, so it costs the same for 1 rule as for
 * 1024, and R is never stored. A global function, verified once whatever map each vector
 * comes from (as a static one, every combination of lookup hits and misses took the verifier
 * past its million instructions). */
__noinline int decide(const struct policy *pol, struct judge *c, const struct rule_vec *r,
		      const struct rule_vec *a, const struct rule_vec *b)
{
	int allow = -1;

	if (!pol || !c || !r || !a || !b)
		/* Never: the caller's. The verifier wants the test; fail closed. */
		return REASON_NO_RULE;
#pragma unroll
	for (int i = 0; i < VEC_WORDS; i++) {
		__u64 w = r->bits[i] & a->bits[i] & b->bits[i];
		__u64 deny = w & pol->deny[i];

		if (deny) {
			c->rule = i * 64 + lowest_bit(deny);
			return REASON_DENY_RULE;
		}
		if (w && allow < 0)
			allow = i * 64 + lowest_bit(w);
	}
	if (allow < 0)
		return REASON_NO_RULE;
	c->rule = allow;
	return REASON_ALLOW_RULE;
}

static __always_inline struct rule_vec *port_vec(const struct judge *c, __u8 class, __u8 dir,
						 __be16 port)
{
	struct port_key k = {
		.prefixlen = 48 + 16,
		.policy = c->policy,
		.proto_class = class,
		.dir = dir,
		.port = port,
	};

	return bpf_map_lookup_elem(&pol_port, &k);
}

/* classify is step 10: R = proto[fam][class] & ident & cidr & sport & dport & icmp.
 *
 * A field no rule constrains needs no lookup. A packet needs at most two of the last three
 * fields: a rule with ports is of tcp or udp and one with an ICMP type of icmp or icmpv6, so
 * proto[fam][class] of an ICMP or other packet holds only rules that leave ports free, and of
 * a TCP, UDP or other packet only rules that leave the type free (the compiler keeps it so,
 * TestProtoMasksLeaveOtherProtocolsFieldsFree). */
__noinline int classify(const struct policy *pol, struct judge *c)
{
	const struct rule_vec *a, *b;
	const struct pkt *p;
	struct rule_vec r;
	bool v6, has_l4;
	const __u64 *proto;
	__u8 class;

	if (!pol || !c)
		/* Never: both are the caller's. The verifier wants the test; fail closed. */
		return REASON_NO_RULE;
	p = &c->p;
	v6 = p->src.family == FAM_V6;
	class = proto_class(p);
	has_l4 = p->frag != FRAG_LATER;
	proto = pol->proto[v6][class];

	if (pol->flags & PF_IDENT) {
		struct ident_key k = { .policy = c->policy, .identity = c->identity };

		and_lookup(&r, proto, &pol_ident, &k, pol->wild_ident);
	} else {
		__builtin_memcpy(r.bits, proto, sizeof(r.bits));
	}
	if (pol->flags & PF_CIDR) {
		struct cidr_key k = {
			.prefixlen = 64 + (v6 ? 128 : 32),
			.policy = c->policy,
			.ip = p->src,
		};

		and_lookup(&r, r.bits, &pol_cidr, &k, pol->wild_cidr);
	}

	/* r & r is r: the vector of a field that needs nothing. */
	a = b = &r;
	if (class == PC_TCP || class == PC_UDP) {
		if (pol->flags & PF_SPORT) {
			a = has_l4 ? port_vec(c, class, DIR_SRC, p->sport) : NULL;
			if (!a)
				a = (const struct rule_vec *)pol->wild_sport;
		}
		if (pol->flags & PF_DPORT) {
			b = has_l4 ? port_vec(c, class, DIR_DST, p->dport) : NULL;
			if (!b)
				b = (const struct rule_vec *)pol->wild_dport;
		}
	} else if (class == PC_ICMP && (pol->flags & PF_ICMP)) {
		struct icmp_key k = {
			.policy = c->policy,
			.family = p->src.family,
			.type = p->icmp_type,
			.code = p->icmp_code,
		};

		a = has_l4 ? bpf_map_lookup_elem(&pol_icmp, &k) : NULL;
		if (!a && has_l4) {
			k.code = ICMP_ANY_CODE;
			a = bpf_map_lookup_elem(&pol_icmp, &k);
		}
		if (!a)
			a = (const struct rule_vec *)pol->wild_icmp;
	}
	return decide(pol, c, &r, a, b);
}

/* audited: a drop of the policy's, which audit mode passes. */
static __always_inline bool audited(enum reason reason)
{
	return reason == REASON_DENY_RULE || reason == REASON_NO_RULE || reason == REASON_ISOLATED;
}

/* opens_flow: a packet that starts a connection, or is one (UDP, protocols conntrack does not
 * follow): what a drop counts as a flow. */
static __always_inline bool opens_flow(const struct pkt *p)
{
	if (p->frag == FRAG_LATER)
		return false;
	if (p->proto == IPPROTO_TCP)
		return is_syn(p);
	if (is_icmp(p))
		return is_echo_request(p);
	return true;
}

/* rule_slot is the rule_counters slot of a verdict for reason on endpoint ep: the deciding
 * rule's, or the pod's slot of packets no rule decided. */
static __always_inline __u32 rule_slot(const struct endpoint_entry *ee, const struct judge *c,
				       enum reason reason)
{
	__u32 base = ee->ep.counters;

	if (!base)
		return 0;
	if (reason == REASON_ALLOW_RULE || reason == REASON_DENY_RULE)
		return base + c->rule;
	return base + ee->rules.nrules;
}

static __always_inline bool drops(enum reason reason)
{
	return reason == REASON_DENY_RULE || reason == REASON_NO_RULE ||
	       reason == REASON_ISOLATED || reason == REASON_MALFORMED ||
	       reason == REASON_NOT_IP || reason == REASON_VLAN || reason == REASON_SPOOFED ||
	       reason == REASON_NO_ENTRY;
}

/* event_allowed is the rate limit: a generic cell rate algorithm per kind of event, in ns
 * from ct_now, the packet's ct_clock(). In jiffies, time moves a tick at a time: the limit
 * then lets a little more through within a tick and the same over a second. It reads no clock
 * of its own, so a flood of drops or new flows over the limit costs no helper call. */
static __always_inline bool event_allowed(__u32 kind, __u64 ct_now)
{
	__u64 now = jiffy_ns ? ct_now * jiffy_ns : ct_now;
	__u64 interval, tat;

	if (!events_per_sec)
		return false;
	interval = NSEC_PER_SEC / events_per_sec;
	tat = event_tat[kind & 1];
	if ((__s64)(tat - now) < 0)
		tat = now;
	/* Conforming while the next slot is at most burst - 1 intervals ahead. */
	if (tat - now > interval * (events_burst > 1 ? events_burst - 1 : 0))
		return false;
	event_tat[kind & 1] = tat + interval;
	return true;
}

static __always_inline void send_event(__u32 ifindex, enum hook hook, const struct judge *c,
				       enum reason reason, __u8 verdict)
{
	const struct pkt *p = &c->p;
	struct event *ev;

	if (!event_allowed(verdict == VERDICT_PASS, c->now))
		return;
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(REASON_EVENT_LOST);
		return;
	}
	ev->timestamp = clock_ns();
	ev->ifindex = ifindex;
	ev->policy = c->policy;
	ev->rule = c->rule;
	ev->identity = c->identity;
	ev->src = p->src;
	ev->dst = p->dst;
	if (is_icmp(p)) {
		/* The type and code bytes as they are in the header. */
		ev->sport = bpf_htons(p->icmp_type << 8 | p->icmp_code);
		ev->dport = p->echo_id;
	} else {
		ev->sport = p->sport;
		ev->dport = p->dport;
	}
	ev->proto = p->proto;
	ev->verdict = verdict;
	ev->reason = reason;
	ev->hook = hook;
	bpf_ringbuf_submit(ev, 0);
}

/* frag_key_of sets k to the frags key of p's datagram. */
static __always_inline void frag_key_of(const struct pkt *p, struct frag_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->src = p->src;
	k->dst = p->dst;
	k->id = p->frag_id;
	k->proto = p->frag_proto;
}

/* finish ends every verdict of to_pod: it counts the reason, records a first fragment's
 * verdict for the fragments that follow (step 11), sends the event, and returns the action. */
__noinline int finish(struct __sk_buff *skb, const struct judge *c, enum reason reason)
{
	__u8 verdict = drops(reason) ? VERDICT_DROP : VERDICT_PASS;

	if (!skb || !c)
		/* Never: c is the caller's stack. The verifier wants the test; fail closed. */
		return TC_ACT_SHOT;

	if (reason == REASON_FRAGMENT)
		verdict = c->frag_verdict;
	if (verdict == VERDICT_DROP && (c->ep_flags & EP_AUDIT) && audited(reason))
		verdict = VERDICT_AUDIT;
	if (verdict == VERDICT_AUDIT)
		count_audit(reason);
	else
		count(reason);
	count_rule(c->slot, c->new_flow || (verdict != VERDICT_PASS && opens_flow(&c->p)),
		   verdict == VERDICT_AUDIT);
	if (c->p.frag == FRAG_FIRST) {
		struct frag_entry f = { .seen = c->now, .verdict = verdict };
		struct frag_key k;

		frag_key_of(&c->p, &k);
		if (bpf_map_update_elem(&frags, &k, &f, BPF_ANY))
			count(REASON_CT_FULL);
	}
	if (verdict != VERDICT_PASS || c->new_flow)
		send_event(skb->ifindex, HOOK_TC, c, reason, verdict);
	if (verdict == VERDICT_DROP)
		/* The policy refuses the packet; reason says why: a deny rule, no allow rule,
		 * an isolated pod, unparsable headers (fail closed), or the drop of the
		 * datagram's first fragment. */
		return TC_ACT_SHOT;
	return TCX_NEXT;
}

/* first_fragment_verdict is the verdict the first fragment of p's datagram got, 0 when it
 * was not seen or was seen longer than frag_timeout_ns before now. A global function: its key
 * is on a stack frame of its own, not to_pod's. */
__noinline __u8 first_fragment_verdict(const struct pkt *p, __u64 now)
{
	struct frag_entry *f;
	struct frag_key k;
	__s64 age;

	if (!p)
		return 0;
	frag_key_of(p, &k);
	f = bpf_map_lookup_elem(&frags, &k);
	if (!f)
		return 0;
	age = now - f->seen;
	if (jiffy_ns)
		age *= jiffy_ns;
	if (age >= (__s64)frag_timeout_ns)
		return 0;
	return f->verdict == VERDICT_DROP ? VERDICT_DROP : VERDICT_PASS;
}

/* pass_tracked ends a packet that passes on its conntrack entry e (step 6): all that finish
 * does for a pass that is not a first fragment, inline (the call and its tests cost an
 * established flow 7 ns in 130). */
static __always_inline int pass_tracked(struct __sk_buff *skb, const struct judge *c,
					struct ct_entry *e, int reason)
{
	ct_observe(e, &c->p, CT_OUT);
	ct_refresh(e, c->now);
	if (e->counter && reason == REASON_ESTABLISHED)
		count_rule(e->counter, false, e->flags & CT_AUDIT);
	if (c->p.frag != FRAG_FIRST) {
		count(reason);
		return TCX_NEXT;
	}
	return finish(skb, c, reason);
}

/* to_pod decides whether a packet may reach the pod: the algorithm of docs/ARCHITECTURE.md,
 * whose step numbers the comments use. Step 6 comes first for the packets that pass on it
 * whatever the endpoint says: replies to the pod's own flows, and inbound flows stamped with
 * the current epoch; an established flow then costs no endpoint lookup. */
SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	struct judge c = {};
	struct ct_flow k = {};
	struct ct_entry *e = NULL;
	struct endpoint_entry *ee;
	__u32 ifindex = skb->ifindex, *id;
	bool tracked = false, trackable, syn = false;
	int parsed, res;

	/* 2 */
	c.now = ct_clock();
	parsed = parse(skb, &c.p);
	if (parsed == PARSE_OK) {
		tracked = ct_tuple(&c.p, true, ifindex, &k);
		syn = is_syn(&c.p);
	}

	/* 6, before the endpoint */
	if (tracked) {
		c.epoch = read_epoch();
		e = ct_lookup(&k);
		if (e) {
			res = ct_passes(e, k.h.proto, syn, 0, c.epoch, c.now);
			if (res)
				return pass_tracked(skb, &c, e, res);
		}
	}

	/* 1 */
	ee = bpf_map_lookup_elem(&endpoints, &ifindex);
	if (!ee)
		return finish(skb, &c, REASON_NO_ENTRY);
	c.policy = ee->ep.policy;
	c.generation = ee->ep.generation;
	c.mode = ee->ep.mode;
	c.ep_flags = ee->ep.flags;

	/* 2: only IP and ARP reach a pod that is not open. */
	if (parsed != PARSE_OK) {
		if (c.mode == MODE_OPEN)
			return finish(skb, &c, REASON_OPEN);
		if (parsed == PARSE_ARP)
			return finish(skb, &c, REASON_ARP);
		if (parsed == PARSE_VLAN)
			return finish(skb, &c, REASON_VLAN);
		if (parsed == PARSE_NOT_IP)
			return finish(skb, &c, REASON_NOT_IP);
		return finish(skb, &c, REASON_MALFORMED);
	}
	/* An inbound echo reply answers the pod's request: it never opens a flow. */
	trackable = tracked && !is_echo_reply(&c.p);

	/* 3 */
	if (c.mode == MODE_OPEN) {
		if (trackable)
			track_in(&c, &k, e);
		return finish(skb, &c, REASON_OPEN);
	}

	/* 4 */
	if (c.p.src.family == FAM_V6 && is_icmp(&c.p) && c.p.frag != FRAG_LATER &&
	    c.p.icmp_type >= 133 && c.p.icmp_type <= 137)
		return finish(skb, &c, REASON_ND);

	/* 5 */
	if (c.p.frag == FRAG_LATER) {
		c.frag_verdict = first_fragment_verdict(&c.p, c.now);
		if (c.frag_verdict)
			return finish(skb, &c, REASON_FRAGMENT);
	}

	/* 6, with the endpoint's generation: an entry allowed under it, stamped with an older
	 * epoch, is stamped with this one, so its next packets pass before the endpoint. */
	if (e) {
		res = ct_passes(e, k.h.proto, syn, c.generation, c.epoch, c.now);
		if (res) {
			if (res == REASON_ESTABLISHED && e->epoch != c.epoch)
				e->epoch = c.epoch;
			return pass_tracked(skb, &c, e, res);
		}
	}

	/* 7 */
	if (is_icmp_error(&c.p) && icmp_error_passes(skb, &c))
		return finish(skb, &c, REASON_ICMP_ERROR);

	/* 8: the node is where the packet came from, not the source it claims. A packet the
	 * node's own stack sent was never received on an interface (ingress_ifindex 0); one
	 * that was, forwarded from a pod, another node or a NodePort's masquerade, is not the
	 * node's, whatever its source, and a node address it carries has no labels. */
	id = bpf_map_lookup_elem(&ipcache, &c.p.src);
	c.identity = id ? *id : ID_WORLD;
	if (skb->ingress_ifindex == 0) {
		if (c.ep_flags & EP_ALLOW_HOST) {
			if (trackable)
				track_in(&c, &k, e);
			return finish(skb, &c, REASON_HOST);
		}
	} else if (c.identity == ID_HOST) {
		c.identity = ID_WORLD;
	}

	/* 9, 10 */
	res = c.mode == MODE_ISOLATE ? REASON_ISOLATED : classify(&ee->rules, &c);
	c.slot = rule_slot(ee, &c, res);
	c.audited = (c.ep_flags & EP_AUDIT) && audited(res);
	/* A flow audit mode passes is tracked like an allowed one, counted on the rule that
	 * would have dropped it; leaving audit mode changes the generation, so it is judged
	 * again. */
	if ((res == REASON_ALLOW_RULE || c.audited) && trackable) {
		track_in(&c, &k, e);
		c.new_flow = 1;
	}
	return finish(skb, &c, res);
}

/* from_world drops, at the node's uplink and before the kernel builds an skb, a packet to a
 * local pod that to_pod would drop at this moment, and passes everything else unchanged: tc
 * stays the authority, and the one that records flows. It judges with to_pod's steps and maps
 * but writes nothing of theirs, and leaves to tc all it cannot judge as to_pod would: frames
 * it cannot parse in one buffer, fragments, ICMP errors, neighbour discovery, packets of
 * open, unknown or unentered pods, and every packet to another address. A packet that enters
 * by an uplink was never sent by the node's own stack (step 8), so the node's addresses have
 * no labels here, as in to_pod for a forwarded packet. */
SEC("xdp")
int from_world(struct xdp_md *ctx)
{
	struct judge c = {};
	struct ct_flow k = {};
	struct endpoint_entry *ee;
	struct ct_entry *e = NULL;
	__u32 *ifindex, *id;
	bool syn = false;
	int res;

	if (parse_xdp(ctx, &c.p) != PARSE_OK || c.p.frag != FRAG_NONE)
		return XDP_PASS;
	ifindex = bpf_map_lookup_elem(&local_pods, &c.p.dst);
	if (!ifindex)
		return XDP_PASS;
	if (is_icmp(&c.p) && ((c.p.src.family == FAM_V6 && c.p.icmp_type >= 133 &&
			       c.p.icmp_type <= 137) || is_icmp_error(&c.p)))
		return XDP_PASS;

	/* 6, before the endpoint, as in to_pod: replies, and flows stamped with this epoch; tc
	 * refreshes and restamps them. */
	c.now = ct_clock();
	if (ct_tuple(&c.p, true, *ifindex, &k)) {
		c.epoch = read_epoch();
		syn = is_syn(&c.p);
		e = ct_lookup(&k);
		if (e && ct_passes(e, k.h.proto, syn, 0, c.epoch, c.now))
			return XDP_PASS;
	}

	/* 1, 3; audit mode passes what the policy drops, and tc reports it */
	ee = bpf_map_lookup_elem(&endpoints, ifindex);
	if (!ee || ee->ep.mode == MODE_OPEN || (ee->ep.flags & EP_AUDIT))
		return XDP_PASS;
	c.policy = ee->ep.policy;
	c.generation = ee->ep.generation;
	c.mode = ee->ep.mode;
	c.ep_flags = ee->ep.flags;

	/* 6, with the endpoint's generation */
	if (e && ct_passes(e, k.h.proto, syn, c.generation, c.epoch, c.now))
		return XDP_PASS;

	/* 8 */
	id = bpf_map_lookup_elem(&ipcache, &c.p.src);
	c.identity = id ? *id : ID_WORLD;
	if (c.identity == ID_HOST)
		c.identity = ID_WORLD;

	/* 9, 10 */
	res = c.mode == MODE_ISOLATE ? REASON_ISOLATED : classify(&ee->rules, &c);
	if (!drops(res))
		return XDP_PASS;
	count_xdp(res);
	count_rule(rule_slot(ee, &c, res), opens_flow(&c.p), false);
	send_event(*ifindex, HOOK_XDP, &c, res, VERDICT_DROP);
	return XDP_DROP;
}

/* own_source: the packet's source is the pod's own address, or it is one of the link-local
 * control messages a pod's kernel sends before and beside its address: neighbour discovery
 * (133-137) and multicast listener reports (130-132, 143), from a link-local or the
 * unspecified address. *control says which. */
static __always_inline bool own_source(const struct endpoint *ep, const struct pkt *p,
				       bool *control)
{
	const __u8 *a = p->src.addr;
	bool link_local;

	*control = false;
	if (p->src.family == FAM_V4)
		return ep->addr4.family && addr_eq(&p->src, &ep->addr4);
	if (ep->addr6.family && addr_eq(&p->src, &ep->addr6))
		return true;
	link_local = (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) ||
		     !(a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7] | a[8] | a[9] |
		       a[10] | a[11] | a[12] | a[13] | a[14] | a[15]);
	*control = link_local && is_icmp(p) && p->frag == FRAG_NONE &&
		   ((p->icmp_type >= 130 && p->icmp_type <= 137) || p->icmp_type == 143);
	return *control;
}

/* arp_source_ok: an ARP packet of the pod claims no address but its own IPv4 one (or none,
 * 0.0.0.0, as a probe does), so a pod cannot take another's address on a bridge. */
static __always_inline bool arp_source_ok(struct __sk_buff *skb, const struct endpoint *ep)
{
	/* Ethernet, then the ARP header (8 bytes) and the sender's 6-byte hardware address. */
	__u8 *spa = hdr(skb, ETH_HLEN + 14, 4, skb->len);
	__u32 claimed;

	if (!spa)
		return true; /* not an IPv4-over-Ethernet ARP packet: nothing claimed */
	__builtin_memcpy(&claimed, spa, 4);
	return claimed == 0 || (ep->addr4.family && claimed == *(__u32 *)ep->addr4.addr);
}

/* from_pod checks and records what the pod sends. A packet whose source is not the pod's own
 * address is dropped (SPEC 8), before it can record or refresh any flow; everything else
 * passes, and the flows it opens are recorded, so that their replies pass. An interface
 * without an entry has no addresses to check a source against: all it sends is dropped, ARP
 * included, until the agent writes one. */
SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	struct judge c = {};
	struct ct_flow k = {};
	struct endpoint_entry *ee;
	struct ct_entry *e;
	__u32 ifindex = skb->ifindex;
	bool opens, control;
	int parsed;

	parsed = parse(skb, &c.p);
	ee = bpf_map_lookup_elem(&endpoints, &ifindex);
	if (!ee) {
		c.now = ct_clock();
		count(REASON_NO_ENTRY);
		send_event(ifindex, HOOK_TC, &c, REASON_NO_ENTRY, VERDICT_DROP);
		return TC_ACT_SHOT;
	}
	if (parsed == PARSE_ARP && !arp_source_ok(skb, &ee->ep)) {
		count(REASON_SPOOFED);
		/* An ARP packet claiming another's address: the pod would take its traffic. */
		return TC_ACT_SHOT;
	}
	if (parsed != PARSE_OK)
		return TCX_NEXT;
	if (!own_source(&ee->ep, &c.p, &control)) {
		c.now = ct_clock();
		c.policy = ee->ep.policy;
		count(REASON_SPOOFED);
		send_event(ifindex, HOOK_TC, &c, REASON_SPOOFED, VERDICT_DROP);
		/* A source that is not the pod's: a forged packet, which must neither reach
		 * anyone nor record a flow that would pass the forged address's replies. */
		return TC_ACT_SHOT;
	}
	if (control || !ct_tuple(&c.p, false, ifindex, &k))
		return TCX_NEXT;
	/* A packet that opens a flow: a TCP SYN without ACK, any UDP, an echo request. A TCP
	 * packet mid-stream opens nothing, so an evicted inbound flow is judged again rather
	 * than turned into one of the pod's. */
	if (c.p.proto == IPPROTO_TCP)
		opens = is_syn(&c.p);
	else
		opens = c.p.proto == IPPROTO_UDP || is_echo_request(&c.p);

	c.now = ct_clock();
	e = ct_lookup(&k);
	if (e) {
		struct ct_entry next;

		if (ct_live(e, k.h.proto, c.now) && !(opens && (e->flags & CT_CLOSING))) {
			/* The pod answering an inbound flow does not make it the pod's own. */
			ct_observe(e, &c.p, CT_IN);
			ct_refresh(e, c.now);
			return TCX_NEXT;
		}
		/* A flow that ended (expired, or closed and opened again on the same ports)
		 * starts over as the pod's own when this packet opens one; else the pod's
		 * packet brings it back as it was. Replaced whole by one update, never through
		 * e (see track_in). */
		next = *e;
		next.last_seen = c.now;
		if (opens) {
			next.flags = CT_OUT;
			next.generation = 0;
			next.epoch = 0;
		}
		ct_update(&k, &next, BPF_EXIST);
		return TCX_NEXT;
	}
	if (opens) {
		struct ct_entry fresh = { .last_seen = c.now, .flags = CT_OUT };
		int res = ct_insert(&k, &fresh);

		if (res)
			count(res);
	}
	return TCX_NEXT;
}

/* gc_flow is the garbage collector's pass over one conntrack entry, of key k in map, whose
 * shared fields are h and addresses pod and remote: remove it when it expired, or when run
 * with flush and one of its addresses is in ct_flush; keep its pod's count. */
static __always_inline long gc_flow(struct bpf_map *map, const void *k, const struct ct_head *h,
				    const struct ip_addr *pod_addr, const struct ip_addr *remote_addr,
				    struct ct_entry *e, struct ct_gc_run *run)
{
	__u8 *pod = run->flush ? bpf_map_lookup_elem(&ct_flush, pod_addr) : NULL;
	__u8 *remote = run->flush ? bpf_map_lookup_elem(&ct_flush, remote_addr) : NULL;
	/* A remote whose identity changed: the flows it opened, not the pod's own to it (whose
	 * replies pass whatever the remote's labels). */
	bool flush = (pod && *pod == FLUSH_ALL) ||
		     (remote && (*remote == FLUSH_ALL || !(e->flags & CT_OUT)));
	struct ct_count *n;
	/* ct_clock, but a syscall program has no coarse clock: the fine one runs up to a tick
	 * ahead, so an entry may go that much before its time. */
	__u64 now = jiffy_ns ? bpf_jiffies64() : bpf_ktime_get_ns();

	if (!flush && ct_live(e, h->proto, now)) {
		if (pod_addr->family == FAM_V4)
			run->live4++;
		else
			run->live6++;
		return 0;
	}
	if (bpf_map_delete_elem(map, k))
		return 0;
	if (flush)
		run->flushed++;
	else
		run->expired++;
	n = bpf_map_lookup_elem(&ct_used, &h->ifindex);
	if (n)
		__sync_fetch_and_add(&n->entries, -1);
	return 0;
}

static long gc_entry4(struct bpf_map *map, const struct ct_key4 *k, struct ct_entry *e,
		      struct ct_gc_run *run)
{
	struct ip_addr pod = { .family = FAM_V4 }, remote = { .family = FAM_V4 };

	__builtin_memcpy(pod.addr, k->pod, 4);
	__builtin_memcpy(remote.addr, k->remote, 4);
	return gc_flow(map, k, &k->h, &pod, &remote, e, run);
}

static long gc_entry6(struct bpf_map *map, const struct ct_key6 *k, struct ct_entry *e,
		      struct ct_gc_run *run)
{
	struct ip_addr pod = { .family = FAM_V6 }, remote = { .family = FAM_V6 };

	__builtin_memcpy(pod.addr, k->pod, 16);
	__builtin_memcpy(remote.addr, k->remote, 16);
	return gc_flow(map, k, &k->h, &pod, &remote, e, run);
}

/* gc_count drops the count of an interface that holds no entry and is no endpoint (a pod that
 * is gone, or one whose entry is not written yet and will count again from 0). */
static long gc_count(struct bpf_map *map, const __u32 *ifindex, struct ct_count *n, void *ctx)
{
	if (n->entries <= 0 && !bpf_map_lookup_elem(&endpoints, ifindex))
		bpf_map_delete_elem(map, ifindex);
	return 0;
}

/* ct_gc is conntrack's garbage collector, run by the agent (BPF_PROG_TEST_RUN): the tables
 * evict nothing by themselves. A program rather than the agent's own deletes, so that the counts
 * of ct_used go down atomically beside the data path's increments. */
SEC("syscall")
int ct_gc(struct ct_gc_run *args)
{
	/* The callbacks' context must be on the stack. */
	struct ct_gc_run run = { .flush = args->flush };

	bpf_for_each_map_elem(&conntrack4, gc_entry4, &run, 0);
	bpf_for_each_map_elem(&conntrack6, gc_entry6, &run, 0);
	bpf_for_each_map_elem(&ct_used, gc_count, NULL, 0);
	args->live4 = run.live4;
	args->live6 = run.live6;
	args->expired = run.expired;
	args->flushed = run.flushed;
	return 0;
}
