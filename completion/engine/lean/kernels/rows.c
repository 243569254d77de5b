/* Row-wise steps of the lean forward in bf16, each one pass over memory: RMSNorm with its weight,
 * SiLU(gate) * up, and RoPE with the keys and values written into the cache. torch runs each as
 * 3-5 passes (float copies, pow, mean, rsqrt, casts, flips, index copies), and its SiLU on bf16
 * costs more than the product that made its input: in a 1k-token prefill of Qwen2.5-Coder-0.5B
 * (2 threads) these steps took ~190 of 745 ms.
 *
 * The arithmetic is Hugging Face's, rounding where it rounds: RMSNorm normalises in float32, rounds
 * to bf16, then multiplies by the weight and rounds again; the MLP rounds SiLU(gate) to bf16 before
 * multiplying by up; RoPE rounds both products before adding them. Every row is computed alone, by one thread, so a row's bits do not depend on
 * how many rows come with it (verification rows equal decode steps).
 */
#include <math.h>

#include "common.h"

/* e^x in float32 within ~2 ulp: x = n ln2 + r, |r| <= ln2 / 2, e^r by its degree-7 Taylor
 * polynomial, times 2^n by adding n to the exponent bits (n taken from the low mantissa bits of
 * x log2(e) + 1.5 * 2^23: roundscale and scalef, the textbook instructions, cost 1.8x as much in
 * attention.c); n - 1 goes in and a doubling follows, so that n = 128 still fits. Past 88.72 it is
 * inf as expf's, so SiLU of a very negative gate is -0, as torch's; below -85.9 it stays at
 * e^-85.9, which 1 + e^x cannot tell from 0. On every bf16 gate in [-120, 100] SiLU * up equals
 * torch's, bit for bit. */
static inline __m512 exp_ps(__m512 x) {
    __mmask16 overflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.7228f), _CMP_GT_OQ);
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7228f)), _mm512_set1_ps(-85.9f));
    __m512 shifted = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _mm512_set1_ps(12582912.f));
    __m512 n = _mm512_sub_ps(shifted, _mm512_set1_ps(12582912.f));
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    __m512i n_minus_1 = _mm512_sub_epi32(_mm512_slli_epi32(_mm512_castps_si512(shifted), 23), _mm512_set1_epi32(1 << 23));
    __m512 e = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), n_minus_1)), _mm512_set1_ps(2.f));
    return _mm512_mask_mov_ps(e, overflow, _mm512_set1_ps(INFINITY));
}

/* Rows at or above which the row loops use every thread (a decode step's one row stays on one). */
#define PARALLEL_ROWS 4

static inline __m256 load_bf16_8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* The sum of squares of a bf16 row (H % 8 == 0) in torch's order, so that the norm has the bits of
 * Hugging Face's x.float().pow(2).mean(): aten's cascade_sum takes 8-lane vectors (the width its
 * sum runs at in torch 2.13, even on AVX-512 CPUs: tests/test_native_kernel.py checks it) four at a
 * time into four accumulators, moves them up a level of a cascade every 16 groups (and that level
 * up every 256), then adds the levels, the four accumulators in order and their lanes in order. */
static float sum_of_squares(const uint16_t *row, int64_t H) {
    int64_t vectors = H / 8, groups = vectors / 4, i = 0;
    __m256 acc[4][4];
    for (int l = 0; l < 4; l++) for (int k = 0; k < 4; k++) acc[l][k] = _mm256_setzero_ps();
    while (i < groups) {
        int64_t end = i + 16 <= groups ? i + 16 : groups;   /* a full block of 16 cascades up */
        int full = end - i == 16;
        for (; i < end; i++)
            for (int k = 0; k < 4; k++) {
                __m256 v = load_bf16_8(row + (i * 4 + k) * 8);
                acc[0][k] = _mm256_add_ps(acc[0][k], _mm256_mul_ps(v, v));
            }
        for (int l = 1; full && l < 4; l++) {
            for (int k = 0; k < 4; k++) { acc[l][k] = _mm256_add_ps(acc[l][k], acc[l - 1][k]); acc[l - 1][k] = _mm256_setzero_ps(); }
            if (i & (15 << (4 * l))) break;
        }
    }
    for (int l = 1; l < 4; l++) for (int k = 0; k < 4; k++) acc[0][k] = _mm256_add_ps(acc[0][k], acc[l][k]);
    for (int64_t v = groups * 4; v < vectors; v++) {
        __m256 x = load_bf16_8(row + v * 8);
        acc[0][0] = _mm256_add_ps(acc[0][0], _mm256_mul_ps(x, x));
    }
    __m256 total = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(acc[0][0], acc[0][1]), acc[0][2]), acc[0][3]);
    float lanes[8], sum = 0.f;
    _mm256_storeu_ps(lanes, total);
    for (int k = 0; k < 8; k++) sum += lanes[k];
    return sum;
}

