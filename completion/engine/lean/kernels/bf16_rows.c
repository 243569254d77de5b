/* y = x @ w.T (+ bias) for a few bf16 rows x [M, K] (M <= 16 per pass) against a bf16, int8 or
 * int4 weight (the last at the end of this file); the weight streams from memory once for all M rows. Two engines compute it: the AMX tile
 * unit where the CPU has one (Intel Sapphire Rapids and later), else AVX-512 BF16 dot products
 * (VDPBF16PS: AMD Zen 4 and later, Intel Cooper Lake), one pass over the weight per 6 rows.
 *
 * Why: a decode step and a speculative verification are this product and little else. On a
 * 2-core Xeon oneDNN and MKL read the weights at 11-28 GB/s for one row; AMX computes 16 rows in
 * the time the weight takes to arrive, so a verification of K + 1 <= 16 rows costs about one row,
 * which is what speculative decoding needs. Without AMX, torch's int8 kernel costs 2-3 rows for a
 * 5-row verification; here an int8 block is widened to bf16 once and used by up to 6 rows.
 *
 * Layout (pack_rows in native.py): the weight [N, K] padded to N % 64 == 0, as [N/64][K/2][64][2]:
 * per group of 64 outputs one contiguous stream, 256 bytes per pair of input columns; a 16-pair
 * slice of 16 outputs is one B tile (16 rows of 64 bytes, stride 256), and one pair of columns for
 * 16 outputs one AVX-512 register.
 *
 * Losslessness: output (m, n) is one chain of dot products over k in order, + bias in fp32, one
 * rounding, computed by one thread from row m alone (a tile row from its own A row; an AVX-512
 * accumulator from its own row's broadcast pairs): whatever M, the thread count or the row
 * chunking, a verification row equals the decode step that would have computed it alone. The two
 * engines sum in different orders; a process uses one (eyas_init).
 */
#include "common.h"
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define GROUP 64      /* outputs per weight stream: 4 C tiles of 16, 4 AVX-512 accumulators per row */
#define MAX_ROWS 16   /* rows of a tile */
#define AVX_ROWS 6    /* rows per AVX-512 pass: 6 x 4 accumulators + 4 weight registers of the 32 */

#define PREFETCH_PAIRS 16   /* how far ahead the AVX-512 loop asks for the weight, every line of a pair */

static int use_amx;

/* Which engine computes the products: AMX when `amx` and Linux hands the process the AMX state
 * (only on request; oneDNN asks too, and asking twice is fine), else AVX-512 BF16. Returns the
 * engine in use: 1 AMX, 0 AVX-512. */
int eyas_init(int amx) {
    use_amx = amx && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
    return use_amx;
}

static void configure(int rows) {
    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 5; t++) { cfg.rows[t] = (uint8_t)rows; cfg.colsb[t] = 64; }   /* C0-C3, A */
    for (int t = 5; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }               /* B */
    _tile_loadconfig(&cfg);
}

/* An int8 weight as the kernel stores it (native.pack_rows): sign and magnitude (bit 7, bits 0-6),
 * each 64-byte chunk in the byte order the unpacks below undo. Widening a chunk to bf16 is then two
 * table lookups (the high and low bytes of bf16(|q|), 128 entries each: vpermi2b), the sign or-ed
 * in, and two byte interleaves: 6 vector ops per 64 weights where int8 -> int32 -> float -> bf16
 * takes 14. Exact: every |q| <= 127 is a bf16 value, so the products and sums are those of the
 * bf16 kernel on q, and the scale multiplies each output once at the end. */
struct bf16_tables { __m512i hi_lo, hi_hi, lo_lo, lo_hi; };   /* bytes of bf16(m), m < 64 and m >= 64 */

static struct bf16_tables magnitude_tables(void) {
    uint8_t hi[128], lo[128];
    for (int m = 0; m < 128; m++) {
        float f = (float)m;
        uint32_t u;
        memcpy(&u, &f, 4);
        uint16_t b = (uint16_t)(u >> 16);             /* exact: m has at most 7 significant bits */
        hi[m] = (uint8_t)(b >> 8);
        lo[m] = (uint8_t)b;
    }
    struct bf16_tables t = {_mm512_loadu_si512(hi), _mm512_loadu_si512(hi + 64),
                            _mm512_loadu_si512(lo), _mm512_loadu_si512(lo + 64)};
    return t;
}

