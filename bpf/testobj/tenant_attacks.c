// Loader test object: what a hostile tenant's ConfigMap program tried (issue 12). The
// loader must refuse both sections before bpf(2).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

// A raw `ld_imm64 r1, BPF_PSEUDO_MAP_FD, 0x7fffffff` with no relocation: the kernel resolves
// the fd in the *loading* process, so the test patches the placeholder to the fd of another
// tenant's map and the program deletes that map's key 22 ("deny TCP 22").
SEC("lwt_out_rawfd")
int raw_fd(struct __sk_buff *skb)
{
	__u32 key = 22;

	asm volatile(".quad 0x7fffffff00001118\n\t.quad 0\n\tr2 = %[k]\n\tcall 3"
		     : : [k] "r"(&key) : "r0", "r1", "r2", "r3", "r4", "r5", "memory");
	return BPF_OK;
}

// Kernel memory reads an LWT program may make when its loader holds CAP_PERFMON: the
// current task's address and a word of it land in .bss, for user space to read.
volatile __u64 leaked_task;
volatile __u64 leaked;

SEC("lwt_out_snoop")
int snoop(struct __sk_buff *skb)
{
	__u64 task = bpf_get_current_task();
	__u64 word = 0;

	bpf_probe_read_kernel(&word, sizeof(word), (void *)task);
	leaked_task = task;
	leaked = word;
	bpf_printk("task %llx", task);
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";

// A map pinned by name whose name the test rewrites to "../a/deny_ports" (same length):
// without a pin-name check the loader would reuse tenant A's pinned map from tenant B's
// pin directory.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} zzza_deny_ports SEC(".maps");

SEC("lwt_out_pinescape")
int pin_escape(struct __sk_buff *skb)
{
	__u32 key = 22;

	bpf_map_delete_elem(&zzza_deny_ports, &key);
	return BPF_OK;
}
