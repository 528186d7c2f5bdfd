/* C smoke test of libdpo.so, written against include/dpo.h only.
 *
 *   smoke <scratch-directory>
 *
 * Trains a tiny model with DPO until it prefers the "good" completions, checks save/load,
 * checkpoints, the distributed grain, SFT and generation, then feeds every kind of bad input of
 * issue 4 and checks each gets its specific status, a message naming the argument and the value,
 * and leaves the model and trainer usable and unchanged. Meant to run under valgrind too. */
#include "check.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The call must return `want`, and the thread's message must contain each of the words. */
#define EXPECT(want, call, ...) expect_status(__FILE__, __LINE__, #call, (call), (want), __VA_ARGS__, (const char *)NULL)

static void expect_status(const char *file, int line, const char *text, dpo_status got, dpo_status want, ...) {
    const char *msg = dpo_last_error();
    const char *word;
    va_list ap;
    checks++;
    if (got != want) fail(file, line, "%s returned %s, expected %s", text, dpo_status_string(got), dpo_status_string(want));
    va_start(ap, want);
    while ((word = va_arg(ap, const char *)) != NULL) {
        if (strstr(msg, word) == NULL) {
            va_end(ap);
            fail(file, line, "%s: message does not mention '%s'", text, word);
        }
    }
    va_end(ap);
    printf("  ok %-16s %s\n", dpo_status_string(got), msg);
}

static void write_file(const char *file, const void *data, size_t n) {
    FILE *f = fopen(file, "wb");
    CHECK(f != NULL, "cannot write %s", file);
    CHECK(fwrite(data, 1, n, f) == n, "short write to %s", file);
    fclose(f);
}

/* Keeps the first half of a file (a download cut short). */
static void truncate_file(const char *file) {
    static char data[1 << 20];
    size_t n;
    FILE *f = fopen(file, "rb");
    CHECK(f != NULL, "cannot read %s", file);
    n = fread(data, 1, sizeof data, f);
    fclose(f);
    write_file(file, data, n / 2);
}

/* ---------------------------------------------------------------------------------------- */
/* The learnable task: every chosen completion starts with GOOD, every rejected one with BAD.  */

enum { VOCAB = 32, PAIRS = 4, GOOD = 5, BAD = 6 };

typedef struct {
    int32_t prompt_ids[64], chosen_ids[64], rejected_ids[64];
    int64_t prompt_off[PAIRS + 1], chosen_off[PAIRS + 1], rejected_off[PAIRS + 1];
    double ref_chosen[PAIRS], ref_rejected[PAIRS];
    dpo_preference_batch batch;
} pairs_data;

static void make_pairs(pairs_data *d) {
    static const int32_t prompts[PAIRS][4] = {{1, 10, 11, 12}, {1, 13, 14, 15}, {1, 16, 17, 18}, {1, 19, 20, 21}};
    static const int32_t tails[PAIRS][2] = {{22, 23}, {24, 25}, {26, 27}, {28, 29}};
    int i, j, np = 0, nc = 0, nr = 0;
    memset(d, 0, sizeof *d);
    for (i = 0; i < PAIRS; i++) {
        d->prompt_off[i] = np; d->chosen_off[i] = nc; d->rejected_off[i] = nr;
        for (j = 0; j < 4; j++) d->prompt_ids[np++] = prompts[i][j];
        d->chosen_ids[nc++] = GOOD; d->rejected_ids[nr++] = BAD;
        for (j = 0; j < 2; j++) { d->chosen_ids[nc++] = tails[i][j]; d->rejected_ids[nr++] = tails[i][j]; }
    }
    d->prompt_off[PAIRS] = np; d->chosen_off[PAIRS] = nc; d->rejected_off[PAIRS] = nr;
    d->batch.struct_size = sizeof(dpo_preference_batch);
    d->batch.num_pairs = PAIRS;
    d->batch.prompts.ids = d->prompt_ids; d->batch.prompts.num_ids = np; d->batch.prompts.offsets = d->prompt_off;
    d->batch.chosen.ids = d->chosen_ids; d->batch.chosen.num_ids = nc; d->batch.chosen.offsets = d->chosen_off;
    d->batch.rejected.ids = d->rejected_ids; d->batch.rejected.num_ids = nr; d->batch.rejected.offsets = d->rejected_off;
}

/* A completion batch of the pairs' prompts with their chosen completions. */
typedef struct {
    dpo_completion_batch batch;
} completion_data;

static void make_completions(const pairs_data *d, completion_data *c) {
    memset(c, 0, sizeof *c);
    c->batch.struct_size = sizeof(dpo_completion_batch);
    c->batch.count = PAIRS;
    c->batch.prompts = d->batch.prompts;
    c->batch.completions = d->batch.chosen;
}

static void logps(dpo_model *m, const completion_data *c, double out[PAIRS]) {
    OK(dpo_model_sequence_logps(m, &c->batch, out, PAIRS));
}

static dpo_trainer_params train_params(void) {
    dpo_trainer_params p;
    p.struct_size = sizeof p;
    OK(dpo_trainer_default_params(&p));
    p.learning_rate = 1e-2;
    p.lr_scheduler_type = "constant";
    p.max_length = 64;
    return p;
}

/* ---------------------------------------------------------------------------------------- */

static void test_basics(void) {
    int32_t n = dpo_get_num_threads();
    printf("basics\n");
    CHECK(dpo_abi_version() == DPO_ABI_VERSION, "abi %d", (int)dpo_abi_version());
    CHECK(strcmp(dpo_version(), DPO_VERSION_STRING) == 0, "version %s", dpo_version());
    CHECK(strcmp(dpo_status_string(DPO_OK), "ok") == 0, "status string");
    CHECK(strcmp(dpo_status_string((dpo_status)99), "unknown status") == 0, "unknown status string");
    CHECK(n >= 1, "threads %d", (int)n);
    OK(dpo_set_num_threads(2));
    CHECK(dpo_get_num_threads() == 2, "set threads");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_set_num_threads(0), "n", "0");
    CHECK(dpo_get_num_threads() == 2, "threads unchanged");
    OK(dpo_set_num_threads(n));
    CHECK(strcmp(dpo_last_error(), "") == 0, "message cleared after success");
}