/* 64 int8 weights (one chunk) -> 64 bf16 in the bf16 layout: the first 32 in out[0], the rest in out[1] */
static inline void widen_chunk(const int8_t *src, const struct bf16_tables *t, __m512i out[2]) {
    __m512i q = _mm512_loadu_si512(src);
    __m512i hi = _mm512_permutex2var_epi8(t->hi_lo, q, t->hi_hi);
    __m512i lo = _mm512_permutex2var_epi8(t->lo_lo, q, t->lo_hi);
    hi = _mm512_ternarylogic_epi32(hi, q, _mm512_set1_epi8((char)0x80), 0xF8);   /* hi | (q & 0x80) */
    out[0] = _mm512_unpacklo_epi8(lo, hi);
    out[1] = _mm512_unpackhi_epi8(lo, hi);
}

/* 16 pairs of input columns x 64 outputs: 2048 int8 -> bf16 in the bf16 kernel's layout */
static void widen_int8(const int8_t *src, uint16_t *dst, const struct bf16_tables *t) {
    for (int i = 0; i < 16 * GROUP * 2; i += 64) {
        __m512i b[2];
        widen_chunk(src + i, t, b);
        _mm512_store_si512(dst + i, b[0]);
        _mm512_store_si512(dst + i + 32, b[1]);
    }
}

/* The sums c[j][i] (outputs g*64 + 16j.., row m0 + i) times the scale, plus the bias, into out. */
static void store_group(float c[4][MAX_ROWS][16], int64_t m0, int rows, int64_t g, int64_t N, const float *scale,
                        const float *bias, void *out, int out_f32) {
    for (int j = 0; j < 4; j++) {
        int64_t n = g * GROUP + 16 * j;
        if (n >= N) break;
        __mmask16 mask = N - n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (N - n)) - 1);
        __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + n) : _mm512_setzero_ps();
        __m512 s = scale ? _mm512_maskz_loadu_ps(mask, scale + n) : _mm512_set1_ps(1.0f);
        for (int i = 0; i < rows; i++) {
            __m512 v = _mm512_fmadd_ps(_mm512_loadu_ps(c[j][i]), s, b);
            int64_t at = (m0 + i) * N + n;
            if (out_f32) _mm512_mask_storeu_ps((float *)out + at, mask, v);
            else _mm256_mask_storeu_epi16((uint16_t *)out + at, mask, (__m256i)_mm512_cvtneps_pbh(v));
        }
    }
}

/* One group of 64 outputs for `rows` rows. scale == NULL: `packed` holds bf16; else int8 with one
 * float32 scale per output (the int8 stream is half the bytes, widened block by block in L1). */
static void group_rows(const uint16_t *x, int64_t m0, int rows, int64_t K, const void *packed,
                       int64_t g, int64_t N, const float *scale, const float *bias, void *out, int out_f32,
                       const struct bf16_tables *tables) {
    const int width = scale ? 1 : 2;                             /* bytes per weight */
    const char *w = (const char *)packed + g * (K / 2) * GROUP * 2 * width;
    uint16_t block[2][16 * GROUP * 2] __attribute__((aligned(64)));
    const int64_t step = 16 * GROUP * 2 * width;                  /* bytes per 32 input columns */
    if (scale) widen_int8((const int8_t *)w, block[0], tables);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (int64_t k = 0, i = 0; k < K; k += 32, i ^= 1) {
        const char *wk = w + (k / 32) * step;                     /* 16 pairs x 64 outputs x 2 */
        if (k + 2 * 32 < K)    /* two steps ahead: ~5% faster streams than the hardware prefetcher alone */
            for (int line = 0; line < 32 * width; line++)
                _mm_prefetch(wk + 2 * step + line * 64, _MM_HINT_T0);
        const uint16_t *b = (const uint16_t *)wk;
        if (scale) {   /* the next block widens while the tile unit works on this one */
            if (k + 32 < K) widen_int8((const int8_t *)(wk + step), block[i ^ 1], tables);
            b = block[i];
        }
        _tile_loadd(4, x + m0 * K + k, K * 2);
        _tile_loadd(5, b, GROUP * 4);      _tile_dpbf16ps(0, 4, 5);
        _tile_loadd(6, b + 32, GROUP * 4); _tile_dpbf16ps(1, 4, 6);
        _tile_loadd(7, b + 64, GROUP * 4); _tile_dpbf16ps(2, 4, 7);
        _tile_loadd(5, b + 96, GROUP * 4); _tile_dpbf16ps(3, 4, 5);
    }
    float c[4][MAX_ROWS][16];
    _tile_stored(0, c[0], 64); _tile_stored(1, c[1], 64); _tile_stored(2, c[2], 64); _tile_stored(3, c[3], 64);
    store_group(c, m0, rows, g, N, scale, bias, out, out_f32);
}

