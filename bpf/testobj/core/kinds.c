// CO-RE test object: one program per relocation kind clang 14 emits, each against this
// kernel's vmlinux.h types (bpf/Makefile generates it). The loader's tags and xlated
// instructions are compared with what libbpf (iproute2) produces for the same sections.
#include "core_common.h"

// FIELD_BYTE_OFFSET through vmlinux.h's own __sk_buff, and through a flavor whose layout
// differs from the kernel's (the offset really changes).
SEC("lwt_core_offset")
int core_offset(struct __sk_buff *skb)
{
	struct __sk_buff___lwt *mine = (void *)skb;
	return skb->len + mine->mark == 7 ? BPF_DROP : BPF_OK;
}

// FIELD_BYTE_SIZE, FIELD_SIGNED, FIELD_EXISTS (present) on a vmlinux.h type.
SEC("lwt_core_size")
int core_size(struct __sk_buff *skb)
{
	__u64 acc = bpf_core_field_size(skb->mark);
	acc += __builtin_preserve_field_info(skb->mark, BPF_FIELD_SIGNED) << 8;
	acc += bpf_core_field_exists(skb->mark) << 12;
	return acc == skb->len ? BPF_DROP : BPF_OK;
}

// FIELD_LSHIFT_U64 / FIELD_RSHIFT_U64 (and BYTE_OFFSET/BYTE_SIZE of bitfields): read the
// TCP header's bitfields from a stack copy with BPF_CORE_READ_BITFIELD.
SEC("lwt_core_bitfield")
int core_bitfield(struct __sk_buff *skb)
{
	struct tcphdr th = {};

	if (bpf_skb_load_bytes(skb, 20, &th, sizeof(th)) < 0)
		return BPF_OK;
	return BPF_CORE_READ_BITFIELD(&th, syn) && BPF_CORE_READ_BITFIELD(&th, doff) > 5
		? BPF_DROP : BPF_OK;
}

// TYPE_ID_LOCAL, TYPE_ID_TARGET (64-bit ld_imm64), TYPE_EXISTS, TYPE_SIZE, and a type the
// kernel lacks (exists 0, size 0, target id 0).
SEC("lwt_core_type")
int core_type(struct __sk_buff *skb)
{
	__u64 acc = bpf_core_type_id_local(struct tcphdr);
	acc += bpf_core_type_id_kernel(struct tcphdr);
	acc += bpf_core_type_exists(struct iphdr) << 20;
	acc += bpf_core_type_exists(struct list_head) << 3;
	acc += bpf_core_type_size(struct iphdr) << 24;
	acc += bpf_core_type_exists(struct lwt_no_such_type) << 30;
	acc += bpf_core_type_size(struct lwt_no_such_type) << 31;
	acc += bpf_core_type_id_kernel(struct lwt_no_such_type);
	return acc == skb->len ? BPF_DROP : BPF_OK;
}

// ENUMVAL_EXISTS / ENUMVAL_VALUE on a kernel enum, and on an enum the kernel lacks.
SEC("lwt_core_enum")
int core_enum(struct __sk_buff *skb)
{
	__u64 acc = bpf_core_enum_value(enum bpf_func_id, BPF_FUNC_map_lookup_elem);
	acc += bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_skb_load_bytes) << 8;
	acc += bpf_core_enum_value_exists(enum lwt_no_such_enum, LWT_NO_SUCH_VALUE) << 9;
	return acc == skb->len ? BPF_DROP : BPF_OK;
}

// A missing field behind a bpf_core_field_exists() guard: the read is poisoned
// (call 0xbad2310) but dead, so the program loads.
SEC("lwt_core_guard")
int core_guard(struct __sk_buff *skb)
{
	struct __sk_buff___lwt *mine = (void *)skb;

	if (bpf_core_field_exists(mine->no_such_field))
		return mine->no_such_field == 1 ? BPF_DROP : BPF_OK;
	return BPF_OK;
}

// CO-RE records inside a .text sub-program: they move with it when it is appended.
static __attribute__((noinline)) int sub_mark(struct __sk_buff *skb)
{
	struct __sk_buff___lwt *mine = (void *)skb;
	return mine->mark + bpf_core_field_size(mine->len);
}

SEC("lwt_core_sub")
int core_sub(struct __sk_buff *skb)
{
	return sub_mark(skb) == skb->len ? BPF_DROP : BPF_OK;
}

char _license[] SEC("license") = "GPL";
