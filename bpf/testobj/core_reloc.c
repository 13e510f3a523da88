// Loader test object: a CO-RE field relocation to a type the kernel does not have (no
// vmlinux.h needed), read without a guard: poisoned, and refused by the verifier.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct pkt_view {
	__u32 len;
	__u32 pkt_type;
} __attribute__((preserve_access_index));

SEC("lwt_out_core")
int core_out(struct __sk_buff *skb)
{
	struct pkt_view *v = (struct pkt_view *)skb;
	return v->pkt_type == 7 ? BPF_DROP : BPF_OK;
}

char _license[] SEC("license") = "GPL";
