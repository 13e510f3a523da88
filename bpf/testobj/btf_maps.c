// Loader test object: BTF-defined maps of several kinds, one pinned by name.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct flow_key {
	__u32 hash;
	__u32 proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} pkt_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flow_key);
	__type(value, __u64);
} flow_bytes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shared_cfg SEC(".maps");

SEC("lwt_out_btf")
int count_out(struct __sk_buff *skb)
{
	__u32 idx = 0;
	__u64 *cnt = bpf_map_lookup_elem(&pkt_count, &idx);
	if (cnt)
		*cnt += 1;

	struct flow_key key = { .hash = skb->hash, .proto = skb->protocol };
	__u64 *bytes = bpf_map_lookup_elem(&flow_bytes, &key);
	if (bytes) {
		__sync_fetch_and_add(bytes, skb->len);
	} else {
		__u64 len = skb->len;
		bpf_map_update_elem(&flow_bytes, &key, &len, BPF_NOEXIST);
	}

	__u32 *drop = bpf_map_lookup_elem(&shared_cfg, &idx);
	if (drop && *drop)
		return BPF_DROP;
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
