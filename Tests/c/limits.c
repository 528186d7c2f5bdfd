/* Batches too large for the process's address-space limit are DPO_ERR_OUT_OF_MEMORY, never an
 * abort, written against include/dpo.h only.
 *
 *   limits
 *
 * A tiny model and one item whose completion holds N tokens (the host's arrays allocated first),
 * then RLIMIT_AS set to the address space in use plus 512 MiB: sequence_logps, an SFT step and a
 * DPO step must each return DPO_ERR_OUT_OF_MEMORY (the library once packed such a batch with
 * unchecked Swift arrays and died with "Fatal error: failed to allocate"), and a small batch must
 * still work afterwards. Not run under valgrind (it replaces the allocator). */
#define _POSIX_C_SOURCE 200809L
#include "dpo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define N 20000000

static int failures = 0;

static void expect(dpo_status got, dpo_status want, const char *what) {
    if (got != want) {
        printf("FAIL %s: status %d (%s), expected %d: %s\n", what, (int)got, dpo_status_string(got), (int)want,
               dpo_last_error());
        failures++;
    } else {
        printf("  ok %s: %s\n", what, got == DPO_OK ? "ok" : dpo_last_error());
    }
}

static long address_space_in_use(void) {
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld", &pages) != 1) pages = 0;
        fclose(f);
    }
    return pages * sysconf(_SC_PAGESIZE);
}

int main(void) {
    const char *config =
        "{\"vocab_size\": 32, \"hidden_size\": 16, \"intermediate_size\": 32, \"num_hidden_layers\": 1,"
        " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"max_position_embeddings\": 64}";
    dpo_model *model = NULL;
    dpo_trainer *trainer = NULL;
    dpo_sft_trainer *sft = NULL;
    int32_t prompt[1] = {5}, small[2] = {6, 7};
    int32_t *big = malloc(sizeof(int32_t) * N);
    int64_t po[2] = {0, 1}, bo[2] = {0, N}, so[2] = {0, 2};
    double logps[1];
    dpo_metrics m;
    dpo_sft_metrics sm;
    struct rlimit limit;
    int i;

    if (!big) { printf("FAIL cannot allocate the host's batch\n"); return 1; }
    sm.struct_size = sizeof sm;
    for (i = 0; i < N; i++) big[i] = 5;
    expect(dpo_set_num_threads(2), DPO_OK, "dpo_set_num_threads");
    expect(dpo_model_create_json(config, 1, &model), DPO_OK, "dpo_model_create_json");
    expect(dpo_trainer_create_json(model, NULL, NULL, &trainer), DPO_OK, "dpo_trainer_create_json");
    expect(dpo_sft_trainer_create_json(model, NULL, &sft), DPO_OK, "dpo_sft_trainer_create_json");
    if (failures) return 1;

    {   /* The first products start OpenBLAS's buffers before the limit. */
        dpo_completion_batch b = {sizeof(dpo_completion_batch), 1, {prompt, 1, po}, {small, 2, so}};
        expect(dpo_model_sequence_logps(model, &b, logps, 1), DPO_OK, "a small batch before the limit");
    }
    limit.rlim_cur = limit.rlim_max = (rlim_t)(address_space_in_use() + (512L << 20));
    if (setrlimit(RLIMIT_AS, &limit) != 0) { perror("setrlimit"); return 1; }

    {
        dpo_completion_batch b = {sizeof(dpo_completion_batch), 1, {prompt, 1, po}, {big, N, bo}};
        expect(dpo_model_sequence_logps(model, &b, logps, 1), DPO_ERR_OUT_OF_MEMORY, "sequence_logps of 20M tokens");
        expect(dpo_sft_trainer_step(sft, &b, &sm), DPO_ERR_OUT_OF_MEMORY, "SFT step on 20M tokens");
    }
    {
        dpo_preference_batch b;
        memset(&b, 0, sizeof b);
        b.struct_size = sizeof b;
        b.num_pairs = 1;
        b.prompts = (dpo_token_lists){prompt, 1, po};
        b.chosen = (dpo_token_lists){big, N, bo};
        b.rejected = (dpo_token_lists){small, 2, so};
        m.struct_size = sizeof m;
        expect(dpo_trainer_step(trainer, &b, &m), DPO_ERR_OUT_OF_MEMORY, "DPO step on 20M tokens");
    }
    {
        dpo_completion_batch b = {sizeof(dpo_completion_batch), 1, {prompt, 1, po}, {small, 2, so}};
        expect(dpo_model_sequence_logps(model, &b, logps, 1), DPO_OK, "a small batch still works");
    }
    dpo_sft_trainer_free(sft);
    dpo_trainer_free(trainer);
    dpo_model_free(model);
    free(big);
    printf(failures ? "limits: %d FAILED\n" : "limits: all passed\n", failures);
    return failures ? 1 : 0;
}
