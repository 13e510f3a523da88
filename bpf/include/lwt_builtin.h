/* Shared definitions of the built-in LWT programs.
 *
 * Every built-in is loaded once and attached to many routes, so per-destination state is
 * keyed by the packet's destination address. Both families use one 16-byte key: IPv6
 * addresses as they are, IPv4 addresses IPv4-mapped (::ffff:a.b.c.d), so one map serves
 * both and user space decodes keys with one rule.
 *
 * LWT programs see the packet from the network header on, on every hook (in, out, xmit).
 * Headers are read with bpf_skb_load_bytes() rather than direct packet access: it copes
 * with non-linear skbs and is allowed on all three hooks.
 */
#ifndef LWT_BUILTIN_H
#define LWT_BUILTIN_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Map sizes: the catalogue (lwt_policy/catalogue.py) repeats these numbers and the agent
 * checks them against the maps the kernel created (program_config.check_map_layout). */
#define LWT_MAX_DESTINATIONS 16384
#define LWT_HIST_BUCKETS 16

struct lwt_addr {
	__u8 a[16];
};

/* What the programs learn from the network header. */
struct lwt_pkt {
	struct lwt_addr dst;
	struct lwt_addr src;
	__u32 l4_off;   /* offset of the L4 header; 0 when unknown (non-first fragment...) */
	__u8 version;   /* 4 or 6; 0: not IP */
	__u8 l4_proto;  /* IPPROTO_*, after IPv6 extension headers */
};

/* Per-destination packet and byte counter pair, used by several programs. */
struct lwt_pkt_bytes {
	__u64 packets;
	__u64 bytes;
};

static __always_inline void lwt_map_v4(struct lwt_addr *out, __u32 be_addr)
{
	__builtin_memset(out, 0, sizeof(*out));
	out->a[10] = 0xff;
	out->a[11] = 0xff;
	__builtin_memcpy(&out->a[12], &be_addr, 4);
}

static __always_inline int lwt_is_ext_hdr(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_DSTOPTS;
}

#define LWT_MAX_EXT_HDRS 4

/* Parses the IP header at offset 0. Returns 0 on success, -1 for anything not IPv4/IPv6
 * (the callers decide what a non-IP packet means for them). */
static __always_inline int lwt_parse(struct __sk_buff *skb, struct lwt_pkt *pkt)
{
	__u8 first;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	if (bpf_skb_load_bytes(skb, 0, &first, 1) < 0)
		return -1;

	if ((first >> 4) == 4) {
		struct iphdr ip4;

		if (bpf_skb_load_bytes(skb, 0, &ip4, sizeof(ip4)) < 0)
			return -1;
		pkt->version = 4;
		lwt_map_v4(&pkt->dst, ip4.daddr);
		lwt_map_v4(&pkt->src, ip4.saddr);
		pkt->l4_proto = ip4.protocol;
		/* Only the first fragment carries the L4 header. */
		if ((bpf_ntohs(ip4.frag_off) & 0x1fff) == 0)
			pkt->l4_off = ip4.ihl * 4;
		return 0;
	}
	if ((first >> 4) == 6) {
		struct ipv6hdr ip6;
		__u32 off = sizeof(struct ipv6hdr);
		__u8 nexthdr;
		int i;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
			return -1;
		pkt->version = 6;
		__builtin_memcpy(&pkt->dst, &ip6.daddr, 16);
		__builtin_memcpy(&pkt->src, &ip6.saddr, 16);
		nexthdr = ip6.nexthdr;
#pragma unroll
		for (i = 0; i < LWT_MAX_EXT_HDRS; i++) {
			__u8 ext[2];

			if (!lwt_is_ext_hdr(nexthdr))
				break;
			if (bpf_skb_load_bytes(skb, off, ext, 2) < 0)
				return 0;
			nexthdr = ext[0];
			off += (ext[1] + 1) * 8;
		}
		pkt->l4_proto = nexthdr;
		if (nexthdr == IPPROTO_FRAGMENT) {
			__u8 frag[4];

			/* fragment header: nexthdr, reserved, offset(13 bits)|flags */
			if (bpf_skb_load_bytes(skb, off, frag, 4) < 0)
				return 0;
			pkt->l4_proto = frag[0];
			if ((((__u16)frag[2] << 8 | frag[3]) & 0xfff8) != 0)
				return 0;
			off += 8;
		}
		if (!lwt_is_ext_hdr(pkt->l4_proto))
			pkt->l4_off = off;
		return 0;
	}
	return -1;
}

/* Adds one packet to a per-CPU per-destination counter, creating the entry on first use.
 * Returns -1 when the map is full (the caller counts that). */
static __always_inline int lwt_count(void *map, const struct lwt_addr *dst, __u64 len)
{
	struct lwt_pkt_bytes *v = bpf_map_lookup_elem(map, dst);

	if (v) {
		/* per-CPU value: no other CPU writes it, a plain add is enough */
		v->packets += 1;
		v->bytes += len;
		return 0;
	}
	struct lwt_pkt_bytes init = { .packets = 1, .bytes = len };

	if (bpf_map_update_elem(map, dst, &init, BPF_NOEXIST) == 0)
		return 0;
	/* lost a race with another CPU creating the entry: retry once */
	v = bpf_map_lookup_elem(map, dst);
	if (!v)
		return -1;
	v->packets += 1;
	v->bytes += len;
	return 0;
}

#endif
