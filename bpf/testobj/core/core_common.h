// Shared by the CO-RE test objects: built against vmlinux.h (generated from this kernel's
// BTF by bpf/Makefile), so every access below is a CO-RE relocation.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define BPF_OK 0
#define BPF_DROP 2

// A local "flavor" of struct __sk_buff: CO-RE ignores the ___ suffix and matches fields by
// name, so `mark` (at 4 here, at 8 in the kernel's __sk_buff) is relocated to 8.
struct __sk_buff___lwt {
	__u32 len;
	__u32 mark;
	__u32 no_such_field;
} __attribute__((preserve_access_index));

// A type the kernel does not have.
struct lwt_no_such_type {
	int x;
} __attribute__((preserve_access_index));

enum lwt_no_such_enum { LWT_NO_SUCH_VALUE = 3 };
