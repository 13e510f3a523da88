// Loader test object: two programs in one section (libbpf allows it); loading by section
// name is ambiguous, loading by function name works.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("lwt_multi")
int multi_first(struct __sk_buff *skb)
{
	return skb->len > 1000 ? BPF_DROP : BPF_OK;
}

SEC("lwt_multi")
int multi_second(struct __sk_buff *skb)
{
	return skb->mark == 7 ? BPF_DROP : BPF_OK;
}

char _license[] SEC("license") = "GPL";
