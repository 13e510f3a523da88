/* An LWT program that does nothing but pass the packet: the benchmark's measure of what the
 * LWT hook itself costs (the kernel's lwtunnel redirect and one program run), so the cost of
 * a built-in splits into "being on the route" and "the work the program does".
 * Built by the benchmark harness at run time; never installed.
 */
#include <linux/bpf.h>

__attribute__((section("lwt/noop"), used))
int lwt_noop(struct __sk_buff *skb)
{
	return BPF_OK;
}

char _license[] __attribute__((section("license"), used)) = "GPL";
