/* sampler: sends 1 in N packets' headers to user space through a BPF ring buffer.
 *
 * Valid on in, out and xmit. smp_config holds N (one_in; 0 turns sampling off) and the
 * number of packet bytes to copy (snap_len, at most SMP_MAX_SNAP). Each sample carries the
 * destination, the packet length and the metadata every LWT hook may read, so one record
 * format serves all hooks. smp_stats counts packets seen, samples sent and samples lost
 * because the ring buffer was full.
 */
#include "lwt_builtin.h"

#define SMP_MAX_SNAP 128
#define SMP_RING_BYTES (256 * 1024)

struct smp_config {
	__u32 one_in;    /* sample 1 in one_in packets; 0: sampling off */
	__u32 snap_len;  /* packet bytes to copy into a sample, 0..SMP_MAX_SNAP */
};

struct smp_stats_value {
	__u64 seen;
	__u64 sampled;
	__u64 ring_full;  /* samples lost: bpf_ringbuf_reserve() failed */
};

/* The record user space reads (lwt_policy/sampler.py decode_sample). */
struct smp_sample {
	struct lwt_addr dst;     /* IPv4-mapped for IPv4 */
	__u64 timestamp_ns;      /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 pkt_len;           /* skb->len */
	__u32 mark;
	__u32 ifindex;
	__u32 ingress_ifindex;
	__u32 hash;
	__u16 protocol;          /* skb->protocol, network byte order as the kernel keeps it */
	__u8 version;            /* 4, 6, or 0 when not IP */
	__u8 l4_proto;
	__u32 cpu;
	__u32 captured;          /* bytes of data[] that are valid */
	__u8 data[SMP_MAX_SNAP];
};

_Static_assert(sizeof(struct smp_sample) == 184, "lwt_policy/sampler.py SAMPLE_FORMAT repeats this layout");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct smp_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} smp_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct smp_stats_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} smp_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SMP_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} smp_ring SEC(".maps");

SEC("lwt/sampler")
int lwt_sampler(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct smp_config *cfg = bpf_map_lookup_elem(&smp_config, &zero);
	struct smp_stats_value *stats = bpf_map_lookup_elem(&smp_stats, &zero);
	struct smp_sample *s;
	struct lwt_pkt pkt;
	__u32 snap;

	if (!cfg || !stats)
		return BPF_OK;
	LWT_ADD(stats->seen, 1);
	if (cfg->one_in == 0 || bpf_get_prandom_u32() % cfg->one_in != 0)
		return BPF_OK;

	s = bpf_ringbuf_reserve(&smp_ring, sizeof(*s), 0);
	if (!s) {
		LWT_ADD(stats->ring_full, 1);
		return BPF_OK;
	}
	lwt_parse(skb, &pkt);
	__builtin_memcpy(&s->dst, &pkt.dst, sizeof(s->dst));
	s->timestamp_ns = bpf_ktime_get_ns();
	s->pkt_len = skb->len;
	s->mark = skb->mark;
	s->ifindex = skb->ifindex;
	s->ingress_ifindex = skb->ingress_ifindex;
	s->hash = skb->hash;
	s->protocol = (__u16)skb->protocol;
	s->version = pkt.version;
	s->l4_proto = pkt.l4_proto;
	s->cpu = bpf_get_smp_processor_id();

	snap = cfg->snap_len;
	if (snap > skb->len)
		snap = skb->len;
	if (snap > SMP_MAX_SNAP)
		snap = SMP_MAX_SNAP;
	s->captured = 0;
	/* bpf_skb_load_bytes() needs a length the verifier can bound to 1..SMP_MAX_SNAP */
	if (snap > 0 && bpf_skb_load_bytes(skb, 0, s->data, snap) == 0)
		s->captured = snap;
	bpf_ringbuf_submit(s, 0);
	LWT_ADD(stats->sampled, 1);
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
