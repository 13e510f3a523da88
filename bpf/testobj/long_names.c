// Loader test object: program and map names longer than the kernel's 15 characters, and a
// map name with a character the kernel refuses; the loader must sanitise and truncate.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} a_map_with_a_rather_long_name SEC(".maps");

SEC("lwt_xmit/with/slashes")
int a_program_with_a_very_long_name(struct __sk_buff *skb)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&a_map_with_a_rather_long_name, &k);
	if (v)
		*v += 1;
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
