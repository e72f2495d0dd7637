"""Record every Triton launch a piece of code would make on CUDA, without a GPU and without running anything.

`capture(sms)` swaps Triton's launch entry points for recorders while it is active:

    JITFunction.run   binds the arguments exactly as Triton does for a launch (its own binder, for an NVIDIA
                      backend), which gives the signature (pointer dtypes, integer widths), the constexprs and
                      the specialisation attributes (integers equal to 1, pointers and integers divisible by
                      16), evaluates the grid, records a `Launch` and returns without compiling or launching;
    Autotuner.run     records one launch per configuration the autotuner would try for these arguments
                      (after its `prune_configs_by`), each marked `autotune=(i, n)`, since it may pick any;
    torch.cuda.get_device_properties
                      answers with the SM count of the target, which launchers read to size their grids.

Tensors are usually on the "meta" device (shapes and strides without memory), so realistic GPU shapes cost
nothing. Their addresses are taken as 256-byte aligned plus the storage offset, as from the CUDA allocator,
so a slice that starts mid-row loses its 16-byte alignment here as it would on a GPU. Launchers must be
called with backend="triton" (meta tensors are not CUDA tensors). Outputs of captured launches are never
written, so code that reads them gets whatever `torch.empty` held.
"""
from __future__ import annotations

import contextlib
import contextvars
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch

GRID_LIMITS = (2**31 - 1, 65535, 65535)  # CUDA's largest grid in x, y, z (the same on sm_80 and sm_90)
_TRITON_DIR = None  # set by `_internals()`: frames inside Triton are skipped when naming a launch site
_HERE = str(Path(__file__).resolve())
_case = contextvars.ContextVar("case", default="")
_autotune = contextvars.ContextVar("autotune", default=None)


class UnsupportedTriton(RuntimeError):
    """The installed Triton lacks an internal this check drives (it then cannot vouch for anything)."""


@dataclass(frozen=True)
class Launch:
    """One kernel launch the CUDA path would make, with everything `triton.compile` needs."""
    module: str  # where the @triton.jit function lives, e.g. "kernels.attention"
    kernel: str  # its name
    signature: tuple  # ((param, type), ...): "*bf16", "i32", "fp32", "constexpr", ...
    constexprs: tuple  # ((path, value), ...) including integers specialised to 1
    meta: tuple  # ((name, value), ...) of the parameters declared tl.constexpr
    attrs: tuple  # ((path, ((attr, value), ...)), ...): e.g. tt.divisibility 16
    num_warps: int
    num_stages: int
    case: str  # the case that made it
    site: str  # the launcher line, "kernels/attention.py:320"
    autotune: tuple | None  # (i, n): configuration i of the n the autotuner tries; None: the one config
    grid: tuple  # (x, y, z)

    def job(self) -> tuple:
        """What decides the compiled binary: two launches with equal jobs compile to the same code."""
        return (self.module, self.kernel, self.signature, self.constexprs, self.attrs, self.num_warps,
                self.num_stages)

    def config(self) -> str:
        """The named meta-parameters in words, led by the first pointer's dtype: "bf16 HEAD_DIM=64 BLOCK_M=128"."""
        dtype = next((t[1:] for _, t in self.signature if t.startswith("*")), "-")
        return " ".join([dtype, *(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in self.meta)])


class _Pointer:
    """What Triton's binder reads from a tensor argument: its dtype and its address."""

    def __init__(self, t: torch.Tensor):
        self.dtype = t.dtype
        self._ptr = 256 + t.storage_offset() * t.element_size()

    def data_ptr(self):
        return self._ptr


def _internals():
    """The pieces of Triton this check drives; UnsupportedTriton names the one that is missing."""
    global _TRITON_DIR
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource, make_backend
        from triton.runtime.autotuner import Autotuner
        from triton.runtime.jit import JITFunction, create_function_from_signature
        from triton import knobs
        for owner, attr in ((JITFunction, "run"), (JITFunction, "_pack_args"), (Autotuner, "run"),
                            (Autotuner, "prune_configs"), (knobs.nvidia, "dump_ptxas_log")):
            if not hasattr(owner, attr):
                raise AttributeError(f"{getattr(owner, '__name__', type(owner).__name__)}.{attr}")
    except (ImportError, AttributeError) as e:
        raise UnsupportedTriton(f"Triton {_version()} does not have {e}") from e
    _TRITON_DIR = str(Path(triton.__file__).resolve().parent)
    return types.SimpleNamespace(GPUTarget=GPUTarget, ASTSource=ASTSource, make_backend=make_backend,
                                 Autotuner=Autotuner, JITFunction=JITFunction,
                                 create_function_from_signature=create_function_from_signature)


