/* Data-parallel DPO in C over MPI, with libdpo's distributed grain: every rank holds the same
   model, accumulates its shard of each global batch (dpo_trainer_accumulate), the gradient buffer
   is averaged over the ranks in place (dpo_trainer_gradients + MPI_Allreduce), and every rank takes
   the same optimizer step (dpo_trainer_apply_optimizer). Rank 0 prints the metrics of each step,
   reduced over the whole global batch, and saves the model.

     mpicc -std=c99 examples/mpi_train.c -Iinclude -L.build/release -ldpo -Wl,-rpath,$PWD/.build/release -o mpi_train
     mpirun -np 2 ./mpi_train 2 out      # 2 ranks x 2 pairs per micro-batch
     ./mpi_train 4 out1                  # one process, 4 pairs: the same training

   The global micro-batch is per-device batch x ranks consecutive pairs; rank r takes the r-th
   per-device batch of them (as Accelerate splits batches). Averaging the ranks' gradients is exact
   here because every rank has the same number of pairs and the loss (sigmoid) is a mean over pairs;
   `mpirun -np N dpo train` also handles uneven shards and batch-coupled losses exactly. */
#include "dpo.h"
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAIRS 24  /* the dataset, cycled through in order */
#define STEPS 3   /* optimizer steps */
#define ACCUMULATION 2
#define MAX_TOKENS 16
#define NAMES 11  /* metrics reduced over the ranks */

static int rank = 0, size = 1;

#define TRY(call) do { dpo_status s_ = (call); if (s_ != DPO_OK) { \
    fprintf(stderr, "rank %d: %s: %s\n", rank, dpo_status_string(s_), dpo_last_error()); \
    MPI_Abort(MPI_COMM_WORLD, 1); } } while (0)

/* Pair i: prompt [1, w, w...], chosen starts with token 30, rejected with 31 (lengths vary). */
static int32_t word(int i, int j) { return 4 + (i * 7 + j * 5) % 24; }

typedef struct { int32_t ids[3][MAX_TOKENS * 4]; int64_t offsets[3][64]; } batch_storage;

/* The CSR batch of pairs first .. first + count - 1 (cycling through the dataset); fills the
   completion token counts, which weight the token-mean metrics in the reduction below. */
static dpo_preference_batch make_batch(batch_storage *s, int first, int count, double *chosen_tokens, double *rejected_tokens) {
    int64_t n[3] = {0, 0, 0};
    int k, j;
    *chosen_tokens = *rejected_tokens = 0;
    for (k = 0; k < count; k++) {
        int i = (first + k) % PAIRS;
        int lengths[3] = {2 + i % 3, 2 + i % 4, 2 + (i / 2) % 3};  /* prompt, chosen, rejected */
        for (j = 0; j < 3; j++) {
            int t;
            s->offsets[j][k] = n[j];
            for (t = 0; t < lengths[j]; t++)
                s->ids[j][n[j]++] = t == 0 ? (j == 0 ? 1 : 29 + j) : word(i, t + j);
        }
        *chosen_tokens += lengths[1];
        *rejected_tokens += lengths[2];
    }
    for (j = 0; j < 3; j++) s->offsets[j][count] = n[j];
    {
        dpo_preference_batch b = {sizeof(dpo_preference_batch), count,
                                  {s->ids[0], n[0], s->offsets[0]}, {s->ids[1], n[1], s->offsets[1]},
                                  {s->ids[2], n[2], s->offsets[2]}, NULL, NULL};
        return b;
    }
}

