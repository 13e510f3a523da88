"""lwt-operator benchmarks: datapath cost against the alternatives, control-plane speed.

Run `python -m benchmarks --help` (or `make bench`, `make bench-quick`); see
docs/performance.md for the latest full run.
"""
