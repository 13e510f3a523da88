// Loader test object: an array of maps (map-in-map); the loader must refuse it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner);
} outer SEC(".maps");

SEC("lwt_in_mim")
int mim_in(struct __sk_buff *skb)
{
	__u32 k = 0;
	void *m = bpf_map_lookup_elem(&outer, &k);
	return m ? BPF_DROP : BPF_OK;
}

char _license[] SEC("license") = "GPL";
