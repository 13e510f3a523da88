// Loader test object: an extern kernel symbol (__ksym); the loader must refuse it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern const int bpf_prog_active __ksym; /* a per-CPU variable: read through its address */

SEC("lwt_in_ksym")
int ksym_in(struct __sk_buff *skb)
{
	return bpf_prog_active ? BPF_DROP : BPF_OK;
}

char _license[] SEC("license") = "GPL";
