"""Issue 12 item 8: the agent sees only its own directory of the host's bpffs."""
from __future__ import annotations

from lwt_agent.agent import runtime
from lwt_operator.daemonset import PIN_SUBDIR, build_daemonset
from lwt_operator.settings import AgentSettings


def _pod(bpffs: str) -> dict:
    manifest = build_daemonset(AgentSettings(bpffsPath=bpffs), name="lwt-agent",
                               namespace="lwt-system", admin_namespace="lwt-system")
    return manifest["spec"]["template"]["spec"]


def test_agent_mounts_only_its_pin_directory_not_the_whole_bpffs() -> None:
    pod = _pod("/sys/fs/bpf")
    (volume,) = pod["volumes"]
    assert volume["hostPath"] == {"path": "/sys/fs/bpf/lwt-operator",
                                  "type": "DirectoryOrCreate"}
    (mount,) = pod["containers"][0]["volumeMounts"]
    assert mount["mountPath"] == "/sys/fs/bpf/lwt-operator"
    # A trailing slash in the setting changes nothing.
    assert _pod("/run/bpf/")["volumes"][0]["hostPath"]["path"] == "/run/bpf/lwt-operator"


def test_the_mount_is_where_the_agent_pins(monkeypatch) -> None:
    """The container's LWT_BPFFS + the agent's pin sub-directory is the mounted directory."""
    pod = _pod("/sys/fs/bpf")
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    monkeypatch.setenv("LWT_BPFFS", env["LWT_BPFFS"])
    assert runtime.PIN_SUBDIR == PIN_SUBDIR
    assert str(runtime.default_pin_root()) == container["volumeMounts"][0]["mountPath"]
