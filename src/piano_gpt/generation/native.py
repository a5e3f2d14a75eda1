"""A compiled decoding step for :class:`~piano_gpt.generation.runner.FastRunner` (CPU, float32 arithmetic).

A decoding step of a small model on a CPU is bound by memory traffic and per-op overhead: through
PyTorch a step is ~150 small ops, each with its dispatch cost, and BLAS reaches well under the
machine's bandwidth on matrix-times-a-few-vectors products. This module holds the whole step (the
embeddings, every layer's norms (LayerNorm or RMSNorm), matrix-vector products, q/k norms and
rotary positions, attention over the KV cache, GELU or SwiGLU and residual adds, the final norm and
the output head) as one C function, run in one OpenMP parallel
region, called once per token through ``ctypes``. It computes the same function as the runner's
PyTorch step, in float32, reading the same weights, caches and shared-prompt cache (the prompt is
still processed by PyTorch), so the two agree to float rounding. A bfloat16 model keeps its weight
matrices in bfloat16 for the step (each row widened to float32 as it is read: half the bytes from
memory, which bounds a batch-1 step) and its other tensors widened to float32 once, so it computes
what the float32 step computes on the bfloat16-rounded weights.

The C source (``native_step.c``, beside this module) is compiled on first use with the system C compiler
(``$CC``, else ``cc``; ``-O3 -march=native -fopenmp``) into a per-user cache directory
(``$PIANO_GPT_CACHE/native``, default ``~/.cache/piano_gpt/native``), named by a hash of the source
text, the flags and the CPU (an edited source recompiles), and loaded from there afterwards. Where no
compiler is found, the build fails or ``PIANO_GPT_NATIVE=0`` is set, :func:`library` gives ``None``
(:func:`unavailable_reason` says why) and the runner keeps its PyTorch step. OpenMP: on Linux, where
PyTorch ships ``libgomp``, the library binds to the copy PyTorch has already loaded (same soname), so
both share one thread pool; the step runs on ``torch.get_num_threads()`` threads. With AVX-512, or
AVX2 and FMA, the matrix-vector products use intrinsics (bfloat16 weights widened in registers);
elsewhere plain loops the compiler vectorises (same results to rounding).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path

import torch

SOURCE_FILE = "native_step.c"  # beside this module, shipped as package data

FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math"]

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_reason: str | None = None  # why there is no library, once a load was tried


class Layer(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_void_p)
        for name in (
            "ln1_w", "ln1_b", "qkv", "qkv_b", "proj", "proj_b",
            "ln2_w", "ln2_b", "fc", "fc_b", "fc2", "fc2_b", "q_norm_w", "k_norm_w",
        )
    ]  # fmt: skip


MATRICES = ("qkv", "proj", "fc", "fc2")  # a layer's weight matrices (bfloat16 in a bfloat16 model)


class Model(ctypes.Structure):
    _fields_ = [
        *[(name, ctypes.c_int64) for name in
          ("n_layer", "n_head", "n_embd", "n_ff", "vocab", "capacity", "max_time", "batch",
           "rmsnorm", "swiglu", "bf16")],
        ("eps", ctypes.c_float),
        ("qk_eps", ctypes.c_float),
        *[(name, ctypes.c_void_p) for name in
          ("wte", "wpe", "wtime", "lnf_w", "lnf_b", "head", "rope_cos", "rope_sin", "layers",
           "keys", "values", "shared_keys", "shared_values", "x", "h", "qkv", "att", "ff", "scores")],
    ]  # fmt: skip


def _cpu_signature() -> str:
    """What ``-march=native`` depends on, so a cache shared between machines keeps one build per CPU."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    parts.append(line.strip())
                    if len(parts) > 4:
                        break
    except OSError:
        pass
    return "\n".join(parts)


def cache_dir() -> Path:
    root = os.environ.get("PIANO_GPT_CACHE")
    base = (
        Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "piano_gpt"
    )
    return base / "native"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def source() -> str:
    """The C source of the step (``native_step.c``)."""
    return resources.files(__package__).joinpath(SOURCE_FILE).read_text()


