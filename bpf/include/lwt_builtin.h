/* Shared definitions of the built-in LWT programs.
 *
 * Every built-in is loaded once and attached to many routes, so per-destination state is
 * keyed by the packet's destination address. Both families use one 16-byte key: IPv6
 * addresses as they are, IPv4 addresses IPv4-mapped (::ffff:a.b.c.d), so one map serves
 * both and user space decodes keys with one rule.
 *
 * LWT programs see the packet from the network header on, on every hook (in, out, xmit).
 * The fast paths read headers by direct packet access (skb->data .. data_end, readable on
 * all three hooks): no helper call per header. When a header is not in the linear part of
 * the skb they fall back to bpf_skb_load_bytes(), which copes with non-linear skbs.
 *
 * Every built-in loads with CAP_BPF + CAP_NET_ADMIN alone. Without CAP_PERFMON the verifier
 * applies its Spectre v1 rules to pointer arithmetic on map values: the same instruction must
 * add the same kind of offset (a constant, or an unknown bounded scalar) on every path that
 * reaches it ("pointer arithmetic with it prohibited for !root"). clang merges
 * `if (c) v->a += 1; else v->b += 1;` into `*(v + (c ? off_b : off_a)) += 1`, which breaks
 * that rule; LWT_ADD() keeps each path's access at its own constant offset.
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
/* Slots of the per-CPU destination cache in front of each per-destination hash (see
 * lwt_cache_slot below); a power of two. */
#define LWT_CACHE_SLOTS 128
#define LWT_CACHE_BITS 7

/* Adds n to a u64 field of a map value at the field's own constant offset: the empty asm
 * hides the address from the optimiser, so clang cannot turn two branches' stores into one
 * store at a computed offset (see above). Costs nothing at run time. */
#define LWT_ADD(field, n)                                   \
	do {                                                \
		__u64 *lwt_add_p_ = &(field);               \
		asm volatile("" : "+r"(lwt_add_p_));        \
		*lwt_add_p_ += (n);                         \
	} while (0)

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

/* Direct packet access: the bounds of the linear part of the skb. A header is read directly
 * when `start + offset + size <= end` (checked against data_end, as the verifier requires),
 * and through bpf_skb_load_bytes() otherwise. */
#define LWT_DATA(skb) ((void *)(long)(skb)->data)
#define LWT_DATA_END(skb) ((void *)(long)(skb)->data_end)

/* Reads the IP version and the destination: 4 or 6, 0 for anything not IP (dst zeroed).
 * Direct access when the IP header is linear (always, in practice), helpers otherwise. */
static __always_inline int lwt_read_dst(struct __sk_buff *skb, struct lwt_addr *dst)
{
	void *data = LWT_DATA(skb);
	void *end = LWT_DATA_END(skb);
	struct lwt_pkt pkt;

	if (data + sizeof(struct iphdr) <= end) {
		struct iphdr *ip4 = data;

		if (ip4->version == 4) {
			lwt_map_v4(dst, ip4->daddr);
			return 4;
		}
		if (ip4->version == 6 && data + sizeof(struct ipv6hdr) <= end) {
			struct ipv6hdr *ip6 = data;

			__builtin_memcpy(dst, &ip6->daddr, 16);
			return 6;
		}
	}
	if (lwt_parse(skb, &pkt) < 0) {
		__builtin_memset(dst, 0, sizeof(*dst));
		return 0;
	}
	__builtin_memcpy(dst, &pkt.dst, sizeof(*dst));
	return pkt.version;
}

/* lwt_parse() by direct packet access for the common shapes (IPv4, IPv6 without extension
 * headers, header linear); anything else goes through lwt_parse(). The source address is
 * filled in only when want_src is set: most callers have no use for it. */
static __always_inline int lwt_parse_fast(struct __sk_buff *skb, struct lwt_pkt *pkt,
					  int want_src)
{
	void *data = LWT_DATA(skb);
	void *end = LWT_DATA_END(skb);

	if (data + sizeof(struct iphdr) <= end) {
		struct iphdr *ip4 = data;

		if (ip4->version == 4) {
			pkt->version = 4;
			lwt_map_v4(&pkt->dst, ip4->daddr);
			if (want_src)
				lwt_map_v4(&pkt->src, ip4->saddr);
			pkt->l4_proto = ip4->protocol;
			/* Only the first fragment carries the L4 header. */
			pkt->l4_off = (ip4->frag_off & bpf_htons(0x1fff)) ? 0 : ip4->ihl * 4;
			return 0;
		}
		if (ip4->version == 6 && data + sizeof(struct ipv6hdr) <= end) {
			struct ipv6hdr *ip6 = data;

			if (!lwt_is_ext_hdr(ip6->nexthdr) && ip6->nexthdr != IPPROTO_FRAGMENT) {
				pkt->version = 6;
				__builtin_memcpy(&pkt->dst, &ip6->daddr, 16);
				if (want_src)
					__builtin_memcpy(&pkt->src, &ip6->saddr, 16);
				pkt->l4_proto = ip6->nexthdr;
				pkt->l4_off = sizeof(struct ipv6hdr);
				return 0;
			}
		}
	}
	return lwt_parse(skb, pkt);
}

