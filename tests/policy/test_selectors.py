"""Label selector syntax (Kubernetes' rules) and matching."""
from __future__ import annotations

import pytest
from lwt_policy.selectors import (
    LabelSelector,
    label_key_error,
    label_value_error,
    selector_problems,
)


@pytest.mark.parametrize("key", [
    "app", "a", "app.kubernetes.io/name", "example.com/x_y.z-1", "A1", "k" * 63,
    "node-role.kubernetes.io/control-plane", ("d" * 63 + ".") * 3 + "d" * 61 + "/n",
])
def test_valid_keys(key: str) -> None:
    assert label_key_error(key) is None


@pytest.mark.parametrize(("key", "words"), [
    ("", "name part must not be empty"),
    ("/app", "prefix before '/' must not be empty"),
    ("example.com/", "name part must not be empty"),
    ("Example.com/app", "DNS subdomain"),
    ("exa_mple.com/app", "DNS subdomain"),
    ("-app", "start and end"),
    ("app-", "start and end"),
    ("a b", "alphanumerics"),
    ("k" * 64, "at most 63"),
    ("d" * 254 + "/n", "at most 253"),
    ("a/b/c", "DNS subdomain"),
])
def test_invalid_keys(key: str, words: str) -> None:
    error = label_key_error(key)
    assert error is not None and words in error


@pytest.mark.parametrize("value", ["", "web", "v1.2.3", "a_b-c", "x" * 63])
def test_valid_values(value: str) -> None:
    assert label_value_error(value) is None


@pytest.mark.parametrize("value", ["-web", "web-", "a b", "x" * 64, "é", 3])
def test_invalid_values(value: object) -> None:
    assert label_value_error(value) is not None  # type: ignore[arg-type]


def test_selector_problems_paths() -> None:
    problems = selector_problems({
        "matchLabels": {"ok": "fine", "bad key": "v"},
        "matchExpressions": [
            {"key": "a", "operator": "In"},
            {"key": "b", "operator": "Exists", "values": ["x"]},
            {"key": "c", "operator": "Near", "values": ["x"]},
            {"key": "d", "operator": "NotIn", "values": ["ok", "not ok"]},
        ],
    }, "spec.podSelector")
    assert [p.path for p in problems] == [
        "spec.podSelector.matchLabels.bad key",
        "spec.podSelector.matchExpressions[0].values",
        "spec.podSelector.matchExpressions[1].values",
        "spec.podSelector.matchExpressions[2].operator",
        "spec.podSelector.matchExpressions[3].values[1]",
    ]


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ({}, {}, True),
    ({}, {"x": "y"}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "web", "x": "1"}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
    ({"matchLabels": {"app": "web"}}, {}, False),
    ({"matchExpressions": [{"key": "t", "operator": "In", "values": ["a", "b"]}]},
     {"t": "b"}, True),
    ({"matchExpressions": [{"key": "t", "operator": "In", "values": ["a"]}]}, {}, False),
    ({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]},
     {"t": "a"}, False),
    ({"matchExpressions": [{"key": "t", "operator": "Exists"}]}, {"t": ""}, True),
    ({"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}, {"t": ""}, False),
    ({"matchLabels": {"app": "web"},
      "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]},
     {"app": "web", "canary": "1"}, False),
])
def test_matching(selector: dict, labels: dict, expected: bool) -> None:
    assert LabelSelector.from_dict(selector).matches(labels) is expected


def test_none_selector_matches_everything() -> None:
    assert LabelSelector.from_dict(None).matches(None)
    assert LabelSelector.from_dict(None).is_empty