def _compile(compiler: str, code: str, target: Path) -> None:
    """Compile ``code`` to ``target`` through a temporary file beside it (atomic: concurrent builders
    leave one whole file)."""
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        source = Path(work) / "step.c"
        source.write_text(code)
        built = Path(work) / target.name
        result = subprocess.run(
            [compiler, *FLAGS, str(source), "-o", str(built), "-lm"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"compiling the native step failed: {result.stderr.strip()[-2000:]}")
        os.replace(built, target)


def _build() -> ctypes.CDLL:
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC)")
    code = source()
    key = hashlib.sha256("\n".join([code, *FLAGS, compiler, _cpu_signature()]).encode()).hexdigest()[:16]
    name = f"piano_gpt_step_{key}.so"
    target = cache_dir() / name
    try:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _compile(compiler, code, target)
        library = ctypes.CDLL(str(target))
    except OSError:  # the cache is not writable: build for this process only
        with tempfile.TemporaryDirectory() as work:
            target = Path(work) / name
            _compile(compiler, code, target)
            library = ctypes.CDLL(str(target))  # stays mapped once the file is gone
    library.pg_step.argtypes = [
        ctypes.POINTER(Model),
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    library.pg_step.restype = ctypes.c_int
    return library


def enabled() -> bool:
    return os.environ.get("PIANO_GPT_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def library() -> ctypes.CDLL | None:
    """The compiled step (built on first call), or ``None`` where it is unavailable or disabled."""
    global _library, _reason
    if not enabled():
        return None
    with _lock:
        if _library is None and _reason is None:
            try:
                _library = _build()
            except (OSError, RuntimeError, subprocess.SubprocessError) as error:
                _reason = str(error)
    return _library


def unavailable_reason() -> str | None:
    """Why :func:`library` gives ``None`` (``None`` when it is available)."""
    if not enabled():
        return "disabled by PIANO_GPT_NATIVE=0"
    return None if library() is not None else _reason


def model_unsupported(config) -> str | None:
    """Why the compiled step cannot compute a model of this ``GPTConfig`` (``None`` when it can): it
    computes both families and their switches (learned or rotary positions, LayerNorm or RMSNorm,
    GELU or SwiGLU, q/k norms, biases)."""
    if config.norm not in ("layernorm", "rmsnorm") or config.mlp not in ("gelu", "swiglu"):
        return f"the native step has no norm={config.norm!r} / mlp={config.mlp!r}"
    return None


TILE = 16  # keys per tile of the native key cache


def tiled_length(n: int) -> int:
    """``n`` positions rounded up to whole key tiles."""
    return -(-n // TILE) * TILE


def tile_keys(keys: torch.Tensor) -> torch.Tensor:
    """Keys ``(..., T, D)`` in the native cache layout ``(..., ceil(T / 16), D, 16)`` (zero-padded)."""
    *lead, T, D = keys.shape
    padded = tiled_length(T)
    if padded != T:
        keys = torch.cat([keys, keys.new_zeros(*lead, padded - T, D)], dim=-2)
    return keys.reshape(*lead, padded // TILE, TILE, D).transpose(-1, -2)


def untile_keys(tiles: torch.Tensor, length: int) -> torch.Tensor:
    """The first ``length`` keys ``(..., length, D)`` of a tiled cache ``(..., n, D, 16)``."""
    *lead, n, D, tile = tiles.shape
    return tiles.transpose(-1, -2).reshape(*lead, n * tile, D)[..., :length, :]


class NativeStep:
    """The compiled step bound to one runner's weights, caches and scratch buffers.

    ``runner`` is a :class:`~piano_gpt.generation.runner.FastRunner` on the CPU (float32 arithmetic); its
    tensors must stay alive and in place (they are: the runner owns them for its lifetime).
    """

    def __init__(self, runner, library: ctypes.CDLL):
        reason = model_unsupported(runner.config)
        if reason:
            raise RuntimeError(f"no native step: {reason}")
        self.library = library
        B, C, H = runner.batch_size, runner.n_embd, runner.n_head
        n_ff = runner.layers[0].fc.size(0) // (2 if runner.swiglu else 1)  # SwiGLU: gate and up rows
        zeros = lambda *shape: torch.zeros(shape, dtype=torch.float32)  # noqa: E731
        self.scratch = dict(
            x=zeros(B, C), h=zeros(B, C), qkv=zeros(B, 3 * C), att=zeros(B, C), ff=zeros(B, n_ff),
            scores=zeros(B, H, tiled_length(runner.capacity) + 32),
        )  # fmt: skip
        self.keep = []  # every tensor a pointer is taken of
        self.matrix_dtype = torch.bfloat16 if runner.bf16_matrices else torch.float32
        self.layers = (Layer * len(runner.layers))()
        for i, layer in enumerate(runner.layers):
            for name, _ in Layer._fields_:
                tensor = getattr(layer, name)
                setattr(self.layers[i], name, self._hold(tensor, matrix=name in MATRICES))
        self.model = Model(
            n_layer=len(runner.layers), n_head=H, n_embd=C, n_ff=n_ff, vocab=runner.head.size(0),
            capacity=runner.capacity, max_time=runner.max_time, batch=B,
            rmsnorm=int(runner.rmsnorm), swiglu=int(runner.swiglu), bf16=int(runner.bf16_matrices),
            eps=runner.eps, qk_eps=runner.qk_eps,
            wte=self._hold(runner.wte), wpe=self._hold(runner.wpe), wtime=self._hold(runner.wtime),
            rope_cos=self._hold(runner.rope[0] if runner.rope else None),
            rope_sin=self._hold(runner.rope[1] if runner.rope else None),
            lnf_w=self._hold(runner.lnf_w), lnf_b=self._hold(runner.lnf_b),
            head=self._hold(runner.head, matrix=True),
            layers=ctypes.cast(self.layers, ctypes.c_void_p),
            keys=self._hold(runner.keys, True), values=self._hold(runner.values, True),
            shared_keys=self._hold(runner.shared_keys, True),
            shared_values=self._hold(runner.shared_values, True),
            **{name: self._hold(tensor, True) for name, tensor in self.scratch.items()},
        )  # fmt: skip
        self.model_ref = ctypes.byref(self.model)
        self.vocab = runner.head.size(0)

    def _hold(self, tensor: torch.Tensor | None, in_place: bool = False, matrix: bool = False) -> int | None:
        """The address of ``tensor``'s data, kept alive; a weight may be copied to contiguous memory,
        a cache or buffer (``in_place``) is used where it lies. Weight matrices (``matrix``) are float32
        or, for a bfloat16 model, bfloat16; everything else is float32."""
        if tensor is None:
            return None
        dtype = self.matrix_dtype if matrix else torch.float32
        if tensor.dtype != dtype or tensor.device.type != "cpu":
            raise ValueError(f"the native step takes {dtype} CPU tensors here, not {tensor.dtype}")
        if not tensor.is_contiguous():
            if in_place:
                raise ValueError("the native step writes caches in place: they must be contiguous")
            tensor = tensor.contiguous()
        self.keep.append(tensor)
        return tensor.data_ptr()

    def __call__(
        self, tokens: torch.Tensor, time_steps: torch.Tensor, position: int, shared: int
    ) -> torch.Tensor:
        """Logits ``(B, vocab)`` of one new token per row (``tokens``, ``time_steps``: ``(B,)``) at
        ``position`` (positions filled so far, the first ``shared`` in the shared cache)."""
        tokens = tokens.to(torch.int64).contiguous()
        time_steps = time_steps.to(torch.int64).contiguous()
        B = tokens.size(0)
        if tokens.shape != (B,) or time_steps.shape != (B,):
            raise ValueError(f"tokens and time steps must both be (B,), got {tuple(tokens.shape)}, "
                             f"{tuple(time_steps.shape)}")  # fmt: skip
        logits = torch.empty(B, self.vocab, dtype=torch.float32)
        status = self.library.pg_step(
            self.model_ref,
            tokens.data_ptr(),
            time_steps.data_ptr(),
            B,
            position,
            shared,
            torch.get_num_threads(),
            logits.data_ptr(),
        )
        if status:
            raise ValueError(
                f"native step refused its input (code {status}): batch {B}, position {position}, "
                "token ids must lie in the vocabulary"
            )
        return logits
