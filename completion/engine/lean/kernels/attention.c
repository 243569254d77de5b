/* Causal attention of a prefill chunk on the AMX tile unit: n consecutive query positions
 * p0 .. p0 + n - 1 against cache rows [0, p0 + n), every query head of a KV head, in bf16 with
 * float32 scores, softmax and sums (flash attention: one pass over the keys, running max and sum).
 *
 * Why: torch's CPU flash attention reaches ~0.6 TFLOP/s here, so a 1k-token prefill of
 * Qwen2.5-Coder-0.5B spent ~100 ms of ~600 in it; the tile unit multiplies 16 x 32 by 32 x 16 in
 * one instruction and skips the key blocks no row of a block can see.
 *
 * Per task (one query head, 16 positions): for each block of 32 keys, S = Q K^T in two C tiles,
 * the softmax update on S with AVX-512, then O += P V with O (float32) in memory, loaded into C
 * tiles a quarter of its columns at a time. Keys and values are first laid out for the B tiles
 * (pairs of rows interleaved), per KV head, by the calling threads.
 *
 * Decode steps and verification rows do not come here (eyas_decode_attention, at the end, gives
 * each row the bits it has alone); a prefill's rows need only be accurate.
 */
#include <math.h>
#include <stdlib.h>

#include "common.h"

#define ROWS 16      /* query positions per task: the rows of a tile */
#define KEYS 64      /* keys per block: four C tiles of scores, two A tiles of probabilities */
#define MAX_D 256

static void configure_16x64(void) {
    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
}

/* keys [L, D] of one KV head -> kt [L16 / 16][D / 2][16][2]: per 16 keys and 16 pairs of
 * dimensions, one B tile of Q K^T. Keys past L are zeros. */
static void lay_out_keys(const uint16_t *k, int64_t L, int64_t D, uint32_t *kt, int64_t blocks16) {
    const uint32_t *pairs = (const uint32_t *)k;   /* a key's dimensions 2p, 2p + 1 as one word */
    for (int64_t b = 0; b < blocks16; b++)
        for (int64_t p = 0; p < D / 2; p++)
            for (int64_t kk = 0; kk < 16; kk++) {
                int64_t key = b * 16 + kk;
                kt[(b * (D / 2) + p) * 16 + kk] = key < L ? pairs[key * (D / 2) + p] : 0;
            }
}

/* values [L, D] of one KV head -> vt [L32 / 32][16][D][2]: per 32 keys, rows 2p and 2p + 1
 * interleaved, so that 16 columns of them are one B tile of P V. Values past L are zeros. */
static void lay_out_values(const uint16_t *v, int64_t L, int64_t D, uint16_t *vt, int64_t blocks32) {
    for (int64_t b = 0; b < blocks32; b++)
        for (int64_t p = 0; p < 16; p++)
            for (int e = 0; e < 2; e++) {
                int64_t key = b * 32 + 2 * p + e;
                uint16_t *dst = vt + ((b * 16 + p) * D) * 2 + e;
                for (int64_t d = 0; d < D; d++) dst[2 * d] = key < L ? v[key * D + d] : 0;
            }
}

/* 2^x for softmax arguments in log2 units (x <= RESCALE_MARGIN, -inf for a masked key):
 * x = n + f, |f| <= 1/2, 2^f by its degree-4 Taylor polynomial (relative error < 5e-5, far below
 * the bf16 rounding that P then takes), times 2^n by adding n to the exponent bits. n comes from
 * adding 1.5 * 2^23, which leaves it in the low mantissa bits: roundscale and scalef, the
 * textbook instructions, made the whole kernel 1.8x slower. Below 2^-126 the result is ~0. */
static inline __m512 exp2_softmax(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-126.f));
    __m512 shifted = _mm512_add_ps(x, _mm512_set1_ps(12582912.f));   /* 1.5 * 2^23: n in the low bits */
    __m512 n = _mm512_sub_ps(shifted, _mm512_set1_ps(12582912.f));
    __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(0.00961813f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.0555041f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.240227f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.693147f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), _mm512_slli_epi32(_mm512_castps_si512(shifted), 23)));
}

/* A row's running max moves only when a block's exceeds it by this much (log2 units): until then
 * probabilities are taken against the old max (at most 2^12, far from float32's or bf16's limits),
 * so O is rescaled a few times per row instead of at every block. */
#define RESCALE_MARGIN 12.f

