"""The node agent: program store, reconciler, guard, metrics and samples, and the two ways
to feed it (standalone files, the Kubernetes API). See docs/agent.md."""
