"""Running a network's forward passes fast: compiled once the work pays for it, in a precision.

Two levers measured in ``benchmarks/`` (F5) decide how fast inference and training run on a
CPU, and both are here so that every inferer and bundle uses them the same way:

* ``torch.compile`` (inductor) fuses the memory-bound layers around each convolution (instance
  norm, PReLU, residual adds) and plans buffers: about 1.3-1.5x on the study's U-Net on 2
  cores, for outputs equal to the eager ones up to float rounding (argmax identical). It costs
  a compilation (tens of seconds cold, a few seconds from inductor's on-disk cache), so
  ``compile="auto"`` compiles only once the work has paid for it: at inference after a network
  has run :data:`COMPILE_AFTER_PIXELS` input pixels eagerly (a ski-rental rule: never more than
  about twice the best of the two choices), in training when the planned run's FLOPs reach
  :data:`TRAIN_COMPILE_AFTER_FLOP`.
  Counting pixels, not seconds, keeps the switch point, and so the outputs, reproducible.
* ``precision="bfloat16"`` runs the forward pass under :func:`torch.autocast` (opt-in: it
  changes the numbers; ``benchmarks/`` measures its argmax agreement with float32).

:class:`NetworkRunner` applies both to any network an inferer is handed;
:func:`compile_training` decides whether the bundles' trainers compile, and
:func:`training_network` with :func:`plain_tensor_batch` does it. MONAI's own
``SupervisedTrainer(compile=True)`` is not used: in MONAI 1.6.1 it fails after the first step
on collated batches (rebuilding the ``MetaTensor`` of a batch whose meta holds tensors raises
"Boolean value of Tensor with more than one value is ambiguous").
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
import weakref
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.data import MetaTensor

from seglab.errors import SeglabError

__all__ = [
    "COMPILE_AFTER_PIXELS",
    "COMPILE_MODES",
    "TRAIN_COMPILE_AFTER_FLOP",
    "PRECISIONS",
    "NetworkRunner",
    "check_compile_mode",
    "check_precision",
    "compile_training",
    "compile_unavailable",
    "even_batches",
    "plain_tensor_batch",
    "training_network",
]

log = logging.getLogger(__name__)

COMPILE_MODES: tuple[str, ...] = ("auto", "on", "off")
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")

#: Input pixels (tiles x tile height x tile width) a network runs eagerly before
#: ``compile="auto"`` compiles it for inference. 2**26 is 1024 tiles of 256 x 256 px: about
#: 15 s of eager inference of the study's U-Net on 2 cores (12.6 images of 1024 x 1024 px with
#: the uniform-81 plan), about what a cold compilation costs. (Counted in pixels, so a much
#: smaller network compiles earlier than it would pay.)
COMPILE_AFTER_PIXELS = 2**26

#: Planned training FLOPs (3 x the forward FLOPs per patch, for the backward pass, x patches)
#: above which ``compile="auto"`` compiles a trainer: 1e13 is about 2000 patches of the study's
#: U-Net, 100 s of eager training on 2 cores. Compiling a training graph cold cost about as
#: much (the demo's smaller U-Net, 4.2e12 FLOP planned, trained in 210 s compiled against
#: 106 s eager).
TRAIN_COMPILE_AFTER_FLOP = 1e13


def check_compile_mode(value: Any) -> str:
    """Return ``value`` as one of :data:`COMPILE_MODES` (True/False mean ``"on"``/``"off"``)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and value.strip().lower() in COMPILE_MODES:
        return value.strip().lower()
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return "on" if value.strip().lower() == "true" else "off"
    raise SeglabError(
        f"compile must be one of {', '.join(COMPILE_MODES)}, got {value!r}",
        "use compile='auto' (compile once the work pays for it), 'on' or 'off'",
    )


def check_precision(value: Any) -> str:
    """Return ``value`` as one of :data:`PRECISIONS`."""
    if isinstance(value, str) and value.strip().lower() in PRECISIONS:
        return value.strip().lower()
    raise SeglabError(
        f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}",
        "use precision='float32' (exact) or 'bfloat16' (faster, opt-in)",
    )


