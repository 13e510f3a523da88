"""Pure-Python BPF object loader (pyelftools + bpf(2)); see docs/loader.md."""
from .errors import (
    KernelError,
    LoaderError,
    MalformedObjectError,
    PinConflictError,
    UnsupportedFeatureError,
    VerifierError,
)

__all__ = [
    "KernelError",
    "LoaderError",
    "MalformedObjectError",
    "PinConflictError",
    "UnsupportedFeatureError",
    "VerifierError",
]
