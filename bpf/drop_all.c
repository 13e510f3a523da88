/* drop-all: drops every packet and counts it per destination.
 *
 * The program a FailClosed route gets when its own program cannot run. Valid on in, out
 * and xmit.
 */
#include "lwt_builtin.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, LWT_MAX_DESTINATIONS);
	__type(key, struct lwt_addr);
	__type(value, struct lwt_pkt_bytes);
	/* allocated on first use: a preallocated per-CPU table costs
	 * max_entries x value x CPUs even for a handful of pods */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drop_stats SEC(".maps");

SEC("lwt/drop_all")
int lwt_drop_all(struct __sk_buff *skb)
{
	struct lwt_pkt pkt;

	/* Non-IP packets are dropped too; they are counted under the all-zero address. */
	lwt_parse(skb, &pkt);
	lwt_count(&drop_stats, &pkt.dst, skb->len);
	return BPF_DROP;
}

char _license[] SEC("license") = "GPL";
