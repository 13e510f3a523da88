// The program body shared by legacy_maps.c and legacy_twin.c: the same instructions over a
// legacy `maps` section and over BTF-defined `.maps`, so the twin's iproute2 tag checks ours.
SEC("lwt_in_twin")
int twin_in(struct __sk_buff *skb)
{
	__u32 key = skb->protocol == __builtin_bswap16(0x0800) ? 0 : 1;
	__u64 *cnt = bpf_map_lookup_elem(&twin_count, &key);
	if (cnt)
		__sync_fetch_and_add(cnt, 1);
	__u32 dst = skb->hash;
	__u32 *verdict = bpf_map_lookup_elem(&twin_deny, &dst);
	if (verdict && *verdict)
		return BPF_DROP;
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
