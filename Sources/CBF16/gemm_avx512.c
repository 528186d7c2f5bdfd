// swift-dpo is licensed under the Apache License, Version 2.0: see LICENSE at the repository root.
//
// The AVX512-BF16 GEMM: packing with rounding to bf16, the `vdpbf16ps` micro-kernel and the
// cache-blocked loops around it (the GotoBLAS/BLIS structure). Every function here carries the
// target attribute below and is named avx512bf16_*: Tests/c/run.sh checks that no other function
// of libdpo.so holds AVX-512 instructions, and dispatch.c calls them only after
// bf16gemm_native_available() (so valgrind, whose CPUID hides AVX-512, never reaches them).
//
// Data layout. `vdpbf16ps acc, a, b` adds, in each of its 16 fp32 lanes, a[2i] b[2i] + a[2i+1] b[2i+1]
// (bf16 pairs, products exact in fp32, sums rounded to nearest even; subnormal inputs and results
// are flushed to zero). So both operands are packed in k-pairs: a 32-bit word holds elements k = 2p
// (low half) and 2p + 1 (high half) of one row of op(A) or one column of op(B).
//   B panel: per micro-panel of NR columns, for each pair p, NR words (the columns, in order).
//   A block: per micro-panel of MR rows, for each pair p, MR words (the rows, in order).
// The micro-kernel keeps an MR x NR tile of C in MR * NV zmm accumulators (NR = 16 NV); per pair it
// loads NV vectors of B and broadcasts each of the MR words of A.
// Panels are padded with zeros to whole tiles and to an even k, so the kernel has no edge cases;
// edge tiles are stored with masks.
//
// Rounding to bf16 uses VCVTNE2PS2BF16: round to nearest even, NaN stays NaN, subnormal inputs
// become signed zeros (the instruction's fixed DAZ). bf16_round (BF16Gemm.swift) is the same
// function in portable code, for the fallback and the tests.

#include "CBF16.h"
#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))
#define INLINE static inline __attribute__((always_inline)) AVX512BF16

// Register tile: MR rows x NR = 16 NV columns (MR NV accumulators + NV B vectors + 1 broadcast
// must fit the 32 zmm registers). 8 x 48: 24 accumulators, 11 loads per 24 vdpbf16ps, and every
// dimension of the Llama shapes we run (128-row head chunks, 192, 576, 1536, 49152) is a whole
// number of tiles. On one Zen 5 core 14 x 32 and 6 x 64 ran as fast on 2048^3; with both cores,
// 8 x 48 ran the smollm2-135m products 5-15% faster than 14 x 32 (no partial tiles).
#ifndef BF16_MR
#define BF16_MR 8
#endif
#ifndef BF16_NV
#define BF16_NV 3
#endif
#define MR BF16_MR
#define NV BF16_NV
#define NR (16 * NV)
// Cache blocking: KC elements of k per pass (even), MC rows of A per packed block (a multiple of
// MR; MC x KC bf16 = 448 KiB stay in the 1 MiB L2), NC columns of B per packed panel (a multiple
// of NR; 3 MiB, in L3). Measured on Zen 5 (2048^3, one core): KC 256 / 384 / 768 / 1024 reached
// 59% / 65% / 75% / 82% of the vdpbf16ps peak: each pass ends with a load and store of the C tile,
// which a long pass amortises; the B micro-panel (KC x NR bf16, 96 KiB) then exceeds L1 but
// streams from L2 fast enough.
#ifndef BF16_KC
#define BF16_KC 1024
#endif
#ifndef BF16_MC
#define BF16_MC (MR * 28)
#endif
#ifndef BF16_NC
#define BF16_NC (NR * 32)
#endif
#define KC BF16_KC
#define MC BF16_MC
#define NC BF16_NC

size_t avx512bf16_workspace_bytes(void) {
    return (size_t)(MC + NC) * (KC / 2) * sizeof(uint32_t);
}
int avx512bf16_tile_rows(void) { return MR; }
int avx512bf16_tile_columns(void) { return NR; }

/// Lanes [0, n) of a 16-lane mask (n clamped to [0, 16]).
INLINE __mmask16 avx512bf16_lanes(long n) {
    if (n <= 0) return 0;
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}

