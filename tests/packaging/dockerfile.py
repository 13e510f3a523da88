"""Just enough of a Dockerfile reader to run a stage's build steps outside a container engine.

The Dockerfile stays the one source of truth: tests read its instructions (FROM stages, ARG
defaults, WORKDIR, COPY, RUN, ENV) and replay them on this machine, instead of repeating the
commands. It understands the subset the project's Dockerfile uses and refuses the rest, so a
new instruction the replay does not model fails loudly instead of being skipped.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


class DockerfileSyntaxError(Exception):
    """The Dockerfile uses something this reader does not model; extend it or the test."""


@dataclass(frozen=True)
class Instruction:
    keyword: str                # upper-case: RUN, COPY, ...
    flags: tuple[str, ...]      # leading --flag[=value] arguments
    arguments: str              # the rest, as written (continuations joined)
    line: int


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def args(self) -> dict[str, str]:
        """ARG defaults declared in this stage."""
        values: dict[str, str] = {}
        for ins in self.instructions:
            if ins.keyword == "ARG":
                name, _, default = ins.arguments.partition("=")
                values[name.strip()] = default.strip()
        return values

    def env(self, variables: dict[str, str]) -> dict[str, str]:
        """ENV settings of this stage, expanded with `variables` (ARGs and earlier ENVs)."""
        env: dict[str, str] = {}
        for ins in self.instructions:
            if ins.keyword != "ENV":
                continue
            for pair in shlex.split(ins.arguments):
                key, sep, value = pair.partition("=")
                if not sep:
                    raise DockerfileSyntaxError(f"line {ins.line}: use ENV KEY=VALUE")
                env[key] = expand(value, {**variables, **env})
        return env


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str | None) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r} in the Dockerfile")


_FLAG = re.compile(r"--[a-z-]+(=\S+)?")


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations; drop comments and blank lines (as Docker does)."""
    lines: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current.append(stripped[:-1].strip())
            continue
        current.append(stripped)
        lines.append((start, " ".join(part for part in current if part)))
        current = []
    if current:
        raise DockerfileSyntaxError("the Dockerfile ends inside a line continuation")
    return lines


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: list[str] = []
        rest = rest.strip()
        while match := _FLAG.match(rest):
            flags.append(match.group(0))
            rest = rest[match.end():].strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=words[0]))
            continue
        instruction = Instruction(keyword, tuple(flags), rest, number)
        if not stages:
            if keyword != "ARG":
                raise DockerfileSyntaxError(f"line {number}: only ARG may precede FROM")
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip()
            continue
        stages[-1].instructions.append(instruction)
    return Dockerfile(global_args=global_args, stages=stages)


def expand(text: str, variables: dict[str, str]) -> str:
    """Docker's ${VAR} / $VAR substitution (the forms the Dockerfile uses)."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise DockerfileSyntaxError(f"${name} is not an ARG or ENV of the stage")
        return variables[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", substitute, text)


def dockerignore_excludes(patterns: list[str], relative: str) -> bool:
    """Whether a context path is excluded (Docker's rules: last match wins, `!` re-includes,
    a pattern that matches a parent directory matches everything under it)."""
    excluded = False
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        regex = _pattern_regex(body.strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def read_dockerignore(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
