// Loader test object: global data in .data, .rodata, .bss and a custom .rodata.cfg section.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

volatile __u64 seen_packets = 7;                  /* .data, initialised */
volatile __u32 last_len;                          /* .bss */
const volatile __u32 drop_above = 9000;           /* .rodata */
const volatile __u32 mark_value SEC(".rodata.cfg") = 0x1234; /* .rodata.cfg */
static const __u8 weights[8] = {1, 2, 3, 5, 8, 13, 21, 34};  /* .rodata */

SEC("lwt_xmit_gd")
int global_xmit(struct __sk_buff *skb)
{
	seen_packets++;
	last_len = skb->len;
	skb->mark = mark_value + weights[skb->len & 7];
	if (skb->len > drop_above)
		return BPF_DROP;
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
