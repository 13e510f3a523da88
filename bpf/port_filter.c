/* port-filter: drops packets by (L4 protocol, destination port) and by source prefix.
 *
 * Valid on in, out and xmit (it only reads the packet and returns BPF_OK or BPF_DROP).
 * Configuration lives in maps so a policy change is a map rewrite, never a re-attach:
 *   pf_config  one array slot: flags, which checks the config needs
 *   pf_ports   two array slots, [0] TCP and [1] UDP: one bit per destination port, so a
 *              port check is a bit test in a value whose lookup the kernel inlines, not a
 *              hash lookup
 *   pf_srcs    LPM trie of source prefixes -> 1 deny / 0 not denied; IPv4 prefixes are
 *              IPv4-mapped (prefix len + 96); looked up only when PF_HAS_SRCS is set
 * Per-destination pass/drop counters go to pf_stats. A packet no configured check can match
 * (no ports for its protocol, no source prefixes) costs the parse and the count only.
 */
#include "lwt_builtin.h"

#define PF_HAS_SRCS 1  /* pf_srcs holds at least one prefix */
#define PF_HAS_TCP 2   /* at least one TCP port denied */
#define PF_HAS_UDP 4   /* at least one UDP port denied */
#define PF_PORT_BYTES (65536 / 8)

struct pf_config {
	__u32 flags;  /* PF_HAS_* */
};

/* port P is bit (P & 7) of byte P >> 3 */
struct pf_port_bits {
	__u8 bits[PF_PORT_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);  /* [0] TCP, [1] UDP */
	__type(key, __u32);
	__type(value, struct pf_port_bits);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pf_ports SEC(".maps");

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
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pf_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pf_config SEC(".maps");

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

/* A slot of the per-CPU destination cache (lwt_builtin.h): all-zero dst = free. */
struct pf_slot {
	struct lwt_addr dst;
	struct pf_stats_value v;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LWT_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct pf_slot);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pf_cache SEC(".maps");

static __always_inline int source_denied(const struct lwt_pkt *pkt)
{
	struct pf_src_key src = { .prefixlen = 128 };
	__u8 *verdict;

	__builtin_memcpy(src.addr, pkt->src.a, 16);
	/* 1: deny. 0: an explicit "not denied" entry, which user space adds for the
	 * IPv4-mapped block when an IPv6 prefix such as ::/0 would otherwise cover IPv4. */
	verdict = bpf_map_lookup_elem(&pf_srcs, &src);
	return verdict && *verdict;
}

static __always_inline int port_denied(struct __sk_buff *skb, const struct lwt_pkt *pkt,
				       __u32 flags)
{
	struct pf_port_bits *ports;
	__u32 udp;
	int port;

	if (!pkt->l4_off)
		return 0;  /* not the first fragment, or ports not found */
	if (pkt->l4_proto == IPPROTO_TCP && (flags & PF_HAS_TCP))
		udp = 0;
	else if (pkt->l4_proto == IPPROTO_UDP && (flags & PF_HAS_UDP))
		udp = 1;
	else
		return 0;  /* nothing denied for this protocol: no need to read the port */
	port = lwt_read_dport(skb, pkt->l4_off);
	if (port < 0)
		return 0;
	/* One slot per protocol rather than one bitmap of both: without CAP_PERFMON the
	 * verifier wants the variable offset added to a map value pointer to have the same
	 * bounds on every path, so the protocol picks the slot, the port only the byte. */
	ports = bpf_map_lookup_elem(&pf_ports, &udp);
	if (!ports)
		return 0;
	return (ports->bits[(__u32)port >> 3] >> (port & 7)) & 1;
}

static __always_inline void account(const struct lwt_pkt *pkt, __u32 len, int drop)
{
	__u32 index = lwt_cache_slot(&pkt->dst);
	struct pf_slot *slot = bpf_map_lookup_elem(&pf_cache, &index);
	struct pf_stats_value *v;

	if (slot && lwt_cache_owns(&slot->dst, &pkt->dst))
		v = &slot->v;
	else
		v = bpf_map_lookup_elem(&pf_stats, &pkt->dst);
	if (!v) {
		struct pf_stats_value init = {};

		bpf_map_update_elem(&pf_stats, &pkt->dst, &init, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&pf_stats, &pkt->dst);
		if (!v)
			return;  /* table full: the verdict still applies, only the count is lost */
	}
	/* per-CPU value: no other CPU writes it, a plain add is enough */
	if (drop) {
		LWT_ADD(v->dropped_packets, 1);
		LWT_ADD(v->dropped_bytes, len);
	} else {
		LWT_ADD(v->passed_packets, 1);
		LWT_ADD(v->passed_bytes, len);
	}
}

SEC("lwt/port_filter")
int lwt_port_filter(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct pf_config *cfg = bpf_map_lookup_elem(&pf_config, &zero);
	struct lwt_pkt pkt;
	__u32 flags;
	int drop;

	if (!cfg)
		return BPF_OK;
	flags = cfg->flags;
	/* Not IP: nothing to match on, let it through. */
	if (lwt_parse_fast(skb, &pkt, flags & PF_HAS_SRCS) < 0)
		return BPF_OK;
	drop = ((flags & PF_HAS_SRCS) && source_denied(&pkt)) ||
	       port_denied(skb, &pkt, flags);
	account(&pkt, skb->len, drop);
	return drop ? BPF_DROP : BPF_OK;
}

char _license[] SEC("license") = "GPL";
