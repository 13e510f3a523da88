"""lwt_policy: the LwtRoutePolicy API, pure Python (no kernel, no network).

- `schema`: the CRD's openAPIV3Schema and CEL rules, the single source of truth;
  `crd` generates crds/lwt.dev_lwtroutepolicies.yaml from it.
- `validation`: offline defaulting, schema and CEL evaluation with the CRD's own rules.
- `model`: typed, validated policies (`parse_policy`, `validate_policy`); `selectors`.
- `targets`: which programs belong on which routes of one node (priorities, conflicts).
- `configmap`: configMap program sources to object bytes (sha256 checked).
- `manifests`: Kubernetes-format input files for standalone mode; `check` validates them.
- `status`: each node's entries (its LwtNodeState), the policy's summary and conditions.
- `catalogue`, `program_config`: the built-in programs and their typed configuration.
"""
