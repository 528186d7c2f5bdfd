// swift-dpo is licensed under the Apache License, Version 2.0: see LICENSE at the repository root.
// The public entry points of CBF16.h (portable code): they run the AVX512-BF16 kernel only on a
// CPU that has it.
#include "CBF16.h"
#include "internal.h"

#include <time.h>

size_t bf16gemm_workspace_bytes(void) { return avx512bf16_workspace_bytes(); }
int bf16gemm_tile_rows(void) { return avx512bf16_tile_rows(); }
int bf16gemm_tile_columns(void) { return avx512bf16_tile_columns(); }

int bf16gemm_native_block(int transA, int transB, long m, long n, long k, float alpha,
                          const float *a, long lda, const float *b, long ldb, float beta,
                          float *c, long ldc, long row0, long rows, long col0, long cols,
                          void *workspace) {
    if (!bf16gemm_native_available()) return -1;
    if (row0 < 0 || col0 < 0 || rows <= 0 || cols <= 0 || row0 + rows > m || col0 + cols > n) return 0;
    if (k <= 0) {
        // C = beta * C (not read when beta is 0, as in BLAS).
        for (long i = row0; i < row0 + rows; i++)
            for (long j = col0; j < col0 + cols; j++) c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];
        return 0;
    }
    avx512bf16_gemm_block(transA, transB, k, alpha, a, lda, b, ldb, beta, c, ldc, row0, rows, col0, cols, workspace);
    return 0;
}

static double monotonic_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bf16gemm_native_peak_probe(long iterations) {
    if (!bf16gemm_native_available() || iterations <= 0) return 0;
    return avx512bf16_peak_probe(iterations, monotonic_seconds);
}
