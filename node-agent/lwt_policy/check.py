"""Validate LwtRoutePolicy files offline, exactly as the operator and the agent will.

    python -m lwt_policy.check examples/*.yaml
    python -m lwt_policy.check --admin-namespace net-admin policies.yaml

Exit 0 when every policy is valid, 1 when one is invalid, 2 when a file cannot be read.
`check_policies` is the same step for callers (standalone mode): it splits located policy
objects into valid, typed policies and refusals that name the file, document and field.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from lwt_policy.errors import ManifestError, PolicyValidationError
from lwt_policy.manifests import Located, load_cluster_objects
from lwt_policy.model import Catalogue, LwtRoutePolicy, admin_namespace_from_env, parse_policy

EXIT_INVALID = 1
EXIT_UNREADABLE = 2


@dataclass(frozen=True)
class Refusal:
    location: Located
    error: PolicyValidationError

    def __str__(self) -> str:
        lines = [f"{self.location.where}: {self.error.where} is invalid:"]
        lines += [f"  {problem}" for problem in self.error.problems]
        return "\n".join(lines)


@dataclass
class CheckedPolicies:
    valid: list[tuple[Located, LwtRoutePolicy]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    @property
    def policies(self) -> list[LwtRoutePolicy]:
        return [policy for _, policy in self.valid]


def check_policies(located: Iterable[Located], admin_namespace: str,
                   catalogue: Catalogue | None = None) -> CheckedPolicies:
    """Parse each policy; an invalid one is refused alone, the others still apply."""
    result = CheckedPolicies()
    for loc in located:
        try:
            policy = parse_policy(loc.obj, admin_namespace=admin_namespace,
                                  catalogue=catalogue)
        except PolicyValidationError as err:
            result.refused.append(Refusal(loc, err))
        else:
            result.valid.append((loc, policy))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lwt_policy.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="YAML/JSON files (lists and multi-document)")
    parser.add_argument("--admin-namespace", default=None,
                        help="namespace allowed to use podSubnets (default: "
                        "$LWT_ADMIN_NAMESPACE, $POD_NAMESPACE, else lwt-system)")
    args = parser.parse_args(argv)
    admin = args.admin_namespace or admin_namespace_from_env()
    try:
        objects = load_cluster_objects(args.files)
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_UNREADABLE
    checked = check_policies(objects.policies, admin)
    for loc, policy in checked.valid:
        print(f"{loc.where}: {policy.ref}: valid")
    for refusal in checked.refused:
        print(refusal)
    if not objects.policies:
        print("no LwtRoutePolicy found", file=sys.stderr)
    return EXIT_INVALID if checked.refused else 0


if __name__ == "__main__":
    sys.exit(main())
