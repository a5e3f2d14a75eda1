#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const float *ln1_w, *ln1_b;
    const void *qkv; /* the matrices: float32 or bfloat16 (pg_model.bf16) */
    const float *qkv_b;
    const void *proj;
    const float *proj_b, *ln2_w, *ln2_b;
    const void *fc;
    const float *fc_b;
    const void *fc2;
    const float *fc2_b;
    const float *q_norm_w, *k_norm_w; /* NULL without q/k norms */
} pg_layer;

/* The architecture's switches: rmsnorm (else LayerNorm), swiglu (else GELU; fc holds gate then up,
   n_ff rows each), q/k norms (the layers' q_norm_w), rotary positions (rope_cos/rope_sin, each
   (capacity, head_dim / 2), instead of the learned table wpe, which is then NULL). */
typedef struct {
    /* bf16: the weight matrices (qkv, proj, fc, fc2, head) are bfloat16, read as the upper halves of
       float32 numbers; everything else is float32 either way */
    int64_t n_layer, n_head, n_embd, n_ff, vocab, capacity, max_time, batch, rmsnorm, swiglu, bf16;
    float eps, qk_eps;
    const float *wte, *wpe, *wtime, *lnf_w, *lnf_b;
    const void *head;
    const float *rope_cos, *rope_sin;
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

static void pg_rms_norm(const float *x, float *y, const float *w, int64_t n, float eps) {
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    float rstd = 1.f / sqrtf(ss / (float)n + eps);
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * rstd * w[i];
}

static inline void pg_norm(const pg_model *m, const float *x, float *y, const float *w, const float *b) {
    if (m->rmsnorm) pg_rms_norm(x, y, w, m->n_embd, m->eps);
    else pg_layer_norm(x, y, w, b, m->n_embd, m->eps);
}

/* Turns the two halves of a head (x[i], x[i + D/2]) by the angles of one position (as apply_rotary). */
static inline void pg_rotate(float *x, const float *cos, const float *sin, int64_t D) {
    const int64_t half = D / 2;
#pragma omp simd
    for (int64_t i = 0; i < half; i++) {
        const float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * cos[i] - x2 * sin[i];
        x[i + half] = x1 * sin[i] + x2 * cos[i];
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

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define PG_SIMD 1
/* Weights are prefetched this many bytes ahead of the ones being read: the hardware prefetcher alone
   leaves a batch-1 step ~15-20% short of what one core can read (bench/RESULTS.md). */
#define PG_AHEAD_BYTES 8192

/* One vector of float32 lanes: 16 with AVX-512, 8 with AVX2. A bfloat16 weight is the top half of the
   float32 one: pg_widen loads PG_LANES of them and shifts each into place, in registers. */
#if defined(__AVX512F__)
#define PG_LANES 16
typedef __m512 pg_vec;
#define pg_zero() _mm512_setzero_ps()
#define pg_loadu(p) _mm512_loadu_ps(p)
#define pg_fmadd(a, b, c) _mm512_fmadd_ps(a, b, c)
#define pg_add(a, b) _mm512_add_ps(a, b)
#define pg_hsum(v) _mm512_reduce_add_ps(v)
static inline pg_vec pg_widen(const uint16_t *w) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)w)), 16));
}
#else
#define PG_LANES 8
typedef __m256 pg_vec;
#define pg_zero() _mm256_setzero_ps()
#define pg_loadu(p) _mm256_loadu_ps(p)
#define pg_fmadd(a, b, c) _mm256_fmadd_ps(a, b, c)
#define pg_add(a, b) _mm256_add_ps(a, b)
static inline float pg_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
static inline pg_vec pg_widen(const uint16_t *w) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)w)), 16));
}
#endif

/* PG_LANES weights from element i of a row, float32 or bfloat16 (`bf16`: a constant wherever inlined). */
static inline pg_vec pg_load(const void *w, int64_t i, const int bf16) {
    return bf16 ? pg_widen((const uint16_t *)w + i) : pg_loadu((const float *)w + i);
}