static void task(const uint16_t *q, int64_t n, int64_t heads, int64_t D, int64_t head, int64_t i0,
                 const uint32_t *kt, const uint16_t *vt, int64_t p0, float scale, uint16_t *out) {
    uint16_t qs[ROWS * MAX_D] __attribute__((aligned(64)));
    float o[ROWS * MAX_D] __attribute__((aligned(64)));
    float s[ROWS][KEYS] __attribute__((aligned(64)));
    uint16_t p[ROWS][KEYS] __attribute__((aligned(64)));
    float m[ROWS];
    __m512 l[ROWS];   /* per row, its sum so far lane by lane: added up at the end */
    int rows = n - i0 < ROWS ? (int)(n - i0) : ROWS;
    memset(qs, 0, sizeof(uint16_t) * ROWS * D);
    for (int r = 0; r < rows; r++) memcpy(qs + r * D, q + ((i0 + r) * heads + head) * D, D * sizeof(uint16_t));
    memset(o, 0, sizeof(float) * ROWS * D);
    for (int r = 0; r < ROWS; r++) { m[r] = -INFINITY; l[r] = _mm512_setzero_ps(); }
    int64_t last_key = p0 + i0 + rows - 1;   /* the furthest any row of this task sees */
    for (int64_t b = 0; b * KEYS <= last_key; b++) {
        /* S = Q K^T for 64 keys: four C tiles of 16 */
        const uint32_t *kb = kt + (4 * b) * (D / 2) * 16;
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int64_t ks = 0; ks < D / 32; ks++) {
            const uint32_t *kk = kb + ks * 16 * 16;
            _tile_loadd(4, qs + ks * 32, D * 2);
            _tile_loadd(5, kk, 64);                    _tile_dpbf16ps(0, 4, 5);
            _tile_loadd(6, kk + (D / 2) * 16, 64);     _tile_dpbf16ps(1, 4, 6);
            _tile_loadd(7, kk + 2 * (D / 2) * 16, 64); _tile_dpbf16ps(2, 4, 7);
            _tile_loadd(5, kk + 3 * (D / 2) * 16, 64); _tile_dpbf16ps(3, 4, 5);
        }
        _tile_stored(0, s[0], KEYS * 4); _tile_stored(1, s[0] + 16, KEYS * 4);
        _tile_stored(2, s[0] + 32, KEYS * 4); _tile_stored(3, s[0] + 48, KEYS * 4);
        /* softmax, online, in log2 units: P = 2^(scale log2(e) S - m) in bf16, l += its sum, O rescaled when m moves.
         * First per row the keys it cannot see set to -inf and its max checked; then the
         * exponentials of all rows in one branch-free loop, which the CPU overlaps. */
        float shift[ROWS];
        for (int r = 0; r < ROWS; r++) {
            int64_t visible = p0 + i0 + r - b * KEYS + 1;   /* keys of this block row r sees */
            if (visible < KEYS)
                for (int c = 0; c < 4; c++) {
                    int64_t seen = visible - 16 * c;
                    if (seen < 16)
                        _mm512_store_ps(s[r] + 16 * c, _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY),
                                        seen <= 0 ? 0 : (__mmask16)((1u << seen) - 1), _mm512_load_ps(s[r] + 16 * c)));
                }
            __m512 top = _mm512_max_ps(_mm512_max_ps(_mm512_load_ps(s[r]), _mm512_load_ps(s[r] + 16)),
                                       _mm512_max_ps(_mm512_load_ps(s[r] + 32), _mm512_load_ps(s[r] + 48)));
            /* m is in units of scaled scores; compare unscaled (scale > 0) without a horizontal max */
            if (_mm512_cmp_ps_mask(top, _mm512_set1_ps((m[r] + RESCALE_MARGIN) / scale), _CMP_GT_OQ)) {
                float next = _mm512_reduce_max_ps(top) * scale;
                float correction = exp2f(m[r] - next);   /* 0 on the first block: O and l are 0 */
                l[r] = _mm512_mul_ps(l[r], _mm512_set1_ps(correction));
                for (int64_t d = 0; d < D; d += 16)
                    _mm512_store_ps(o + r * D + d, _mm512_mul_ps(_mm512_load_ps(o + r * D + d), _mm512_set1_ps(correction)));
                m[r] = next;
            }
            shift[r] = m[r] == -INFINITY ? 0.f : m[r];   /* a row that has seen nothing: all -inf, P = 0 */
        }
        for (int r = 0; r < ROWS; r++)
            for (int c = 0; c < 4; c++) {
                __m512 arg = _mm512_fmsub_ps(_mm512_load_ps(s[r] + 16 * c), _mm512_set1_ps(scale), _mm512_set1_ps(shift[r]));
                __m512 e = exp2_softmax(arg);
                l[r] = _mm512_add_ps(l[r], e);
                _mm256_store_si256((__m256i *)(p[r] + 16 * c), (__m256i)_mm512_cvtneps_pbh(e));
            }
        /* O += P V: P as two A tiles of 32 keys, O a quarter of its columns per C tile */
        const uint16_t *vb = vt + (2 * b) * (KEYS / 4) * D * 2;
        for (int64_t d0 = 0; d0 < D; d0 += 64) {
            float *od = o + d0;
            _tile_loadd(0, od, D * 4); _tile_loadd(1, od + 16, D * 4);
            _tile_loadd(2, od + 32, D * 4); _tile_loadd(3, od + 48, D * 4);
            for (int half = 0; half < 2; half++) {
                const uint16_t *vd = vb + half * (KEYS / 4) * D * 2 + d0 * 2;
                _tile_loadd(4, p[0] + 32 * half, KEYS * 2);
                _tile_loadd(5, vd, D * 4);      _tile_dpbf16ps(0, 4, 5);
                _tile_loadd(6, vd + 32, D * 4); _tile_dpbf16ps(1, 4, 6);
                _tile_loadd(7, vd + 64, D * 4); _tile_dpbf16ps(2, 4, 7);
                _tile_loadd(5, vd + 96, D * 4); _tile_dpbf16ps(3, 4, 5);
            }
            _tile_stored(0, od, D * 4); _tile_stored(1, od + 16, D * 4);
            _tile_stored(2, od + 32, D * 4); _tile_stored(3, od + 48, D * 4);
        }
    }
    for (int r = 0; r < rows; r++) {
        __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(l[r]));
        uint16_t *dst = out + ((i0 + r) * heads + head) * D;
        for (int64_t d = 0; d < D; d += 16)
            _mm256_storeu_si256((__m256i *)(dst + d), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_load_ps(o + r * D + d), inv)));
    }
}