def compile_unavailable(device: torch.device | str) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here, or None when it can.

    Inductor generates C++ for CPUs (it needs a C++ compiler) and Triton kernels for CUDA.
    """
    kind = torch.device(device).type
    if kind == "cpu":
        candidates = [os.environ.get("CXX"), "g++", "c++", "clang++"]
        if not any(name and shutil.which(name) for name in candidates):
            return "no C++ compiler (g++, c++ or clang++) on PATH"
        return None
    if kind == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "the triton package is not installed"
        return None
    return f"torch.compile is not set up for {kind} devices here"


def compile_training(
    compile: Any,  # noqa: A002 (MONAI's SupervisedTrainer(compile=...) uses the name)
    device: torch.device | str,
    patches: int,
    patch_size: int | tuple[int, ...],
    network: torch.nn.Module | None = None,
    in_channels: int = 1,
) -> bool:
    """Whether a trainer should compile its network (MONAI ``SupervisedTrainer(compile=...)``).

    Parameters
    ----------
    compile : {"auto", "on", "off"} or bool
        ``"auto"`` compiles when the planned run costs at least
        :data:`TRAIN_COMPILE_AFTER_FLOP` (counted on ``network`` with one zero patch) and
        compiling is possible on ``device``.
    device : torch.device or str
        Where the network trains.
    patches : int
        Training patches the run plans (epochs x images x patches per image).
    patch_size : int or tuple of int
        Patch size in pixels (one int for a square patch).
    network : torch.nn.Module, optional
        The network, for its FLOPs per patch; without it ``"auto"`` never compiles.
    in_channels : int
        Input channels of a patch.

    Raises
    ------
    SeglabError
        ``compile="on"`` where compiling is not possible.
    """
    mode = check_compile_mode(compile)
    if mode == "off":
        return False
    reason = compile_unavailable(device)
    if mode == "on":
        if reason is not None:
            raise SeglabError(
                f"compile=on but torch.compile cannot run here: {reason}",
                "install it, or train with compile=auto or off",
            )
        return True
    if reason is not None or network is None:
        return False
    from seglab.networks.profile import forward_flops

    sides = (patch_size,) * 2 if isinstance(patch_size, int) else tuple(patch_size)
    per_patch = forward_flops(network, (1, int(in_channels), *(int(side) for side in sides)))
    return 3 * per_patch * int(patches) >= TRAIN_COMPILE_AFTER_FLOP


def _warn_compile_failed(err: Exception, where: str, then: str) -> None:
    """Warn, in one line, that compiling failed and what happens instead."""
    first = str(err).splitlines()[0] if str(err) else ""
    warnings.warn(
        f"seglab: torch.compile failed{where} ({type(err).__name__}: {first}); {then}",
        stacklevel=3,
    )


class _CompiledTraining(torch.nn.Module):
    """A network's compiled forward pass, falling back to the eager one if compiling fails."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        # not a submodule: parameters and state_dict stay those of ``network``
        object.__setattr__(self, "_compiled", torch.compile(network))
        self._failed = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the compiled network, or the eager one once compiling has failed."""
        if not self._failed:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as err:  # compiler or graph errors: fall back, once
                self._failed = True
                _warn_compile_failed(err, " in training", "training the network without it")
        return self.network(*args, **kwargs)


def training_network(network: torch.nn.Module, compile: bool) -> torch.nn.Module:  # noqa: A002
    """Return the module a trainer should run: ``network`` compiled, or ``network`` itself.

    Parameters
    ----------
    network : torch.nn.Module
        The bundle's network; checkpoints, optimisers and handlers keep using it (the compiled
        module shares its parameters).
    compile : bool
        From :func:`compile_training`. The compiled module falls back to the eager network,
        with a warning, if compiling fails at its first call.
    """
    return _CompiledTraining(network) if compile else network


def plain_tensor_batch(
    batchdata: Any, device: Any = None, non_blocking: bool = False, **kwargs: Any
) -> Any:
    """MONAI's ``default_prepare_batch`` with every ``MetaTensor`` made a plain tensor.

    The trainers' ``prepare_batch``: a compiled network takes plain tensors (dynamo traces
    ``MetaTensor`` poorly), and the trainer's post-processing and metrics need no meta data.
    """
    from monai.engines.utils import default_prepare_batch

    batch = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
    if isinstance(batch, MetaTensor):
        return batch.as_tensor()
    if isinstance(batch, tuple | list):
        return type(batch)(
            item.as_tensor() if isinstance(item, MetaTensor) else item for item in batch
        )
    return batch


def even_batches(count: int, batch_size: int) -> int:
    """Return the batch size splitting ``count`` items into few, nearly equal batches.

    ``count`` items in ``ceil(count / batch_size)`` batches of this size, the last shorter by
    fewer items than there are batches: a compiled network then sees one batch shape (the short
    batch is padded) and wastes at most that many items, e.g. 81 tiles at 16 give 6 batches of
    14 (3 padded) instead of 5 of 16 and one of 1.
    """
    if count <= 0:
        return max(1, batch_size)
    batches = -(-count // batch_size)
    return -(-count // batches)


@dataclass
class _NetworkState:
    """What this process knows about one network: eager pixels run, its compiled module."""

    pixels: int = 0
    #: one compiled module per precision, so that compiling for one precision never touches
    #: the other's graphs (sharing one module was measured no slower, in one process)
    compiled: dict[str, Callable[..., Any]] = field(default_factory=dict)
    failed: bool = False


#: Per network, for the whole process: inferers are often made per call (a registered model
#: makes one per ``predict``, e.g. per slab of a stack), and the eager work counted and the
#: compiled module must outlive them.
_STATES: weakref.WeakKeyDictionary[torch.nn.Module, _NetworkState] = weakref.WeakKeyDictionary()


class NetworkRunner:
    """Run a network's forward passes: compiled when it pays, in the chosen precision.

    Parameters
    ----------
    compile : {"auto", "on", "off"} or bool
        ``"auto"`` (default) runs a network eagerly until it has seen
        ``compile_after_pixels`` input pixels, then compiles it; ``"on"`` compiles at once;
        ``"off"`` never. Networks in training mode always run eagerly, and ``"auto"`` runs
        bfloat16 on a CPU eagerly (compiled it was slower there). Where compiling is not
        possible (:func:`compile_unavailable`) or fails, the network runs eagerly and a warning
        says why, once.
    precision : {"float32", "bfloat16"}
        ``"bfloat16"`` runs forward passes under :func:`torch.autocast` (CPU or CUDA).
    compile_after_pixels : int
        The ``"auto"`` threshold (default :data:`COMPILE_AFTER_PIXELS`).

    Notes
    -----
    Call as ``runner(network, batch, pad_to=n)`` with ``batch`` ``(b, C, H, W)``: returns the
    network's output for the batch (a plain tensor). A compiled network compiles one graph per
    batch shape, so callers pass batches of one size (see :func:`even_batches`) and ``pad_to``:
    a shorter batch is padded with zeros to ``pad_to`` items for the compiled network and the
    padding's outputs dropped. The compiled module shares the network's parameters, so weights
    loaded or trained later are used. The eager pixels counted, the compiled module and a
    failure to compile belong to the network, for the whole process: every runner sees them.
    """

    def __init__(
        self,
        compile: Any = "auto",  # noqa: A002 (the name MONAI's trainer uses)
        precision: Any = "float32",
        compile_after_pixels: int = COMPILE_AFTER_PIXELS,
    ) -> None:
        self.compile = check_compile_mode(compile)
        self.precision = check_precision(precision)
        if isinstance(compile_after_pixels, bool) or int(compile_after_pixels) < 0:
            raise SeglabError(
                f"compile_after_pixels must be a non-negative integer, got "
                f"{compile_after_pixels!r}",
                f"pass e.g. {COMPILE_AFTER_PIXELS}",
            )
        self.compile_after_pixels = int(compile_after_pixels)

    def is_compiled(self, network: Any) -> bool:
        """Whether this runner now runs ``network`` compiled (float32 on a CPU)."""
        state = _STATES.get(network) if isinstance(network, torch.nn.Module) else None
        usable = state is not None and self.precision in state.compiled and not state.failed
        return usable and self.compile != "off"

    def _autocast(self, device: torch.device) -> Any:
        if self.precision == "float32":
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def _compiled_forward(self, network: Any, batch: torch.Tensor) -> Callable[..., Any] | None:
        """Return the compiled network when it should run compiled now, else None (and count)."""
        if self.compile == "off" or not isinstance(network, torch.nn.Module) or network.training:
            return None
        cpu_bf16 = self.precision != "float32" and batch.device.type == "cpu"
        if self.compile == "auto" and cpu_bf16:
            return None  # measured slower than eager bf16 on CPUs (benchmarks/RESULTS.md)
        state = _STATES.setdefault(network, _NetworkState())
        if state.failed:
            return None
        compiled = state.compiled.get(self.precision)
        if compiled is None:
            due = self.compile == "on" or state.pixels >= self.compile_after_pixels
            if not due:
                state.pixels += int(batch.shape[0]) * int(batch[0, 0].numel())
                return None
            reason = compile_unavailable(batch.device)
            if reason is not None:
                state.failed = True
                warnings.warn(
                    f"seglab: running the network without torch.compile: {reason}", stacklevel=3
                )
                return None
            log.info("compiling %s with torch.compile", type(network).__name__)
            compiled = state.compiled[self.precision] = torch.compile(network)
        return compiled

    def __call__(
        self,
        network: Callable[..., Any],
        batch: torch.Tensor,
        *args: Any,
        pad_to: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Return ``network(batch, *args, **kwargs)`` as a plain tensor, run the fast way."""
        if isinstance(batch, MetaTensor):
            batch = batch.as_tensor()
        compiled = self._compiled_forward(network, batch)
        with self._autocast(batch.device):
            if compiled is not None:
                count = int(batch.shape[0])
                padded = batch
                if pad_to is not None and count < pad_to:
                    filler = batch.new_zeros((pad_to - count, *batch.shape[1:]))
                    padded = torch.cat([batch, filler])
                try:
                    out = compiled(padded, *args, **kwargs)[:count]
                except Exception as err:  # compiler or graph errors: fall back, once
                    _STATES[network].failed = True
                    _warn_compile_failed(err, "", "running the network without it")
                    out = network(batch, *args, **kwargs)
            else:
                out = network(batch, *args, **kwargs)
        if isinstance(out, MetaTensor):
            out = out.as_tensor()
        return out
