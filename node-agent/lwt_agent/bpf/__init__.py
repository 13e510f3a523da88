"""Pure-Python BPF object loader (pyelftools + bpf(2)) for LWT programs; see docs/loader.md.

    spec = ObjectSpec.from_file("counters.o")          # parse only, never touches the kernel
    with spec.load("lwt_counters", Hook.OUT) as prog:  # maps created, program loaded
        prog.fd, prog.id, prog.tag, prog.maps["..."]
"""
from .core import CoreRelo, Kind
from .errors import (
    CoreRelocationError,
    ForbiddenInstructionError,
    KernelError,
    LimitError,
    LoaderError,
    MalformedObjectError,
    PinConflictError,
    PinDirError,
    PinNameError,
    UnsatisfiedRelocationError,
    UnsupportedFeatureError,
    VerifierError,
)
from .hooks import Hook
from .loader import LoadedProgram
from .maps import BpfMap, MapSpec
from .objects import ObjectSpec, UnsupportedFeature
from .programs import ProgramSpec

__all__ = [
    "BpfMap",
    "CoreRelo",
    "CoreRelocationError",
    "ForbiddenInstructionError",
    "Hook",
    "KernelError",
    "Kind",
    "LimitError",
    "LoadedProgram",
    "LoaderError",
    "MalformedObjectError",
    "MapSpec",
    "ObjectSpec",
    "PinConflictError",
    "PinDirError",
    "PinNameError",
    "ProgramSpec",
    "UnsatisfiedRelocationError",
    "UnsupportedFeature",
    "UnsupportedFeatureError",
    "VerifierError",
]
