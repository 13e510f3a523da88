// Loader/agent test object: a ConfigMap-style program with all three global-data sections
// (.rodata setting, .data counter with an initial value, .bss counter). It drops IPv4
// UDP/TCP packets to `blocked_port` and counts; the agent must pin its maps (bpffs refuses
// the '.' in `.bss`) and the test reads the counters back from the pins.
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

const volatile __u16 blocked_port = 9;  /* .rodata */
volatile __u64 passed = 1000;           /* .data: starts at 1000 */
volatile __u64 dropped;                 /* .bss */

SEC("lwt_out_globals")
int globals_out(struct __sk_buff *skb)
{
	struct iphdr iph;
	__u16 ports[2];

	if (skb->protocol != bpf_htons(0x0800) ||
	    bpf_skb_load_bytes(skb, 0, &iph, sizeof(iph)) < 0 ||
	    (iph.protocol != IPPROTO_UDP && iph.protocol != IPPROTO_TCP) ||
	    bpf_skb_load_bytes(skb, iph.ihl * 4, ports, sizeof(ports)) < 0) {
		__sync_fetch_and_add(&passed, 1);
		return BPF_OK;
	}
	if (ports[1] == bpf_htons(blocked_port)) {
		__sync_fetch_and_add(&dropped, 1);
		return BPF_DROP;
	}
	__sync_fetch_and_add(&passed, 1);
	return BPF_OK;
}

char _license[] SEC("license") = "GPL";
