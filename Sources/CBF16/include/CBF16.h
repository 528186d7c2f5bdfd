// swift-dpo is licensed under the Apache License, Version 2.0: see LICENSE at the repository root.
//
// bf16 matrix products with fp32 accumulation (the math of PyTorch's CPU autocast to bfloat16):
//   C = alpha * op(A) * op(B) + beta * C
// with A, B, C fp32 in memory (row-major, row strides lda, ldb, ldc); every element of op(A) and
// op(B) is rounded to bfloat16 (see bf16_round) while it is packed, and the products of those
// bf16 values are summed in fp32 by AVX512-BF16 `vdpbf16ps` micro-kernels.
//
// The kernels are compiled for AVX512-BF16 with function-level target attributes only (the rest of
// the library stays portable) and run only when bf16gemm_native_available() says the CPU and the OS
// support them; callers use the portable fallback otherwise (Sources/DPO/Math/BF16Gemm.swift).
// None of these symbols is exported from libdpo.so (its version script keeps only dpo_*).
#ifndef CBF16_H
#define CBF16_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when this CPU has AVX512F, AVX512BW and AVX512-BF16 and the OS saves the AVX-512 state
/// (cpuid leaf 7 and XGETBV), else 0. Computed once. Under valgrind, whose emulated CPUID hides
/// AVX-512, this is 0.
int bf16gemm_native_available(void);

/// Bytes of scratch one call of bf16gemm_native_block needs (packed panels; 64-byte aligned).
size_t bf16gemm_workspace_bytes(void);

/// Row and column granularity of the kernel's register tile: blocks of C handed to
/// bf16gemm_native_block are best split at multiples of these.
int bf16gemm_tile_rows(void);
int bf16gemm_tile_columns(void);

/// Computes rows [row0, row0 + rows) and columns [col0, col0 + cols) of
///   C = alpha * op(A)[m, k] * op(B)[k, n] + beta * C
/// on the calling thread with the AVX512-BF16 kernel; op(X) is X (trans 0) or its transpose
/// (trans 1), stored row-major with row stride ldx. With beta == 0, C is not read. k == 0 scales C.
/// `workspace` must hold bf16gemm_workspace_bytes() bytes, 64-byte aligned, used by this call only.
/// Distinct blocks of one C may be computed by concurrent calls with distinct workspaces.
/// Returns 0, or -1 (and does nothing) when the CPU lacks the kernel's instructions.
int bf16gemm_native_block(int transA, int transB, long m, long n, long k, float alpha,
                          const float *a, long lda, const float *b, long ldb, float beta,
                          float *c, long ldc, long row0, long rows, long col0, long cols,
                          void *workspace);

/// The estimated peak of the kernel's instruction on one core, for benchmarks: runs `iterations`
/// rounds of 24 independent `vdpbf16ps` zmm instructions (64 FLOPs each) and returns FLOP/s, or 0
/// when the CPU lacks AVX512-BF16.
double bf16gemm_native_peak_probe(long iterations);

#ifdef __cplusplus
}
#endif

#endif