static void test_training(void) {
    pairs_data d;
    completion_data c;
    dpo_model *policy = tiny_model(VOCAB, 1), *loaded = NULL;
    dpo_trainer *t = NULL;
    dpo_trainer_params p = train_params();
    dpo_metrics m, first;
    memset(&first, 0, sizeof first);
    double before[PAIRS], reloaded[PAIRS];
    int64_t count = 0, step = 0;
    int i;

    printf("training\n");
    make_pairs(&d);
    make_completions(&d, &c);
    OK(dpo_model_num_parameters(policy, &count));
    CHECK(count > 0, "num_parameters %lld", (long long)count);
    OK(dpo_trainer_create(policy, NULL, &p, &t));
    m.struct_size = sizeof m;
    for (i = 0; i < 30; i++) {
        OK(dpo_trainer_step(t, &d.batch, &m));
        CHECK(m.optimizer_stepped == 1 && m.global_step == i + 1, "step %d stepped %d global %lld", i, (int)m.optimizer_stepped, (long long)m.global_step);
        CHECK(!isnan(m.grad_norm) && m.learning_rate == 1e-2, "grad_norm/learning_rate on an optimizer step");
        if (i == 0) first = m;
        if (i % 5 == 0 || i == 29)
            printf("  step %2d loss %.4f rewards/accuracies %.2f rewards/margins %.4f grad_norm %.4f num_tokens %.0f\n",
                   i + 1, m.loss, m.rewards_accuracies, m.rewards_margins, m.grad_norm, m.num_tokens);
    }
    CHECK(fabs(first.loss - log(2.0)) < 1e-6, "the first loss is log 2 (policy == snapshot), got %f", first.loss);
    CHECK(m.loss < first.loss * 0.5, "loss fell from %f to %f", first.loss, m.loss);
    CHECK(m.rewards_accuracies == 1.0, "rewards/accuracies %f", m.rewards_accuracies);
    OK(dpo_trainer_global_step(t, &step));
    CHECK(step == 30, "global step %lld", (long long)step);

    /* evaluate changes nothing and has no grad_norm */
    OK(dpo_trainer_evaluate(t, &d.batch, &m));
    CHECK(isnan(m.grad_norm) && isnan(m.learning_rate) && m.optimizer_stepped == 0, "evaluate metrics");
    CHECK(m.rewards_accuracies == 1.0, "evaluate accuracies %f", m.rewards_accuracies);

    /* save and reload: identical log-probs */
    logps(policy, &c, before);
    OK(dpo_model_save(policy, path("policy")));
    OK(dpo_model_load(path("policy"), &loaded));
    logps(loaded, &c, reloaded);
    for (i = 0; i < PAIRS; i++) CHECK(before[i] == reloaded[i], "reloaded logp %d: %.9g vs %.9g", i, before[i], reloaded[i]);
    {
        dpo_model_config a, b;
        a.struct_size = b.struct_size = sizeof a;
        OK(dpo_model_get_config(policy, &a));
        OK(dpo_model_get_config(loaded, &b));
        CHECK(a.hidden_size == 16 && b.hidden_size == 16 && b.num_key_value_heads == 2 && strcmp(b.model_type, "llama") == 0, "config round trip");
    }

    /* the trainer keeps its model alive: free the policy handle, keep training */
    OK(dpo_model_free(policy));
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_num_parameters(policy, &count), "model", "not a live dpo_model");
    OK(dpo_trainer_step(t, &d.batch, &m));
    CHECK(m.global_step == 31, "training after the model handle was freed");
    OK(dpo_trainer_free(t));
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_free(t), "trainer", "not a live dpo_trainer");
    OK(dpo_trainer_free(NULL));
    OK(dpo_model_free(NULL));
    OK(dpo_model_free(loaded));
}

/* bf16 (TRL's name) through the JSON config: products with bf16 inputs, close to fp32 but not equal,
   still learning; the config reports it; a wrong type names it. Under valgrind (whose CPUID hides
   AVX-512) this runs the portable fallback: bf16-rounded copies and sgemm. */
static void test_bf16(void) {
    pairs_data d;
    dpo_model *a = tiny_model(VOCAB, 1), *b = tiny_model(VOCAB, 1);
    dpo_trainer *fp32 = NULL, *bf16 = NULL, *none = NULL;
    dpo_sft_trainer *sft = NULL;
    dpo_metrics m32, m16;
    char text[4096];
    int i, differ = 0;
    double first = 0;

    printf("bf16\n");
    make_pairs(&d);
    OK(dpo_trainer_create_json(a, NULL, "{\"learning_rate\": 0.01, \"lr_scheduler_type\": \"constant\", \"max_length\": 64}", &fp32));
    OK(dpo_trainer_create_json(b, NULL, "{\"learning_rate\": 0.01, \"lr_scheduler_type\": \"constant\", \"max_length\": 64, \"bf16\": true}", &bf16));
    m32.struct_size = m16.struct_size = sizeof m32;
    for (i = 0; i < 20; i++) {
        OK(dpo_trainer_step(fp32, &d.batch, &m32));
        OK(dpo_trainer_step(bf16, &d.batch, &m16));
        if (i == 0) first = m16.loss;
        if (m32.loss != m16.loss) differ = 1;
        /* AdamW at lr 0.01 lets the runs drift apart (the Swift tests bound the bf16 difference) */
        CHECK(fabs(m32.loss - m16.loss) <= 0.1 * m32.loss, "step %d: fp32 loss %f, bf16 loss %f", i + 1, m32.loss, m16.loss);
    }
    CHECK(differ, "bf16 changed no loss: the products did not run in bf16");
    CHECK(m16.loss < first * 0.5 && m16.rewards_accuracies == 1.0, "bf16 learns: loss %f -> %f", first, m16.loss);
    OK(dpo_trainer_config_json("{\"bf16\": true}", text, sizeof text, NULL));
    CHECK(strstr(text, "\"bf16\":true") != NULL || strstr(text, "\"bf16\": true") != NULL, "config json: %s", text);
    OK(dpo_sft_trainer_config_json(NULL, text, sizeof text, NULL));
    CHECK(strstr(text, "\"bf16\":false") != NULL || strstr(text, "\"bf16\": false") != NULL, "sft config json: %s", text);
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create_json(a, NULL, "{\"bf16\": 1}", &none), "bf16", "true or false");
    OK(dpo_sft_trainer_create_json(a, "{\"bf16\": true, \"max_length\": 64}", &sft));
    OK(dpo_sft_trainer_free(sft));
    OK(dpo_trainer_free(fp32));
    OK(dpo_trainer_free(bf16));
    OK(dpo_model_free(a));
    OK(dpo_model_free(b));
}