/* Prefetches the cache lines of elements i .. i + n - 1, PG_AHEAD_BYTES ahead. */
static inline void pg_ahead(const void *w, int64_t i, int64_t n, const int bf16) {
    const int size = bf16 ? 2 : 4;
    const char *at = (const char *)w + i * size + PG_AHEAD_BYTES;
    for (int64_t b = 0; b < n * size; b += 64) _mm_prefetch(at + b, _MM_HINT_T0);
}

/* Sums W[o] . x[r] for G rows (G <= 4, a constant after inlining), two accumulators per row. */
static inline void pg_dots(const void *w, const float *x, int64_t K, int G, float *sums, const int bf16) {
    pg_vec a[4][2];
    for (int g = 0; g < G; g++) a[g][0] = a[g][1] = pg_zero();
    for (int64_t i = 0; i < K; i += 2 * PG_LANES) {
        pg_ahead(w, i, 2 * PG_LANES, bf16);
        pg_vec w0 = pg_load(w, i, bf16), w1 = pg_load(w, i + PG_LANES, bf16);
        for (int g = 0; g < G; g++) {
            a[g][0] = pg_fmadd(w0, pg_loadu(x + g * K + i), a[g][0]);
            a[g][1] = pg_fmadd(w1, pg_loadu(x + g * K + i + PG_LANES), a[g][1]);
        }
    }
    for (int g = 0; g < G; g++) sums[g] = pg_hsum(pg_add(a[g][0], a[g][1]));
}

/* W[o] . x for one row: four accumulators along the row. */
static inline float pg_dot1(const void *w, const float *x, int64_t K, const int bf16) {
    pg_vec a0 = pg_zero(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < K; i += 4 * PG_LANES) {
        pg_ahead(w, i, 4 * PG_LANES, bf16);
        a0 = pg_fmadd(pg_load(w, i, bf16), pg_loadu(x + i), a0);
        a1 = pg_fmadd(pg_load(w, i + PG_LANES, bf16), pg_loadu(x + i + PG_LANES), a1);
        a2 = pg_fmadd(pg_load(w, i + 2 * PG_LANES, bf16), pg_loadu(x + i + 2 * PG_LANES), a2);
        a3 = pg_fmadd(pg_load(w, i + 3 * PG_LANES, bf16), pg_loadu(x + i + 3 * PG_LANES), a3);
    }
    return pg_hsum(pg_add(pg_add(a0, a1), pg_add(a2, a3)));
}

/* sums[g] = W[o] . x[g] for G <= 4 rows of x (K apart); K a multiple of 64. */
static inline void pg_dots_any(const void *w, const float *x, int64_t K, int64_t G, float *sums, const int bf16) {
    switch (G) {
        case 1: sums[0] = pg_dot1(w, x, K, bf16); return;
        case 2: pg_dots(w, x, K, 2, sums, bf16); return;
        case 3: pg_dots(w, x, K, 3, sums, bf16); return;
        default: pg_dots(w, x, K, 4, sums, bf16); return;
    }
}

/* Row o of an (N, K) matrix where it lies, float32 or bfloat16. */
static inline const void *pg_row_at(const void *W, int64_t o, int64_t K, const int bf16) {
    return bf16 ? (const void *)((const uint16_t *)W + o * K) : (const void *)((const float *)W + o * K);
}
#endif

#define PG_MAX_K 16384 /* the longest matrix row a bfloat16 model may have */

/* The float32 lanes of the matrix-vector products: 16 (AVX-512), 8 (AVX2 and FMA), 1 (plain loops). */
int pg_vector_lanes(void) {
#if PG_SIMD
    return PG_LANES;
#else
    return 1;
#endif
}

/* Row o of an (N, K) weight matrix as float32 numbers (the paths without AVX-512 or AVX2, or with
   rows that are not a multiple of 64): where it lies for float32 weights; bfloat16 ones widened into
   `buffer`. */
