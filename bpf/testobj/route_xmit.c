/* Route-engine test program for the xmit hook: wraps the packet in an outer IPv4 header
 * (IP-in-IP) toward ROUTE_OUTER_DST with bpf_lwt_push_encap, then lets the kernel reroute
 * it by the outer destination. Load with `bpftool prog load route_xmit.o PIN type lwt_xmit`
 * and attach with headroom >= 20. */
#include "route_common.h"

/* 10.213.99.2: the test topology routes it plainly to the first pod. */
#define ROUTE_OUTER_DST bpf_htonl(0x0ad56302)

static __always_inline __u16 route_csum(struct iphdr *ip)
{
	__u16 *words = (__u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += words[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

SEC("lwt_xmit/push_ipip")
int route_push_ipip(struct __sk_buff *skb)
{
	struct iphdr inner, outer = {};

	if (bpf_skb_load_bytes(skb, 0, &inner, sizeof(inner)) < 0 || inner.version != 4)
		return BPF_OK;
	outer.version = 4;
	outer.ihl = 5;
	outer.ttl = 64;
	outer.protocol = IPPROTO_IPIP;
	outer.tot_len = bpf_htons(skb->len + sizeof(outer));
	outer.saddr = inner.saddr;
	outer.daddr = ROUTE_OUTER_DST;
	outer.check = route_csum(&outer);
	if (bpf_lwt_push_encap(skb, BPF_LWT_ENCAP_IP, &outer, sizeof(outer)) < 0)
		return BPF_DROP;
	return BPF_LWT_REROUTE;
}

char _license[] SEC("license") = "GPL";