/* q [n, heads, D] (heads KV-major: query head h * group + j reads KV head h) at positions
 * p0 .. p0 + n - 1; caches [kv_heads, capacity, D] holding rows [0, p0 + n); out [n, heads, D].
 * D % 64 == 0, D <= MAX_D. Returns 0, or -1 when scratch memory could not be had. */
int eyas_prefill_attention(const uint16_t *q, int64_t n, int64_t heads, int64_t kv_heads, int64_t D,
                           const uint16_t *k_cache, const uint16_t *v_cache, int64_t capacity, int64_t p0,
                           float scale, uint16_t *out, int threads) {
    int64_t L = p0 + n, blocks = (L + KEYS - 1) / KEYS, group = heads / kv_heads;
    scale *= 1.44269504f;   /* softmax in log2 units: e^(s x) = 2^(s log2(e) x) */
    size_t per_head = (size_t)blocks * KEYS * D;   /* elements of one head's laid-out keys (or values) */
    uint16_t *kt = aligned_alloc(64, per_head * 2 * kv_heads), *vt = aligned_alloc(64, per_head * 2 * kv_heads);
    if (!kt || !vt) { free(kt); free(vt); return -1; }
    int64_t position_blocks = (n + ROWS - 1) / ROWS;
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static)
        for (int64_t h = 0; h < 2 * kv_heads; h++) {
            int64_t kv = h / 2;
            if (h % 2 == 0) lay_out_keys(k_cache + kv * capacity * D, L, D, (uint32_t *)(kt + kv * per_head), blocks * KEYS / 16);
            else lay_out_values(v_cache + kv * capacity * D, L, D, vt + kv * per_head, blocks * KEYS / 32);
        }
        configure_16x64();
        /* later positions see more keys: dynamic hands the long tasks out as threads free up */
        #pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < kv_heads * group * position_blocks; t++) {
            int64_t i0 = (position_blocks - 1 - t / (kv_heads * group)) * ROWS;   /* longest first */
            int64_t head = t % (kv_heads * group);
            int64_t kv = head / group;
            task(q, n, heads, D, head, i0, (const uint32_t *)(kt + kv * per_head), vt + kv * per_head, p0, scale, out);
        }
        _tile_release();
    }
    free(kt);
    free(vt);
    return 0;
}

