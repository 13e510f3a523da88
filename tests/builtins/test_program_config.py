"""Typed configuration of the built-ins: encoding, validation messages that name the field,
and the catalogue staying in step with the C sources (read from the objects' BTF)."""
from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from lwt_policy.catalogue import CATALOGUE, UnknownBuiltinError, builtin_object_dir, get_builtin
from lwt_policy.program_config import (
    MapLayoutError,
    ProgramConfigError,
    check_map_layout,
    decode_addr,
    decode_destination_value,
    encode_addr,
    encode_config,
    histogram_dict,
    sync_config,
)


def test_catalogue_names_and_hooks() -> None:
    assert set(CATALOGUE) == {"counters", "port-filter", "sampler", "encap", "drop-all"}
    assert CATALOGUE["encap"].hooks == frozenset({"in", "xmit"})
    for program in CATALOGUE.values():
        assert program.hooks <= {"in", "out", "xmit"}
        assert program.object.endswith(".o")
        for spec in program.maps:
            assert len(spec.name) <= 15
    with pytest.raises(UnknownBuiltinError, match="choose one of"):
        get_builtin("nope")


def test_builtin_object_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LWT_BPF_DIR", str(tmp_path))
    assert builtin_object_dir() == tmp_path
    monkeypatch.delenv("LWT_BPF_DIR")
    assert builtin_object_dir().name == "build"  # a source checkout


def _btf_maps(obj: Path) -> dict[str, dict[str, int]]:
    """Map name -> key/value size and max_entries from the object's BTF (bpftool)."""
    dump = json.loads(subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(obj)],
                                     capture_output=True, text=True, check=True).stdout)
    types = {t["id"]: t for t in dump["types"]}

    def size_of(type_id: int) -> int:
        t = types[type_id]
        while "size" not in t:
            t = types[t["type_id"]]
        return int(t["size"])

    out: dict[str, dict[str, int]] = {}
    for t in dump["types"]:
        if t["kind"] != "DATASEC" or t["name"] != ".maps":
            continue
        for var in t["vars"]:
            v = types[var["type_id"]]
            members = {m["name"]: m for m in types[v["type_id"]]["members"]}
            fields: dict[str, int] = {}
            for name in ("key", "value"):
                if name in members:
                    ptr = types[members[name]["type_id"]]
                    fields[f"{name}_size"] = size_of(ptr["type_id"])
            fields["map_flags"] = 0
            for name in ("max_entries", "type", "map_flags"):
                if name not in members:
                    continue
                # __uint(name, N) is `int (*name)[N]`: the array's nr_elems
                arr = types[types[members[name]["type_id"]]["type_id"]]
                fields[name] = int(arr["nr_elems"])
            out[v["name"]] = fields
    return out


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_catalogue_matches_object_btf(name: str, builtin_objects: Path) -> None:
    program = CATALOGUE[name]
    maps = _btf_maps(builtin_objects / program.object)
    assert set(maps) == {m.name for m in program.maps}
    for spec in program.maps:
        got = maps[spec.name]
        assert got["type"] == spec.type_id, spec.name
        assert got["max_entries"] == spec.max_entries, spec.name
        assert got["map_flags"] == spec.flags, spec.name
        assert got.get("key_size", 0) == spec.key_size, spec.name
        assert got.get("value_size", 0) == spec.value_size, spec.name


