#!/usr/bin/env python3
"""The two helm verbs this project needs, offline, without a helm binary.

    scripts/helm.py lint [--strict] CHART [-f VALUES]...
    scripts/helm.py template NAME CHART [-f VALUES]... [--namespace NS] [--include-crds]

Both run the Helm v4 SDK bundled by the `helm-python-sdk` package (PyPI; import name
`helm_python`), so they behave as `helm lint` and `helm template` do: the chart's
values.schema.json is enforced, `--strict` fails on warnings, `template` prints the rendered
manifests as one multi-document YAML stream in Helm's install order with `# Source:` comments.
Exit codes: 0 success, 1 lint findings or a render error, 2 bad usage or unreadable input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

try:
    import helm_python as helm
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("scripts/helm.py: the helm-python-sdk package is missing: pip install helm-python-sdk")

EXIT_FAILED = 1
EXIT_USAGE = 2

# Lint message severities of the Helm SDK (support.Severity).
SEVERITY_NAMES = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
WARNING = 2

# Helm's install order (pkg/release/util/kind_sorter.go, InstallOrder): a kind earlier in the
# list is applied first, unknown kinds last. `kubectl apply -f` of the output then never
# creates an object before the namespace-level objects it refers to.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]


class UsageError(Exception):
    """Bad arguments or an unreadable values file; the message says which."""


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge like repeated `-f`: maps merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_values(paths: list[Path]) -> dict[str, Any] | None:
    if not paths:
        return None
    values: dict[str, Any] = {}
    for path in paths:
        try:
            text = path.read_text()
        except OSError as err:
            raise UsageError(f"cannot read values file {path}: {err.strerror}") from err
        try:
            values = merge_values(values, helm.values_from_yaml(text) or {})
        except helm.HelmValuesError as err:
            raise UsageError(f"values file {path} is not valid YAML: {err}") from err
    return values


def lint(chart: Path, value_files: list[Path], strict: bool) -> int:
    report = helm.lint(chart, load_values(value_files), strict=strict)
    failing = WARNING if strict else WARNING + 1
    failed = bool(report.get("errors"))
    for message in report.get("messages") or []:
        severity = int(message.get("severity", 0))
        name = SEVERITY_NAMES.get(severity, str(severity))
        print(f"[{name}] {message.get('path')}: {message.get('error')}")
        failed = failed or severity >= failing
    for error in report.get("errors") or []:
        print(f"[ERROR] {error}")
    charts = report.get("total_charts_linted", 0)
    print(f"{charts} chart(s) linted, {'failed' if failed else 'no failures'}")
    return EXIT_FAILED if failed else 0


def _kind_rank(document: str) -> int:
    for line in document.splitlines():
        if line.startswith("kind:"):
            kind = line.partition(":")[2].strip()
            return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)
    return len(INSTALL_ORDER)


def template(
    name: str, chart: Path, value_files: list[Path], namespace: str, include_crds: bool
) -> int:
    helm.validate_release_name(name)
    values = load_values(value_files)
    with helm.Chart.load(chart) as loaded:
        rendered = loaded.render(values, name=name, namespace=namespace, is_install=True)
        crds = loaded.crds if include_crds else []
    documents: list[tuple[int, str, str]] = []
    for crd in crds:
        documents.append((-1, crd["name"], crd["data"]))
    for source, text in rendered.items():
        # NOTES.txt is printed by `helm install`, not rendered as a manifest.
        if source.endswith("NOTES.txt"):
            continue
        for document in text.split("\n---"):
            body = document.strip("\n")
            if body.strip() and not all(
                not line.strip() or line.lstrip().startswith("#") for line in body.splitlines()
            ):
                documents.append((_kind_rank(body), source, body))
    documents.sort(key=lambda item: (item[0], item[1]))
    out = sys.stdout
    for _, source, body in documents:
        out.write(f"---\n# Source: {source}\n{body.rstrip()}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/helm.py", description="helm lint and helm template, offline (Helm v4 SDK)."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    lint_p = verbs.add_parser("lint", help="examine a chart for possible issues")
    lint_p.add_argument("--strict", action="store_true", help="fail on lint warnings")
    lint_p.add_argument("chart", type=Path, metavar="CHART")
    lint_p.add_argument("-f", "--values", type=Path, action="append", default=[])
    tmpl_p = verbs.add_parser("template", help="render a chart's manifests to stdout")
    tmpl_p.add_argument("name", metavar="NAME", help="release name")
    tmpl_p.add_argument("chart", type=Path, metavar="CHART")
    tmpl_p.add_argument("-f", "--values", type=Path, action="append", default=[])
    tmpl_p.add_argument("-n", "--namespace", default="default")
    tmpl_p.add_argument(
        "--include-crds", action="store_true", help="also print the chart's crds/ first"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb == "lint":
            return lint(args.chart, args.values, args.strict)
        return template(args.name, args.chart, args.values, args.namespace, args.include_crds)
    except UsageError as err:
        print(f"scripts/helm.py: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (helm.HelmChartLoadError, helm.HelmInvalidArgError, helm.HelmNotFoundError) as err:
        print(f"scripts/helm.py: {err}", file=sys.stderr)
        return EXIT_USAGE
    except helm.HelmError as err:
        print(f"scripts/helm.py: {args.verb} failed: {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
