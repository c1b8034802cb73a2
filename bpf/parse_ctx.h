/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The parsers of parse.h, written once for any context: parse.h includes this file once for
 * tc (struct __sk_buff, the names as they are) and once for XDP (struct xdp_md, names ending
 * in _xdp), with PARSE_CTX, PN and the CTX_ accessors defined for each, which it undefines
 * at its end. No include guard, on purpose.
 */

/* hdr returns a pointer to len bytes of the packet at off, or NULL when they do not all lie
 * before end (the end of the IP packet the header belongs to, or of the frame).
 * Every earlier packet pointer is invalid after a call (it may pull): callers copy the fields
 * they need into plain values at once. */
static __always_inline void *PN(hdr)(PARSE_CTX *ctx, __u64 off, const __u32 len, __u32 end)
{
	void *data, *data_end, *h;

	if (off > HDR_MAX_OFF || off + len > end)
		return NULL;
	/* A no-op after the test above, but clang may turn that test into arithmetic on another
	 * register; this bounds the very register the pointer is built from. */
	asm volatile("%[off] &= %[max]" : [off] "+r"(off) : [max] "i"(HDR_MAX_OFF));
	data = CTX_DATA(ctx);
	data_end = CTX_DATA_END(ctx);
	h = data + off;
	if (h + len <= data_end)
		return h;
	/* The header is beyond the linear part (a GRO'd or tunnelled skb): pull it in. XDP
	 * cannot: its caller passes what it cannot read to the stack. */
	if (off + len > CTX_LEN(ctx) || CTX_PULL(ctx, off + len))
		return NULL;
	data = CTX_DATA(ctx);
	data_end = CTX_DATA_END(ctx);
	h = data + off;
	if (h + len > data_end)
		return NULL;
	return h;
}

/* parse_l4 reads the ports, TCP flags or ICMP type, code and echo identifier at p->l4_off.
 * An outer TCP header must be whole (20 bytes); a header quoted in an ICMP error only needs
 * its first 8 bytes, all that ICMPv4 guarantees to quote. */
static __always_inline int PN(parse_l4)(PARSE_CTX *ctx, struct pkt *p, const bool outer)
{
	__u8 *l4;

	if (p->frag == FRAG_LATER)
		return PARSE_OK;
	if (p->proto == IPPROTO_TCP && outer) {
		l4 = PN(hdr)(ctx, p->l4_off, sizeof(struct tcphdr), p->end);
		if (!l4)
			return PARSE_MALFORMED;
		p->tcp_flags = l4[13];
	} else if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP || is_icmp(p)) {
		l4 = PN(hdr)(ctx, p->l4_off, 8, p->end);
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
static __always_inline __u32 PN(ip_end)(PARSE_CTX *ctx, __u32 off, __u32 len, __u32 hlen,
				    bool big, __u32 end)
{
	if (big && CTX_GSO(ctx))
		return end;
	if (len < hlen || off + len > end)
		return 0;
	return off + len;
}

/* parse_ipv4 reads an IPv4 packet at off. An outer packet must lie within the frame and its
 * length field must tell the truth; a quoted one (an ICMP error's) is cut short by nature, so
 * it is read up to end, the end of the error that quotes it. */
static __always_inline int PN(parse_ipv4)(PARSE_CTX *ctx, __u32 off, struct pkt *p,
				      const bool outer, __u32 end)
{
	struct iphdr *ip = PN(hdr)(ctx, off, sizeof(*ip), end);
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

		p->end = PN(ip_end)(ctx, off, len, (vihl & 0xf) * 4, len == 0, end);
		if (!p->end)
			return PARSE_MALFORMED;
	}
	p->l4_off = off + (vihl & 0xf) * 4;
	return PN(parse_l4)(ctx, p, outer);
}

static __always_inline int PN(parse_ipv6)(PARSE_CTX *ctx, __u32 off, struct pkt *p,
				      const bool outer, __u32 end)
{
	struct ipv6hdr *ip6 = PN(hdr)(ctx, off, sizeof(*ip6), end);
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

		p->end = PN(ip_end)(ctx, off, plen + sizeof(*ip6), sizeof(*ip6), plen == 0, end);
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
			eh = PN(hdr)(ctx, off, 8, p->end);
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
		eh = PN(hdr)(ctx, off, 2, p->end);
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
	return PN(parse_l4)(ctx, p, outer);
}

/* parse_fast reads, inline, the frames nearly every packet is: untagged Ethernet, IPv4 without
 * options or IPv6 without extension headers, not a fragment, and a whole TCP header or the
 * first 8 bytes of UDP or ICMP(v6), all in the linear part. It fills p (zeroed by the caller)
 * exactly as parse_frame would and returns PARSE_OK, or returns PARSE_SLOW, having written
 * nothing, for any other frame, which parse_frame then reads. It is inline because a call of a global function costs a return, and on
 * machines that mitigate return-address speculation (AMD's "Safe RET") a return costs as much
 * as the rest of this parse (docs/BENCHMARKS.md, "Where an established flow's time goes"). */
