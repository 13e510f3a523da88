/* The alternative the datapath benchmark compares port-filter against: the same verdict
 * (drop TCP/UDP to a denied destination port) done by a tc clsact program on the pod's
 * host-side veth (egress, i.e. towards the pod).
 *
 * A typical tc filter: a hash set of {port, proto} and header reads with bpf_skb_load_bytes,
 * the shape bpf/port_filter.c had before it moved to per-protocol port bitmaps and direct
 * packet access (issue 17); kept, so its figure stays comparable across runs. It keeps no
 * per-destination counters and has no source-prefix check: port-filter's extra work is part
 * of what the benchmark shows. IPv4 only, like the benchmark traffic.
 * Built by the benchmark harness at run time; never installed.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct pf_port_key {
	__u16 port;  /* host byte order */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct pf_port_key);
	__type(value, __u8);
} tc_pf_ports SEC(".maps");

SEC("tc")
int tc_port_filter(struct __sk_buff *skb)
{
	struct pf_port_key key = {};
	struct iphdr ip4;
	__be16 ports[2];
	__u32 l4_off;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip4, sizeof(ip4)) < 0)
		return TC_ACT_OK;
	if (ip4.protocol != IPPROTO_TCP && ip4.protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	if (bpf_ntohs(ip4.frag_off) & 0x1fff)
		return TC_ACT_OK;
	l4_off = ETH_HLEN + ip4.ihl * 4;
	if (bpf_skb_load_bytes(skb, l4_off, ports, sizeof(ports)) < 0)
		return TC_ACT_OK;
	key.port = bpf_ntohs(ports[1]);
	key.proto = ip4.protocol;
	return bpf_map_lookup_elem(&tc_pf_ports, &key) ? TC_ACT_SHOT : TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
