// CO-RE test object: a missing field read WITHOUT a guard. libbpf poisons the instruction
// and the verifier refuses the program; so must the loader, naming the relocation.
#include "core_common.h"

SEC("lwt_core_unguarded")
int core_unguarded(struct __sk_buff *skb)
{
	struct __sk_buff___lwt *mine = (void *)skb;
	return mine->no_such_field == 1 ? BPF_DROP : BPF_OK;
}

char _license[] SEC("license") = "GPL";