def _version():
    try:
        import triton
        return triton.__version__
    except ImportError:
        return "(not installed)"


def _site() -> str:
    """file:line of the innermost caller outside Triton and this module: the launcher."""
    f = sys._getframe(1)
    while f is not None:
        name = str(Path(f.f_code.co_filename).resolve())
        if not name.startswith(_TRITON_DIR) and name != _HERE:
            try:
                name = str(Path(name).relative_to(Path.cwd()))
            except ValueError:
                pass
            return f"{name}:{f.f_lineno}"
        f = f.f_back
    return "?"


def _freeze(x):
    if isinstance(x, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    return x


class _Recorder:
    def __init__(self, tri, sms: int):
        self.tri, self.sms = tri, sms
        self.backend = tri.make_backend(tri.GPUTarget("cuda", 90, 32))
        self.binders = {}
        self.launches: list[Launch] = []

    def jit_run(self, fn, args, kwargs):
        """JITFunction.run without compiling: bind, specialise, evaluate the grid, record."""
        grid = kwargs.pop("grid")
        kwargs.pop("warmup", None)
        if fn not in self.binders:
            self.binders[fn] = self.tri.create_function_from_signature(fn.signature, fn.params, self.backend)
        args = [_Pointer(a) if isinstance(a, torch.Tensor) else a for a in args]
        kwargs = {k: _Pointer(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        bound, specialization, options = self.binders[fn](*args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(self.backend, kwargs, bound, specialization, options)
        g = grid(bound) if callable(grid) else grid
        g = tuple(int(x) for x in g) + (1,) * (3 - len(g))
        self.launches.append(Launch(
            module=fn.fn.__module__, kernel=fn.fn.__name__, signature=tuple(signature.items()),
            constexprs=_freeze(constexprs), attrs=_freeze(attrs),
            meta=tuple((p.name, bound[p.name]) for p in fn.params if p.is_constexpr), num_warps=options.num_warps,
            num_stages=options.num_stages, case=_case.get(), site=_site(), autotune=_autotune.get(), grid=g))

    def autotune_run(self, tuner, args, kwargs):
        """Autotuner.run without timing: one recorded launch per configuration it would try."""
        tuner.nargs = dict(zip(tuner.arg_names, args))
        configs = tuner.configs if len(tuner.configs) == 1 else tuner.prune_configs(kwargs)
        try:
            for i, config in enumerate(configs):
                token = _autotune.set((i + 1, len(configs)) if len(tuner.configs) > 1 else None)
                try:
                    tuner.fn.run(*args, **kwargs, **config.all_kwargs())
                finally:
                    _autotune.reset(token)
        finally:
            tuner.nargs = None

    def device_properties(self, device=None):
        return types.SimpleNamespace(multi_processor_count=self.sms)


@contextlib.contextmanager
def capture(sms: int):
    """Within the block, Triton launches are recorded into the yielded list instead of run (see the module)."""
    tri = _internals()
    rec = _Recorder(tri, sms)
    saved = (tri.JITFunction.run, tri.Autotuner.run, torch.cuda.get_device_properties)
    tri.JITFunction.run = lambda fn, *args, **kwargs: rec.jit_run(fn, args, kwargs)
    tri.Autotuner.run = lambda tuner, *args, **kwargs: rec.autotune_run(tuner, args, kwargs)
    torch.cuda.get_device_properties = rec.device_properties
    try:
        yield rec.launches
    finally:
        tri.JITFunction.run, tri.Autotuner.run, torch.cuda.get_device_properties = saved


@contextlib.contextmanager
def case(name: str):
    """Launches recorded inside the block are credited to the case `name`."""
    token = _case.set(name)
    try:
        yield
    finally:
        _case.reset(token)