static inline const float *pg_row(const void *W, int64_t bf16, int64_t o, int64_t K, float *buffer) {
    if (!bf16) return (const float *)W + o * K;
    const uint16_t *w = (const uint16_t *)W + o * K;
    for (int64_t i = 0; i < K; i++) {
        uint32_t bits = (uint32_t)w[i] << 16;
        memcpy(buffer + i, &bits, sizeof bits);
    }
    return buffer;
}

/* w . x, a plain loop (vectorised by the compiler: a result returned, not stored through a pointer,
   which kept GCC from vectorising it for AVX2 at 6x the time). */
static inline float pg_dot_plain(const float *w, const float *x, int64_t K) {
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < K; i++) acc += w[i] * x[i];
    return acc;
}

/* SwiGLU: y[r, o] = silu(gate) * up, gate = W[o] . x[r] + bias[o], up = W[N + o] . x[r] + bias[N + o],
   for outputs o < N; W is (2N, K). Work-shared over o: each output reads its two rows of W. */
static inline void pg_swiglu_out(float *y, const float *bias, int64_t o, int64_t N, int64_t r, float gate, float up) {
    const float a = gate + (bias ? bias[o] : 0.f), u = up + (bias ? bias[N + o] : 0.f);
    y[r * N + o] = a / (1.f + expf(-a)) * u;
}

#if PG_SIMD
static inline void pg_swiglu_simd(const void *W, const float *bias, const float *x, float *y, int64_t N,
                                  int64_t K, int64_t R, const int bf16) {
#pragma omp for schedule(static)
    for (int64_t o = 0; o < N; o++) {
        const void *wg = pg_row_at(W, o, K, bf16), *wu = pg_row_at(W, N + o, K, bf16);
        for (int64_t r = 0; r < R; r += 4) {
            const int64_t G = R - r < 4 ? R - r : 4;
            float gate[4], up[4];
            pg_dots_any(wg, x + r * K, K, G, gate, bf16);
            pg_dots_any(wu, x + r * K, K, G, up, bf16);
            for (int64_t g = 0; g < G; g++) pg_swiglu_out(y, bias, o, N, r + g, gate[g], up[g]);
        }
    }
}
#endif

static void pg_linear_swiglu(const void *W, int64_t bf16, const float *bias, const float *x, float *y,
                             int64_t N, int64_t K, int64_t R) {
#if PG_SIMD
    if (K % 64 == 0) {
        if (bf16) pg_swiglu_simd(W, bias, x, y, N, K, R, 1);
        else pg_swiglu_simd(W, bias, x, y, N, K, R, 0);
        return;
    }
#endif
    float gate_row[bf16 ? K : 1], up_row[bf16 ? K : 1];
#pragma omp for schedule(static)
    for (int64_t o = 0; o < N; o++) {
        const float *wg = pg_row(W, bf16, o, K, gate_row), *wu = pg_row(W, bf16, N + o, K, up_row);
        for (int64_t r = 0; r < R; r++)
            pg_swiglu_out(y, bias, o, N, r, pg_dot_plain(wg, x + r * K, K), pg_dot_plain(wu, x + r * K, K));
    }
}

/* y[r, o] (=, +=, = gelu of) W[o] . x[r] + bias[o] for rows r < R, outputs o < N; W is (N, K).
   Work-shared over outputs (inside a parallel region): each thread streams one contiguous block of
   W, one row of W at a time, against every row of x. */
#if PG_SIMD
static inline void pg_linear_simd(const void *W, const float *bias, const float *x, float *y, int64_t N,
                                  int64_t K, int64_t R, int mode, const int bf16) {
#pragma omp for schedule(static)
    for (int64_t o = 0; o < N; o++) {
        const void *w = pg_row_at(W, o, K, bf16);
        for (int64_t r = 0; r < R; r += 4) {
            float sums[4];
            const int64_t G = R - r < 4 ? R - r : 4;
            pg_dots_any(w, x + r * K, K, G, sums, bf16);
            for (int64_t g = 0; g < G; g++) pg_store(y, bias, o, N, r + g, sums[g], mode);
        }
    }
}
#endif