/* The destination port of a TCP or UDP header at l4_off (host byte order), -1 if unreadable.
 * TCP and UDP both start with source port, destination port. Without CAP_PERFMON the
 * verifier refuses a packet pointer plus a variable offset, so direct access is at constant
 * offsets only: right after an option-less IPv4 header or a bare IPv6 header (nearly every
 * packet); anything else takes the helper. */
#define LWT_DPORT_AT(skb, off)                                                 \
	({                                                                      \
		void *lwt_d_ = LWT_DATA(skb);                                   \
		int lwt_r_ = -2;                                                \
		if (lwt_d_ + (off) + 4 <= LWT_DATA_END(skb))                    \
			lwt_r_ = bpf_ntohs(((__be16 *)(lwt_d_ + (off)))[1]);   \
		lwt_r_;                                                         \
	})

static __always_inline int lwt_read_dport(struct __sk_buff *skb, __u32 l4_off)
{
	__be16 ports[2];
	int port = -2;

	if (l4_off == sizeof(struct iphdr))
		port = LWT_DPORT_AT(skb, sizeof(struct iphdr));
	else if (l4_off == sizeof(struct ipv6hdr))
		port = LWT_DPORT_AT(skb, sizeof(struct ipv6hdr));
	if (port >= 0)
		return port;
	if (bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)) < 0)
		return -1;
	return bpf_ntohs(ports[1]);
}

/* The per-destination counters sit behind a hash lookup (jhash of 16 bytes, a bucket walk):
 * measured at ~35 ns per packet here, most of a built-in's own work. In front of it, each
 * program keeps a small per-CPU direct-mapped cache: a PERCPU_ARRAY of LWT_CACHE_SLOTS slots
 * {destination, counters}, indexed by a multiplicative hash of the destination. Its lookup
 * is inlined by the kernel (an address computation). A destination owns the slot it claimed
 * first on that CPU (an all-zero destination means free); one that finds its slot taken by
 * another destination is counted in the hash as before. Readers add both
 * (program_config.read_destination_counters), so every packet is counted exactly once. */
static __always_inline __u32 lwt_cache_slot(const struct lwt_addr *dst)
{
	__u64 lo, hi;

	__builtin_memcpy(&lo, &dst->a[0], 8);
	__builtin_memcpy(&hi, &dst->a[8], 8);
	lo ^= hi;
	lo ^= lo >> 32;
	return ((__u32)lo * 0x9e3779b1u) >> (32 - LWT_CACHE_BITS);
}

/* 1 when `slot` (the first 16 bytes of a cache value) holds dst, claiming it when free. */
static __always_inline int lwt_cache_owns(struct lwt_addr *slot, const struct lwt_addr *dst)
{
	__u64 *s = (__u64 *)slot;
	__u64 lo, hi;

	__builtin_memcpy(&lo, &dst->a[0], 8);
	__builtin_memcpy(&hi, &dst->a[8], 8);
	if (s[0] == lo && s[1] == hi)
		return 1;
	if (s[0] == 0 && s[1] == 0) {
		s[0] = lo;
		s[1] = hi;
		return 1;
	}
	return 0;
}

/* Adds one packet to a per-CPU per-destination counter, creating the entry on first use.
 * Returns -1 when the map is full (the caller counts that). */
static __always_inline int lwt_count(void *map, const struct lwt_addr *dst, __u64 len)
{
	struct lwt_pkt_bytes *v = bpf_map_lookup_elem(map, dst);

	if (v) {
		/* per-CPU value: no other CPU writes it, a plain add is enough */
		LWT_ADD(v->packets, 1);
		LWT_ADD(v->bytes, len);
		return 0;
	}
	struct lwt_pkt_bytes init = { .packets = 1, .bytes = len };

	if (bpf_map_update_elem(map, dst, &init, BPF_NOEXIST) == 0)
		return 0;
	/* lost a race with another CPU creating the entry: retry once */
	v = bpf_map_lookup_elem(map, dst);
	if (!v)
		return -1;
	LWT_ADD(v->packets, 1);
	LWT_ADD(v->bytes, len);
	return 0;
}

#endif
