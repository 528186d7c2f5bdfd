/* swift-dpo is licensed under the Apache License, Version 2.0: see LICENSE at the repository root.

   libdpo_mpi.so: the MPI calls of data-parallel training, for the `dpo` command, which loads this
   library (dlopen) only when it runs under mpirun with more than one rank. So neither libdpo.so nor
   a single-process `dpo` needs MPI; only this file is compiled against mpi.h (with mpicc, by
   `make mpi`), which keeps the command independent of the MPI implementation's ABI (Open MPI and
   MPICH define MPI_COMM_WORLD and MPI_FLOAT differently).

   Every function returns 0 on success, or an MPI error code with its message written
   (NUL-terminated, truncated to capacity) into message. MPI_COMM_WORLD returns errors instead of
   aborting, so the command can name the rank and the failure before it calls dpo_mpi_abort. */
#include <limits.h>
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

static int fail(int code, const char *what, char *message, size_t capacity) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error %d", code);
    if (message && capacity > 0) snprintf(message, capacity, "%s: %s", what, text);
    return code;
}

/* MPI_Init_thread (FUNNELED: only the thread that called this calls MPI; the library's compute
   threads never do), errors returned on MPI_COMM_WORLD, and this process's rank and the size. */
int dpo_mpi_init(int *rank, int *size, char *message, size_t capacity) {
    int initialized = 0, provided = 0, rc;
    MPI_Initialized(&initialized);
    if (!initialized) {
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return fail(rc, "MPI_Init_thread", message, capacity);
    }
    if ((rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN)) != MPI_SUCCESS)
        return fail(rc, "MPI_Comm_set_errhandler", message, capacity);
    if ((rc = MPI_Comm_rank(MPI_COMM_WORLD, rank)) != MPI_SUCCESS) return fail(rc, "MPI_Comm_rank", message, capacity);
    if ((rc = MPI_Comm_size(MPI_COMM_WORLD, size)) != MPI_SUCCESS) return fail(rc, "MPI_Comm_size", message, capacity);
    return 0;
}

/* In-place MPI_Allreduce with MPI_SUM over MPI_COMM_WORLD, in pieces of at most 2^30 elements
   (MPI counts are int). */
static int allreduce(void *data, int64_t count, MPI_Datatype type, size_t element, char *message, size_t capacity) {
    const int64_t piece = (int64_t)1 << 30;
    char *p = data;
    if (count < 0) {
        if (message && capacity > 0) snprintf(message, capacity, "allreduce: negative count %lld", (long long)count);
        return MPI_ERR_COUNT;
    }
    while (count > 0) {
        int n = (int)(count < piece ? count : piece);
        int rc = MPI_Allreduce(MPI_IN_PLACE, p, n, type, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return fail(rc, "MPI_Allreduce", message, capacity);
        p += (size_t)n * element;
        count -= n;
    }
    return 0;
}

int dpo_mpi_allreduce_float(float *data, int64_t count, char *message, size_t capacity) {
    return allreduce(data, count, MPI_FLOAT, sizeof(float), message, capacity);
}

int dpo_mpi_allreduce_double(double *data, int64_t count, char *message, size_t capacity) {
    return allreduce(data, count, MPI_DOUBLE, sizeof(double), message, capacity);
}

int dpo_mpi_barrier(char *message, size_t capacity) {
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : fail(rc, "MPI_Barrier", message, capacity);
}

/* Ends every rank of the job (MPI_Abort): what a rank that cannot go on calls, so that the others
   stop instead of waiting for it in their next collective. */
void dpo_mpi_abort(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
}

int dpo_mpi_finalize(char *message, size_t capacity) {
    int rc = MPI_Finalize();
    return rc == MPI_SUCCESS ? 0 : fail(rc, "MPI_Finalize", message, capacity);
}

/* The MPI library's version line (MPI_Get_library_version), e.g. "Open MPI v4.1.4, ...". */
int dpo_mpi_library_version(char *message, size_t capacity) {
    char text[MPI_MAX_LIBRARY_VERSION_STRING];
    int length = 0, rc = MPI_Get_library_version(text, &length);
    if (rc != MPI_SUCCESS) return fail(rc, "MPI_Get_library_version", message, capacity);
    if (message && capacity > 0) snprintf(message, capacity, "%.*s", length, text);
    return 0;
}
