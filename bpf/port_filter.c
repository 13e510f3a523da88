/* port-filter: drops packets by (L4 protocol, destination port) and by source prefix.
 *
 * Valid on in, out and xmit (it only reads the packet and returns BPF_OK or BPF_DROP).
 * Configuration lives in maps so a policy change is a map rewrite, never a re-attach:
 *   pf_ports  hash set of {destination port (host order), IPPROTO_TCP/UDP}
 *   pf_srcs   LPM trie of source prefixes -> 1 deny / 0 not denied; IPv4 prefixes are
 *             IPv4-mapped (prefix len + 96)
 * Per-destination pass/drop counters go to pf_stats.
 */
#include "lwt_builtin.h"

struct pf_port_key {
	__u16 port;  /* host byte order */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct pf_src_key {
	__u32 prefixlen;  /* bits of addr that must match, 0..128 */
	__u8 addr[16];    /* IPv6, or IPv4-mapped IPv6 */
};

struct pf_stats_value {
	__u64 passed_packets;
	__u64 passed_bytes;
	__u64 dropped_packets;
	__u64 dropped_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct pf_port_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pf_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct pf_src_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);  /* required for LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pf_srcs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, LWT_MAX_DESTINATIONS);
	__type(key, struct lwt_addr);
	__type(value, struct pf_stats_value);
	/* allocated on first use: a preallocated per-CPU table costs
	 * max_entries x value x CPUs even for a handful of pods */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pf_stats SEC(".maps");

static __always_inline int denied(struct __sk_buff *skb, const struct lwt_pkt *pkt)
{
	struct pf_src_key src = { .prefixlen = 128 };

	__u8 *verdict;

	__builtin_memcpy(src.addr, pkt->src.a, 16);
	/* 1: deny. 0: an explicit "not denied" entry, which user space adds for the
	 * IPv4-mapped block when an IPv6 prefix such as ::/0 would otherwise cover IPv4. */
	verdict = bpf_map_lookup_elem(&pf_srcs, &src);
	if (verdict && *verdict)
		return 1;

	if (pkt->l4_off && (pkt->l4_proto == IPPROTO_TCP || pkt->l4_proto == IPPROTO_UDP)) {
		struct pf_port_key key = { .proto = pkt->l4_proto };
		__be16 ports[2];  /* TCP and UDP both start with source port, destination port */

		if (bpf_skb_load_bytes(skb, pkt->l4_off, ports, sizeof(ports)) < 0)
			return 0;
		key.port = bpf_ntohs(ports[1]);
		if (bpf_map_lookup_elem(&pf_ports, &key))
			return 1;
	}
	return 0;
}

static __always_inline void account(const struct lwt_pkt *pkt, __u32 len, int drop)
{
	struct pf_stats_value *v = bpf_map_lookup_elem(&pf_stats, &pkt->dst);

	if (!v) {
		struct pf_stats_value init = {};

		bpf_map_update_elem(&pf_stats, &pkt->dst, &init, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&pf_stats, &pkt->dst);
		if (!v)
			return;  /* table full: the verdict still applies, only the count is lost */
	}
	if (drop) {
		v->dropped_packets += 1;
		v->dropped_bytes += len;
	} else {
		v->passed_packets += 1;
		v->passed_bytes += len;
	}
}

SEC("lwt/port_filter")
int lwt_port_filter(struct __sk_buff *skb)
{
	struct lwt_pkt pkt;
	int drop;

	/* Not IP: nothing to match on, let it through. */
	if (lwt_parse(skb, &pkt) < 0)
		return BPF_OK;
	drop = denied(skb, &pkt);
	account(&pkt, skb->len, drop);
	return drop ? BPF_DROP : BPF_OK;
}

char _license[] SEC("license") = "GPL";
