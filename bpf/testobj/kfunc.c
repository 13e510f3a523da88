// Loader test object: a call to a kernel function (kfunc); the loader must refuse it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

SEC("lwt_in_kfunc")
int kfunc_in(struct __sk_buff *skb)
{
	bpf_rcu_read_lock();
	bpf_rcu_read_unlock();
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
