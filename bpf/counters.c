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

/* A slot of the per-CPU destination cache (lwt_builtin.h): all-zero dst = free. */
struct cnt_slot {
	struct lwt_addr dst;
	struct cnt_value v;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LWT_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct cnt_slot);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cnt_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cnt_errors SEC(".maps");

/* floor(log2(len)), 0 for 0 and 1, capped at LWT_HIST_BUCKETS - 1, with shifts and masks
 * only: the verifier then sees one unknown index in 0..15 on every path (a branchy log2
 * gives a different constant per path, which it refuses as an offset without CAP_PERFMON),
 * and there is no branch to mispredict. No comparison either: clang turns those into
 * branches on BPF. */
static __always_inline __u64 log2_bucket(__u64 len)
{
	__u64 x = len & 0xffffffff;

	/* smear the top bit down: x = 2^(k+1) - 1 for k = floor(log2(len)) */
	x |= x >> 1;
	x |= x >> 2;
	x |= x >> 4;
	x |= x >> 8;
	x |= x >> 16;
	/* k ones; keeping 15 of them caps k at 15 */
	x = (x >> 1) & 0x7fff;
	/* popcount */
	x = x - ((x >> 1) & 0x5555);
	x = (x & 0x3333) + ((x >> 2) & 0x3333);
	x = (x + (x >> 4)) & 0x0f0f;
	x = (x + (x >> 8)) & 0x1f;
	return x & (LWT_HIST_BUCKETS - 1);  /* x <= 15 already; the mask tells the verifier */
}

static __always_inline void count_error(__u32 index)
{
	__u64 *v = bpf_map_lookup_elem(&cnt_errors, &index);

	if (v)
		LWT_ADD(*v, 1);
}

/* Adds one packet. The histogram slot's address is computed on the caller's path and hidden
 * from the optimiser: the two callers count into values of different maps, and a shared
 * `pointer + variable offset` instruction would be refused without CAP_PERFMON. */
static __always_inline void cnt_add(struct cnt_value *v, __u32 len, __u64 bucket)
{
	__u64 *h = &v->hist[bucket];

	asm volatile("" : "+r"(h));
	LWT_ADD(v->packets, 1);
	LWT_ADD(v->bytes, len);
	*h += 1;
}

SEC("lwt/counters")
int lwt_counters(struct __sk_buff *skb)
{
	struct lwt_addr dst;
	struct cnt_value *v;
	struct cnt_slot *slot;
	__u32 len = skb->len;
	__u64 bucket = log2_bucket(len);
	__u32 index;

	if (!lwt_read_dst(skb, &dst)) {
		count_error(CNT_ERR_NOT_IP);
		return BPF_OK;
	}
	/* per-CPU values: no other CPU writes them, plain adds are enough */
	index = lwt_cache_slot(&dst);
	slot = bpf_map_lookup_elem(&cnt_cache, &index);
	if (slot && lwt_cache_owns(&slot->dst, &dst)) {
		cnt_add(&slot->v, len, bucket);
		return BPF_OK;
	}
	v = bpf_map_lookup_elem(&cnt_stats, &dst);
	if (!v) {
		struct cnt_value init = {};

		/* BPF_NOEXIST: another CPU may have created the entry meanwhile; either way
		 * the lookup below finds it. */
		bpf_map_update_elem(&cnt_stats, &dst, &init, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&cnt_stats, &dst);
		if (!v) {
			count_error(CNT_ERR_MAP_FULL);
			return BPF_OK;
		}
	}
	cnt_add(v, len, bucket);
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
