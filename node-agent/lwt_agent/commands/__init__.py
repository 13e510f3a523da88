"""One module per `lwt-agent` verb.

Each module exposes `NAME: str`, `HELP: str`, `register(parser: argparse.ArgumentParser) -> None`
and `run(args: argparse.Namespace) -> int`. `lwt_agent.cli.COMMANDS` lists them in `--help` order.
"""