/// 32 consecutive floats x[0..<n] (zeros beyond n) as 16 words of bf16 pairs (x[2t], x[2t+1]).
INLINE __m512i avx512bf16_pairs_contiguous(const float *x, long n) {
    __m512 lo = _mm512_maskz_loadu_ps(avx512bf16_lanes(n), x);
    __m512 hi = _mm512_maskz_loadu_ps(avx512bf16_lanes(n - 16), x + 16);
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/// 16x16 transpose of 32-bit words: r[i] word j becomes r[j] word i.
INLINE void avx512bf16_transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // u[4i + j], 128-bit lane L: column 4L + j of rows 4i..4i+3.
    for (int j = 0; j < 4; j++) {
        __m512i x0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88);      // lanes u[j].0, .2, u[4+j].0, .2
        __m512i x1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xDD);      // lanes 1, 3
        __m512i y0 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88);
        __m512i y1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xDD);
        r[j] = _mm512_shuffle_i32x4(x0, y0, 0x88);        // lane 0 of u[j], u[4+j], u[8+j], u[12+j]
        r[8 + j] = _mm512_shuffle_i32x4(x0, y0, 0xDD);    // lane 2
        r[4 + j] = _mm512_shuffle_i32x4(x1, y1, 0x88);    // lane 1
        r[12 + j] = _mm512_shuffle_i32x4(x1, y1, 0xDD);   // lane 3
    }
}

/// Packs a panel of `count` (<= width) vectors x k elements, element (v, q) at src[v sv + q sk],
/// into dst: for each pair p of [0, ceil(kc / 2)), `width` words (v = 0..<width; zeros for
/// v >= count and for the odd tail of k). width is MR or NR.
INLINE void avx512bf16_pack(uint32_t *dst, long width, const float *src, long count, long kc, long sv, long sk) {
    long kp = (kc + 1) / 2;
    if (sk == 1) {
        // Contiguous along k (rows of A, columns of op(B) = B^T): per 16 vectors x 16 pairs,
        // convert the vectors' runs of 32 elements and transpose the 16 x 16 words.
        for (long v0 = 0; v0 < width; v0 += 16) {
            __mmask16 store = avx512bf16_lanes(width - v0);
            for (long p0 = 0; p0 < kp; p0 += 16) {
                __m512i r[16];
                for (int i = 0; i < 16; i++) {
                    long v = v0 + i;
                    r[i] = v < count ? avx512bf16_pairs_contiguous(src + v * sv + 2 * p0, kc - 2 * p0)
                                     : _mm512_setzero_si512();
                }
                avx512bf16_transpose16(r);
                long pn = kp - p0 < 16 ? kp - p0 : 16;
                for (long t = 0; t < pn; t++)
                    _mm512_mask_storeu_epi32(dst + (p0 + t) * width + v0, store, r[t]);
            }
        }
    } else {
        // Contiguous along the vectors (rows of op(B) = B, columns of op(A) = A^T): two rows of
        // k, converted together, their bf16 interleaved into pairs with one word permute.
        const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                    23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        for (long p = 0; p < kp; p++) {
            const float *row0 = src + 2 * p * sk;
            int hasRow1 = 2 * p + 1 < kc;
            for (long v0 = 0; v0 < width; v0 += 16) {
                __mmask16 load = avx512bf16_lanes(count - v0);
                __m512 x0 = _mm512_maskz_loadu_ps(load, row0 + v0 * sv);
                __m512 x1 = hasRow1 ? _mm512_maskz_loadu_ps(load, row0 + sk + v0 * sv) : _mm512_setzero_ps();
                __m512i z = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);
                _mm512_mask_storeu_epi32(dst + p * width + v0, avx512bf16_lanes(width - v0),
                                         _mm512_permutexvar_epi16(interleave, z));
            }
        }
    }
}

/// C[0..<mr, 0..<nr] = alpha * Apanel * Bpanel + (first ? beta * C : C), over kp pairs.
INLINE void avx512bf16_micro(long kp, const uint32_t *pa, const uint32_t *pb, float *c, long ldc,
                             long mr, long nr, float alpha, float beta, int first) {
    // The C tile is needed only at the end; fetch it while the products run.
    for (long i = 0; i < mr; i++) {
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + nr - 1), _MM_HINT_T0);
    }
    __m512 acc[MR][NV];
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++)
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (long p = 0; p < kp; p++) {
        __m512bh b[NV];
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) b[v] = (__m512bh)_mm512_loadu_si512(pb + p * NR + 16 * v);
#pragma clang loop unroll(full)
        for (int i = 0; i < MR; i++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)pa[p * MR + i]);