def test_port_filter_encoding() -> None:
    entries = encode_config("port-filter", {
        "denyTCPPorts": [8080, 22], "denyUDPPorts": [53],
        "denySourceCIDRs": ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]})
    tcp, udp = (value for _, value in entries["pf_ports"])
    assert [k for k, _ in entries["pf_ports"]] == [struct.pack("<I", 0), struct.pack("<I", 1)]
    assert len(tcp) == len(udp) == 8192
    set_bits = [p for p in range(65536) if tcp[p >> 3] >> (p & 7) & 1]
    assert set_bits == [22, 8080]
    assert [p for p in range(65536) if udp[p >> 3] >> (p & 7) & 1] == [53]
    # flags: source prefixes (1), TCP ports (2), UDP ports (4)
    assert entries["pf_config"] == [(struct.pack("<I", 0), struct.pack("<I", 7))]
    assert encode_config("port-filter", {"denyUDPPorts": [1]})["pf_config"][0][1] == \
        struct.pack("<I", 4)
    srcs = dict(entries["pf_srcs"])
    assert struct.pack("<I", 96 + 24) + encode_addr("192.0.2.0") in srcs
    assert struct.pack("<I", 32) + encode_addr("2001:db8::") in srcs
    assert struct.pack("<I", 128) + encode_addr("198.51.100.7") in srcs
    # ::/0 denies IPv6 only: the IPv4-mapped block gets a "not denied" entry ...
    srcs = dict(encode_config("port-filter", {"denySourceCIDRs": ["::/0"]})["pf_srcs"])
    assert srcs == {struct.pack("<I", 0) + bytes(16): b"\x01",
                    struct.pack("<I", 96) + encode_addr("0.0.0.0"): b"\x00"}
    # ... unless IPv4 as a whole is denied too
    srcs = dict(encode_config("port-filter",
                              {"denySourceCIDRs": ["::/0", "0.0.0.0/0"]})["pf_srcs"])
    assert srcs[struct.pack("<I", 96) + encode_addr("0.0.0.0")] == b"\x01"
    # an empty config empties the trie, clears both bitmaps and every flag
    empty = encode_config("port-filter", {})
    assert empty["pf_srcs"] == []
    assert [v for _, v in empty["pf_ports"]] == [bytes(8192)] * 2
    assert empty["pf_config"] == [(struct.pack("<I", 0), struct.pack("<I", 0))]
    # the maps are written trie and bitmaps first, the flags that enable them last
    assert list(empty) == ["pf_srcs", "pf_ports", "pf_config"]


def test_sampler_encoding_and_defaults() -> None:
    assert encode_config("sampler", {"oneIn": 10, "snapLength": 96}) == {
        "smp_config": [(b"\0\0\0\0", struct.pack("<II", 10, 96))]}
    assert encode_config("sampler", None)["smp_config"][0][1] == struct.pack("<II", 100, 64)


def test_encap_encoding() -> None:
    (key, value), = encode_config("encap", {"remote": "10.1.0.2", "source": "10.1.0.1",
                                            "mode": "udp", "udpPort": 5555})["enc_config"]
    assert key == b"\0\0\0\0" and len(value) == 40
    mode, family, ttl, tos, dport, sport, remote, source = struct.unpack("<BBBBHH16s16s", value)
    assert (mode, family, ttl, tos, dport, sport) == (2, 4, 64, 0, 5555, 0)
    assert remote[:4] == bytes([10, 1, 0, 2]) and source[:4] == bytes([10, 1, 0, 1])
    (_, value6), = encode_config("encap", {"remote": "fd00::2", "source": "fd00::1",
                                           "ttl": 9})["enc_config"]
    assert struct.unpack_from("<BBB", value6) == (1, 6, 9)


