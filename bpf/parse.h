/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Header parsing shared by to_pod and from_pod: Ethernet, IPv4, IPv6 with its extension
 * headers, and the first bytes of TCP, UDP, ICMP and ICMPv6, into a struct pkt of plain
 * values. Packet bytes are read in place (direct packet access); a header that lies beyond
 * the skb's linear part is made linear with bpf_skb_pull_data first. parse_ctx.h holds the
 * parsers, for tc and for XDP.
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
	PARSE_SLOW, /* parse_fast: not a frame it reads; parse_frame reads it */
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

static __always_inline bool is_ext_hdr(__u8 nh)
{
	return nh == NH_HOP || nh == NH_ROUTING || nh == NH_FRAGMENT || nh == NH_DEST ||
	       nh == NH_AUTH;
}


/* tc: the skb's names. */
#define PARSE_CTX struct __sk_buff
#define PN(name) name
#define CTX_DATA(ctx) SKB_PTR(ctx, data)
#define CTX_DATA_END(ctx) SKB_PTR(ctx, data_end)
#define CTX_LEN(ctx) ((ctx)->len)
#define CTX_PULL(ctx, n) bpf_skb_pull_data(ctx, n)
#define CTX_GSO(ctx) ((ctx)->gso_size)
/* A tag the kernel took out of the frame (skb->vlan_tci) is a tag all the same. */
#define CTX_VLAN(ctx) ((ctx)->vlan_present)
/* Only tc reads the packets ICMP errors quote; XDP passes the errors on. */
#define PARSE_QUOTED
#include "parse_ctx.h"
#undef PARSE_QUOTED

/* XDP: the frame as the driver received it, in one buffer; what lies beyond it, GSO and a
 * tag the NIC stripped are unknown here, so such packets are passed to the stack, where tc
 * judges them. */
static __always_inline int xdp_cannot_pull(void)
{
	return -1;
}
#define PARSE_CTX struct xdp_md
#define PN(name) name##_xdp
#define CTX_DATA(ctx) ((void *)(long)(ctx)->data)
#define CTX_DATA_END(ctx) ((void *)(long)(ctx)->data_end)
#define CTX_LEN(ctx) ((__u32)((ctx)->data_end - (ctx)->data))
#define CTX_PULL(ctx, n) xdp_cannot_pull()
#define CTX_GSO(ctx) 0
#define CTX_VLAN(ctx) 0
#include "parse_ctx.h"

#endif