/* accumulate + gradients + apply_optimizer equals step; an all-reduce can edit the buffer. */
static void test_distributed_grain(void) {
    pairs_data d;
    completion_data c;
    dpo_model *a = tiny_model(VOCAB, 7), *b = tiny_model(VOCAB, 7);
    dpo_trainer *ta = NULL, *tb = NULL;
    dpo_trainer_params p = train_params();
    dpo_metrics ma, mb;
    float *grad = NULL, *again = NULL;
    int64_t n = 0, n2 = 0, step = 0, i;
    double la[PAIRS], lb[PAIRS];

    printf("distributed grain\n");
    make_pairs(&d);
    make_completions(&d, &c);
    ma.struct_size = mb.struct_size = sizeof ma;
    OK(dpo_trainer_create(a, NULL, &p, &ta));
    OK(dpo_trainer_create(b, NULL, &p, &tb));
    OK(dpo_trainer_step(ta, &d.batch, &ma));
    EXPECT(DPO_ERR_WRONG_STATE, dpo_trainer_apply_optimizer(tb, &mb), "no gradients");
    OK(dpo_trainer_accumulate(tb, &d.batch, &mb));
    CHECK(mb.optimizer_stepped == 0 && mb.global_step == 0, "accumulate does not step");
    OK(dpo_trainer_gradients(tb, &grad, &n));
    OK(dpo_model_num_parameters(b, &n2));
    CHECK(grad != NULL && n == n2, "gradient buffer %lld entries, model %lld", (long long)n, (long long)n2);
    /* a two-rank all-reduce average of identical gradients leaves them unchanged */
    for (i = 0; i < n; i++) grad[i] = (grad[i] + grad[i]) / 2;
    OK(dpo_trainer_apply_optimizer(tb, &mb));
    CHECK(mb.optimizer_stepped == 1 && mb.global_step == 1, "apply steps");
    CHECK(ma.loss == mb.loss && ma.grad_norm == mb.grad_norm, "same metrics: %g/%g %g/%g", ma.loss, mb.loss, ma.grad_norm, mb.grad_norm);
    logps(a, &c, la);
    logps(b, &c, lb);
    for (i = 0; i < PAIRS; i++) CHECK(la[i] == lb[i], "same weights after step vs accumulate+apply");
    OK(dpo_trainer_gradients(tb, &again, &n));
    CHECK(again == grad, "the gradient pointer is stable");

    /* a non-finite gradient (e.g. from a broken all-reduce) is refused and changes nothing */
    OK(dpo_trainer_accumulate(tb, &d.batch, NULL));
    grad[0] = NAN;
    EXPECT(DPO_ERR_NUMERIC, dpo_trainer_apply_optimizer(tb, &mb), "norm");
    OK(dpo_trainer_global_step(tb, &step));
    CHECK(step == 1, "global step unchanged after the numeric error");
    logps(b, &c, lb);
    for (i = 0; i < PAIRS; i++) CHECK(la[i] == lb[i], "weights unchanged after the numeric error");
    for (i = 0; i < n; i++) grad[i] = 0;
    OK(dpo_trainer_apply_optimizer(tb, &mb));

    OK(dpo_trainer_free(ta));
    OK(dpo_trainer_free(tb));
    OK(dpo_model_free(a));
    OK(dpo_model_free(b));
}

/* Resuming from a checkpoint gives the same weights as training on. */
static void test_checkpoint(void) {
    pairs_data d;
    completion_data c;
    dpo_model *a = tiny_model(VOCAB, 3), *b = tiny_model(VOCAB, 99), *ref = tiny_model(VOCAB, 4);
    dpo_trainer *ta = NULL, *tb = NULL;
    dpo_trainer_params p = train_params();
    dpo_metrics m;
    double la[PAIRS], lb[PAIRS], rc[PAIRS], rr[PAIRS];
    int64_t step = 0;
    int i;

    printf("checkpoint\n");
    make_pairs(&d);
    make_completions(&d, &c);
    m.struct_size = sizeof m;
    OK(dpo_trainer_create(a, ref, &p, &ta));
    OK(dpo_trainer_create(b, ref, &p, &tb));
    for (i = 0; i < 3; i++) OK(dpo_trainer_step(ta, &d.batch, &m));
    OK(dpo_trainer_save_checkpoint(ta, path("ckpt")));
    for (i = 0; i < 2; i++) OK(dpo_trainer_step(ta, &d.batch, &m));
    OK(dpo_trainer_load_checkpoint(tb, path("ckpt")));
    OK(dpo_trainer_global_step(tb, &step));
    CHECK(step == 3, "resumed at step %lld", (long long)step);
    for (i = 0; i < 2; i++) OK(dpo_trainer_step(tb, &d.batch, &m));
    logps(a, &c, la);
    logps(b, &c, lb);
    for (i = 0; i < PAIRS; i++) CHECK(la[i] == lb[i], "resumed weights equal: %.9g vs %.9g", la[i], lb[i]);

    /* precomputed reference log-probs: the same loss as with the reference model */
    OK(dpo_trainer_precompute_ref_logps(tb, &d.batch, rc, rr, PAIRS));
    {
        dpo_metrics with_model, with_precomputed;
        with_model.struct_size = with_precomputed.struct_size = sizeof m;
        OK(dpo_trainer_evaluate(tb, &d.batch, &with_model));
        d.batch.ref_chosen_logps = rc;
        d.batch.ref_rejected_logps = rr;
        OK(dpo_trainer_evaluate(tb, &d.batch, &with_precomputed));
        CHECK(fabs(with_model.loss - with_precomputed.loss) < 1e-9, "precomputed loss %g vs %g", with_model.loss, with_precomputed.loss);
        d.batch.ref_chosen_logps = d.batch.ref_rejected_logps = NULL;
    }
    EXPECT(DPO_ERR_IO, dpo_trainer_load_checkpoint(tb, path("no-such-checkpoint")), "no-such-checkpoint");
    OK(dpo_trainer_free(ta));
    OK(dpo_trainer_free(tb));
    OK(dpo_model_free(a));
    OK(dpo_model_free(b));
    OK(dpo_model_free(ref));
}

