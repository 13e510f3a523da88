/* An LWT program the verifier accepts only with CAP_PERFMON: it adds a different constant
 * offset to a map-value pointer on each of two paths ("pointer arithmetic with it prohibited
 * for !root" without it). test_agent_capabilities.py compiles it and shows that the agent,
 * which does not hold CAP_PERFMON, refuses it with the verifier's reason in the status. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct pair {
	__u64 count[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pair);
} np_counts SEC(".maps");

SEC("lwt/needs_perfmon")
int needs_perfmon(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct pair *p = bpf_map_lookup_elem(&np_counts, &zero);

	if (p)
		p->count[skb->len > 100 ? 1 : 0] += 1;
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
