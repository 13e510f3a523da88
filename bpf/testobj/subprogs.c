// Loader test object: bpf-to-bpf calls into .text. Two programs share sub-programs, reached in
// different orders; leaf_c is reachable only from prog_b; loop_step only as a bpf_loop callback
// (an ld_imm64 of a .text function, BPF_PSEUDO_FUNC) from prog_b; orphan/orphan_helper are
// never called and must not be appended; global_len is a global (non-static) sub-program.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __attribute__((noinline)) int leaf_a(struct __sk_buff *skb)
{
	return skb->len & 0xff;
}

static __attribute__((noinline)) int leaf_b(struct __sk_buff *skb)
{
	return (skb->len >> 8) + leaf_a(skb);
}

static __attribute__((noinline)) int leaf_c(struct __sk_buff *skb)
{
	return skb->protocol + leaf_b(skb);
}

static __attribute__((noinline)) int orphan_helper(struct __sk_buff *skb)
{
	return skb->mark * 3;
}

__attribute__((noinline, used)) static int orphan(struct __sk_buff *skb)
{
	return orphan_helper(skb) + 1;
}

static __attribute__((noinline)) int mid(struct __sk_buff *skb)
{
	return leaf_b(skb) ^ leaf_a(skb);
}

/* A global function: with BTF func_info the verifier checks it on its own, like libbpf's. */
__attribute__((noinline)) int global_len(struct __sk_buff *skb)
{
	if (!skb)
		return 0;
	return skb->len >> 4;
}

static int loop_step(__u32 index, void *ctx)
{
	*(__u32 *)ctx += index;
	return 0;
}

SEC("lwt_in_sub")
int prog_a(struct __sk_buff *skb)
{
	int v = mid(skb) + leaf_a(skb) + global_len(skb);
	return v > 1000 ? BPF_DROP : BPF_OK;
}

SEC("lwt_out_sub")
int prog_b(struct __sk_buff *skb)
{
	int v = leaf_c(skb) + mid(skb);
	__u32 sum = 0;
	bpf_loop(4, loop_step, &sum, 0);
	return v == 12345 || sum == 99 ? BPF_DROP : BPF_OK;
}

char _license[] SEC("license") = "GPL";
