"""lwt-agent command line (verbs are added by their modules)."""
import sys


def main(argv: list[str] | None = None) -> int:
    print("lwt-agent: not yet", file=sys.stderr)
    return 2