static void test_sft_and_generation(void) {
    pairs_data d;
    completion_data c;
    dpo_model *m = tiny_model(VOCAB, 5);
    dpo_sft_trainer *t = NULL;
    dpo_sft_params p;
    dpo_sft_metrics sm, first;
    memset(&first, 0, sizeof first);
    dpo_generate_params g;
    int32_t out_ids[PAIRS * 6], small[2];
    int64_t out_off[PAIRS + 1], needed = 0, step = 0;
    int i;

    printf("sft and generation\n");
    make_pairs(&d);
    make_completions(&d, &c);
    p.struct_size = sizeof p;
    OK(dpo_sft_default_params(&p));
    CHECK(p.learning_rate == 2e-5, "SFT default learning rate");
    p.learning_rate = 1e-2;
    p.lr_scheduler_type = "constant";
    OK(dpo_sft_trainer_create(m, &p, &t));
    sm.struct_size = sizeof sm;
    for (i = 0; i < 20; i++) {
        OK(dpo_sft_trainer_step(t, &c.batch, &sm));
        if (i == 0) first = sm;
    }
    printf("  sft loss %.4f -> %.4f, mean_token_accuracy %.2f\n", first.loss, sm.loss, sm.mean_token_accuracy);
    CHECK(sm.loss < first.loss * 0.5, "SFT loss fell from %f to %f", first.loss, sm.loss);
    OK(dpo_sft_trainer_global_step(t, &step));
    CHECK(step == 20, "sft global step");
    OK(dpo_sft_trainer_evaluate(t, &c.batch, &sm));
    CHECK(isnan(sm.grad_norm), "sft evaluate has no grad_norm");
    OK(dpo_sft_trainer_save_checkpoint(t, path("sft-ckpt")));
    OK(dpo_sft_trainer_load_checkpoint(t, path("sft-ckpt")));

    /* greedy generation of the learned completions: GOOD then the pair's tail */
    g.struct_size = sizeof g;
    OK(dpo_generate_default_params(&g));
    g.max_new_tokens = 3;
    g.num_eos_token_ids = 0;
    OK(dpo_model_generate(m, &g, PAIRS, &d.batch.prompts, out_ids, PAIRS * 6, out_off, &needed));
    CHECK(needed == PAIRS * 3 && out_off[0] == 0 && out_off[PAIRS] == needed, "generated %lld tokens", (long long)needed);
    printf("  generated:");
    for (i = 0; i < needed; i++) printf(" %d", (int)out_ids[i]);
    printf("\n");
    CHECK(out_ids[0] == GOOD && out_ids[1] == 22 && out_ids[2] == 23, "SFT taught the first completion");
    needed = 0;
    EXPECT(DPO_ERR_BUFFER_TOO_SMALL, dpo_model_generate(m, &g, PAIRS, &d.batch.prompts, small, 2, out_off, &needed), "capacity", "2");
    CHECK(needed == PAIRS * 3, "needed reported with BUFFER_TOO_SMALL");
    g.temperature = 0.8; g.top_k = 5; g.top_p = 0.9; g.seed = 3;
    OK(dpo_model_generate(m, &g, PAIRS, &d.batch.prompts, out_ids, PAIRS * 6, out_off, NULL));
    g.top_p = 0;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_generate(m, &g, PAIRS, &d.batch.prompts, out_ids, PAIRS * 6, out_off, NULL), "top_p");
    OK(dpo_sft_trainer_free(t));
    OK(dpo_model_free(m));
}

/* ---------------------------------------------------------------------------------------- */
/* Bad input: specific status, a message naming the argument and value, nothing changed.      */

static void same_metrics(const dpo_metrics *a, const dpo_metrics *b, const char *after) {
    CHECK(a->loss == b->loss && a->rewards_margins == b->rewards_margins && a->logps_chosen == b->logps_chosen,
          "the trainer changed after %s", after);
}

