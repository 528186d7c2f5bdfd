/* DPO in C: a tiny model learns to prefer completions that start with token 5 over token 6.
   cc -std=c99 train.c -Iinclude -L.build/release -ldpo -o train */
#include "dpo.h"
#include <stdio.h>

#define TRY(call) do { dpo_status s = (call); if (s != DPO_OK) { \
    fprintf(stderr, "%s: %s\n", dpo_status_string(s), dpo_last_error()); return 1; } } while (0)

int main(void) {
    /* Two preference pairs as CSR token lists: list i is ids[offsets[i] .. offsets[i+1]). */
    int32_t prompt[] = {1, 10, 11, 1, 12, 13};
    int32_t chosen[] = {5, 20, 5, 21};
    int32_t rejected[] = {6, 20, 6, 21};
    int64_t prompt_offsets[] = {0, 3, 6}, completion_offsets[] = {0, 2, 4};
    dpo_preference_batch batch = {sizeof(dpo_preference_batch), 2,
                                  {prompt, 6, prompt_offsets}, {chosen, 4, completion_offsets},
                                  {rejected, 4, completion_offsets}, NULL, NULL};

    dpo_model_config config;
    dpo_trainer_params params;
    dpo_metrics metrics;
    dpo_model *model = NULL;
    dpo_trainer *trainer = NULL;
    int step;

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
    TRY(dpo_trainer_default_params(&params));   /* TRL's DPOConfig defaults */
    params.beta = 0.1;
    params.loss_type = "sigmoid";
    params.learning_rate = 1e-2;
    TRY(dpo_trainer_create(model, NULL, &params, &trainer));   /* NULL: reference = snapshot */

    metrics.struct_size = sizeof metrics;
    for (step = 1; step <= 20; step++) {
        TRY(dpo_trainer_step(trainer, &batch, &metrics));
        if (step % 5 == 0)
            printf("step %2d  loss %.4f  rewards/accuracies %.2f  rewards/margins %.4f\n",
                   step, metrics.loss, metrics.rewards_accuracies, metrics.rewards_margins);
    }
    TRY(dpo_model_save(model, "dpo-model"));
    dpo_trainer_free(trainer);
    dpo_model_free(model);
    return 0;
}
