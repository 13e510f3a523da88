// Loader test object: writes packet data. The verifier allows it on `xmit` and rejects it on
// `out` (and `in`): bpf_skb_store_bytes is not offered there.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("lwt_write")
int write_pkt(struct __sk_buff *skb)
{
	__u8 tos = 0x10;
	bpf_skb_store_bytes(skb, 1, &tos, sizeof(tos), 0);
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
