"""`lwt-agent validate FILE...`: the verdict a cluster gives each LwtRoutePolicy at apply,
offline, for CI and GitOps pipelines (no cluster, no kernel, no root).

The verdicts are `lwt_policy.admission.policy_problems`, the function the operator judges
with, over the CRD schema and CEL rules the API server enforces (the same generated schema):
a policy this command accepts is accepted by the API server and by the operator, and one it
refuses is refused by the layer it names (`api-server`: `kubectl apply` fails; `operator`:
the apply succeeds, then Accepted=False with reason InvalidSpec and a Warning Event).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

NAME = "validate"
HELP = ("Check LwtRoutePolicy files offline as the cluster will (API server schema and CEL "
        "rules, then the operator's checks), for CI.")
DESCRIPTION = (
    HELP + " Every file must hold at least one LwtRoutePolicy (YAML or JSON, multi-document "
    "and v1 List files; other kinds are skipped). Each file is judged on its own. Exit 0 when "
    "every policy is valid; 2 when a policy is invalid, a file holds no policy, or a file "
    "cannot be read or parsed."
)
EXIT_OK = 0
EXIT_INVALID = 2


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("files", nargs="+", metavar="FILE", help="policy files to check")
    parser.add_argument("--admin-namespace", default=None,
                        help="the operator's admin namespace, where podSubnets policies are "
                             "allowed (default: $LWT_ADMIN_NAMESPACE, else lwt-system, as the "
                             "chart's release namespace usually is)")
    parser.add_argument("--allow-custom-programs", action="store_true",
                        help="accept programs from ConfigMaps (the cluster admin turned them "
                             "on, chart agent.configMapPrograms, and labelled the policies' "
                             "namespaces); default: refused, as a default install does")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: {"valid": bool, "files": [{"file", '
                             '"error", "policies": [{"document", "namespace", "name", '
                             '"valid", "problems": [{"path", "message", "rule", '
                             '"refusedBy"}]}]}]}')


def validate_files(paths: list[str], admin_namespace: str,
                   allow_custom_programs: bool = False) -> dict[str, Any]:
    """The report `--json` prints (pure apart from reading the files)."""
    from lwt_policy.admission import policy_problems, refused_by
    from lwt_policy.custom_programs import CustomProgramRule
    from lwt_policy.errors import ManifestError
    from lwt_policy.manifests import load_cluster_objects
    from lwt_policy.model import is_cluster_kind

    # Allowed: a rule that is on and matches every namespace (`kubernetes.io/metadata.name`
    # is set on every namespace by the API server).
    rule = (CustomProgramRule(True, "kubernetes.io/metadata.name") if allow_custom_programs
            else CustomProgramRule())
    files: list[dict[str, Any]] = []
    for path in paths:
        entry: dict[str, Any] = {"file": path, "error": None, "policies": []}
        files.append(entry)
        try:
            located = load_cluster_objects([path]).policies
        except (ManifestError, OSError) as err:
            entry["error"] = str(err)
            continue
        if not located:
            entry["error"] = "no LwtRoutePolicy in this file"
        for loc in located:
            meta = loc.obj.get("metadata") or {}
            # A ClusterLwtRoutePolicy has no namespace ("" in the report).
            namespace = ("" if is_cluster_kind(loc.obj)
                         else str(meta.get("namespace") or "default"))
            problems = policy_problems(loc.obj, admin_namespace=admin_namespace,
                                       custom_programs=rule,
                                       namespace_labels={"kubernetes.io/metadata.name":
                                                         namespace})
            entry["policies"].append({
                "document": loc.document, "item": loc.item,
                "namespace": namespace, "name": meta.get("name"),
                "valid": not problems,
                "problems": [{"path": p.path, "message": p.message, "rule": p.rule,
                              "refusedBy": str(refused_by(p.rule))} for p in problems],
            })
    valid = all(f["error"] is None and all(p["valid"] for p in f["policies"]) for f in files)
    return {"valid": valid, "files": files}


def _print_text(report: dict[str, Any]) -> None:
    for entry in report["files"]:
        if entry["error"]:
            print(f"{entry['file']}: error: {entry['error']}")
        for policy in entry["policies"]:
            name = (f"{policy['namespace']}/{policy['name']}" if policy["namespace"]
                    else f"{policy['name']} (cluster-scoped)")
            where = f"{entry['file']}, document {policy['document']}: {name}"
            if policy["valid"]:
                print(f"{where}: valid")
                continue
            print(f"{where}: invalid")
            for problem in policy["problems"]:
                print(f"  {problem['path'] or '<object>'}: {problem['message']} "
                      f"[{problem['rule']}, refused by the {problem['refusedBy']}]")


def run(args: argparse.Namespace) -> int:
    from lwt_policy.model import ADMIN_NAMESPACE_ENV, DEFAULT_ADMIN_NAMESPACE

    admin = (args.admin_namespace or os.environ.get(ADMIN_NAMESPACE_ENV)
             or DEFAULT_ADMIN_NAMESPACE)
    report = validate_files(args.files, admin, args.allow_custom_programs)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        _print_text(report)
    return EXIT_OK if report["valid"] else EXIT_INVALID
