# Top-level convenience targets. For now only the benchmarks (issue 7); the tests run with
# scripts/run-tests.sh. Needs root (network namespaces, CAP_BPF, CAP_NET_ADMIN).
#
#   make bench               full run (~30 min): JSON in benchmarks/results/, rewrites
#                            docs/performance.md and its plots
#   make bench-quick         the < 5 min mode; writes only benchmarks/results/
#   make bench ARGS=--quick  the same (make itself cannot take `--quick`)
PYTHON ?= .venv/bin/python
ARGS ?=

.PHONY: bench bench-quick

bench:
	$(MAKE) -s -C bpf
	$(PYTHON) -m benchmarks $(ARGS)

bench-quick:
	$(MAKE) -s -C bpf
	$(PYTHON) -m benchmarks --quick $(ARGS)