/* R (<= AVX_ROWS) rows x 64 outputs on AVX-512 BF16: per pair of input columns, 4 registers of the
 * weight (16 outputs x 2 columns each; an int8 pair's 128 bytes widened as the tile path widens
 * them) against each row's pair broadcast, one VDPBF16PS per register and row. */
static inline __attribute__((always_inline)) void avx_block(const uint16_t *x, int64_t K, const char *w, int width,
                                                            const struct bf16_tables *tables, float c[4][MAX_ROWS][16],
                                                            int r0, const int R) {
    __m512 acc[AVX_ROWS][4];
    for (int r = 0; r < R; r++) for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_ps();
    for (int64_t p = 0; p < K / 2; p++) {
        const char *wp = w + p * GROUP * 2 * width;
        /* every line of the pair, not one: the hardware prefetcher alone fell behind at 5+ rows */
        for (int line = 0; line < 2 * width; line++)
            _mm_prefetch(wp + PREFETCH_PAIRS * GROUP * 2 * width + 64 * line, _MM_HINT_T0);
        __m512i b[4];
        if (width == 1) {
            widen_chunk((const int8_t *)wp, tables, b);
            widen_chunk((const int8_t *)wp + 64, tables, b + 2);
        } else {
            for (int j = 0; j < 4; j++) b[j] = _mm512_loadu_si512(wp + 64 * j);
        }
        for (int r = 0; r < R; r++) {
            int32_t pair;
            memcpy(&pair, x + (int64_t)(r0 + r) * K + 2 * p, 4);
            __m512bh xr = (__m512bh)_mm512_set1_epi32(pair);
            for (int j = 0; j < 4; j++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], (__m512bh)b[j], xr);
        }
    }
    for (int r = 0; r < R; r++) for (int j = 0; j < 4; j++) _mm512_storeu_ps(c[j][r0 + r], acc[r][j]);
}

static void group_rows_avx512(const uint16_t *x, int64_t m0, int rows, int64_t K, const void *packed,
                              int64_t g, int64_t N, const float *scale, const float *bias, void *out, int out_f32,
                              const struct bf16_tables *tables) {
    const int width = scale ? 1 : 2;
    const char *w = (const char *)packed + g * (K / 2) * GROUP * 2 * width;
    float c[4][MAX_ROWS][16];
    for (int r0 = 0; r0 < rows; r0 += AVX_ROWS) {
        const uint16_t *xs = x + m0 * K;
        switch (rows - r0 < AVX_ROWS ? rows - r0 : AVX_ROWS) {   /* a constant R per case: accumulators in registers */
        case 1: avx_block(xs, K, w, width, tables, c, r0, 1); break;
        case 2: avx_block(xs, K, w, width, tables, c, r0, 2); break;
        case 3: avx_block(xs, K, w, width, tables, c, r0, 3); break;
        case 4: avx_block(xs, K, w, width, tables, c, r0, 4); break;
        case 5: avx_block(xs, K, w, width, tables, c, r0, 5); break;
        default: avx_block(xs, K, w, width, tables, c, r0, 6); break;
        }
    }
    store_group(c, m0, rows, g, N, scale, bias, out, out_f32);
}