@pytest.mark.parametrize(("builtin", "config", "field", "words"), [
    ("port-filter", {"denyTCPPorts": [0]}, "config.denyTCPPorts[0]", "minimum"),
    ("port-filter", {"denyTCPPorts": [70000]}, "config.denyTCPPorts[0]", "maximum"),
    ("port-filter", {"denyTCPPorts": ["80"]}, "config.denyTCPPorts[0]", "integer"),
    ("port-filter", {"denyTCPPorts": [80, 80]}, "config.denyTCPPorts", "non-unique"),
    ("port-filter", {"denyUDPPorts": 53}, "config.denyUDPPorts", "array"),
    ("port-filter", {"denySourceCIDRs": ["10.0.0.1/33"]}, "config.denySourceCIDRs[0]", "CIDR"),
    ("port-filter", {"denySourceCIDRs": ["10.0.0.1/8"]}, "config.denySourceCIDRs[0]",
     "host bits"),
    ("port-filter", {"denyPorts": [1]}, "config.denyPorts", "allowed fields"),
    ("counters", {"x": 1}, "config.x", "allowed fields: none"),
    ("sampler", {"oneIn": -1}, "config.oneIn", "minimum"),
    ("sampler", {"snapLength": 129}, "config.snapLength", "maximum"),
    ("sampler", {"oneIn": True}, "config.oneIn", "integer"),
    ("encap", {"source": "10.0.0.1"}, "config.remote", "required"),
    ("encap", {"remote": "nope", "source": "10.0.0.1"}, "config.remote", "not an IPv4"),
    ("encap", {"remote": "10.0.0.2", "source": "fd00::1"}, "config.source", "family"),
    ("encap", {"remote": "10.0.0.2", "source": "10.0.0.1", "mode": "gre"}, "config.mode",
     "is not one of"),
    ("encap", {"remote": "10.0.0.2", "source": "10.0.0.1", "mode": "udp"}, "config.udpPort",
     "needs udpPort"),
    ("encap", {"remote": "fd00::2", "source": "fd00::1", "mode": "udp", "udpPort": 1},
     "config.mode", "IPv4 remote"),
    ("encap", {"remote": "10.0.0.2", "source": "10.0.0.1", "udpPort": 1}, "config.udpPort",
     "only apply to mode udp"),
    ("encap", {"remote": "224.0.0.1", "source": "10.0.0.1"}, "config.remote", "multicast"),
    ("encap", {"remote": "10.0.0.2", "source": "10.0.0.1", "ttl": 0}, "config.ttl",
     "minimum"),
    ("nope", {}, "program.builtin", "unknown built-in"),
    ("sampler", [1], "config", "must be an object"),
])
def test_bad_config_names_the_field(builtin: str, config: dict, field: str,
                                    words: str) -> None:
    with pytest.raises(ProgramConfigError) as info:
        encode_config(builtin, config)
    assert info.value.field == field, str(info.value)
    assert words in str(info.value)
    assert info.value.problem.path == field


def test_every_port_fits_the_bitmap() -> None:
    # a bitmap has room for every port: the per-list bound is the schema's input limit
    entries = encode_config("port-filter", {"denyTCPPorts": list(range(1, 1025)),
                                            "denyUDPPorts": list(range(64512, 65536))})
    tcp, udp = (value for _, value in entries["pf_ports"])
    assert sum(bin(b).count("1") for b in tcp) == sum(bin(b).count("1") for b in udp) == 1024


class _FakeInfo:
    def __init__(self, key_size: int, value_size: int, type_: int | None = None,
                 flags: int | None = None) -> None:
        self.key_size, self.value_size, self.type = key_size, value_size, type_
        self.flags = flags


def test_check_map_layout_reports_each_difference() -> None:
    good = {m.name: _FakeInfo(m.key_size, m.value_size, m.type_id)
            for m in CATALOGUE["port-filter"].maps}
    check_map_layout("port-filter", good)
    bad = dict(good, pf_stats=_FakeInfo(16, 24, 5, 0))
    del bad["pf_srcs"]
    with pytest.raises(MapLayoutError) as info:
        check_map_layout("port-filter", bad)
    text = str(info.value)
    assert "pf_stats.value_size is 24, expected 32" in text
    assert "pf_stats.flags is 0, expected 1" in text
    assert "map pf_srcs missing" in text
    assert "make -C bpf" in text


