"""A compiled decoding step for :class:`~piano_gpt.generation.runner.FastRunner` (CPU, float32).

A decoding step of a small model on a CPU is bound by memory traffic and per-op overhead: through
PyTorch a step is ~150 small ops, each with its dispatch cost, and BLAS reaches well under the
machine's bandwidth on matrix-times-a-few-vectors products. This module holds the whole step (the
embeddings, every layer's layer norms, matrix-vector products, attention over the KV cache, GELU and
residual adds, the final norm and the output head) as one C function, run in one OpenMP parallel
region, called once per token through ``ctypes``. It computes the same function as the runner's
PyTorch step, in float32, reading the same weights, caches and shared-prompt cache (the prompt is
still processed by PyTorch), so the two agree to float rounding.

The C source is compiled on first use with the system C compiler (``$CC``, else ``cc``; ``-O3
-march=native -fopenmp``, ~0.6 s) into a per-user cache directory
(``$PIANO_GPT_CACHE/native``, default ``~/.cache/piano_gpt/native``), named by a hash of the source,
the flags and the CPU, and loaded from there afterwards. Where no compiler is found, the build fails
or ``PIANO_GPT_NATIVE=0`` is set, :func:`library` gives ``None`` (:func:`unavailable_reason` says why)
and the runner keeps its PyTorch step. OpenMP: on Linux, where PyTorch ships ``libgomp``, the library
binds to the copy PyTorch has already loaded (same soname), so both share one thread pool; the step
runs on ``torch.get_num_threads()`` threads. With AVX-512 the matrix-vector products use intrinsics;
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
from pathlib import Path

import torch

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const float *ln1_w, *ln1_b, *qkv, *qkv_b, *proj, *proj_b;
    const float *ln2_w, *ln2_b, *fc, *fc_b, *fc2, *fc2_b;
} pg_layer;

typedef struct {
    int64_t n_layer, n_head, n_embd, n_ff, vocab, capacity, max_time, batch;
    float eps;
    const float *wte, *wpe, *wtime, *lnf_w, *lnf_b, *head;
    const pg_layer *layers;
    /* keys (n_layer, batch, n_head, ceil(capacity / 16), head_dim, 16), values (..., capacity, head_dim);
       the shared prompt's the same without the batch dimension */
    float *keys, *values, *shared_keys, *shared_values;
    float *x, *h, *qkv, *att, *ff, *scores; /* scratch */
} pg_model;

enum { STORE = 0, ADD = 1, GELU = 2 };

/* erf to ~4e-7 (Eigen's rational approximation of float erf), branch-free so loops vectorise. */
static inline float pg_erf(float a) {
    float x = a > 4.f ? 4.f : (a < -4.f ? -4.f : a);
    float x2 = x * x;
    float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
    p = x2 * p - 2.10102402082508e-06f;
    p = x2 * p - 5.69250639462346e-05f;
    p = x2 * p - 7.34990630326855e-04f;
    p = x2 * p - 2.95459980854025e-03f;
    p = x2 * p - 1.60960333262415e-02f;
    p = x * p;
    float q = x2 * -1.45660718464996e-05f - 2.13374055278905e-04f;
    q = x2 * q - 1.68282697438203e-03f;
    q = x2 * q - 7.37332916720468e-03f;
    q = x2 * q - 1.42647390514189e-02f;
    return p / q;
}

static inline float pg_gelu(float x) { return 0.5f * x * (1.f + pg_erf(x * 0.70710678118654752f)); }

/* exp(x) for x <= 0 to ~1e-7 relative: 2^n * exp(r), |r| <= ln2 / 2, degree-7 Taylor. */
static inline float pg_exp(float x) {
    x = x < -87.f ? -87.f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.42860682030941723e-06f;
    float p = 1.f / 5040.f;
    p = p * r + 1.f / 720.f;
    p = p * r + 1.f / 120.f;
    p = p * r + 1.f / 24.f;
    p = p * r + 1.f / 6.f;
    p = p * r + 0.5f;
    p = p * r + 1.f;
    p = p * r + 1.f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static void pg_layer_norm(const float *x, float *y, const float *w, const float *b, int64_t n, float eps) {
    float mean = 0.f, var = 0.f;
#pragma omp simd reduction(+ : mean)
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (float)n;
#pragma omp simd reduction(+ : var)
    for (int64_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    float rstd = 1.f / sqrtf(var / (float)n + eps);
    if (b) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd * w[i] + b[i];
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd * w[i];
    }
}

static inline void pg_out(float *y, float v, int mode) {
    if (mode == ADD) *y += v;
    else if (mode == GELU) *y = pg_gelu(v);
    else *y = v;
}

static inline void pg_store(float *y, const float *bias, int64_t o, int64_t N, int64_t r, float v, int mode) {
    pg_out(y + r * N + o, v + (bias ? bias[o] : 0.f), mode);
}

#if defined(__AVX512F__)
#include <immintrin.h>
#define PG_SIMD 1

/* Sums W[o] . x[r] for G rows (G <= 4, a constant after inlining), two accumulators per row. */
static inline void pg_dots(const float *w, const float *x, int64_t K, int G, float *sums) {
    __m512 a[4][2];
    for (int g = 0; g < G; g++) a[g][0] = a[g][1] = _mm512_setzero_ps();
    for (int64_t i = 0; i < K; i += 32) {
        __m512 w0 = _mm512_loadu_ps(w + i), w1 = _mm512_loadu_ps(w + i + 16);
        for (int g = 0; g < G; g++) {
            a[g][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + g * K + i), a[g][0]);
            a[g][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + g * K + i + 16), a[g][1]);
        }
    }
    for (int g = 0; g < G; g++) sums[g] = _mm512_reduce_add_ps(_mm512_add_ps(a[g][0], a[g][1]));
}

/* W[o] . x for one row: four accumulators along the row. */
static inline float pg_dot1(const float *w, const float *x, int64_t K) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < K; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
#endif

/* y[r, o] (=, +=, = gelu of) W[o] . x[r] + bias[o] for rows r < R, outputs o < N; W is (N, K).
   Work-shared over outputs (inside a parallel region): each thread streams one contiguous block of
   W, one row of W at a time, against every row of x. */
static void pg_linear(const float *W, const float *bias, const float *x, float *y, int64_t N, int64_t K,
                      int64_t R, int mode) {
#if PG_SIMD
    if (K % 64 == 0) {
#pragma omp for schedule(static)
        for (int64_t o = 0; o < N; o++) {
            const float *w = W + o * K;
            if (R == 1) {
                pg_store(y, bias, o, N, 0, pg_dot1(w, x, K), mode);
                continue;
            }
            for (int64_t r = 0; r < R; r += 4) {
                float sums[4];
                int64_t G = R - r;
                switch (G) {
                    case 1: sums[0] = pg_dot1(w, x + r * K, K); break;
                    case 2: pg_dots(w, x + r * K, K, 2, sums); break;
                    case 3: pg_dots(w, x + r * K, K, 3, sums); break;
                    default: G = 4; pg_dots(w, x + r * K, K, 4, sums); break;
                }
                for (int64_t g = 0; g < G; g++) pg_store(y, bias, o, N, r + g, sums[g], mode);
            }
        }
        return;
    }
#endif
#pragma omp for schedule(static)
    for (int64_t o = 0; o < N; o++) {
        const float *w = W + o * K;
        for (int64_t r = 0; r < R; r++) {
            const float *xr = x + r * K;
            float acc = 0.f;
#pragma omp simd reduction(+ : acc)
            for (int64_t i = 0; i < K; i++) acc += w[i] * xr[i];
            pg_store(y, bias, o, N, r, acc, mode);
        }
    }
}

/* Scores q . key_j for n keys stored in tiles of 16: tile t holds keys 16t..16t+15 as (D, 16), so
   one vector of 16 lanes accumulates 16 scores. Four tiles at a time (independent sums). Lanes past
   n are computed from whatever the tile holds and never read. */
static void pg_scores(const float *q, const float *tiles, int64_t n, int64_t D, float *s) {
    int64_t ntiles = (n + 15) / 16, t = 0;
    for (; t + 4 <= ntiles; t += 4) {
        const float *k = tiles + t * D * 16;
        float a0[16] = {0}, a1[16] = {0}, a2[16] = {0}, a3[16] = {0};
        for (int64_t d = 0; d < D; d++) {
            float qd = q[d];
            const float *k0 = k + d * 16;
#pragma omp simd
            for (int l = 0; l < 16; l++) {
                a0[l] += qd * k0[l];
                a1[l] += qd * k0[D * 16 + l];
                a2[l] += qd * k0[2 * D * 16 + l];
                a3[l] += qd * k0[3 * D * 16 + l];
            }
        }
        memcpy(s + t * 16, a0, sizeof a0);
        memcpy(s + t * 16 + 16, a1, sizeof a1);
        memcpy(s + t * 16 + 32, a2, sizeof a2);
        memcpy(s + t * 16 + 48, a3, sizeof a3);
    }
    for (; t < ntiles; t++) {
        const float *k = tiles + t * D * 16;
        float a0[16] = {0};
        for (int64_t d = 0; d < D; d++) {
            float qd = q[d];
#pragma omp simd
            for (int l = 0; l < 16; l++) a0[l] += qd * k[d * 16 + l];
        }
        memcpy(s + t * 16, a0, sizeof a0);
    }
}

/* y += sum_j p_j v_j over n values stored (n, D), four at a time. */
static void pg_mix(const float *p, const float *v, int64_t n, int64_t D, float *y) {
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float p0 = p[j], p1 = p[j + 1], p2 = p[j + 2], p3 = p[j + 3];
        const float *v0 = v + j * D;
#pragma omp simd
        for (int64_t d = 0; d < D; d++)
            y[d] += p0 * v0[d] + p1 * v0[D + d] + p2 * v0[2 * D + d] + p3 * v0[3 * D + d];
    }
    for (; j < n; j++) {
#pragma omp simd
        for (int64_t d = 0; d < D; d++) y[d] += p[j] * v[j * D + d];
    }
}

/* Attention of row b's new token, head hd, at absolute position `position`: keys 0..P-1 from the
   shared cache, P..position from the row's own cache (the new key and value written first). The
   query is pre-scaled (1/sqrt(head_dim) is folded into the weights). Keys are tiled (see
   pg_scores): a cache of T positions per head is (ceil(T / 16), D, 16); values are (T, D). */
static void pg_attend(const pg_model *m, int64_t layer, int64_t b, int64_t hd, int64_t position,
                      int64_t P) {
    const int64_t C = m->n_embd, H = m->n_head, D = C / H, T = m->capacity, TT = (T + 15) / 16 * 16;
    const float *row = m->qkv + b * 3 * C;
    const float *q = row + hd * D, *knew = row + C + hd * D;
    float *keys = m->keys + ((layer * m->batch + b) * H + hd) * TT * D;
    float *values = m->values + ((layer * m->batch + b) * H + hd) * T * D;
    const int64_t own = position - P, G = own + 1;
    float *slot = keys + (own / 16) * D * 16 + own % 16;
    for (int64_t d = 0; d < D; d++) slot[d * 16] = knew[d];
    memcpy(values + own * D, row + 2 * C + hd * D, D * sizeof(float));
    const float *skeys = m->shared_keys + (layer * H + hd) * TT * D;
    const float *svalues = m->shared_values + (layer * H + hd) * T * D;
    float *s = m->scores + (b * H + hd) * (TT + 32);
    /* shared scores in s[0, P); own ones from the next whole tile of s, then moved down to s[P] */
    int64_t gap = (P + 15) / 16 * 16;
    pg_scores(q, skeys, P, D, s);
    pg_scores(q, keys, G, D, s + gap);
    if (gap != P) memmove(s + P, s + gap, G * sizeof(float));
    const int64_t n = P + G;
    float top = -INFINITY;
#pragma omp simd reduction(max : top)
    for (int64_t j = 0; j < n; j++) top = s[j] > top ? s[j] : top;
    float total = 0.f;
#pragma omp simd reduction(+ : total)
    for (int64_t j = 0; j < n; j++) {
        s[j] = pg_exp(s[j] - top);
        total += s[j];
    }
    float y[256];
    for (int64_t d = 0; d < D; d++) y[d] = 0.f;
    pg_mix(s, svalues, P, D, y);
    pg_mix(s + P, values, G, D, y);
    float *out = m->att + b * C + hd * D;
    const float inv = 1.f / total;
    for (int64_t d = 0; d < D; d++) out[d] = y[d] * inv;
}

/* One decoding step: token ids and (unclamped) music time steps of B rows at `position` (the
   number of positions filled, P of them in the shared cache); writes logits (B, vocab). */
int pg_step(const pg_model *m, const int64_t *tokens, const int64_t *time_steps, int64_t B,
            int64_t position, int64_t P, int threads, float *logits) {
    const int64_t C = m->n_embd, F = m->n_ff, V = m->vocab, H = m->n_head;
    if (B < 1 || B > m->batch || position < P || position >= m->capacity || C / H > 256) return 1;
    for (int64_t b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= V) return 2;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int64_t b = 0; b < B; b++) {
            const float *te = m->wte + tokens[b] * C, *pe = m->wpe + position * C;
            float *x = m->x + b * C;
            for (int64_t i = 0; i < C; i++) x[i] = te[i] + pe[i];
            if (m->wtime) {
                int64_t t = time_steps[b];
                t = t < 0 ? 0 : (t >= m->max_time ? m->max_time - 1 : t);
                const float *me = m->wtime + t * C;
                for (int64_t i = 0; i < C; i++) x[i] += me[i];
            }
        }
        for (int64_t l = 0; l < m->n_layer; l++) {
            const pg_layer *L = m->layers + l;
#pragma omp for schedule(static)
            for (int64_t b = 0; b < B; b++) pg_layer_norm(m->x + b * C, m->h + b * C, L->ln1_w, L->ln1_b, C, m->eps);
            pg_linear(L->qkv, L->qkv_b, m->h, m->qkv, 3 * C, C, B, STORE);
#pragma omp for schedule(static) collapse(2)
            for (int64_t hd = 0; hd < H; hd++)
                for (int64_t b = 0; b < B; b++) pg_attend(m, l, b, hd, position, P);
            pg_linear(L->proj, L->proj_b, m->att, m->x, C, C, B, ADD);
#pragma omp for schedule(static)
            for (int64_t b = 0; b < B; b++) pg_layer_norm(m->x + b * C, m->h + b * C, L->ln2_w, L->ln2_b, C, m->eps);
            pg_linear(L->fc, L->fc_b, m->h, m->ff, F, C, B, GELU);
            pg_linear(L->fc2, L->fc2_b, m->ff, m->x, C, F, B, ADD);
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < B; b++) pg_layer_norm(m->x + b * C, m->h + b * C, m->lnf_w, m->lnf_b, C, m->eps);
        pg_linear(m->head, NULL, m->h, logits, V, C, B, STORE);
    }
    return 0;
}
"""

FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math"]

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_reason: str | None = None  # why there is no library, once a load was tried


class Layer(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_void_p)
        for name in (
            "ln1_w", "ln1_b", "qkv", "qkv_b", "proj", "proj_b",
            "ln2_w", "ln2_b", "fc", "fc_b", "fc2", "fc2_b",
        )
    ]  # fmt: skip


class Model(ctypes.Structure):
    _fields_ = [
        *[(name, ctypes.c_int64) for name in
          ("n_layer", "n_head", "n_embd", "n_ff", "vocab", "capacity", "max_time", "batch")],
        ("eps", ctypes.c_float),
        *[(name, ctypes.c_void_p) for name in
          ("wte", "wpe", "wtime", "lnf_w", "lnf_b", "head", "layers",
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


def _compile(compiler: str, target: Path) -> None:
    """Compile SOURCE to ``target`` through a temporary file beside it (atomic: concurrent builders
    leave one whole file)."""
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        source = Path(work) / "step.c"
        source.write_text(SOURCE)
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
    key = hashlib.sha256("\n".join([SOURCE, *FLAGS, compiler, _cpu_signature()]).encode()).hexdigest()[:16]
    name = f"piano_gpt_step_{key}.so"
    target = cache_dir() / name
    try:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _compile(compiler, target)
        library = ctypes.CDLL(str(target))
    except OSError:  # the cache is not writable: build for this process only
        with tempfile.TemporaryDirectory() as work:
            target = Path(work) / name
            _compile(compiler, target)
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

    ``runner`` is a :class:`~piano_gpt.generation.runner.FastRunner` on the CPU in float32; its
    tensors must stay alive and in place (they are: the runner owns them for its lifetime).
    """

    def __init__(self, runner, library: ctypes.CDLL):
        self.library = library
        B, C, H = runner.batch_size, runner.n_embd, runner.n_head
        n_ff = runner.layers[0].fc.size(0)
        zeros = lambda *shape: torch.zeros(shape, dtype=torch.float32)  # noqa: E731
        self.scratch = dict(
            x=zeros(B, C), h=zeros(B, C), qkv=zeros(B, 3 * C), att=zeros(B, C), ff=zeros(B, n_ff),
            scores=zeros(B, H, tiled_length(runner.capacity) + 32),
        )  # fmt: skip
        self.keep = []  # every tensor a pointer is taken of
        self.layers = (Layer * len(runner.layers))()
        for i, layer in enumerate(runner.layers):
            for name, _ in Layer._fields_:
                setattr(self.layers[i], name, self._hold(getattr(layer, name)))
        self.model = Model(
            n_layer=len(runner.layers), n_head=H, n_embd=C, n_ff=n_ff, vocab=runner.head.size(0),
            capacity=runner.capacity, max_time=runner.max_time, batch=B, eps=runner.eps,
            wte=self._hold(runner.wte), wpe=self._hold(runner.wpe), wtime=self._hold(runner.wtime),
            lnf_w=self._hold(runner.lnf_w), lnf_b=self._hold(runner.lnf_b), head=self._hold(runner.head),
            layers=ctypes.cast(self.layers, ctypes.c_void_p),
            keys=self._hold(runner.keys, True), values=self._hold(runner.values, True),
            shared_keys=self._hold(runner.shared_keys, True),
            shared_values=self._hold(runner.shared_values, True),
            **{name: self._hold(tensor, True) for name, tensor in self.scratch.items()},
        )  # fmt: skip
        self.model_ref = ctypes.byref(self.model)
        self.vocab = runner.head.size(0)

    def _hold(self, tensor: torch.Tensor | None, in_place: bool = False) -> int | None:
        """The address of ``tensor``'s data, kept alive; a weight may be copied to contiguous memory,
        a cache or buffer (``in_place``) is used where it lies."""
        if tensor is None:
            return None
        if tensor.dtype != torch.float32 or tensor.device.type != "cpu":
            raise ValueError("the native step takes float32 CPU tensors")
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
