/* What Eyas's CPU kernels share: bf16 <-> float32 on AVX-512 with torch's rounding, and the AMX
 * tile configuration. */
#ifndef EYAS_KERNELS_COMMON_H
#define EYAS_KERNELS_COMMON_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

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

#endif