static void test_bad_input(void) {
    pairs_data d, bad;
    completion_data c;
    dpo_model *m = tiny_model(VOCAB, 11), *freed = tiny_model(VOCAB, 12);
    dpo_trainer *t = NULL;
    dpo_trainer_params p = train_params(), bp;
    dpo_metrics base, now;
    double out[PAIRS];
    double nan_refs[PAIRS] = {-1, -1, -1, -1}, ok_refs[PAIRS] = {-1, -1, -1, -1};
    int64_t count = 0;
    int local = 0;
    char buf[8];
    size_t needed = 0;

    printf("bad input\n");
    make_pairs(&d);
    make_completions(&d, &c);
    OK(dpo_trainer_create(m, NULL, &p, &t));
    base.struct_size = now.struct_size = sizeof base;
    OK(dpo_trainer_step(t, &d.batch, &base));
    OK(dpo_trainer_evaluate(t, &d.batch, &base));

#define UNCHANGED(what) do { OK(dpo_trainer_evaluate(t, &d.batch, &now)); same_metrics(&base, &now, what); \
    OK(dpo_model_sequence_logps(m, &c.batch, out, PAIRS)); } while (0)

    /* NULL handles and pointers */
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(NULL, &d.batch, &now), "trainer", "NULL");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, NULL, &now), "batch", "NULL");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_sequence_logps(m, &c.batch, NULL, PAIRS), "out_logps", "NULL");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_create(NULL, 0, &freed), "config", "NULL");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_load(NULL, &freed), "path", "NULL");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_save(NULL, path("x")), "model", "NULL");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(NULL, NULL, &p, &t), "policy", "NULL");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, m, &p, NULL), "out_trainer", "NULL");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, m, &p, &t), "reference", "policy");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_gradients(t, NULL, &count), "out_data", "NULL");
    /* foreign and mistyped handles */
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step((dpo_trainer *)&local, &d.batch, &now), "trainer", "not a live dpo_trainer");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step((dpo_trainer *)m, &d.batch, &now), "trainer", "not a live dpo_trainer");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_num_parameters((dpo_model *)t, &count), "model", "not a live dpo_model");
    CHECK(strcmp(dpo_model_last_error((dpo_model *)&local), "invalid dpo_model handle") == 0, "last_error of a foreign handle");
    UNCHANGED("NULL pointers");

    /* negative and overflowing lengths */
    make_pairs(&bad); bad.batch.num_pairs = -1;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "num_pairs", "-1");
    make_pairs(&bad); bad.batch.num_pairs = INT64_MAX;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "num_pairs", "9223372036854775807");
    make_pairs(&bad); bad.batch.chosen.num_ids = -5;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "batch->chosen.num_ids", "-5");
    make_pairs(&bad); bad.batch.prompts.num_ids = INT64_MAX;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "batch->prompts.num_ids", "9223372036854775807");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_sequence_logps(m, &c.batch, out, -1), "capacity", "-1");
    EXPECT(DPO_ERR_BUFFER_TOO_SMALL, dpo_model_sequence_logps(m, &c.batch, out, 2), "capacity", "2");
    UNCHANGED("bad lengths");

    /* offsets not increasing, not starting at 0, past the token array */
    make_pairs(&bad); bad.chosen_off[2] = 1;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "batch->chosen.offsets", "offsets[2] = 1");
    make_pairs(&bad); bad.rejected_off[0] = 1;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "batch->rejected.offsets[0] = 1");
    make_pairs(&bad); bad.prompt_off[PAIRS] = 100;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "batch->prompts.offsets[4] = 100", "past the end");
    make_pairs(&bad); bad.batch.chosen.ids = NULL;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "batch->chosen.ids", "NULL");
    UNCHANGED("bad offsets");

    /* token ids out of range */
    make_pairs(&bad); bad.chosen_ids[4] = -3;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "pair 1", "chosen_ids[1] = -3", "vocabulary");
    make_pairs(&bad); bad.rejected_ids[0] = VOCAB;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "pair 0", "rejected_ids[0] = 32");
    make_pairs(&bad); bad.prompt_ids[1] = 1000000;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_evaluate(t, &bad.batch, &now), "pair 0", "prompt_ids[1] = 1000000");
    UNCHANGED("bad token ids");

    /* empty completion */
    make_pairs(&bad); bad.chosen_off[1] = 0;   /* pair 0's chosen completion is now empty */
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "pair 0", "chosen_ids is empty");
    {
        completion_data bc = c;
        int64_t off[PAIRS + 1] = {0, 3, 3, 6, 9};
        bc.batch.completions.offsets = off;
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_sequence_logps(m, &bc.batch, out, PAIRS), "item 1", "completion is empty");
    }
    UNCHANGED("an empty completion");

    /* a prompt alone longer than max_length (keep_start) */
    {
        dpo_trainer *short_t = NULL;
        bp = p;
        bp.max_length = 4;
        OK(dpo_trainer_create(m, NULL, &bp, &short_t));
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(short_t, &d.batch, &now), "pair 0", "prompt alone has 4 tokens", "max_length is 4");
        CHECK(strstr(dpo_trainer_last_error(short_t), "max_length") != NULL, "per-handle message");
        OK(dpo_trainer_free(short_t));
    }
    UNCHANGED("a too-long prompt");

    /* NaN or Inf reference log-probs; one array without the other */
    nan_refs[2] = NAN;
    make_pairs(&bad); bad.batch.ref_chosen_logps = nan_refs; bad.batch.ref_rejected_logps = ok_refs;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "ref_chosen_logps[2] = nan");
    CHECK(strstr(dpo_trainer_last_error(t), "ref_chosen_logps[2]") != NULL, "per-handle message: %s", dpo_trainer_last_error(t));
    nan_refs[2] = -1; ok_refs[3] = INFINITY;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "ref_rejected_logps[3] = inf");
    ok_refs[3] = -1;
    bad.batch.ref_rejected_logps = NULL;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "ref_rejected_logps", "NULL");
    UNCHANGED("bad reference log-probs");
    CHECK(strcmp(dpo_trainer_last_error(t), "") == 0, "a successful call clears the handle's message");

    /* unknown loss type, scheduler, f-divergence, truncation mode; invalid values */
    {
        dpo_trainer *none = NULL;
        bp = p; bp.loss_type = "sigmod";
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, NULL, &bp, &none), "loss_type", "sigmod");
        bp = p; bp.loss_type = "sigmoid,,sft";
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, NULL, &bp, &none), "loss_type", "sigmoid,,sft");
        bp = p; bp.lr_scheduler_type = "linearr";
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, NULL, &bp, &none), "lr_scheduler_type", "linearr");
        bp = p; bp.f_divergence_type = "kl";
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, NULL, &bp, &none), "f_divergence_type", "kl");
        bp = p; bp.truncation_mode = "middle";
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, NULL, &bp, &none), "truncation_mode", "middle");
        bp = p; bp.beta = -1;
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, NULL, &bp, &none), "beta", "-1");
        bp = p; bp.max_length = -3;
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, NULL, &bp, &none), "max_length", "-3");
        bp = p; bp.max_steps = INT64_MAX;
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, NULL, &bp, &none), "max_steps", "9223372036854775807");
        {
            double w[1] = {1};
            bp = p; bp.loss_type = "sigmoid,sft"; bp.loss_weights = w; bp.num_loss_weights = 1;
            EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, NULL, &bp, &none), "loss_weights", "1 weights for 2 loss types");
        }
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create_json(m, NULL, "{\"loss_type\": \"dpo\"}", &none), "loss_type", "dpo");
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create_json(m, NULL, "{\"betta\": 0.1}", &none), "betta");
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create_json(m, NULL, "{beta: 1}", &none), "config_json", "not valid JSON");
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_sft_trainer_create_json(m, "{\"lr_scheduler_type\": \"exp\"}", NULL), "out_trainer");
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_config_json("{\"max_steps\": 1e300}", NULL, 0, NULL), "max_steps");
        CHECK(none == NULL, "no trainer was created");
    }
    EXPECT(DPO_ERR_BUFFER_TOO_SMALL, dpo_trainer_config_json(NULL, buf, sizeof buf, &needed), "capacity 8");
    CHECK(needed > sizeof buf, "needed %zu", needed);
    {
        char *text = (char *)malloc(needed + 64);
        OK(dpo_trainer_config_json("{\"beta\": 0.25, \"loss_type\": [\"sigmoid\", \"sft\"]}", text, needed + 64, NULL));
        CHECK(strstr(text, "0.25") != NULL && strstr(text, "\"sft\"") != NULL, "config json: %s", text);
        free(text);
    }
    UNCHANGED("bad config values");

    /* wrong struct_size: older (smaller) and newer (larger) structs */
    bp = p; bp.struct_size = sizeof bp - 8;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(m, NULL, &bp, &t), "params->struct_size", "sizeof(dpo_trainer_params)");
    make_pairs(&bad); bad.batch.struct_size = sizeof bad.batch + 8;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &bad.batch, &now), "batch->struct_size");
    now.struct_size = 0;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(t, &d.batch, &now), "out_metrics->struct_size", "0");
    now.struct_size = sizeof now;
    {
        dpo_model_config cfg;
        cfg.struct_size = 12;
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_default_config(&cfg), "config->struct_size = 12");
    }
    UNCHANGED("a wrong struct_size");

    /* bad model configs, and one too large for the machine */
    {
        dpo_model_config cfg;
        dpo_model *none = NULL;
        cfg.struct_size = sizeof cfg;
        OK(dpo_model_default_config(&cfg));
        cfg.vocab_size = 32; cfg.hidden_size = 30; cfg.intermediate_size = 8; cfg.num_hidden_layers = 1;
        cfg.num_attention_heads = 4; cfg.num_key_value_heads = 4;
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_create(&cfg, 0, &none), "hidden_size 30", "num_attention_heads 4");
        cfg.hidden_size = -16;
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_create(&cfg, 0, &none), "hidden_size", "-16");
        cfg.hidden_size = INT64_MAX;
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_create(&cfg, 0, &none), "hidden_size", "9223372036854775807");
        cfg.hidden_size = 16384; cfg.num_hidden_layers = 1 << 20; cfg.intermediate_size = 65536;
        cfg.num_attention_heads = 128; cfg.num_key_value_heads = 128;
        EXPECT(DPO_ERR_OUT_OF_MEMORY, dpo_model_create(&cfg, 0, &none), "GiB");
        memcpy(cfg.model_type, "gpt2", 5);
        cfg.hidden_size = 16; cfg.num_hidden_layers = 1; cfg.num_attention_heads = 4; cfg.num_key_value_heads = 4;
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_create(&cfg, 0, &none), "model_type", "gpt2");
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_create_json("{\"hidden_size\": 1e30}", 0, &none), "hidden_size");
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_create_json("[1, 2]", 0, &none), "config_json", "not a JSON object");
        CHECK(none == NULL, "no model was created");
    }

    /* files: a missing directory, a corrupt safetensors file, a config.json that is not JSON */
    {
        dpo_model *none = NULL;
        EXPECT(DPO_ERR_IO, dpo_model_load(path("missing-dir"), &none), "missing-dir");
        OK(dpo_model_save(m, path("corrupt")));
        write_file(path("corrupt/model.safetensors"), "\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", 24);
        EXPECT(DPO_ERR_FORMAT, dpo_model_load(path("corrupt"), &none), "model.safetensors");
        write_file(path("corrupt/model.safetensors"), "\xff\xff\xff\xff\xff\xff\xff\x7f", 8);
        EXPECT(DPO_ERR_FORMAT, dpo_model_load(path("corrupt"), &none), "model.safetensors");
        OK(dpo_model_save(m, path("truncated")));
        truncate_file(path("truncated/model.safetensors"));
        EXPECT(DPO_ERR_FORMAT, dpo_model_load(path("truncated"), &none), "model.safetensors");
        OK(dpo_model_save(m, path("badjson")));
        write_file(path("badjson/config.json"), "{\"vocab_size\": 32,", 18);
        EXPECT(DPO_ERR_FORMAT, dpo_model_load(path("badjson"), &none), "config.json");
        OK(dpo_model_save(m, path("hugejson")));
        {
            const char *huge = "{\"num_hidden_layers\": 1e18, \"vocab_size\": 32}";
            write_file(path("hugejson/config.json"), huge, strlen(huge));
        }
        EXPECT(DPO_ERR_FORMAT, dpo_model_load(path("hugejson"), &none), "num_hidden_layers");
        EXPECT(DPO_ERR_IO, dpo_model_save(m, "/proc/no/such/dir"), "/proc/no");
        EXPECT(DPO_ERR_IO, dpo_trainer_save_checkpoint(t, "/proc/no/such/dir"), "/proc/no");
        EXPECT(DPO_ERR_IO, dpo_trainer_load_checkpoint(t, path("corrupt")), "trainer_state.json");
        CHECK(none == NULL, "no model was loaded");
    }
    UNCHANGED("bad files");

    /* a trainer used after its model was freed keeps working (the weights live in the trainer);
       the freed model handle and freed trainer handles are refused */
    {
        dpo_trainer *orphan = NULL;
        OK(dpo_trainer_create(freed, NULL, &p, &orphan));
        OK(dpo_model_free(freed));
        OK(dpo_trainer_step(orphan, &d.batch, &now));
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_sequence_logps(freed, &c.batch, out, PAIRS), "model", "not a live dpo_model");
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_free(freed), "model", "not a live dpo_model");
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create(freed, NULL, &p, &orphan), "policy", "not a live");
        OK(dpo_trainer_free(orphan));
        EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_step(orphan, &d.batch, &now), "trainer", "not a live dpo_trainer");
        CHECK(strcmp(dpo_trainer_last_error(orphan), "invalid dpo_trainer handle") == 0, "last_error of a freed handle");
    }
    UNCHANGED("a freed model");

    OK(dpo_trainer_free(t));
    OK(dpo_model_free(m));