/* r[j] = the sum of a[j]'s 16 lanes, j < 16, in one fixed tree for each j (no lane of another
 * vector enters it): within 128-bit lanes, then across them. */
static inline __m512 sum16(const __m512 a[16]) {
    __m512 b[8], c[4];
    for (int i = 0; i < 8; i++)
        b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++) {
        __m512d x = _mm512_castps_pd(b[2 * i]), y = _mm512_castps_pd(b[2 * i + 1]);
        c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }   /* c[i], 128-bit lane l: lane l's sums of a[4i .. 4i + 3] */
    __m512 e0 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xdd));
    __m512 e1 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], 0x88), _mm512_shuffle_f32x4(c[2], c[3], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(e0, e1, 0x88), _mm512_shuffle_f32x4(e0, e1, 0xdd));
}

/* values [L, D] of one KV head -> vp [(L + 1) / 2][D / 32][2][32]: per pair of keys and 32
 * dimensions, the two keys' values interleaved by unpacklo / unpackhi (so each half holds 16 of the
 * dimensions, in the order UNPAIRED undoes). A missing last key is zeros. */
static void pair_values(const uint16_t *v, int64_t L, int64_t D, uint16_t *vp) {
    for (int64_t pair = 0; pair < (L + 1) / 2; pair++)
        for (int64_t c = 0; c < D / 32; c++) {
            __m512i x = _mm512_loadu_si512(v + 2 * pair * D + 32 * c);
            __m512i y = 2 * pair + 1 < L ? _mm512_loadu_si512(v + (2 * pair + 1) * D + 32 * c) : _mm512_setzero_si512();
            uint16_t *dst = vp + (pair * (D / 32) + c) * 64;
            _mm512_store_si512(dst, _mm512_unpacklo_epi16(x, y));
            _mm512_store_si512(dst + 32, _mm512_unpackhi_epi16(x, y));
        }
}

/* A decode step's or a verification's attention, on AVX-512 BF16 (any CPU with the kernels, AMX
 * or not): n query rows at positions p0 .. p0 + n - 1, row i seeing cache rows [0, p0 + i + 1).
 *
 * Why: a verification ran torch's SDPA once per row (for those bits), so at 2k keys its attention
 * grew with the rows while the products did not (P-EAGLE with lookup, bf16, 2,048-token prompt:
 * 32.7 -> 21.1 ms/token with this kernel, docs/bench-engines.md). Here the scores of 16 keys come out of one summing tree, the values of a KV head are
 * paired once for all its query heads and rows, and each block of keys or values read from L2
 * serves every query head of its KV head from L1.
 *
 * Losslessness: each (row, query head) is computed alone in one fixed order: its scores in blocks
 * of 16 keys from key 0, their max and 2^(s - max) sums likewise, P V in pairs of keys from key 0,
 * one division. Neither n nor the thread count changes a row's bits, so the decode step (n = 1)
 * and the verification rows agree, as speculative decoding needs. */
