/* Helpers shared by the route engine's test programs (bpf/testobj/route_*.c). */
#ifndef ROUTE_COMMON_H
#define ROUTE_COMMON_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Destination port of a TCP/UDP packet (IPv4 without fragments, IPv6 without extension
 * headers: enough for the tests); -1 for anything else. */
static __always_inline int route_dport(struct __sk_buff *skb)
{
	__u8 first, proto;
	__u32 off;
	__be16 port;

	if (bpf_skb_load_bytes(skb, 0, &first, 1) < 0)
		return -1;
	if ((first >> 4) == 4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
			return -1;
		if (ip.frag_off & bpf_htons(0x1fff))
			return -1;
		proto = ip.protocol;
		off = ip.ihl * 4;
	} else if ((first >> 4) == 6) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
			return -1;
		proto = ip6.nexthdr;
		off = sizeof(ip6);
	} else {
		return -1;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return -1;
	if (bpf_skb_load_bytes(skb, off + 2, &port, sizeof(port)) < 0)
		return -1;
	return bpf_ntohs(port);
}

/* The last 4 bytes of the destination address (the IPv4 address; the low bits of IPv6). */
static __always_inline __u32 route_dst_key(struct __sk_buff *skb)
{
	__u8 first;
	__u32 key = 0;

	if (bpf_skb_load_bytes(skb, 0, &first, 1) < 0)
		return 0;
	if ((first >> 4) == 4)
		bpf_skb_load_bytes(skb, 16, &key, sizeof(key));
	else if ((first >> 4) == 6)
		bpf_skb_load_bytes(skb, 36, &key, sizeof(key));
	return key;
}

#endif
