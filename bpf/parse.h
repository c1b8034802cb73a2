/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Header parsing shared by to_pod and from_pod: Ethernet, IPv4, IPv6 with its extension
 * headers, and the first bytes of TCP, UDP, ICMP and ICMPv6, into a struct pkt of plain
 * values. Packet bytes are read in place (direct packet access); a header that lies beyond
 * the skb's linear part is made linear with bpf_skb_pull_data first.
 */
#ifndef PODWALL_PARSE_H
#define PODWALL_PARSE_H

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_ARP 0x0806
/* The tag protocol identifiers of 802.1Q, 802.1ad and the pre-standard QinQ. */
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ETH_P_QINQ 0x9100

/* IPv6 next header values: the extension headers walked, and ICMPv6. */
#define NH_HOP 0
#define NH_ROUTING 43
#define NH_FRAGMENT 44
#define NH_AUTH 51
#define NH_ICMPV6 58
#define NH_DEST 60

/* At most this many IPv6 extension headers are walked; more is malformed. */
#define MAX_EXT_HDRS 8

/* The largest offset a header may start at. The verifier accepts a packet pointer with a
 * variable offset only while offset plus access stays under 64 KiB. The longest outer header
 * chain (8 extension headers of 2 KiB) ends near 16 KiB; a quoted chain in an ICMP error that
 * reaches past 32 KiB is not parsed. */
#define HDR_MAX_OFF 0x7fff

#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

enum frag_kind {
	FRAG_NONE,  /* not fragmented (an IPv6 atomic fragment included) */
	FRAG_FIRST, /* offset 0, more fragments follow: carries the L4 header */
	FRAG_LATER, /* offset != 0: carries no L4 header */
};

enum parse_result {
	PARSE_OK,
	PARSE_NOT_IP, /* neither IP nor ARP */
	PARSE_MALFORMED,
	PARSE_VLAN, /* a tagged frame: 802.1Q, 802.1ad or QinQ */
	PARSE_ARP,
};

/* A parsed packet. Ports and the echo identifier stay in network byte order, as in the map
 * keys. */
struct pkt {
	struct ip_addr src;
	struct ip_addr dst;
	__u32 frag_id; /* host byte order */
	__u32 l4_off;  /* offset of the L4 header from the start of the frame */
	__u32 end;     /* where the IP packet ends: no header is read past it */
	__be16 sport;  /* TCP, UDP */
	__be16 dport;
	__be16 echo_id; /* ICMP(v6) echo request and reply */
	__u8 proto;     /* the L4 protocol; for a FRAG_LATER IPv6 packet the fragment's next header */
	__u8 frag_proto; /* frag_key.proto */
	__u8 frag;       /* enum frag_kind */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
};

/* skb->data and skb->data_end, each read with one load from skb: clang otherwise merges the
 * reads before and after a pull into a load through a computed ctx pointer, which the verifier
 * refuses. */
#define SKB_PTR(skb, field)                                                                        \
	({                                                                                         \
		void *__p;                                                                         \
		asm volatile("%[p] = *(u32 *)(%[ctx] + %[off])"                                    \
			     : [p] "=r"(__p)                                                       \
			     : [ctx] "r"(skb), [off] "i"(__builtin_offsetof(struct __sk_buff, field))); \
		__p;                                                                               \
	})

/* hdr returns a pointer to len bytes of the packet at off, or NULL when they do not all lie
 * before end (the end of the IP packet the header belongs to, or of the frame).
 * Every earlier packet pointer is invalid after a call (it may pull): callers copy the fields
 * they need into plain values at once. */
static __always_inline void *hdr(struct __sk_buff *skb, __u64 off, const __u32 len, __u32 end)
{
	void *data, *data_end, *h;

	if (off > HDR_MAX_OFF || off + len > end)
		return NULL;
	/* A no-op after the test above, but clang may turn that test into arithmetic on another
	 * register; this bounds the very register the pointer is built from. */
	asm volatile("%[off] &= %[max]" : [off] "+r"(off) : [max] "i"(HDR_MAX_OFF));
	data = SKB_PTR(skb, data);
	data_end = SKB_PTR(skb, data_end);
	h = data + off;
	if (h + len <= data_end)
		return h;
	/* The header is beyond the linear part (a GRO'd or tunnelled skb): pull it in. */
	if (off + len > skb->len || bpf_skb_pull_data(skb, off + len))
		return NULL;
	data = SKB_PTR(skb, data);
	data_end = SKB_PTR(skb, data_end);
	h = data + off;
	if (h + len > data_end)
		return NULL;
	return h;
}