/* int4 weights, asymmetric per group of 32 input columns: w = q * s + lo with q in 0..15 and s, lo
 * bf16 per output and group (Int4Weight in weights.py). The sum over a group splits as
 * s * sum(x q) + lo * sum(x): the first is the bf16 kernel's dot product on q (every q is a bf16
 * value, so the products are exact), the second a per-row sum of x computed once per call. Each
 * group's partial sums are scaled into the row's accumulators in a fixed order, so as above a
 * verification row has the bits of the decode step that computes it alone.
 *
 * Layout (pack_int4 in native.py): per group of 64 outputs and pair of input columns, 64 bytes of
 * nibbles: the low nibbles widen to the weight registers 0-1 of the bf16 layout, the high ones to
 * 2-3, each through two 16-entry lookups (the bytes of bf16(q)) and a byte interleave. The scales
 * and offsets: [N/64][K/32][2][64] bf16 (s for the 64 outputs, then lo). Computed with AVX-512 BF16
 * on every CPU with the kernels (AMX or not). 5 bits a weight (4, and two bf16 per 32) stream past
 * once for all rows: a verification costs about what one row does. */
#define INT4_COLS 32   /* input columns per scale (weights.INT4_GROUP) */

struct nibble_tables { __m512i lo, hi; };   /* the low and high bytes of bf16(q), q < 16 */

static struct nibble_tables nibble_tables(void) {
    uint8_t lo[64] = {0}, hi[64] = {0};
    for (int q = 0; q < 16; q++) {
        float f = (float)q;
        uint32_t u;
        memcpy(&u, &f, 4);
        lo[q] = (uint8_t)(u >> 16);
        hi[q] = (uint8_t)(u >> 24);
    }
    struct nibble_tables t = {_mm512_loadu_si512(lo), _mm512_loadu_si512(hi)};
    return t;
}

static inline __attribute__((always_inline)) void int4_block(const uint16_t *x, int64_t K, const uint8_t *w,
                                                             const uint16_t *sl, const float *xsum,
                                                             const struct nibble_tables *t, float c[4][MAX_ROWS][16],
                                                             int r0, const int R) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    __m512 acc[AVX_ROWS][4];
    for (int r = 0; r < R; r++) for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_ps();
    for (int64_t kg = 0; kg < K / INT4_COLS; kg++) {
        __m512 part[AVX_ROWS][4];
        for (int r = 0; r < R; r++) for (int j = 0; j < 4; j++) part[r][j] = _mm512_setzero_ps();
        for (int p = 0; p < INT4_COLS / 2; p++) {
            const uint8_t *wp = w + (kg * INT4_COLS / 2 + p) * GROUP;
            _mm_prefetch((const char *)wp + PREFETCH_PAIRS * GROUP, _MM_HINT_T0);
            __m512i q = _mm512_loadu_si512(wp);
            __m512i a = _mm512_and_si512(q, low4), h = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
            __m512i a_lo = _mm512_permutexvar_epi8(a, t->lo), a_hi = _mm512_permutexvar_epi8(a, t->hi);
            __m512i h_lo = _mm512_permutexvar_epi8(h, t->lo), h_hi = _mm512_permutexvar_epi8(h, t->hi);
            __m512i b[4] = {_mm512_unpacklo_epi8(a_lo, a_hi), _mm512_unpackhi_epi8(a_lo, a_hi),
                            _mm512_unpacklo_epi8(h_lo, h_hi), _mm512_unpackhi_epi8(h_lo, h_hi)};
            for (int r = 0; r < R; r++) {
                int32_t pair;
                memcpy(&pair, x + (int64_t)(r0 + r) * K + kg * INT4_COLS + 2 * p, 4);
                __m512bh xr = (__m512bh)_mm512_set1_epi32(pair);
                for (int j = 0; j < 4; j++) part[r][j] = _mm512_dpbf16_ps(part[r][j], (__m512bh)b[j], xr);
            }
        }
        const uint16_t *s = sl + kg * 2 * GROUP;
        for (int j = 0; j < 4; j++) {
            __m512 scale = load_bf16(s + 16 * j), lo = load_bf16(s + GROUP + 16 * j);
            for (int r = 0; r < R; r++) {
                acc[r][j] = _mm512_fmadd_ps(part[r][j], scale, acc[r][j]);
                acc[r][j] = _mm512_fmadd_ps(_mm512_set1_ps(xsum[(int64_t)(r0 + r) * (K / INT4_COLS) + kg]), lo, acc[r][j]);
            }
        }
    }
    for (int r = 0; r < R; r++) for (int j = 0; j < 4; j++) _mm512_storeu_ps(c[j][r0 + r], acc[r][j]);
}

