/* Times the gradient all-reduce of data-parallel training: in-place MPI_Allreduce (MPI_SUM) of a
   float buffer over MPI_COMM_WORLD, as libdpo_mpi.so does it (pieces of at most 2^30 elements).
   Dev-only (README, "Data parallel"): the time of one all-reduce is the slowest rank's, after a
   barrier; reports the median and the minimum over the repeats, the algorithm bandwidth
   (bytes / time) and the bus bandwidth (algorithm bandwidth x 2 (p - 1) / p, what each rank's link
   carried in a ring all-reduce).

     mpicc -O2 tools/bench_allreduce.c -o bench_allreduce
     mpirun -np 2 ./bench_allreduce 134515008 7          # the smollm2-135m gradient, 7 repeats
     mpirun -np 2 --mca btl self,tcp --mca btl_tcp_if_include lo ./bench_allreduce 134515008 7   # TCP loopback */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    long long count = argc > 1 ? atoll(argv[1]) : 134515008LL;
    int repeats = argc > 2 ? atoi(argv[2]) : 5, rank, size, r;
    float *data;
    double *times;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    data = malloc((size_t)count * sizeof *data);
    times = malloc((size_t)(repeats + 1) * sizeof *times);
    if (!data || !times || repeats < 1) { fprintf(stderr, "cannot allocate %lld floats\n", count); MPI_Abort(MPI_COMM_WORLD, 1); }
    for (long long i = 0; i < count; i++) data[i] = (float)(i % 1000) * 1e-3f;  /* touched: no page faults timed */
    for (r = 0; r <= repeats; r++) {  /* r = 0 warms up */
        double t, slowest;
        MPI_Barrier(MPI_COMM_WORLD);
        t = MPI_Wtime();
        for (long long i = 0; i < count; i += 1LL << 30) {
            int n = (int)(count - i < (1LL << 30) ? count - i : (1LL << 30));
            MPI_Allreduce(MPI_IN_PLACE, data + i, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
        t = MPI_Wtime() - t;
        MPI_Allreduce(&t, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        times[r] = slowest;
    }
    qsort(times + 1, (size_t)repeats, sizeof *times, compare);
    if (rank == 0) {
        double median = times[1 + repeats / 2], bytes = (double)count * sizeof(float);
        printf("allreduce of %lld floats (%.1f MB) on %d ranks: median %.3f ms, min %.3f ms; "
               "algorithm bandwidth %.2f GB/s, bus bandwidth %.2f GB/s\n",
               count, bytes / 1e6, size, median * 1e3, times[1] * 1e3, bytes / median / 1e9,
               bytes / median / 1e9 * 2.0 * (size - 1) / size);
    }
    free(data);
    free(times);
    MPI_Finalize();
    return 0;
}