static __always_inline int PN(parse_fast)(PARSE_CTX *ctx, struct pkt *p)
{
	void *data = CTX_DATA(ctx), *data_end = CTX_DATA_END(ctx);
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = NULL;
	struct iphdr *ip = NULL;
	__u32 l4_off, end;
	__u8 *l4, proto;

	if (CTX_VLAN(ctx) || data + ETH_HLEN > data_end)
		return PARSE_SLOW;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > data_end || *(__u8 *)ip != 0x45 ||
		    (ip->frag_off & bpf_htons(0x3fff)))
			return PARSE_SLOW;
		proto = ip->protocol;
		l4 = (__u8 *)(ip + 1);
		l4_off = ETH_HLEN + sizeof(*ip);
		end = ETH_HLEN + bpf_ntohs(ip->tot_len);
		if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP)
			return PARSE_SLOW;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		ip6 = data + ETH_HLEN;
		if ((void *)(ip6 + 1) > data_end || *(__u8 *)ip6 >> 4 != 6 || !ip6->payload_len)
			return PARSE_SLOW;
		proto = ip6->nexthdr;
		l4 = (__u8 *)(ip6 + 1);
		l4_off = ETH_HLEN + sizeof(*ip6);
		end = l4_off + bpf_ntohs(ip6->payload_len);
		if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != NH_ICMPV6)
			return PARSE_SLOW;
	} else {
		return PARSE_SLOW;
	}
	/* The L4 header in the linear part and within the IP packet, which lies within the
	 * frame: what parse_frame's hdr and ip_end check. */
	if (end > CTX_LEN(ctx))
		return PARSE_SLOW;
	if (proto == IPPROTO_TCP) {
		if ((void *)(l4 + sizeof(struct tcphdr)) > data_end ||
		    l4_off + sizeof(struct tcphdr) > end)
			return PARSE_SLOW;
		p->tcp_flags = l4[13];
	} else if ((void *)(l4 + 8) > data_end || l4_off + 8 > end) {
		return PARSE_SLOW;
	}
	if (ip) {
		p->src.family = FAM_V4;
		p->dst.family = FAM_V4;
		__builtin_memcpy(p->src.addr, &ip->saddr, 4);
		__builtin_memcpy(p->dst.addr, &ip->daddr, 4);
		p->frag_id = bpf_ntohs(ip->id);
		p->frag_proto = proto;
	} else if (ip6) {
		p->src.family = FAM_V6;
		p->dst.family = FAM_V6;
		__builtin_memcpy(p->src.addr, &ip6->saddr, 16);
		__builtin_memcpy(p->dst.addr, &ip6->daddr, 16);
	}
	p->proto = proto;
	p->end = end;
	p->l4_off = l4_off;
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		p->sport = *(__be16 *)l4;
		p->dport = *(__be16 *)(l4 + 2);
	} else {
		p->icmp_type = l4[0];
		p->icmp_code = l4[1];
		p->echo_id = *(__be16 *)(l4 + 4);
	}
	return PARSE_OK;
}

/* parse_frame reads a frame from its Ethernet header into p (zeroed by the caller).
 *
 * The parsers are global functions: the verifier checks each once, on its own, and the caller
 * goes on with one state instead of one per path through the headers. */
__noinline int PN(parse_frame)(PARSE_CTX *ctx, struct pkt *p)
{
	struct ethhdr *eth;
	__u32 len;
	__be16 proto;

	if (!ctx || !p)
		return PARSE_MALFORMED;
	len = CTX_LEN(ctx);
	eth = PN(hdr)(ctx, 0, ETH_HLEN, len);
	if (!eth)
		return PARSE_MALFORMED;
	proto = eth->h_proto;
	if (CTX_VLAN(ctx) || proto == bpf_htons(ETH_P_8021Q) ||
	    proto == bpf_htons(ETH_P_8021AD) || proto == bpf_htons(ETH_P_QINQ))
		return PARSE_VLAN;
	if (proto == bpf_htons(ETH_P_IP))
		return PN(parse_ipv4)(ctx, ETH_HLEN, p, true, len);
	if (proto == bpf_htons(ETH_P_IPV6))
		return PN(parse_ipv6)(ctx, ETH_HLEN, p, true, len);
	if (proto == bpf_htons(ETH_P_ARP))
		return PARSE_ARP;
	return PARSE_NOT_IP;
}

/* parse reads a frame into p (zeroed by the caller): parse_fast, else parse_frame. */
static __always_inline int PN(parse)(PARSE_CTX *ctx, struct pkt *p)
{
	int res = PN(parse_fast)(ctx, p);

	if (res == PARSE_SLOW)
		res = PN(parse_frame)(ctx, p);
	return res;
}

#ifdef PARSE_QUOTED
/* parse_quoted reads the packet an ICMP(v6) error quotes, at off, of the error's family, up
 * to end, where the error ends. */
__noinline int PN(parse_quoted)(PARSE_CTX *ctx, __u32 off, __u8 family, __u32 end,
			    struct pkt *p)
{
	if (!ctx || !p)
		return PARSE_MALFORMED;
	if (family == FAM_V4)
		return PN(parse_ipv4)(ctx, off, p, false, end);
	return PN(parse_ipv6)(ctx, off, p, false, end);
}
#endif

#undef PARSE_CTX
#undef PN
#undef CTX_DATA
#undef CTX_DATA_END
#undef CTX_LEN
#undef CTX_PULL
#undef CTX_GSO
#undef CTX_VLAN