#undef UNCHANGED
}

/* Steps a fresh-adapter LoRA trainer 20 times on the learnable pairs and checks that it starts at
   the reference (loss log 2: the adapter changes nothing yet) and learns the task. */
static void check_lora_learns(dpo_trainer *t, const pairs_data *d, const char *what) {
    dpo_metrics m, first;
    int i;
    m.struct_size = sizeof m;
    for (i = 0; i < 20; i++) {
        OK(dpo_trainer_step(t, &d->batch, &m));
        if (i == 0) first = m;
    }
    CHECK(fabs(first.loss - log(2.0)) < 1e-6, "%s: a fresh adapter starts at the reference, loss %f", what, first.loss);
    CHECK(m.loss < first.loss && m.rewards_accuracies == 1.0, "%s learns: loss %f -> %f", what, first.loss, m.loss);
}

/* LoRA: a trainer with a peft_config trains the adapter only (the base's log-probs with the
   adapter merged away are unchanged until the merge), the adapter files round-trip, a loaded
   adapter trains against its frozen copy, merge_and_unload folds it in; bad params are refused. */
static void test_lora(void) {
    pairs_data d;
    completion_data c;
    dpo_model *policy = tiny_model(VOCAB, 5), *base = tiny_model(VOCAB, 5), *loaded = tiny_model(VOCAB, 5);
    dpo_trainer *t = NULL;
    dpo_sft_trainer *st = NULL;
    dpo_trainer_params p = train_params();
    dpo_lora_params lp;
    dpo_metrics m;
    double before[PAIRS], after[PAIRS], again[PAIRS], merged[PAIRS];
    int64_t count = -1;
    char json[4096];
    size_t needed = 0;
    int i;

    printf("lora\n");
    make_pairs(&d);
    make_completions(&d, &c);
    lp.struct_size = sizeof lp;
    OK(dpo_lora_default_params(&lp));
    CHECK(lp.r == 8 && lp.lora_alpha == 8 && lp.lora_dropout == 0 && lp.target_modules == NULL && lp.init_lora_weights == 1,
          "PEFT's defaults");
    lp.r = 4;
    lp.lora_alpha = 16;
    lp.target_modules = "all-linear";
    logps(policy, &c, before);
    OK(dpo_trainer_create_peft(policy, NULL, &p, &lp, &t));
    OK(dpo_model_adapter_num_parameters(policy, &count));
    /* per layer: 4 x (16 + 16) for q and o, 4 x (16 + 8) for k and v, 4 x (16 + 32) for gate, up, down */
    CHECK(count == 2 * (2 * 128 + 2 * 96 + 3 * 192), "adapter parameters %lld", (long long)count);
    check_lora_learns(t, &d, "LoRA DPO");
    logps(policy, &c, after);
    CHECK(after[0] != before[0], "the adapter changed the policy");
    OK(dpo_model_adapter_config_json(policy, json, sizeof json, &needed));
    CHECK(strstr(json, "\"CAUSAL_LM\"") && strstr(json, "\"down_proj\""), "adapter config %s", json);
    OK(dpo_model_save(policy, path("lora-adapter")));  /* a model with an adapter saves the adapter files */
    EXPECT(DPO_ERR_WRONG_STATE, dpo_model_save_gguf(policy, path("x.gguf"), "f32", NULL), "merge_and_unload");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create_peft(policy, NULL, &p, &lp, &t), "already has a LoRA adapter");

    /* load_adapter: the same log-probs; a DPO trainer on it starts from policy == reference */
    OK(dpo_model_load_adapter(loaded, path("lora-adapter")));
    logps(loaded, &c, again);
    for (i = 0; i < PAIRS; i++) CHECK(fabs(again[i] - after[i]) < 1e-9, "loaded adapter logp %d", i);
    {
        dpo_trainer *t2 = NULL;
        OK(dpo_trainer_create(loaded, NULL, &p, &t2));
        m.struct_size = sizeof m;
        OK(dpo_trainer_step(t2, &d.batch, &m));
        CHECK(fabs(m.rewards_margins) < 1e-9, "the reference is the loaded adapter's copy, margins %g", m.rewards_margins);
        OK(dpo_trainer_free(t2));
    }
    EXPECT(DPO_ERR_WRONG_STATE, dpo_model_load_adapter(loaded, path("lora-adapter")), "already has a LoRA adapter");
    /* unload: the base again (the log-probs before training), nothing merged */
    OK(dpo_model_unload(loaded));
    logps(loaded, &c, again);
    for (i = 0; i < PAIRS; i++) CHECK(again[i] == before[i], "unloaded logp %d: %g vs %g", i, again[i], before[i]);
    EXPECT(DPO_ERR_WRONG_STATE, dpo_model_unload(loaded), "no LoRA adapter");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_unload(NULL), "model");

    /* merge_and_unload: plain weights computing what the adapter did */
    OK(dpo_trainer_free(t));
    OK(dpo_model_merge_and_unload(policy));
    OK(dpo_model_adapter_num_parameters(policy, &count));
    CHECK(count == 0, "no adapter after the merge");
    logps(policy, &c, merged);
    for (i = 0; i < PAIRS; i++) CHECK(fabs(merged[i] - after[i]) < 1e-4, "merged logp %d: %g vs %g", i, merged[i], after[i]);
    EXPECT(DPO_ERR_WRONG_STATE, dpo_model_merge_and_unload(policy), "no LoRA adapter");

    /* SFT with a JSON peft_config; bad configs are refused by name */
    OK(dpo_sft_trainer_create_peft_json(base, "{\"learning_rate\": 0.01}", "{\"r\": 2, \"target_modules\": [\"q_proj\", \"v_proj\"]}", &st));
    OK(dpo_model_adapter_num_parameters(base, &count));
    CHECK(count == 2 * (64 + 48), "sft adapter parameters %lld", (long long)count);
    OK(dpo_sft_trainer_free(st));
    OK(dpo_model_free(base));
    base = tiny_model(VOCAB, 5);
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create_peft_json(base, NULL, NULL, "{\"modules_to_save\": [\"lm_head\"]}", &t),
           "modules_to_save");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create_peft_json(base, NULL, NULL, NULL, &t), "peft_config_json");
    lp.target_modules = "q_proj,embed_tokens";
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_trainer_create_peft(base, NULL, &p, &lp, &t), "embed_tokens");
    lp.target_modules = NULL;
    lp.lora_dropout = 1.0;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_add_adapter(base, &lp, 1), "lora_dropout");
    lp.lora_dropout = 0;
    lp.struct_size = 8;
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_add_adapter(base, &lp, 1), "struct_size");
    lp.struct_size = sizeof lp;
    OK(dpo_model_adapter_num_parameters(base, &count));
    CHECK(count == 0, "refused calls attached nothing");
    EXPECT(DPO_ERR_IO, dpo_model_load_adapter(base, path("no-such-adapter")), "no-such-adapter");
    OK(dpo_model_free(base));
    OK(dpo_model_free(loaded));
    OK(dpo_model_free(policy));
}