static void pg_linear(const void *W, int64_t bf16, const float *bias, const float *x, float *y, int64_t N,
                      int64_t K, int64_t R, int mode) {
#if PG_SIMD
    if (K % 64 == 0) {
        if (bf16) pg_linear_simd(W, bias, x, y, N, K, R, mode, 1);
        else pg_linear_simd(W, bias, x, y, N, K, R, mode, 0);
        return;
    }
#endif
    float row[bf16 ? K : 1];
#pragma omp for schedule(static)
    for (int64_t o = 0; o < N; o++) {
        const float *w = pg_row(W, bf16, o, K, row);
        for (int64_t r = 0; r < R; r++) pg_store(y, bias, o, N, r, pg_dot_plain(w, x + r * K, K), mode);
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
   shared cache, P..position from the row's own cache (the new key and value written first, after
   the q/k norms and the rotation to `position`, where the model has them). The query is pre-scaled
   (1/sqrt(head_dim) is folded into the weights, or into the query norm's gain). Keys are tiled (see
   pg_scores): a cache of T positions per head is (ceil(T / 16), D, 16); values are (T, D). */
static void pg_attend(const pg_model *m, int64_t layer, int64_t b, int64_t hd, int64_t position,
                      int64_t P) {
    const int64_t C = m->n_embd, H = m->n_head, D = C / H, T = m->capacity, TT = (T + 15) / 16 * 16;
    float *row = m->qkv + b * 3 * C;
    float *q = row + hd * D, *knew = row + C + hd * D;
    const pg_layer *L = m->layers + layer;
    if (L->q_norm_w) {
        pg_rms_norm(q, q, L->q_norm_w, D, m->qk_eps);
        pg_rms_norm(knew, knew, L->k_norm_w, D, m->qk_eps);
    }
    if (m->rope_cos) {
        const float *cos = m->rope_cos + position * (D / 2), *sin = m->rope_sin + position * (D / 2);
        pg_rotate(q, cos, sin, D);
        pg_rotate(knew, cos, sin, D);
    }
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
    if (m->bf16 && (C > PG_MAX_K || F > PG_MAX_K)) return 3;
    for (int64_t b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= V) return 2;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int64_t b = 0; b < B; b++) {
            const float *te = m->wte + tokens[b] * C;
            float *x = m->x + b * C;
            if (m->wpe) {
                const float *pe = m->wpe + position * C;
                for (int64_t i = 0; i < C; i++) x[i] = te[i] + pe[i];
            } else {
                memcpy(x, te, C * sizeof(float));
            }
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
            for (int64_t b = 0; b < B; b++) pg_norm(m, m->x + b * C, m->h + b * C, L->ln1_w, L->ln1_b);
            pg_linear(L->qkv, m->bf16, L->qkv_b, m->h, m->qkv, 3 * C, C, B, STORE);
#pragma omp for schedule(static) collapse(2)
            for (int64_t hd = 0; hd < H; hd++)
                for (int64_t b = 0; b < B; b++) pg_attend(m, l, b, hd, position, P);
            pg_linear(L->proj, m->bf16, L->proj_b, m->att, m->x, C, C, B, ADD);
#pragma omp for schedule(static)
            for (int64_t b = 0; b < B; b++) pg_norm(m, m->x + b * C, m->h + b * C, L->ln2_w, L->ln2_b);
            if (m->swiglu) pg_linear_swiglu(L->fc, m->bf16, L->fc_b, m->h, m->ff, F, C, B);
            else pg_linear(L->fc, m->bf16, L->fc_b, m->h, m->ff, F, C, B, GELU);
            pg_linear(L->fc2, m->bf16, L->fc2_b, m->ff, m->x, C, F, B, ADD);
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < B; b++) pg_norm(m, m->x + b * C, m->h + b * C, m->lnf_w, m->lnf_b);
        pg_linear(m->head, m->bf16, NULL, m->h, logits, V, C, B, STORE);
    }
    return 0;
}
