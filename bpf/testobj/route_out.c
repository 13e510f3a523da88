/* Route-engine test programs for the out hook (and in: the same code loads as lwt_in).
 * Load with `bpftool prog loadall route_out.o DIR type lwt_out pinmaps MAPDIR`. */
#include "route_common.h"

/* Packets seen per destination (key: route_dst_key), by route_count. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} route_cnt SEC(".maps");

SEC("lwt_out/drop_a")
int route_drop_a(struct __sk_buff *skb)
{
	return route_dport(skb) == 7001 ? BPF_DROP : BPF_OK;
}

SEC("lwt_out/drop_b")
int route_drop_b(struct __sk_buff *skb)
{
	return route_dport(skb) == 7002 ? BPF_DROP : BPF_OK;
}

SEC("lwt_out/drop_all")
int route_drop_all(struct __sk_buff *skb)
{
	return BPF_DROP;
}

SEC("lwt_out/count")
int route_count(struct __sk_buff *skb)
{
	__u32 key = route_dst_key(skb);
	__u64 one = 1, *value;

	value = bpf_map_lookup_elem(&route_cnt, &key);
	if (value)
		__sync_fetch_and_add(value, 1);
	else
		bpf_map_update_elem(&route_cnt, &key, &one, BPF_NOEXIST);
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