def test_addresses_and_counter_decoding() -> None:
    assert decode_addr(encode_addr("10.1.2.3")) == "10.1.2.3"
    assert decode_addr(encode_addr("fd00::7")) == "fd00::7"
    cpu0 = struct.pack("<18Q", 2, 200, *([0] * 6 + [2] + [0] * 9))
    cpu1 = struct.pack("<18Q", 1, 1500, *([0] * 10 + [1] + [0] * 5))
    c = decode_destination_value("counters", [cpu0, cpu1])
    assert (c.packets, c.bytes) == (3, 1700)
    assert histogram_dict(c.histogram) == {"64-127": 2, "1024-2047": 1}
    pf = decode_destination_value("port-filter", [struct.pack("<4Q", 1, 2, 3, 4)] * 2)
    assert (pf.packets, pf.bytes, pf.dropped_packets, pf.dropped_bytes) == (2, 4, 6, 8)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_catalogue_matches_the_loaders_view_of_each_object(name: str,
                                                           builtin_objects: Path) -> None:
    """What the operator can check without a kernel: the loader parses the object's BTF map
    definitions, and they must agree with the catalogue (sizes, type, entries, flags); the
    catalogue's section must be in the object."""
    from lwt_agent.bpf import ObjectSpec

    program = CATALOGUE[name]
    spec = ObjectSpec.from_file(builtin_objects / program.object)
    assert program.section in spec.sections()
    btf_maps = {m.name: m for m in spec.maps.values() if m.kind != "data"}
    check_map_layout(name, btf_maps)
    assert set(btf_maps) == {m.name for m in program.maps}


@pytest.mark.parametrize(("field", "remote", "source", "why"), [
    ("config.remote", "169.254.169.254", "192.0.2.1", "link-local"),
    ("config.remote", "255.255.255.255", "192.0.2.1", "broadcast"),
    ("config.remote", "127.0.0.1", "192.0.2.1", "loopback"),
    ("config.source", "192.0.2.2", "127.0.0.1", "loopback"),
    ("config.remote", "fe80::1", "2001:db8::1", "link-local"),
    ("config.remote", "::ffff:192.0.2.2", "2001:db8::1", "IPv4-mapped"),
])
def test_encap_endpoints_that_are_never_a_tunnel(field: str, remote: str, source: str,
                                                 why: str) -> None:
    with pytest.raises(ProgramConfigError) as info:
        encode_config("encap", {"remote": remote, "source": source})
    assert info.value.field == field and why in str(info.value)


def test_encap_rules_of_the_node() -> None:
    from ipaddress import ip_address

    from lwt_policy.program_config import EncapRules, parse_allowed_remotes

    config = {"remote": "192.0.2.2", "source": "192.0.2.1"}
    mine = frozenset({ip_address("192.0.2.1"), ip_address("10.0.0.1")})
    allowed = parse_allowed_remotes(" 192.0.2.0/24 , 2001:db8::/32,")
    assert [str(n) for n in allowed] == ["192.0.2.0/24", "2001:db8::/32"]
    encode_config("encap", config, EncapRules(mine, allowed))  # accepted
    encode_config("encap", config, EncapRules(None, None))     # nothing known: accepted
    with pytest.raises(ProgramConfigError) as info:
        encode_config("encap", dict(config, source="192.0.2.9"), EncapRules(mine, allowed))
    assert info.value.field == "config.source"
    assert "192.0.2.9 is not an address of this node" in str(info.value)
    assert "10.0.0.1, 192.0.2.1" in str(info.value)
    with pytest.raises(ProgramConfigError) as info:
        encode_config("encap", dict(config, remote="198.51.100.1"), EncapRules(mine, allowed))
    assert info.value.field == "config.remote" and "agent.encapAllowedRemotes" in str(info.value)
    with pytest.raises(ProgramConfigError, match="allowed: none"):
        encode_config("encap", config, EncapRules(mine, ()))
    with pytest.raises(ValueError, match=r"'10\.0\.0\.1/8' is not a CIDR prefix"):
        parse_allowed_remotes("10.0.0.1/8")


def test_clear_config_leaves_encap_unconfigured() -> None:
    from lwt_policy.program_config import clear_config

    class _Array:
        def __init__(self) -> None:
            self.slots: dict[bytes, bytes] = {}

        def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
            self.slots[key] = value

    enc = _Array()
    sync_config("encap", {"remote": "192.0.2.2", "source": "192.0.2.1"}, {"enc_config": enc})
    assert enc.slots[b"\0\0\0\0"][0] == 1  # mode ipip
    clear_config("encap", {"enc_config": enc})
    assert enc.slots[b"\0\0\0\0"] == bytes(40)  # mode 0: the program drops
