/* counters: per-destination packet and byte counters and a log2 packet-length histogram.
 *
 * Valid on in, out and xmit; it never changes or drops a packet. One load serves every
 * route of a policy: the counters are keyed by destination address (lwt_builtin.h).
 */
#include "lwt_builtin.h"

struct cnt_value {
	__u64 packets;
	__u64 bytes;
	/* hist[i] counts packets with 2^i <= len < 2^(i+1); the last bucket also takes
	 * everything longer (GSO super-packets). */
	__u64 hist[LWT_HIST_BUCKETS];
};

/* Packets the program could not attribute: index 0 not IP, index 1 destination table full. */
#define CNT_ERR_NOT_IP 0
#define CNT_ERR_MAP_FULL 1

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, LWT_MAX_DESTINATIONS);
	__type(key, struct lwt_addr);
	__type(value, struct cnt_value);
	/* allocated on first use: a preallocated per-CPU table costs
	 * max_entries x value x CPUs even for a handful of pods */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cnt_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cnt_errors SEC(".maps");

static __always_inline __u32 log2_bucket(__u32 v)
{
	__u32 r = 0;

	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r < LWT_HIST_BUCKETS ? r : LWT_HIST_BUCKETS - 1;
}

static __always_inline void count_error(__u32 index)
{
	__u64 *v = bpf_map_lookup_elem(&cnt_errors, &index);

	if (v)
		*v += 1;
}

SEC("lwt/counters")
int lwt_counters(struct __sk_buff *skb)
{
	struct lwt_pkt pkt;
	struct cnt_value *v;
	__u32 len = skb->len;
	__u32 bucket = log2_bucket(len);

	if (lwt_parse(skb, &pkt) < 0) {
		count_error(CNT_ERR_NOT_IP);
		return BPF_OK;
	}
	v = bpf_map_lookup_elem(&cnt_stats, &pkt.dst);
	if (!v) {
		struct cnt_value init = {};

		/* BPF_NOEXIST: another CPU may have created the entry meanwhile; either way
		 * the lookup below finds it. */
		bpf_map_update_elem(&cnt_stats, &pkt.dst, &init, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&cnt_stats, &pkt.dst);
		if (!v) {
			count_error(CNT_ERR_MAP_FULL);
			return BPF_OK;
		}
	}
	v->packets += 1;
	v->bytes += len;
	if (bucket < LWT_HIST_BUCKETS)
		v->hist[bucket] += 1;
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