static __always_inline __u8 icmp_proto(const struct pkt *p)
{
	return p->src.family == FAM_V4 ? IPPROTO_ICMP : NH_ICMPV6;
}

/* is_icmp: ICMP in IPv4 or ICMPv6 in IPv6 (the other pairings are protocols of class OTHER). */
static __always_inline bool is_icmp(const struct pkt *p)
{
	return p->proto == icmp_proto(p);
}

static __always_inline bool is_echo_request(const struct pkt *p)
{
	return is_icmp(p) && p->frag != FRAG_LATER &&
	       p->icmp_type == (p->src.family == FAM_V4 ? ICMP_ECHO : ICMPV6_ECHO_REQUEST);
}

static __always_inline bool is_echo_reply(const struct pkt *p)
{
	return is_icmp(p) && p->frag != FRAG_LATER &&
	       p->icmp_type == (p->src.family == FAM_V4 ? ICMP_ECHOREPLY : ICMPV6_ECHO_REPLY);
}

/* parse_l4 reads the ports, TCP flags or ICMP type, code and echo identifier at p->l4_off.
 * An outer TCP header must be whole (20 bytes); a header quoted in an ICMP error only needs
 * its first 8 bytes, all that ICMPv4 guarantees to quote. */
static __always_inline int parse_l4(struct __sk_buff *skb, struct pkt *p, const bool outer)
{
	__u8 *l4;

	if (p->frag == FRAG_LATER)
		return PARSE_OK;
	if (p->proto == IPPROTO_TCP && outer) {
		l4 = hdr(skb, p->l4_off, sizeof(struct tcphdr), p->end);
		if (!l4)
			return PARSE_MALFORMED;
		p->tcp_flags = l4[13];
	} else if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP || is_icmp(p)) {
		l4 = hdr(skb, p->l4_off, 8, p->end);
		if (!l4)
			return PARSE_MALFORMED;
	} else {
		return PARSE_OK;
	}
	if (is_icmp(p)) {
		p->icmp_type = l4[0];
		p->icmp_code = l4[1];
		p->echo_id = *(__be16 *)(l4 + 4);
	} else {
		p->sport = *(__be16 *)l4;
		p->dport = *(__be16 *)(l4 + 2);
	}
	return PARSE_OK;
}

/* ip_end is where an IP packet at off whose length fields say len (total length, header
 * included) ends, or 0 when they lie: shorter than the header, or longer than the frame (end).
 * Ethernet pads short frames, so a frame may be longer. A GSO packet larger than 64 KiB (BIG
 * TCP) has a length field of 0 (big) and ends with the frame. */
static __always_inline __u32 ip_end(struct __sk_buff *skb, __u32 off, __u32 len, __u32 hlen,
				    bool big, __u32 end)
{
	if (big && skb->gso_size)
		return end;
	if (len < hlen || off + len > end)
		return 0;
	return off + len;
}

/* parse_ipv4 reads an IPv4 packet at off. An outer packet must lie within the frame and its
 * length field must tell the truth; a quoted one (an ICMP error's) is cut short by nature, so
 * it is read up to end, the end of the error that quotes it. */
static __always_inline int parse_ipv4(struct __sk_buff *skb, __u32 off, struct pkt *p,
				      const bool outer, __u32 end)
{
	struct iphdr *ip = hdr(skb, off, sizeof(*ip), end);
	__u16 frag;
	__u8 vihl;

	if (!ip)
		return PARSE_MALFORMED;
	vihl = *(__u8 *)ip;
	if (vihl >> 4 != 4 || (vihl & 0xf) < 5)
		return PARSE_MALFORMED;
	p->src.family = FAM_V4;
	p->dst.family = FAM_V4;
	__builtin_memcpy(p->src.addr, &ip->saddr, 4);
	__builtin_memcpy(p->dst.addr, &ip->daddr, 4);
	p->proto = ip->protocol;
	frag = bpf_ntohs(ip->frag_off);
	if (frag & 0x1fff)
		p->frag = FRAG_LATER;
	else if (frag & 0x2000)
		p->frag = FRAG_FIRST;
	p->frag_id = bpf_ntohs(ip->id);
	p->frag_proto = ip->protocol;
	p->end = end;
	if (outer) {
		__u32 len = bpf_ntohs(ip->tot_len);

		p->end = ip_end(skb, off, len, (vihl & 0xf) * 4, len == 0, end);
		if (!p->end)
			return PARSE_MALFORMED;
	}
	p->l4_off = off + (vihl & 0xf) * 4;
	return parse_l4(skb, p, outer);
}

