"""lwt-operator command line."""
import sys


def main(argv: list[str] | None = None) -> int:
    print("lwt-operator: not yet", file=sys.stderr)
    return 2
