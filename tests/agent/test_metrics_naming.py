"""The agent's metrics follow Prometheus' conventions (issue 15): counters end in _total,
units in the name, one meaning per metric, no label Prometheus itself sets on a target."""
from __future__ import annotations

import threading

from lwt_agent.agent.metrics import (
    PROGRAM_COUNTERS,
    AgentMetrics,
    DatapathCollector,
    histogram_buckets,
    pod_labels,
)
from lwt_policy import program_config
from lwt_policy.catalogue import HIST_BUCKETS
from prometheus_client.parser import text_string_to_metric_families

# Labels Prometheus (and the kube-prometheus ServiceMonitor setup) put on every target.
TARGET_LABELS = {"namespace", "pod", "node", "instance", "job", "service", "container",
                 "endpoint"}


def test_every_program_counter_has_its_own_metric() -> None:
    for builtin, (_, names) in program_config._GLOBAL_COUNTERS.items():
        for name in names or ("notIP", "tableFull"):
            assert (builtin, name) in PROGRAM_COUNTERS, (builtin, name)
    metric_names = [name for name, _ in PROGRAM_COUNTERS.values()]
    assert len(set(metric_names)) == len(metric_names)
    for name in metric_names:  # packets and bytes never share a metric
        assert name.endswith(("_packets", "_bytes")), name


def test_names_and_labels_are_conventional() -> None:
    metrics = AgentMetrics()
    metrics.add_datapath(DatapathCollector(lambda: ([], 0), threading.RLock()))
    metrics.samples.labels("shop", "p", "in", "shop", "web-0").inc()
    families = list(text_string_to_metric_families(metrics.render().decode()))
    assert {f.name for f in families} >= {"lwt_route_packets", "lwt_route_bytes",
                                          "lwt_route_packet_length_bytes",
                                          "lwt_encap_packets", "lwt_agent_samples"}
    for family in families:
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family
        for sample in family.samples:
            assert not set(sample.labels) & TARGET_LABELS, (family.name, sample.labels)


def test_length_histogram_buckets() -> None:
    counts = [0] * HIST_BUCKETS
    counts[0], counts[6], counts[-1] = 1, 25, 2  # length 1, 64..127, >= 2^15
    buckets = histogram_buckets(counts)
    assert buckets[0] == ("1.0", 1.0)
    assert buckets[5] == ("63.0", 1.0) and buckets[6] == ("127.0", 26.0)
    assert buckets[-2] == (str(float(2**15 - 1)), 26.0) and buckets[-1] == ("+Inf", 28.0)


def test_pod_labels() -> None:
    assert pod_labels("shop/web-0") == ["shop", "web-0"]
    assert pod_labels("") == ["", ""]