int eyas_decode_attention(const uint16_t *q, int64_t n, int64_t heads, int64_t kv_heads, int64_t D,
                          const uint16_t *k_cache, const uint16_t *v_cache, int64_t capacity, int64_t p0,
                          float scale, uint16_t *out, int threads) {
    int64_t L = p0 + n, group = heads / kv_heads, chunks = D / 32, padded = (L + 31) / 32 * 32;
    scale *= 1.44269504f;
    size_t per_head = (size_t)padded * D;
    uint16_t *vp = aligned_alloc(64, per_head * 2 * kv_heads);
    if (!vp) return -1;
    /* UNPAIRED: output dimensions 0-15 and 16-31 of a chunk from its unpacklo (indices 0-15) and
     * unpackhi (16-31) sums: per 128-bit lane, unpacklo holds dimensions 8l .. 8l + 3 */
    const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    int failed = 0;
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static)
        for (int64_t kv = 0; kv < kv_heads; kv++)
            pair_values(v_cache + kv * capacity * D, L, D, vp + kv * per_head);
        /* per thread: every query head of one KV head, one row: scores, probabilities, outputs */
        float *scores = aligned_alloc(64, sizeof(float) * (size_t)(group * padded));
        uint16_t *p = aligned_alloc(64, sizeof(uint16_t) * (size_t)(group * padded));
        float *o = aligned_alloc(64, sizeof(float) * (size_t)(group * D)), *sums = malloc(sizeof(float) * (size_t)group);
        if (!scores || !p || !o || !sums) {
            #pragma omp atomic write
            failed = 1;
        }
        /* one task: row i's query heads of KV head kv, so that a block of keys or values, read
         * once from L2, serves all of them from L1 */
        #pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < n * kv_heads; t++) {
            if (!scores || !p || !o || !sums) continue;
            int64_t i = t / kv_heads, kv = t % kv_heads, len = p0 + i + 1, pairs = (len + 1) / 2;
            const uint16_t *keys = k_cache + kv * capacity * D, *v = vp + kv * per_head;
            const uint16_t *qs = q + (i * heads + kv * group) * D;
            for (int64_t j0 = 0; j0 < len; j0 += 16)
                for (int64_t g = 0; g < group; g++) {
                    __m512 acc[16];
                    for (int jj = 0; jj < 16; jj++) {
                        acc[jj] = _mm512_setzero_ps();
                        if (j0 + jj < len)    /* past the row's keys: zeros, never memory past the cache */
                            for (int64_t c = 0; c < chunks; c++)
                                acc[jj] = _mm512_dpbf16_ps(acc[jj], (__m512bh)_mm512_loadu_si512(qs + g * D + 32 * c),
                                                           (__m512bh)_mm512_loadu_si512(keys + (j0 + jj) * D + 32 * c));
                    }
                    _mm512_store_ps(scores + g * padded + j0, _mm512_mul_ps(sum16(acc), _mm512_set1_ps(scale)));
                }
            for (int64_t g = 0; g < group; g++) {
                const float *sg = scores + g * padded;
                __m512 mx = _mm512_set1_ps(-INFINITY);
                for (int64_t j = 0; j < len; j += 16) {
                    __mmask16 m = len - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - j)) - 1);
                    mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, sg + j));
                }
                __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), sum = _mm512_setzero_ps();
                for (int64_t j = 0; j < 2 * pairs; j += 16) {   /* whole pairs: the last one zero-padded */
                    __mmask16 m = len - j >= 16 ? (__mmask16)0xffff : len > j ? (__mmask16)((1u << (len - j)) - 1) : 0;
                    __m512 e = _mm512_maskz_mov_ps(m, exp2_softmax(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, sg + j), top)));
                    __m512 rounded = round_bf16(e);           /* P V multiplies the bf16 probabilities: sum those */
                    sum = _mm512_add_ps(sum, rounded);
                    _mm256_storeu_si256((__m256i *)(p + g * padded + j), bf16_bits(rounded));
                }
                sums[g] = _mm512_reduce_add_ps(sum);
                memset(o + g * D, 0, sizeof(float) * (size_t)D);
            }
            for (int64_t b = 0; b < pairs; b += 16)      /* 16 pairs of keys' values (4 KB at D = 64) stay in L1 */
                for (int64_t g = 0; g < group; g++) {
                    __m512 acc[16];
                    for (int64_t c = 0; c < 2 * chunks; c++) acc[c] = _mm512_load_ps(o + g * D + 16 * c);
                    for (int64_t pair = b; pair < b + 16 && pair < pairs; pair++) {
                        int32_t pp;
                        memcpy(&pp, p + g * padded + 2 * pair, 4);
                        __m512bh pb = (__m512bh)_mm512_set1_epi32(pp);
                        for (int64_t c = 0; c < 2 * chunks; c++)
                            acc[c] = _mm512_dpbf16_ps(acc[c], (__m512bh)_mm512_load_si512(v + (pair * chunks * 2 + c) * 32), pb);
                    }
                    for (int64_t c = 0; c < 2 * chunks; c++) _mm512_store_ps(o + g * D + 16 * c, acc[c]);
                }
            for (int64_t g = 0; g < group; g++) {
                __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_set1_ps(sums[g]));
                uint16_t *dst = out + (i * heads + kv * group + g) * D;
                for (int64_t c = 0; c < chunks; c++) {
                    __m512 lo = _mm512_load_ps(o + g * D + 32 * c), hi = _mm512_load_ps(o + g * D + 32 * c + 16);
                    store_bf16(dst + 32 * c, _mm512_mul_ps(_mm512_permutex2var_ps(lo, first, hi), inv));
                    store_bf16(dst + 32 * c + 16, _mm512_mul_ps(_mm512_permutex2var_ps(lo, second, hi), inv));
                }
            }
        }
        free(scores);
        free(p);
        free(o);
        free(sums);
    }
    free(vp);
    return failed ? -1 : 0;
}
