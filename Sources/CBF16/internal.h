// swift-dpo is licensed under the Apache License, Version 2.0: see LICENSE at the repository root.
// The AVX512-BF16 kernel's entry points (gemm_avx512.c), called by dispatch.c only.
#ifndef CBF16_INTERNAL_H
#define CBF16_INTERNAL_H

#include <stddef.h>

#define CBF16_HIDDEN __attribute__((visibility("hidden")))

CBF16_HIDDEN size_t avx512bf16_workspace_bytes(void);
CBF16_HIDDEN int avx512bf16_tile_rows(void);
CBF16_HIDDEN int avx512bf16_tile_columns(void);
CBF16_HIDDEN void avx512bf16_gemm_block(int transA, int transB, long k, float alpha, const float *a, long lda,
                                        const float *b, long ldb, float beta, float *c, long ldc,
                                        long row0, long rows, long col0, long cols, void *workspace);
CBF16_HIDDEN double avx512bf16_peak_probe(long iterations, double (*clock)(void));

#endif
