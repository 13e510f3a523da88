/* encap: pushes an outer header toward a remote and returns BPF_LWT_REROUTE, so the
 * kernel routes the packet again by its new (outer) destination.
 *
 * Hooks: bpf_lwt_push_encap() is offered to LWT_IN and LWT_XMIT programs only (the
 * verifier refuses it on LWT_OUT), and BPF_LWT_REROUTE is acted upon on in (input
 * re-route) and xmit (output re-route); on out it would be a plain BPF_OK. So: in, xmit.
 *
 * Modes (enc_config.mode):
 *   ENC_MODE_IPIP: outer IPv4 (protocol 4 for IPv4 inner, 41 for IPv6 inner) or outer
 *                  IPv6 (next header 4 / 41), as the ipip/sit/ip6tnl devices expect.
 *   ENC_MODE_UDP:  outer IPv4 + UDP (checksum 0, allowed for IPv4) + the inner IP packet,
 *                  the "direct" foo-over-UDP format (`ip fou add port P ipproto 4|41`).
 *                  Not over IPv6: a UDP/IPv6 checksum would cover the whole payload,
 *                  which an LWT program cannot compute; the config refuses it.
 * An unconfigured program (mode 0) drops: sending the packet unencapsulated could leak it
 * onto the wrong network. enc_stats counts encapsulated packets, drops and errors.
 */
#include "lwt_builtin.h"

#define ENC_MODE_NONE 0
#define ENC_MODE_IPIP 1
#define ENC_MODE_UDP 2

struct enc_config {
	__u8 mode;        /* ENC_MODE_* */
	__u8 family;      /* outer header: 4 or 6 */
	__u8 ttl;         /* outer TTL / hop limit */
	__u8 tos;         /* outer TOS / traffic class */
	__u16 udp_dport;  /* host byte order */
	__u16 udp_sport;  /* host byte order; 0: derived from the flow hash (entropy for ECMP) */
	__u8 remote[16];  /* IPv4 in the first 4 bytes when family == 4 */
	__u8 source[16];
};

struct enc_stats_value {
	__u64 packets;        /* encapsulated */
	__u64 bytes;          /* inner bytes encapsulated */
	__u64 unconfigured;   /* dropped: no enc_config */
	__u64 errors;         /* dropped: bpf_lwt_push_encap() failed (e.g. GSO it cannot handle) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct enc_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} enc_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct enc_stats_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} enc_stats SEC(".maps");

struct udphdr_ {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
};

struct outer4 {
	struct iphdr ip;
	struct udphdr_ udp;
};

struct outer6 {
	struct ipv6hdr ip;
};

static __always_inline __u8 inner_proto(__u8 version)
{
	return version == 6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
}

static __always_inline __u16 udp_sport(struct __sk_buff *skb, const struct enc_config *cfg)
{
	if (cfg->udp_sport)
		return cfg->udp_sport;
	/* RFC 7605-style ephemeral range, spread by the flow so ECMP can balance */
	return 49152 + (bpf_get_hash_recalc(skb) & 0x3fff);
}

static __always_inline int push_v4(struct __sk_buff *skb, const struct enc_config *cfg,
				   __u8 version)
{
	struct outer4 h;
	__u32 len = sizeof(struct iphdr);

	__builtin_memset(&h, 0, sizeof(h));
	if (cfg->mode == ENC_MODE_UDP)
		len += sizeof(struct udphdr_);
	h.ip.version = 4;
	h.ip.ihl = 5;
	h.ip.tos = cfg->tos;
	h.ip.ttl = cfg->ttl;
	h.ip.tot_len = bpf_htons(len + skb->len);
	h.ip.id = (__u16)bpf_get_prandom_u32();
	/* check stays 0: bpf_lwt_push_encap() computes the IPv4 header checksum */
	__builtin_memcpy(&h.ip.saddr, cfg->source, 4);
	__builtin_memcpy(&h.ip.daddr, cfg->remote, 4);
	if (cfg->mode == ENC_MODE_UDP) {
		h.ip.protocol = IPPROTO_UDP;
		h.udp.source = bpf_htons(udp_sport(skb, cfg));
		h.udp.dest = bpf_htons(cfg->udp_dport);
		h.udp.len = bpf_htons(sizeof(struct udphdr_) + skb->len);
		h.udp.check = 0;
	} else {
		h.ip.protocol = inner_proto(version);
	}
	return bpf_lwt_push_encap(skb, BPF_LWT_ENCAP_IP, &h, len);
}

static __always_inline int push_v6(struct __sk_buff *skb, const struct enc_config *cfg,
				   __u8 version)
{
	struct outer6 h;

	__builtin_memset(&h, 0, sizeof(h));
	h.ip.version = 6;
	h.ip.priority = cfg->tos >> 4;
	h.ip.flow_lbl[0] = (cfg->tos & 0xf) << 4;
	h.ip.payload_len = bpf_htons(skb->len);
	h.ip.nexthdr = inner_proto(version);
	h.ip.hop_limit = cfg->ttl;
	__builtin_memcpy(&h.ip.saddr, cfg->source, 16);
	__builtin_memcpy(&h.ip.daddr, cfg->remote, 16);
	return bpf_lwt_push_encap(skb, BPF_LWT_ENCAP_IP, &h, sizeof(h));
}

SEC("lwt/encap")
int lwt_encap(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct enc_config *cfg = bpf_map_lookup_elem(&enc_config, &zero);
	struct enc_stats_value *stats = bpf_map_lookup_elem(&enc_stats, &zero);
	__u32 inner_len = skb->len;
	__u8 first;
	__u8 version;
	int err;

	if (!cfg || !stats)
		return BPF_DROP;
	if (cfg->mode == ENC_MODE_NONE) {
		LWT_ADD(stats->unconfigured, 1);
		return BPF_DROP;
	}
	/* the IP version nibble: directly when the header is linear (a helper call costs more
	 * than the rest of this program's own work) */
	if (LWT_DATA(skb) + 1 <= LWT_DATA_END(skb))
		first = *(__u8 *)LWT_DATA(skb);
	else if (bpf_skb_load_bytes(skb, 0, &first, 1) < 0) {
		LWT_ADD(stats->errors, 1);
		return BPF_DROP;
	}
	version = first >> 4;
	if (cfg->family == 6 && cfg->mode == ENC_MODE_IPIP)
		err = push_v6(skb, cfg, version);
	else if (cfg->family == 4)
		err = push_v4(skb, cfg, version);
	else
		err = -1;  /* UDP over IPv6 or an unknown family: refused by the config */
	if (err) {
		LWT_ADD(stats->errors, 1);
		return BPF_DROP;
	}
	LWT_ADD(stats->packets, 1);
	LWT_ADD(stats->bytes, inner_len);
	return BPF_LWT_REROUTE;
}

char _license[] SEC("license") = "GPL";
