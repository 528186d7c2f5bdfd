/* C test of datasets and the training loop (dpo_dataset_*, dpo_loop_*), against include/dpo.h only.
 *
 *   loop <scratch-directory> [SmolLM2.gguf]
 *
 * Token-id datasets from JSON rows and from a JSONL file, bad rows refused with the row named,
 * train() with the host callback (events, stop with a checkpoint, resume bit-identical to an
 * uninterrupted run), evaluate, log, state, save, and the wrong-handle cases. With the GGUF, a
 * conversational dataset tokenized by the model's tokenizer and chat template. Runs under valgrind. */
#include "check.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The call fails with `want` and the thread's message contains `word`. */
#define FAILS(call, want, word) do { dpo_status s_ = (call); checks++; \
    if (s_ != (want)) fail(__FILE__, __LINE__, "%s returned %s, expected %s", #call, dpo_status_string(s_), dpo_status_string(want)); \
    if (strstr(dpo_last_error(), (word)) == NULL) fail(__FILE__, __LINE__, "%s: message lacks '%s'", #call, (word)); \
    printf("  ok %-24s %s\n", dpo_status_string(s_), dpo_last_error()); } while (0)

/* Adds JSON text to a dataset. */
static dpo_status add(dpo_dataset *d, const char *json) { return dpo_dataset_add_rows(d, json, strlen(json)); }

/* Eight learnable pairs as one JSON array: chosen starts with 5, rejected with 6. */
static const char *ROWS =
    "[{\"prompt_ids\":[1,10,11],\"chosen_ids\":[5,20],\"rejected_ids\":[6,20]},"
    "{\"prompt_ids\":[1,12,13],\"chosen_ids\":[5,21],\"rejected_ids\":[6,21]},"
    "{\"prompt_ids\":[1,14,15],\"chosen_ids\":[5,22],\"rejected_ids\":[6,22]},"
    "{\"prompt_ids\":[1,16,17],\"chosen_ids\":[5,23],\"rejected_ids\":[6,23]},"
    "{\"prompt_ids\":[1,18,19],\"chosen_ids\":[5,24],\"rejected_ids\":[6,24]},"
    "{\"prompt_ids\":[1,10,13],\"chosen_ids\":[5,25],\"rejected_ids\":[6,25]},"
    "{\"prompt_ids\":[1,12,15],\"chosen_ids\":[5,26],\"rejected_ids\":[6,26]},"
    "{\"prompt_ids\":[1,14,17],\"chosen_ids\":[5,27],\"rejected_ids\":[6,27]}]";

static const char *TRAINER_JSON =
    "{\"learning_rate\": 0.01, \"lr_scheduler_type\": \"constant\", \"max_length\": 64,"
    " \"per_device_train_batch_size\": 2, \"max_steps\": 6, \"logging_steps\": 2,"
    " \"save_strategy\": \"steps\", \"save_steps\": 3, \"report_to\": \"jsonl\"}";

struct events { int begin, steps, logs, saves, stop_at; };

static int32_t on_event(void *user_data, int32_t event, const char *json) {
    struct events *e = user_data;
    if (json == NULL || json[0] != '{') return 0;
    switch (event) {
    case DPO_EVENT_TRAIN_BEGIN: e->begin++; break;
    case DPO_EVENT_STEP_END: e->steps++; break;
    case DPO_EVENT_LOG: e->logs++; break;
    case DPO_EVENT_SAVE: e->saves++; break;
    default: break;
    }
    return event == DPO_EVENT_STEP_END && e->steps == e->stop_at;
}

static dpo_dataset *dataset_of(dpo_trainer *t, const char *rows) {
    dpo_dataset *d = NULL;
    OK(dpo_trainer_dataset_create(t, NULL, &d));
    OK(dpo_dataset_add_rows(d, rows, strlen(rows)));
    return d;
}

static void logps_of(dpo_model *m, double out[2]) {
    int32_t prompt[] = {1, 10, 11}, completion[] = {5, 20};
    int64_t po[] = {0, 3, 6}, co[] = {0, 2, 4};
    int32_t prompts[6], completions[4];
    dpo_completion_batch b;
    memcpy(prompts, prompt, sizeof prompt); memcpy(prompts + 3, prompt, sizeof prompt);
    memcpy(completions, completion, sizeof completion); memcpy(completions + 2, completion, sizeof completion);
    b.struct_size = sizeof b;
    b.count = 2;
    b.prompts.ids = prompts; b.prompts.num_ids = 6; b.prompts.offsets = po;
    b.completions.ids = completions; b.completions.num_ids = 4; b.completions.offsets = co;
    OK(dpo_model_sequence_logps(m, &b, out, 2));
}

/* A run of 6 steps (checkpoints at 3 and 6); stop_at > 0 stops after that step. Returns the model. */
static char last_output[4096];  /* run()'s train output, copied before the loop is freed */

static dpo_model *run(const char *dir, int stop_at, const char *resume, struct events *e, const char **out) {
    char args[512];
    dpo_model *m = tiny_model(32, 7);
    dpo_trainer *t = NULL;
    dpo_dataset *d;
    dpo_loop *loop = NULL;
    dpo_loop_params p;
    OK(dpo_trainer_create_json(m, NULL, TRAINER_JSON, &t));
    d = dataset_of(t, ROWS);
    snprintf(args, sizeof args, "{\"output_dir\": \"%s\", \"seed\": 3}", dir);
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.args_json = args;
    p.train_dataset = d;
    p.callback = on_event;
    p.user_data = e;
    memset(e, 0, sizeof *e);
    e->stop_at = stop_at;
    OK(dpo_trainer_loop_create(t, &p, &loop));
    OK(dpo_dataset_free(d));  /* the loop copied the rows */
    OK(dpo_trainer_free(t));  /* the loop keeps the trainer alive */
    OK(dpo_loop_train(loop, resume, out));
    CHECK(*out != NULL && strstr(*out, "\"global_step\"") != NULL, "train output %s", *out ? *out : "(null)");
    printf("  train: %s\n", *out);
    snprintf(last_output, sizeof last_output, "%s", *out);
    *out = last_output;  /* the loop's text dies with it */
    OK(dpo_loop_free(loop));
    return m;
}

static void test_datasets(void) {
    dpo_model *m = tiny_model(32, 1);
    dpo_trainer *t = NULL;
    dpo_sft_trainer *sft = NULL;
    dpo_dataset *d = NULL, *f = NULL, *none = NULL;
    dpo_dataset_info info;
    dpo_loop *loop = NULL;
    dpo_loop_params p;
    char row[256];
    size_t needed = 0;
    FILE *jsonl;
    printf("datasets\n");
    OK(dpo_trainer_create_json(m, NULL, TRAINER_JSON, &t));
    OK(dpo_sft_trainer_create_json(m, "{\"max_length\": 64}", &sft));
    d = dataset_of(t, ROWS);
    info.struct_size = sizeof info;
    OK(dpo_dataset_get_info(d, &info));
    CHECK(info.rows == 8 && info.kept == 8 && info.dropped == 0 && info.truncated == 0, "info %lld", (long long)info.rows);
    CHECK(strcmp(info.format, "tokenized preference") == 0, "format %s", info.format);
    OK(dpo_dataset_row_json(d, 1, row, sizeof row, &needed));
    CHECK(strcmp(row, "{\"prompt_ids\":[1,12,13],\"chosen_ids\":[5,21],\"rejected_ids\":[6,21]}") == 0, "row %s", row);
    FAILS(dpo_dataset_row_json(d, 8, row, sizeof row, &needed), DPO_ERR_INVALID_ARGUMENT, "out of range");
    FAILS(dpo_dataset_row_json(d, 0, row, 4, &needed), DPO_ERR_BUFFER_TOO_SMALL, "");

    /* Bad rows: named, and nothing of the call is added. */
    FAILS(add(d, "{\"prompt_ids\":[1],\"chosen_ids\":[5]}"), DPO_ERR_INVALID_ARGUMENT, "row 8");
    FAILS(add(d, "[{\"prompt_ids\":[1],\"chosen_ids\":[5],\"rejected_ids\":[6]},"
                                  "{\"prompt_ids\":[1],\"chosen_ids\":[99],\"rejected_ids\":[6]}]"),
          DPO_ERR_INVALID_ARGUMENT, "outside the vocabulary");
    FAILS(add(d, "{\"prompt\": \"hi\", \"chosen\": \"a\", \"rejected\": \"b\"}"),
          DPO_ERR_INVALID_ARGUMENT, "the row is standard preference, the dataset tokenized preference");
    FAILS(add(d, "[1, 2]"), DPO_ERR_INVALID_ARGUMENT, "JSON object");
    FAILS(add(d, "{\"prompt_ids\": [1"), DPO_ERR_INVALID_ARGUMENT, "bad JSON");
    FAILS(dpo_dataset_add_rows(d, NULL, 3), DPO_ERR_INVALID_ARGUMENT, "json");
    OK(dpo_dataset_get_info(d, &info));
    CHECK(info.rows == 8, "a refused call added rows: %lld", (long long)info.rows);

    /* Text rows need a tokenizer. */
    OK(dpo_sft_trainer_dataset_create(sft, NULL, &none));
    FAILS(add(none, "{\"text\": \"hello\"}"), DPO_ERR_INVALID_ARGUMENT, "needs a tokenizer");
    OK(add(none, "{\"prompt_ids\": [1, 2], \"completion_ids\": [3]}"));

    /* A JSONL file, with the failing line named. */
    jsonl = fopen(path("rows.jsonl"), "w");
    CHECK(jsonl != NULL, "cannot write rows.jsonl");
    fputs("{\"prompt_ids\":[1,2],\"chosen_ids\":[5],\"rejected_ids\":[6]}\n\n"
          "{\"prompt_ids\":[1,3],\"chosen_ids\":[5],\"rejected_ids\":[6]}\n", jsonl);
    fclose(jsonl);
    OK(dpo_trainer_dataset_create(t, NULL, &f));
    OK(dpo_dataset_add_file(f, path("rows.jsonl")));
    OK(dpo_dataset_get_info(f, &info));
    CHECK(info.kept == 2, "file rows %lld", (long long)info.kept);
    jsonl = fopen(path("bad.jsonl"), "w");
    fputs("{\"prompt_ids\":[1,2],\"chosen_ids\":[5],\"rejected_ids\":[6]}\n{\"prompt_ids\":[1]}\n", jsonl);
    fclose(jsonl);
    FAILS(dpo_dataset_add_file(f, path("bad.jsonl")), DPO_ERR_INVALID_ARGUMENT, "bad.jsonl:2");
    FAILS(dpo_dataset_add_file(f, path("missing.jsonl")), DPO_ERR_IO, "missing.jsonl");

    /* Loops: bad parameters and datasets of the other kind. */
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.train_dataset = none;
    FAILS(dpo_trainer_loop_create(t, &p, &loop), DPO_ERR_INVALID_ARGUMENT, "SFT trainer");
    p.train_dataset = d;
    p.args_json = "{\"beta\": 0.5}";
    FAILS(dpo_trainer_loop_create(t, &p, &loop), DPO_ERR_INVALID_ARGUMENT, "not a TrainingArguments field");
    p.args_json = "{\"eval_strategy\": \"steps\"}";
    FAILS(dpo_trainer_loop_create(t, &p, &loop), DPO_ERR_INVALID_ARGUMENT, "eval_dataset");
    p.args_json = "{\"per_device_train_batch_size\": 0}";
    FAILS(dpo_trainer_loop_create(t, &p, &loop), DPO_ERR_INVALID_ARGUMENT, "per_device_train_batch_size");
    p.args_json = NULL;
    /* One dataset as train and eval; every example checked before the first step. */
    p.eval_dataset = d;
    p.args_json = "{\"eval_strategy\": \"steps\", \"eval_steps\": 2}";
    OK(dpo_trainer_loop_create(t, &p, &loop));
    OK(dpo_loop_free(loop));
    loop = NULL;
    p.eval_dataset = NULL;
    p.args_json = NULL;
    OK(add(f, "{\"prompt_ids\":[1,2],\"chosen_ids\":[],\"rejected_ids\":[6]}"));
    p.train_dataset = f;
    FAILS(dpo_trainer_loop_create(t, &p, &loop), DPO_ERR_INVALID_ARGUMENT, "train_dataset row 2: chosen_ids is empty");
    p.train_dataset = d;
    FAILS(dpo_trainer_loop_create(t, &p, NULL), DPO_ERR_INVALID_ARGUMENT, "out_loop");
    FAILS(dpo_trainer_loop_create(t, NULL, &loop), DPO_ERR_INVALID_ARGUMENT, "params");
    FAILS(dpo_sft_trainer_loop_create((dpo_sft_trainer *)t, &p, &loop), DPO_ERR_INVALID_ARGUMENT, "dpo_sft_trainer");
    p.struct_size = 8;
    FAILS(dpo_trainer_loop_create(t, &p, &loop), DPO_ERR_INVALID_ARGUMENT, "struct_size");
    FAILS(dpo_loop_train(NULL, NULL, NULL), DPO_ERR_INVALID_ARGUMENT, "loop");
    FAILS(dpo_loop_evaluate((dpo_loop *)t, NULL, NULL), DPO_ERR_INVALID_ARGUMENT, "dpo_loop");
    CHECK(strcmp(dpo_loop_last_error(NULL), "invalid dpo_loop handle") == 0, "last_error of NULL");
    OK(dpo_loop_free(NULL));
    OK(dpo_dataset_free(NULL));

    OK(dpo_dataset_free(d));
    OK(dpo_dataset_free(f));
    OK(dpo_dataset_free(none));
    OK(dpo_sft_trainer_free(sft));
    OK(dpo_trainer_free(t));
    OK(dpo_model_free(m));
}

static void test_loop(void) {
    struct events e;
    const char *out = NULL, *state = NULL, *eval = NULL;
    double full[2], resumed[2];
    dpo_model *a, *b, *c;
    dpo_trainer *t = NULL;
    dpo_dataset *d;
    dpo_loop *loop = NULL;
    dpo_loop_params p;
    char checkpoint[1024];
    const char *at;
    printf("training loop\n");

    a = run(path("full"), 0, NULL, &e, &out);
    CHECK(e.begin == 1 && e.steps == 6 && e.saves == 2 && e.logs == 4, "events %d %d %d %d", e.begin, e.steps, e.saves, e.logs);
    logps_of(a, full);

    b = run(path("part"), 3, NULL, &e, &out);
    CHECK(e.steps == 3, "stopped after %d steps", e.steps);
    at = strstr(out, "\"interrupted_checkpoint\":\"");
    CHECK(at != NULL, "no interrupted checkpoint in %s", out);
    snprintf(checkpoint, sizeof checkpoint, "%s", at + strlen("\"interrupted_checkpoint\":\""));
    *strchr(checkpoint, '"') = '\0';
    c = run(path("part"), 0, checkpoint, &e, &out);
    CHECK(e.steps == 3, "resumed for %d steps", e.steps);
    logps_of(c, resumed);
    CHECK(memcmp(full, resumed, sizeof full) == 0, "resume differs: %.17g vs %.17g", full[0], resumed[0]);

    /* A stop is not sticky: the same loop trains on to max_steps, then has nothing to train. */
    {
        char args[512];
        dpo_model *m = tiny_model(32, 7);
        dpo_loop_params q;
        OK(dpo_trainer_create_json(m, NULL, TRAINER_JSON, &t));
        d = dataset_of(t, ROWS);
        snprintf(args, sizeof args, "{\"output_dir\": \"%s\", \"report_to\": \"none\"}", path("again"));
        memset(&q, 0, sizeof q);
        q.struct_size = sizeof q;
        q.args_json = args;
        q.train_dataset = d;
        q.callback = on_event;
        q.user_data = &e;
        memset(&e, 0, sizeof e);
        e.stop_at = 2;
        OK(dpo_trainer_loop_create(t, &q, &loop));
        OK(dpo_loop_train(loop, NULL, &out));
        CHECK(strstr(out, "\"global_step\":2") != NULL, "stopped run: %s", out);
        OK(dpo_loop_train(loop, NULL, &out));
        CHECK(strstr(out, "\"global_step\":6") != NULL, "the run after a stop: %s", out);
        FAILS(dpo_loop_train(loop, NULL, &out), DPO_ERR_INVALID_ARGUMENT, "nothing to train");
        OK(dpo_loop_free(loop));
        OK(dpo_dataset_free(d));
        OK(dpo_trainer_free(t));
        OK(dpo_model_free(m));
    }

    /* evaluate / log / state / save on a loop without a train dataset. */
    OK(dpo_trainer_create_json(a, NULL, TRAINER_JSON, &t));
    d = dataset_of(t, ROWS);
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.args_json = "{\"report_to\": \"none\"}";
    OK(dpo_trainer_loop_create(t, &p, &loop));
    FAILS(dpo_loop_train(loop, NULL, &out), DPO_ERR_INVALID_ARGUMENT, "train_dataset");
    FAILS(dpo_loop_evaluate(loop, NULL, &eval), DPO_ERR_INVALID_ARGUMENT, "eval_dataset");
    OK(dpo_loop_evaluate(loop, d, &eval));
    /* The reference is a snapshot of the policy taken now: every reward is 0, the loss is ln 2. */
    CHECK(strstr(eval, "\"eval_loss\":0.6931471805599453") != NULL, "loss with policy = reference: %s", eval);
    OK(dpo_loop_log(loop, "{\"custom\": 2.5}"));
    FAILS(dpo_loop_log(loop, "{\"custom\": \"x\"}"), DPO_ERR_INVALID_ARGUMENT, "custom");
    FAILS(dpo_loop_log(loop, NULL), DPO_ERR_INVALID_ARGUMENT, "record_json");
    OK(dpo_loop_state(loop, &state));
    CHECK(strstr(state, "\"custom\":2.5") != NULL && strstr(state, "\"log_history\"") != NULL, "state %s", state);
    FAILS(dpo_loop_state(loop, NULL), DPO_ERR_INVALID_ARGUMENT, "out_json");
    OK(dpo_loop_save_model(loop, path("saved")));
    OK(dpo_loop_free(loop));
    OK(dpo_dataset_free(d));
    OK(dpo_trainer_free(t));
    OK(dpo_model_free(a));
    OK(dpo_model_free(b));
    OK(dpo_model_free(c));
}

/* A conversational dataset tokenized by SmolLM2's tokenizer and template: the prompt ids are
   the chat template's with the generation prompt. */
static void test_text(const char *gguf) {
    dpo_tokenizer *tok = NULL;
    dpo_model *m;
    dpo_trainer *t = NULL;
    dpo_dataset *d = NULL;
    dpo_dataset_info info;
    dpo_chat_message msg = {"user", "What is 2+2?"};
    char want[4096], row[4096], expect[8192];
    int32_t ids[256];
    int64_t n = 0, i;
    size_t needed = 0, len;
    const char *rows = "{\"prompt\": [{\"role\": \"user\", \"content\": \"What is 2+2?\"}],"
                       " \"chosen\": [{\"role\": \"assistant\", \"content\": \"4\"}],"
                       " \"rejected\": [{\"role\": \"assistant\", \"content\": \"5\"}]}";
    printf("text datasets (%s)\n", gguf);
    OK(dpo_tokenizer_load(gguf, &tok));
    m = tiny_model(49152, 2);
    OK(dpo_trainer_create_json(m, NULL, NULL, &t));
    OK(dpo_trainer_dataset_create(t, tok, &d));
    OK(dpo_dataset_add_rows(d, rows, strlen(rows)));
    info.struct_size = sizeof info;
    OK(dpo_dataset_get_info(d, &info));
    CHECK(strcmp(info.format, "conversational preference") == 0, "format %s", info.format);
    OK(dpo_tokenizer_apply_chat_template(tok, &msg, 1, 1, want, sizeof want, &needed));
    OK(dpo_tokenizer_encode(tok, want, strlen(want), 0, ids, 256, &n));
    len = (size_t)snprintf(expect, sizeof expect, "{\"prompt_ids\":[");
    for (i = 0; i < n; i++) len += (size_t)snprintf(expect + len, sizeof expect - len, i ? ",%d" : "%d", ids[i]);
    snprintf(expect + len, sizeof expect - len, "],");
    OK(dpo_dataset_row_json(d, 0, row, sizeof row, &needed));
    CHECK(strncmp(row, expect, strlen(expect)) == 0, "row %s\nexpected to start %s", row, expect);
    OK(dpo_dataset_free(d));
    OK(dpo_trainer_free(t));
    OK(dpo_model_free(m));
    OK(dpo_tokenizer_free(tok));
}

int main(int argc, char **argv) {
    if (argc > 1) scratch = argv[1];
    test_datasets();
    test_loop();
    if (argc > 2) test_text(argv[2]);
    printf("loop: %d checks passed\n", checks);
    return 0;
}
