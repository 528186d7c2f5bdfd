// The CBLAS interface of OpenBLAS plus its thread-count controls.
#include <cblas.h>

// glibc's dladdr with its Dl_info layout (a GNU extension that <dlfcn.h> hides without
// _GNU_SOURCE), under a name of our own: it finds the file of the loaded OpenBLAS
// (Sources/DPO/Math/OpenBLASThreads.swift).
typedef struct {
    const char *fileName;
    void *fileBase;
    const char *symbolName;
    void *symbolAddress;
} DPOLoadedObject;
int dpo_dladdr(const void *address, DPOLoadedObject *info) __asm__("dladdr");
