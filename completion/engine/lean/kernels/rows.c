/* Row-wise steps of the lean forward in bf16, each one pass over memory: RMSNorm with its weight,
 * and SiLU(gate) * up. torch runs each as 3-5 passes (float copies, pow, mean, rsqrt, casts), and
 * its SiLU on bf16 costs more than the product that made its input: in a 1k-token prefill of
 * Qwen2.5-Coder-0.5B (2 threads) SiLU and the multiplications took 117 of 745 ms.
 *
 * The arithmetic is Hugging Face's, rounding where it rounds: RMSNorm normalises in float32, rounds
 * to bf16, then multiplies by the weight and rounds again; the MLP rounds SiLU(gate) to bf16 before
 * multiplying by up. Every row is computed alone, by one thread, so a row's bits do not depend on
 * how many rows come with it (verification rows equal decode steps).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

static inline __m512 load_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

/* float32 -> bf16 bits as torch rounds (nearest even, NaN to its canonical NaN). The VCVTNEPS2BF16
 * instruction rounds the same but flushes results below 2^-126 to zero, where torch keeps them:
 * vectors holding such a value (or a NaN) take the integer path. */
static inline __m256i bf16_bits(__m512 v) {
    __mmask16 odd = _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(0x1p-126f), _CMP_LT_OQ)
                    & _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);   /* subnormal or NaN */
    if (__builtin_expect(!odd, 1)) return (__m256i)_mm512_cvtneps_pbh(v);
    __m512i b = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
    return _mm512_cvtepi32_epi16(r);
}

static inline __m512 round_bf16(__m512 v) {   /* to bf16 and back */
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bf16_bits(v)), 16));
}

static inline void store_bf16(uint16_t *p, __m512 v) {
    _mm256_storeu_si256((__m256i *)p, bf16_bits(v));
}

/* e^x in float32 within ~2 ulp: x = n ln2 + r, |r| <= ln2 / 2, e^r by its degree-7 Taylor
 * polynomial, scaled by 2^n; past 88.7 it overflows to inf as expf does, so SiLU of a very negative
 * gate is -0, as torch's. On every bf16 gate in [-120, 100] SiLU * up equals torch's, bit for bit. */
static inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(100.f)), _mm512_set1_ps(-103.9f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT);
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
    return _mm512_scalef_ps(p, n);
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