/* out[i] = w * bf16(x[i] / sqrt(mean(x[i]^2) + eps)) for bf16 rows x [M, H], H % 16 == 0. */
void eyas_rms_norm(const uint16_t *x, int64_t M, int64_t H, const uint16_t *w, float eps, uint16_t *out,
                   int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads) if (M >= PARALLEL_ROWS)
    for (int64_t i = 0; i < M; i++) {
        const uint16_t *row = x + i * H;
        __m512 inv = _mm512_set1_ps(1.f / sqrtf(sum_of_squares(row, H) / (float)H + eps));
        for (int64_t j = 0; j < H; j += 16) {
            __m512 normed = round_bf16(_mm512_mul_ps(load_bf16(row + j), inv));
            store_bf16(out + i * H + j, _mm512_mul_ps(load_bf16(w + j), normed));
        }
    }
}

/* out[i] = bf16(SiLU(gate)) * up for rows gate_up [M, 2I] (gate columns first), out [M, I],
 * I % 16 == 0. SiLU(g) = g / (1 + e^-g), as torch computes it. */
void eyas_silu_mul(const uint16_t *gate_up, int64_t M, int64_t I, uint16_t *out, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads) if (M >= PARALLEL_ROWS)
    for (int64_t i = 0; i < M; i++) {
        const uint16_t *gate = gate_up + i * 2 * I, *up = gate + I;
        for (int64_t j = 0; j < I; j += 16) {
            __m512 g = load_bf16(gate + j);
            __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.f), exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g))));
            store_bf16(out + i * I + j, _mm512_mul_ps(round_bf16(silu), load_bf16(up + j)));
        }
    }
}

/* Rotate the first D/2 and last D/2 values of each head by RoPE as Hugging Face does,
 * x * cos + rotate_half(x) * sin with each product rounded to bf16 and then their sum, where
 * `sin` holds rotate-half's sign already (its first half negated: cache.py RopeTables). */
static void rotate_head(const uint16_t *x, const uint16_t *cos, const uint16_t *sin, int64_t D, uint16_t *out) {
    int64_t half = D / 2;
    for (int64_t j = 0; j < D; j += 16) {
        int64_t partner = j < half ? j + half : j - half;
        __m512 a = round_bf16(_mm512_mul_ps(load_bf16(x + j), load_bf16(cos + j)));
        __m512 b = round_bf16(_mm512_mul_ps(load_bf16(x + partner), load_bf16(sin + j)));
        store_bf16(out + j, _mm512_add_ps(a, b));
    }
}

/* One layer's q|k|v rows [n, (heads + 2 kv_heads) * D] at `positions`, with each row's RoPE cos and
 * sin [n, D]: queries rotated into q_out [n, heads, D]; keys rotated and values copied into the
 * caches [kv_heads, capacity, D] at each row's position. D % 32 == 0. */
void eyas_rope_to_cache(const uint16_t *qkv, int64_t n, int64_t heads, int64_t kv_heads, int64_t D,
                        const int64_t *positions, const uint16_t *cos_rows, const uint16_t *sin_rows,
                        uint16_t *q_out, uint16_t *k_cache, uint16_t *v_cache, int64_t capacity, int threads) {
    int64_t width = (heads + 2 * kv_heads) * D;
    #pragma omp parallel for schedule(static) num_threads(threads) if (n >= PARALLEL_ROWS)
    for (int64_t i = 0; i < n; i++) {
        const uint16_t *row = qkv + i * width;
        const uint16_t *cos = cos_rows + i * D, *sin = sin_rows + i * D;
        for (int64_t h = 0; h < heads; h++) rotate_head(row + h * D, cos, sin, D, q_out + (i * heads + h) * D);
        for (int64_t h = 0; h < kv_heads; h++) {
            int64_t at = (h * capacity + positions[i]) * D;
            rotate_head(row + (heads + h) * D, cos, sin, D, k_cache + at);
            memcpy(v_cache + at, row + (heads + kv_heads + h) * D, D * sizeof(uint16_t));
        }
    }
}
