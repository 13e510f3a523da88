"""One name per concept: the API's hook list is the kernel side's."""
from lwt_agent.bpf.hooks import Hook
from lwt_agent.route import labels
from lwt_agent.route.model import HOOK_ORDER
from lwt_policy import catalogue, schema


def test_api_hooks_are_the_loader_hooks() -> None:
    assert schema.HOOKS == HOOK_ORDER == tuple(hook.value for hook in Hook)
    assert frozenset(HOOK_ORDER) == catalogue.HOOKS
    assert labels.HOOKS == HOOK_ORDER


def test_policy_owner_round_trips_through_a_label() -> None:
    class Ref:
        namespace, name = "shop", "web"

    owner = labels.policy_owner(Ref())
    label = labels.parse(labels.program_label(owner, "out", "ab" * 8, 7))
    assert label is not None and label.owner == "shop/web"
    assert labels.is_policy_owner(label.owner) and not labels.is_policy_owner("cli")