static __always_inline bool is_ext_hdr(__u8 nh)
{
	return nh == NH_HOP || nh == NH_ROUTING || nh == NH_FRAGMENT || nh == NH_DEST ||
	       nh == NH_AUTH;
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, __u32 off, struct pkt *p,
				      const bool outer, __u32 end)
{
	struct ipv6hdr *ip6 = hdr(skb, off, sizeof(*ip6), end);
	bool seen_frag = false;
	__u8 nh, *eh;

	if (!ip6)
		return PARSE_MALFORMED;
	if (*(__u8 *)ip6 >> 4 != 6)
		return PARSE_MALFORMED;
	p->src.family = FAM_V6;
	p->dst.family = FAM_V6;
	__builtin_memcpy(p->src.addr, &ip6->saddr, 16);
	__builtin_memcpy(p->dst.addr, &ip6->daddr, 16);
	nh = ip6->nexthdr;
	p->end = end;
	if (outer) {
		/* The payload length counts what follows the fixed header. */
		__u32 plen = bpf_ntohs(ip6->payload_len);

		p->end = ip_end(skb, off, plen + sizeof(*ip6), sizeof(*ip6), plen == 0, end);
		if (!p->end)
			return PARSE_MALFORMED;
	}
	off += sizeof(*ip6);

	for (int i = 0; i < MAX_EXT_HDRS && is_ext_hdr(nh); i++) {
		if (nh == NH_FRAGMENT) {
			__u16 fo;

			/* RFC 8200 allows one fragment header; a second is an evasion attempt. */
			if (seen_frag)
				return PARSE_MALFORMED;
			seen_frag = true;
			eh = hdr(skb, off, 8, p->end);
			if (!eh)
				return PARSE_MALFORMED;
			nh = eh[0];
			fo = bpf_ntohs(*(__be16 *)(eh + 2));
			if (fo & 0xfff8)
				p->frag = FRAG_LATER;
			else if (fo & 1)
				p->frag = FRAG_FIRST;
			p->frag_id = bpf_ntohl(*(__be32 *)(eh + 4));
			p->frag_proto = nh;
			off += 8;
			if (p->frag == FRAG_LATER) {
				/* What follows is data, not headers. */
				p->proto = nh;
				p->l4_off = off;
				return PARSE_OK;
			}
			continue;
		}
		eh = hdr(skb, off, 2, p->end);
		if (!eh)
			return PARSE_MALFORMED;
		/* AH counts its length in 4-byte units minus 2, the others in 8-byte units
		 * minus 1. */
		if (nh == NH_AUTH)
			off += (eh[1] + 2) * 4;
		else
			off += (eh[1] + 1) * 8;
		nh = eh[0];
	}
	if (is_ext_hdr(nh))
		return PARSE_MALFORMED;
	p->proto = nh;
	p->l4_off = off;
	return parse_l4(skb, p, outer);
}

/* parse_frame reads a frame from its Ethernet header into p (zeroed by the caller).
 *
 * The parsers are global functions: the verifier checks each once, on its own, and the caller
 * goes on with one state instead of one per path through the headers. */
__noinline int parse_frame(struct __sk_buff *skb, struct pkt *p)
{
	struct ethhdr *eth;
	__u32 len;
	__be16 proto;

	if (!skb || !p)
		return PARSE_MALFORMED;
	len = skb->len;
	eth = hdr(skb, 0, ETH_HLEN, len);
	if (!eth)
		return PARSE_MALFORMED;
	proto = eth->h_proto;
	/* A tag the kernel took out of the frame (skb->vlan_tci) is a tag all the same. */
	if (skb->vlan_present || proto == bpf_htons(ETH_P_8021Q) ||
	    proto == bpf_htons(ETH_P_8021AD) || proto == bpf_htons(ETH_P_QINQ))
		return PARSE_VLAN;
	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(skb, ETH_HLEN, p, true, len);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(skb, ETH_HLEN, p, true, len);
	if (proto == bpf_htons(ETH_P_ARP))
		return PARSE_ARP;
	return PARSE_NOT_IP;
}

/* parse_quoted reads the packet an ICMP(v6) error quotes, at off, of the error's family, up
 * to end, where the error ends. */
__noinline int parse_quoted(struct __sk_buff *skb, __u32 off, __u8 family, __u32 end,
			    struct pkt *p)
{
	if (!skb || !p)
		return PARSE_MALFORMED;
	if (family == FAM_V4)
		return parse_ipv4(skb, off, p, false, end);
	return parse_ipv6(skb, off, p, false, end);
}

#endif
