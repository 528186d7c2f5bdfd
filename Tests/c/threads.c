/* Two trainers stepping in two threads at once (include/dpo.h: distinct handles are independent
 * across threads), written against include/dpo.h only.
 *
 *   threads
 *
 * Each of two runs creates its own model and trainer, takes a few DPO steps and accumulates one
 * more micro-batch. Run concurrently (both threads released together by a barrier), each gives
 * bit for bit the losses and gradient buffer it gives when the runs go one after the other. The
 * library's calls leave the process environment alone (no setenv/unsetenv behind the host's back:
 * the `environ` array and its strings are the very same afterwards) and the thread count as it was.
 * Meant to run under valgrind too. */
#define _POSIX_C_SOURCE 200809L
#include "dpo.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

#define STEPS 3
#define PAIRS 3
#define PROMPT 24
#define CHOSEN 12
#define REJECTED 16

static const char *config =
    "{\"vocab_size\": 48, \"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 2,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"max_position_embeddings\": 128}";

struct run {
    uint64_t seed;
    pthread_barrier_t *start;  /* NULL when run alone */
    double losses[STEPS + 1];
    float *gradients;          /* a copy of the buffer after the final accumulate (malloc'd) */
    int64_t num_gradients;
    const char *failure;       /* NULL on success */
};

static void fill(int32_t *ids, int n, uint64_t seed, int salt) {
    int i;
    for (i = 0; i < n; i++) ids[i] = (int32_t)((seed * 7 + (uint64_t)salt * 13 + (uint64_t)i * 5) % 47) + 1;
}

static void *train(void *arg) {
    struct run *r = arg;
    int32_t prompts[PAIRS * PROMPT], chosen[PAIRS * CHOSEN], rejected[PAIRS * REJECTED];
    int64_t po[PAIRS + 1], co[PAIRS + 1], ro[PAIRS + 1];
    dpo_preference_batch batch;
    dpo_model *model = NULL;
    dpo_trainer *trainer = NULL;
    dpo_metrics m;
    float *data = NULL;
    int i;

    for (i = 0; i < PAIRS; i++) {
        fill(prompts + i * PROMPT, PROMPT, r->seed, i);
        fill(chosen + i * CHOSEN, CHOSEN, r->seed, 100 + i);
        fill(rejected + i * REJECTED, REJECTED, r->seed, 200 + i);
    }
    for (i = 0; i <= PAIRS; i++) { po[i] = i * PROMPT; co[i] = i * CHOSEN; ro[i] = i * REJECTED; }
    memset(&batch, 0, sizeof batch);
    batch.struct_size = sizeof batch;
    batch.num_pairs = PAIRS;
    batch.prompts.ids = prompts; batch.prompts.num_ids = PAIRS * PROMPT; batch.prompts.offsets = po;
    batch.chosen.ids = chosen; batch.chosen.num_ids = PAIRS * CHOSEN; batch.chosen.offsets = co;
    batch.rejected.ids = rejected; batch.rejected.num_ids = PAIRS * REJECTED; batch.rejected.offsets = ro;
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;

    r->failure = "model_create";
    if (dpo_model_create_json(config, r->seed, &model) != DPO_OK) goto done;
    r->failure = "trainer_create";
    if (dpo_trainer_create_json(model, NULL, "{\"learning_rate\": 0.01}", &trainer) != DPO_OK) goto done;
    if (r->start) pthread_barrier_wait(r->start);
    r->failure = "trainer_step";
    for (i = 0; i < STEPS; i++) {
        if (dpo_trainer_step(trainer, &batch, &m) != DPO_OK) goto done;
        r->losses[i] = m.loss;
    }
    r->failure = "trainer_accumulate";
    if (dpo_trainer_accumulate(trainer, &batch, &m) != DPO_OK) goto done;
    r->losses[STEPS] = m.loss;
    r->failure = "trainer_gradients";
    if (dpo_trainer_gradients(trainer, &data, &r->num_gradients) != DPO_OK) goto done;
    r->gradients = malloc((size_t)r->num_gradients * sizeof(float));
    r->failure = "malloc";
    if (r->gradients == NULL) goto done;
    memcpy(r->gradients, data, (size_t)r->num_gradients * sizeof(float));
    r->failure = NULL;
done:
    if (r->failure) fprintf(stderr, "threads: run %llu: %s failed: %s\n", (unsigned long long)r->seed, r->failure,
                            dpo_last_error());
    dpo_trainer_free(trainer);
    dpo_model_free(model);
    return NULL;
}

static int same(const struct run *a, const struct run *b) {
    return a->failure == NULL && b->failure == NULL && memcmp(a->losses, b->losses, sizeof a->losses) == 0 &&
           a->num_gradients == b->num_gradients &&
           memcmp(a->gradients, b->gradients, (size_t)a->num_gradients * sizeof(float)) == 0;
}

int main(void) {
    struct run alone[2], together[2];
    pthread_t threads[2];
    pthread_barrier_t start;
    char **env = environ;
    size_t n = 0, i;
    char **saved;
    const int32_t thread_count = dpo_get_num_threads();
    int k, failed = 0;

    /* The environment as the host left it: the array and a copy of every string. */
    while (env[n]) n++;
    saved = malloc((n + 1) * sizeof *saved);
    if (saved == NULL) return 1;
    for (i = 0; i < n; i++) saved[i] = env[i];
    saved[n] = NULL;

    memset(alone, 0, sizeof alone);
    memset(together, 0, sizeof together);
    for (k = 0; k < 2; k++) {
        alone[k].seed = together[k].seed = (uint64_t)k + 1;
        train(&alone[k]);
    }
    pthread_barrier_init(&start, NULL, 2);
    for (k = 0; k < 2; k++) {
        together[k].start = &start;
        if (pthread_create(&threads[k], NULL, train, &together[k]) != 0) { fprintf(stderr, "pthread_create\n"); return 1; }
    }
    for (k = 0; k < 2; k++) pthread_join(threads[k], NULL);
    pthread_barrier_destroy(&start);

    for (k = 0; k < 2; k++) {
        if (!same(&alone[k], &together[k])) {
            fprintf(stderr, "threads: FAILED: run %d in a thread differs from the same run alone\n", k + 1);
            failed = 1;
        }
    }
    if (same(&alone[0], &alone[1])) {
        fprintf(stderr, "threads: FAILED: the two runs should differ (different seeds)\n");
        failed = 1;
    }
    if (environ != env) {
        fprintf(stderr, "threads: FAILED: the library replaced the process's environ array (setenv/unsetenv)\n");
        failed = 1;
    } else {
        for (i = 0; i <= n; i++) {
            if (environ[i] != saved[i]) {
                fprintf(stderr, "threads: FAILED: environment entry %zu changed\n", i);
                failed = 1;
                break;
            }
        }
    }
    if (dpo_get_num_threads() != thread_count) {
        fprintf(stderr, "threads: FAILED: thread count %d became %d\n", thread_count, dpo_get_num_threads());
        failed = 1;
    }
    for (k = 0; k < 2; k++) { free(alone[k].gradients); free(together[k].gradients); }
    free(saved);
    if (failed) return 1;
    printf("threads: 2 trainers x %d steps on %d library threads: concurrent == sequential, environment untouched\n",
           STEPS, thread_count);
    return 0;
}