#pragma clang loop unroll(full)
            for (int v = 0; v < NV; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
        }
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    int readC = !first || beta != 0;
    __m512 scaleC = first ? vb : _mm512_set1_ps(1);
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++) {
        if (i >= mr) break;
        float *row = c + i * ldc;
#pragma clang loop unroll(full)
        for (int v = 0; v < NV; v++) {
            __mmask16 m = avx512bf16_lanes(nr - 16 * v);
            __m512 r = _mm512_mul_ps(va, acc[i][v]);
            if (readC) r = _mm512_fmadd_ps(scaleC, _mm512_maskz_loadu_ps(m, row + 16 * v), r);
            _mm512_mask_storeu_ps(row + 16 * v, m, r);
        }
    }
}

/// The blocked product for rows [row0, row0 + rows), columns [col0, col0 + cols) of C (k >= 1).
AVX512BF16 void avx512bf16_gemm_block(int transA, int transB, long k, float alpha, const float *a, long lda,
                                      const float *b, long ldb, float beta, float *c, long ldc,
                                      long row0, long rows, long col0, long cols, void *workspace) {
    uint32_t *pa = (uint32_t *)workspace;
    uint32_t *pb = pa + (size_t)MC * (KC / 2);
    // Strides of op(A) (row i, element q) and op(B) (element q, column j) in the stored matrices.
    long aRow = transA ? 1 : lda, aK = transA ? lda : 1;
    long bK = transB ? 1 : ldb, bCol = transB ? ldb : 1;
    for (long jc = col0; jc < col0 + cols; jc += NC) {
        long nc = col0 + cols - jc < NC ? col0 + cols - jc : NC;
        for (long pc = 0; pc < k; pc += KC) {
            long kc = k - pc < KC ? k - pc : KC, kp = (kc + 1) / 2;
            for (long jr = 0; jr < nc; jr += NR) {
                long nr = nc - jr < NR ? nc - jr : NR;
                avx512bf16_pack(pb + jr * kp, NR, b + pc * bK + (jc + jr) * bCol, nr, kc, bCol, bK);
            }
            for (long ic = row0; ic < row0 + rows; ic += MC) {
                long mc = row0 + rows - ic < MC ? row0 + rows - ic : MC;
                for (long ir = 0; ir < mc; ir += MR) {
                    long mr = mc - ir < MR ? mc - ir : MR;
                    avx512bf16_pack(pa + ir * kp, MR, a + (ic + ir) * aRow + pc * aK, mr, kc, aRow, aK);
                }
                for (long jr = 0; jr < nc; jr += NR) {
                    long nr = nc - jr < NR ? nc - jr : NR;
                    for (long ir = 0; ir < mc; ir += MR) {
                        long mr = mc - ir < MR ? mc - ir : MR;
                        avx512bf16_micro(kp, pa + ir * kp, pb + jr * kp, c + (ic + ir) * ldc + jc + jr, ldc,
                                         mr, nr, alpha, beta, pc == 0);
                    }
                }
            }
        }
    }
}

AVX512BF16 double avx512bf16_peak_probe(long iterations, double (*clock)(void)) {
    __m512 acc[24];
    for (int i = 0; i < 24; i++) acc[i] = _mm512_setzero_ps();
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3F80), y = (__m512bh)_mm512_set1_epi16(0x0080);
    double t0 = clock();
    for (long it = 0; it < iterations; it++) {
#pragma clang loop unroll(full)
        for (int i = 0; i < 24; i++) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
        __asm__ volatile("" : "+v"(x));  // keeps the loop from being folded
    }
    double t = clock() - t0;
    __m512 s = acc[0];
    for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, acc[i]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return t > 0 ? 24.0 * 64.0 * (double)iterations / t : 0;
}

#else
// Other architectures: no kernel (bf16gemm_native_available() is 0 there).
size_t avx512bf16_workspace_bytes(void) { return 64; }
int avx512bf16_tile_rows(void) { return 1; }
int avx512bf16_tile_columns(void) { return 1; }
void avx512bf16_gemm_block(int transA, int transB, long k, float alpha, const float *a, long lda,
                           const float *b, long ldb, float beta, float *c, long ldc,
                           long row0, long rows, long col0, long cols, void *workspace) {
    (void)transA; (void)transB; (void)k; (void)alpha; (void)a; (void)lda; (void)b; (void)ldb; (void)beta;
    (void)c; (void)ldc; (void)row0; (void)rows; (void)col0; (void)cols; (void)workspace;
}
double avx512bf16_peak_probe(long iterations, double (*clock)(void)) { (void)iterations; (void)clock; return 0; }
#endif