/* keep_base_quantized: a Q8_0 GGUF loaded quantized computes the fp32-loaded model's log-probs,
   trains a LoRA adapter against its base (adapter off), refuses what needs fp32 weights, and
   dequantizes into an fp32 model on which merge_and_unload and saving work. */
static void close_logps(const double *a, const double *b, double tolerance, const char *what) {
    int i;
    for (i = 0; i < PAIRS; i++)
        CHECK(fabs(a[i] - b[i]) <= tolerance * fmax(1, fabs(b[i])), "%s %d: %.9g vs %.9g", what, i, a[i], b[i]);
}

static void test_quantized_base(void) {
    pairs_data d;
    completion_data c;
    dpo_model *src = NULL, *fp = NULL, *q = NULL, *deq = NULL, *none = NULL;
    dpo_trainer *t = NULL;
    dpo_trainer_params p = train_params();
    double fp_logps[PAIRS], q_logps[PAIRS], trained[PAIRS], out[PAIRS];
    int32_t flag = -1;
    int64_t bytes = -1, n_fp = 0, n_q = 0;

    printf("quantized base\n");
    make_pairs(&d);
    make_completions(&d, &c);
    /* rows of 32 and 64 values: whole Q8_0 blocks */
    OK(dpo_model_create_json("{\"vocab_size\": 32, \"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 2,"
                             " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"max_position_embeddings\": 64}", 3, &src));
    OK(dpo_model_save_gguf(src, path("q8.gguf"), "q8_0", NULL));
    OK(dpo_model_load(path("q8.gguf"), &fp));
    OK(dpo_model_load_quantized(path("q8.gguf"), &q));
    OK(dpo_model_is_quantized(fp, &flag, &bytes));
    CHECK(flag == 0 && bytes == 0, "an fp32 model is not quantized (%d, %lld)", flag, (long long)bytes);
    OK(dpo_model_is_quantized(q, &flag, NULL));
    CHECK(flag == 1, "loaded quantized");
    OK(dpo_model_num_parameters(fp, &n_fp));
    OK(dpo_model_num_parameters(q, &n_q));
    CHECK(n_q == n_fp, "the same parameter count, quantized matrices included (%lld vs %lld)", (long long)n_q, (long long)n_fp);
    OK(dpo_model_is_quantized(q, &flag, &bytes));
    /* Q8_0: 34 bytes per 32 weights; the matrices are all but the norms (2 x 32 per layer, 32 final) */
    CHECK(bytes == (n_fp - 2 * 2 * 32 - 32) / 32 * 34, "quantized bytes %lld", (long long)bytes);
    logps(fp, &c, fp_logps);
    logps(q, &c, q_logps);
    close_logps(q_logps, fp_logps, 1e-6, "quantized vs fp32 logp");

    /* what needs the fp32 base weights is refused, naming the option */
    EXPECT(DPO_ERR_WRONG_STATE, dpo_trainer_create(q, NULL, &p, &t), "keep_base_quantized");
    EXPECT(DPO_ERR_WRONG_STATE, dpo_model_save(q, path("q-saved")), "keep_base_quantized");
    EXPECT(DPO_ERR_WRONG_STATE, dpo_model_save_gguf(q, path("q-saved.gguf"), "f32", NULL), "keep_base_quantized");

    /* a LoRA adapter on it learns; the reference is the quantized base with the adapter off */
    OK(dpo_trainer_create_peft_json(q, NULL, "{\"learning_rate\": 0.01, \"lr_scheduler_type\": \"constant\"}",
                                    "{\"r\": 4, \"lora_alpha\": 16, \"target_modules\": \"all-linear\"}", &t));
    check_lora_learns(t, &d, "LoRA DPO on a quantized base");
    OK(dpo_trainer_free(t));
    logps(q, &c, trained);
    EXPECT(DPO_ERR_WRONG_STATE, dpo_model_merge_and_unload(q), "keep_base_quantized", "dpo_model_dequantize");
    OK(dpo_model_save(q, path("q-adapter")));  /* with an adapter: the adapter files */

    /* the fp32 copy carries the adapter; merge_and_unload and a GGUF save work on it */
    OK(dpo_model_dequantize(q, &deq));
    OK(dpo_model_is_quantized(deq, &flag, &bytes));
    CHECK(flag == 0 && bytes == 0, "the dequantized copy is fp32");
    logps(deq, &c, out);
    close_logps(out, trained, 1e-6, "dequantized copy with the adapter");
    OK(dpo_model_merge_and_unload(deq));
    logps(deq, &c, out);
    close_logps(out, trained, 1e-4, "merged copy");
    OK(dpo_model_save_gguf(deq, path("q-merged.gguf"), "f32", NULL));
    OK(dpo_model_is_quantized(q, &flag, NULL));
    CHECK(flag == 1, "dequantize left the model quantized");
    /* the adapter files on the fp32-loaded base compute the same */
    OK(dpo_model_load_adapter(fp, path("q-adapter")));
    logps(fp, &c, out);
    close_logps(out, trained, 1e-6, "the adapter on the fp32-loaded base");

    /* bad input */
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_load_quantized(NULL, &none), "path");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_load_quantized(path("q8.gguf"), NULL), "out_model");
    OK(dpo_model_save(src, path("q-hf")));
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_load_quantized(path("q-hf"), &none), "keep_base_quantized", "Hugging Face");
    EXPECT(DPO_ERR_IO, dpo_model_load_quantized(path("no-such.gguf"), &none), "no-such.gguf");
    write_file(path("q-bad.gguf"), "GGUF\x03\x00\x00\x00", 8);
    EXPECT(DPO_ERR_FORMAT, dpo_model_load_quantized(path("q-bad.gguf"), &none), "q-bad.gguf");
    CHECK(none == NULL, "no handle from refused loads");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_is_quantized(q, NULL, &bytes), "out_quantized");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_is_quantized(NULL, &flag, &bytes), "model");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_dequantize(q, NULL), "out_model");
    EXPECT(DPO_ERR_INVALID_ARGUMENT, dpo_model_dequantize(NULL, &none), "model");
    OK(dpo_model_free(deq));
    OK(dpo_model_free(q));
    OK(dpo_model_free(fp));
    OK(dpo_model_free(src));
}

int main(int argc, char **argv) {
    if (argc > 1) scratch = argv[1];
    test_basics();
    test_training();
    test_distributed_grain();
    test_checkpoint();
    test_sft_and_generation();
    test_bf16();
    test_lora();
    test_quantized_base();
    test_bad_input();
    printf("all %d checks passed\n", checks);
    return 0;
}