/* x: bf16 [M, K], K % 32 == 0. packed, sl: see above (N padded to 64). bias: float32 [N] or NULL.
 * out [M, N]: float32 when out_f32, else bf16. Returns nonzero when out of memory. */
int eyas_int4_rows(const uint16_t *x, int64_t M, int64_t K, const uint8_t *packed, const uint16_t *sl, int64_t N,
                   const float *bias, void *out, int out_f32, int threads) {
    int64_t groups = (N + GROUP - 1) / GROUP, kgs = K / INT4_COLS;
    float *xsum = malloc(sizeof(float) * (size_t)(M * kgs));
    if (!xsum) return 1;
    for (int64_t m = 0; m < M; m++)        /* each row's sum over each group of columns, in one order */
        for (int64_t kg = 0; kg < kgs; kg++) {
            const uint16_t *xs = x + m * K + kg * INT4_COLS;
            xsum[m * kgs + kg] = _mm512_reduce_add_ps(_mm512_add_ps(load_bf16(xs), load_bf16(xs + 16)));
        }
    #pragma omp parallel num_threads(threads)
    {
        struct nibble_tables tables = nibble_tables();
        float c[4][MAX_ROWS][16];
        for (int64_t m = 0; m < M; m += MAX_ROWS) {
            int rows = M - m < MAX_ROWS ? (int)(M - m) : MAX_ROWS;
            const uint16_t *xs = x + m * K;
            const float *sums = xsum + m * kgs;
            #pragma omp for schedule(static)
            for (int64_t g = 0; g < groups; g++) {
                const uint8_t *w = packed + g * (K / 2) * GROUP;
                const uint16_t *s = sl + g * kgs * 2 * GROUP;
                for (int r0 = 0; r0 < rows; r0 += AVX_ROWS) {
                    switch (rows - r0 < AVX_ROWS ? rows - r0 : AVX_ROWS) {
                    case 1: int4_block(xs, K, w, s, sums, &tables, c, r0, 1); break;
                    case 2: int4_block(xs, K, w, s, sums, &tables, c, r0, 2); break;
                    case 3: int4_block(xs, K, w, s, sums, &tables, c, r0, 3); break;
                    case 4: int4_block(xs, K, w, s, sums, &tables, c, r0, 4); break;
                    case 5: int4_block(xs, K, w, s, sums, &tables, c, r0, 5); break;
                    default: int4_block(xs, K, w, s, sums, &tables, c, r0, 6); break;
                    }
                }
                store_group(c, m, rows, g, N, NULL, bias, out, out_f32);
            }
        }
    }
    free(xsum);
    return 0;
}

/* x: bf16 [M, K], K % 32 == 0. packed: see above, bf16, or int8 when scale (float32 [N]) is given.
 * bias: float32 [N] or NULL. out [M, N]: float32 when out_f32, else bf16. */
void eyas_bf16_rows(const uint16_t *x, int64_t M, int64_t K, const void *packed, int64_t N,
                    const float *scale, const float *bias, void *out, int out_f32, int threads) {
    int64_t groups = (N + GROUP - 1) / GROUP;
    #pragma omp parallel num_threads(threads)
    {
        struct bf16_tables tables = magnitude_tables();
        for (int64_t m = 0; m < M; m += MAX_ROWS) {
            int rows = M - m < MAX_ROWS ? (int)(M - m) : MAX_ROWS;
            if (use_amx) configure(rows);
            #pragma omp for schedule(static)
            for (int64_t g = 0; g < groups; g++)
                (use_amx ? group_rows : group_rows_avx512)(x, m, rows, K, packed, g, N, scale, bias, out, out_f32, &tables);
        }
        if (use_amx) _tile_release();
    }
}