int main(int argc, char **argv) {
    int batch = argc > 1 ? atoi(argv[1]) : 2;   /* pairs per rank and micro-batch */
    const char *output = argc > 2 ? argv[2] : "mpi-model";
    dpo_model_config config;
    dpo_trainer_params params;
    dpo_model *model = NULL;
    dpo_trainer *trainer = NULL;
    int step, micro;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (batch < 1 || batch > 16) { fprintf(stderr, "per-device batch must be in [1, 16]\n"); MPI_Abort(MPI_COMM_WORLD, 2); }

    /* The same model on every rank: the same config and seed give the same weights. */
    config.struct_size = sizeof config;
    TRY(dpo_model_default_config(&config));
    config.vocab_size = 32;
    config.hidden_size = 16;
    config.intermediate_size = 32;
    config.num_hidden_layers = 2;
    config.num_attention_heads = 4;
    config.num_key_value_heads = 2;
    TRY(dpo_model_create(&config, /* seed */ 0, &model));
    params.struct_size = sizeof params;
    TRY(dpo_trainer_default_params(&params));
    params.learning_rate = 1e-2;
    params.max_steps = STEPS;
    params.gradient_accumulation_steps = ACCUMULATION;  /* accumulate divides each micro-batch by it */
    TRY(dpo_trainer_create(model, NULL, &params, &trainer));

    for (step = 0; step < STEPS; step++) {
        static const char *names[NAMES] = {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
            "rewards/margins", "logps/chosen", "logps/rejected", "logits/chosen", "mean_token_accuracy",
            "logits/rejected", "entropy"};
        double mean[NAMES] = {0}, num_tokens;
        dpo_metrics m;
        float *gradients;
        int64_t count, i;
        m.struct_size = sizeof m;
        for (micro = 0; micro < ACCUMULATION; micro++) {
            batch_storage storage;
            double ct, rt, n = batch;
            int first = ((step * ACCUMULATION + micro) * size + rank) * batch;
            dpo_preference_batch b = make_batch(&storage, first, batch, &ct, &rt);
            TRY(dpo_trainer_accumulate(trainer, &b, &m));
            {
                /* The global micro-batch's metrics from the ranks' own: means over pairs weighted
                   by pairs, token means by their tokens (chosen, rejected, both), summed over ranks. */
                double sums[NAMES + 4] = {
                    m.loss * n, m.rewards_chosen * n, m.rewards_rejected * n, m.rewards_accuracies * n,
                    m.rewards_margins * n, m.logps_chosen * n, m.logps_rejected * n,
                    m.logits_chosen * ct, m.mean_token_accuracy * ct, m.logits_rejected * rt, m.entropy * (ct + rt),
                    n, ct, rt, ct + rt};
                MPI_Allreduce(MPI_IN_PLACE, sums, NAMES + 4, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
                for (i = 0; i < NAMES; i++) {
                    double weight = i < 7 ? sums[NAMES] : i < 9 ? sums[NAMES + 1] : i < 10 ? sums[NAMES + 2] : sums[NAMES + 3];
                    mean[i] += sums[i] / weight / ACCUMULATION;  /* a step's metrics: the mean of its micro-batches' */
                }
            }
        }
        num_tokens = m.num_tokens;  /* this rank's tokens so far, summed over the ranks */
        MPI_Allreduce(MPI_IN_PLACE, &num_tokens, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);

        /* The average gradient over the ranks, in place in the library's buffer (MPI counts are int). */
        TRY(dpo_trainer_gradients(trainer, &gradients, &count));
        for (i = 0; i < count; i += 1 << 30) {
            int n = (int)(count - i < (1 << 30) ? count - i : (1 << 30));
            MPI_Allreduce(MPI_IN_PLACE, gradients + i, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
        for (i = 0; i < count; i++) gradients[i] /= (float)size;
        /* The same gradient on every rank: every rank clips and steps identically. */
        TRY(dpo_trainer_apply_optimizer(trainer, &m));
        if (rank == 0) {
            printf("{\"step\": %d", step + 1);
            for (i = 0; i < NAMES; i++) printf(", \"%s\": %.17g", names[i], mean[i]);
            printf(", \"grad_norm\": %.17g, \"learning_rate\": %.17g, \"num_tokens\": %.17g}\n",
                   m.grad_norm, m.learning_rate, num_tokens);
        }
    }
    if (rank == 0) TRY(dpo_model_save(model, output));
    dpo_trainer_free(trainer);
    dpo_model_free(model);
    MPI_Finalize();
    return 0;
}
