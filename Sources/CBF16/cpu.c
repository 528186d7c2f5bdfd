// swift-dpo is licensed under the Apache License, Version 2.0: see LICENSE at the repository root.
// Runtime detection of the AVX512-BF16 kernel's requirements (portable code: no AVX-512 here).
#include "CBF16.h"

#include <stdatomic.h>

#if defined(__x86_64__)
#include <cpuid.h>

/// The CPU reports AVX512F (leaf 7 EBX bit 16), AVX512BW (EBX bit 30) and AVX512_BF16 (leaf 7
/// subleaf 1 EAX bit 5), and the OS has enabled the state they use: OSXSAVE (leaf 1 ECX bit 27),
/// then XCR0 bits 1, 2 (SSE, AVX) and 5, 6, 7 (opmask, upper halves of zmm0-15, zmm16-31).
static int detect(void) {
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xE6u) != 0xE6u) return 0;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    if (!(ebx & (1u << 16)) || !(ebx & (1u << 30))) return 0;
    unsigned maxSub = eax;
    if (maxSub < 1) return 0;
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    return (eax & (1u << 5)) != 0;
}
#else
static int detect(void) { return 0; }
#endif

int bf16gemm_native_available(void) {
    // Racing first calls compute and store the same value.
    static _Atomic int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        v = detect();
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}
