/* Real models and text through the C ABI (issue 11): tokenizers, chat templates, GGUF load and
 * save, corrupt GGUF files.
 *
 *   text <scratch-directory> <fixtures-directory> [<smollm2.gguf> <smollm2-golden.txt>]
 *
 * <fixtures-directory> is Tests/DPOTests/Fixtures. Without the last two arguments only the tiny
 * fixtures are used (the valgrind run); with them, the SmolLM2-135M-Instruct GGUF that `make deps`
 * fetches is loaded too and compared with golden values that transformers computed from the same
 * file (Tests/DPOTests/Fixtures/gguf/smollm2.json, made by tools/make_gguf_fixtures.py; run.sh
 * flattens it into <smollm2-golden.txt>: per line "pair LOGP P p1..pP C c1..cC" or
 * "greedy P p1..pP N t1..tN"). */
#define _POSIX_C_SOURCE 200809L
#include "dpo.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks = 0;

#define CHECK(cond, ...) do { checks++; if (!(cond)) { fprintf(stderr, "%s:%d: FAILED: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n  dpo_last_error(): %s\n", dpo_last_error()); exit(1); } } while (0)
#define OK(call) do { dpo_status s_ = (call); CHECK(s_ == DPO_OK, "%s returned %s", #call, dpo_status_string(s_)); } while (0)
#define FAILS(call, status) do { dpo_status s_ = (call); CHECK(s_ == (status), "%s returned %s, expected %s", #call, \
    dpo_status_string(s_), dpo_status_string(status)); CHECK(dpo_last_error()[0] != 0, "%s: no message", #call); } while (0)

static char scratch[512], fixtures[512];

static const char *join(const char *a, const char *b) {
    static char buf[4][1024];
    static int next = 0;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", a, b);
    return p;
}

/* Tokenizer calls with bad arguments: each is refused with a status and a message. */
static void tokenizer_bad_input(dpo_tokenizer *t) {
    int32_t ids[64];
    int64_t count = -1;
    char text[256];
    size_t needed = 0;
    dpo_tokenizer_info info;
    dpo_chat_message msg = {"user", "hi"};
    dpo_tokenizer *none = NULL;

    FAILS(dpo_tokenizer_load(NULL, &none), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_load(join(scratch, "missing.gguf"), &none), DPO_ERR_IO);
    FAILS(dpo_tokenizer_load(join(fixtures, "gguf/corrupt/truncated_header.gguf"), &none), DPO_ERR_FORMAT);
    CHECK(none == NULL, "a failed load wrote a handle");
    FAILS(dpo_tokenizer_encode(NULL, "x", 1, 1, ids, 64, &count), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_encode(t, NULL, 3, 1, ids, 64, &count), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_encode(t, "a\xff", 2, 1, ids, 64, &count), DPO_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dpo_last_error(), "UTF-8") != NULL, "message: %s", dpo_last_error());
    FAILS(dpo_tokenizer_encode(t, "x", 1, 2, ids, 64, &count), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_encode(t, "x", 1, 1, ids, -1, &count), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_encode(t, "x", (size_t)1 << 40, 1, ids, 64, &count), DPO_ERR_INVALID_ARGUMENT);
    /* Too small: the count is reported, nothing written. */
    ids[0] = -7;
    FAILS(dpo_tokenizer_encode(t, "hello world hello world", 23, 0, ids, 1, &count), DPO_ERR_BUFFER_TOO_SMALL);
    CHECK(count > 1 && ids[0] == -7, "count %lld, ids[0] %d", (long long)count, ids[0]);
    OK(dpo_tokenizer_encode(t, "", 0, 0, NULL, 0, &count));
    CHECK(count == 0, "empty text gave %lld ids", (long long)count);

    ids[0] = 1 << 30;
    FAILS(dpo_tokenizer_decode(t, ids, 1, 0, text, sizeof text, &needed), DPO_ERR_INVALID_ARGUMENT);
    ids[0] = -1;
    FAILS(dpo_tokenizer_decode(t, ids, 1, 0, text, sizeof text, &needed), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_decode(t, NULL, 2, 0, text, sizeof text, &needed), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_decode(t, ids, -1, 0, text, sizeof text, &needed), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_decode(t, ids, 1, 3, text, sizeof text, &needed), DPO_ERR_INVALID_ARGUMENT);

    FAILS(dpo_tokenizer_apply_chat_template(t, NULL, 1, 1, text, sizeof text, &needed), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_apply_chat_template(t, &msg, -1, 1, text, sizeof text, &needed), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_apply_chat_template(t, &msg, 1, 7, text, sizeof text, &needed), DPO_ERR_INVALID_ARGUMENT);
    msg.content = NULL;
    FAILS(dpo_tokenizer_apply_chat_template(t, &msg, 1, 1, text, sizeof text, &needed), DPO_ERR_INVALID_ARGUMENT);
    msg.content = "\xc3";
    FAILS(dpo_tokenizer_apply_chat_template(t, &msg, 1, 1, text, sizeof text, &needed), DPO_ERR_INVALID_ARGUMENT);

    info.struct_size = sizeof info - 1;
    FAILS(dpo_tokenizer_get_info(t, &info), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_get_info(t, NULL), DPO_ERR_INVALID_ARGUMENT);
    CHECK(strcmp(dpo_tokenizer_last_error(t), "") != 0, "the handle's message is empty after a failure");
}

/* The tiny SentencePiece-BPE fixture: tokenizer.json and GGUF load to the same tokenizer. */
static void tiny_tokenizers(void) {
    dpo_tokenizer *a = NULL, *b = NULL;
    dpo_tokenizer_info info;
    const char *text = "Hello world, this is a test.";
    int32_t ia[128], ib[128];
    int64_t na = 0, nb = 0;
    char out[256];
    size_t needed = 0;
    dpo_chat_message msgs[2] = {{"user", "Hi there"}, {"assistant", "Hello!"}};

    OK(dpo_tokenizer_load(join(fixtures, "tokenizer/spm"), &a));
    OK(dpo_tokenizer_load(join(fixtures, "tokenizer/spm.gguf"), &b));
    info.struct_size = sizeof info;
    OK(dpo_tokenizer_get_info(a, &info));
    CHECK(info.vocab_size > 0 && info.bos_token_id >= 0 && info.eos_token_id >= 0, "info");
    OK(dpo_tokenizer_encode(a, text, strlen(text), 1, ia, 128, &na));
    OK(dpo_tokenizer_encode(b, text, strlen(text), 1, ib, 128, &nb));
    CHECK(na == nb && na > 2 && memcmp(ia, ib, (size_t)na * sizeof ia[0]) == 0, "tokenizer.json and GGUF disagree");
    CHECK(ia[0] == info.bos_token_id, "no BOS");
    OK(dpo_tokenizer_decode(a, ia, na, 1, out, sizeof out, &needed));
    CHECK(strcmp(out, text) == 0 && needed == strlen(text) + 1, "decode gave '%s'", out);
    FAILS(dpo_tokenizer_decode(a, ia, na, 1, out, 4, &needed), DPO_ERR_BUFFER_TOO_SMALL);
    CHECK(needed == strlen(text) + 1, "needed %zu", needed);
    if (info.has_chat_template) {
        OK(dpo_tokenizer_apply_chat_template(a, msgs, 2, 1, out, sizeof out, &needed));
        CHECK(strstr(out, "Hi there") != NULL && strstr(out, "Hello!") != NULL, "chat: %s", out);
    }
    /* save_pretrained: the written files load back as the same tokenizer */
    {
        dpo_tokenizer *c = NULL;
        int64_t nc = 0;
        int32_t ic[128];
        OK(dpo_tokenizer_save_pretrained(b, join(scratch, "saved-tokenizer/sub")));
        OK(dpo_tokenizer_load(join(scratch, "saved-tokenizer/sub"), &c));
        OK(dpo_tokenizer_encode(c, text, strlen(text), 1, ic, 128, &nc));
        CHECK(nc == nb && memcmp(ic, ib, (size_t)nb * sizeof ib[0]) == 0, "the saved tokenizer encodes differently");
        OK(dpo_tokenizer_free(c));
        FAILS(dpo_tokenizer_save_pretrained(b, NULL), DPO_ERR_INVALID_ARGUMENT);
        FAILS(dpo_tokenizer_save_pretrained(NULL, join(scratch, "x")), DPO_ERR_INVALID_ARGUMENT);
        FAILS(dpo_tokenizer_save_pretrained(b, join(scratch, "saved-tokenizer/sub/tokenizer.json")), DPO_ERR_IO);
    }
    tokenizer_bad_input(a);
    OK(dpo_tokenizer_free(a));
    OK(dpo_tokenizer_free(b));
    FAILS(dpo_tokenizer_free(a), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_tokenizer_encode(a, "x", 1, 1, ia, 128, &na), DPO_ERR_INVALID_ARGUMENT);
    OK(dpo_tokenizer_free(NULL));
}

/* Every corrupt file of the table is an error naming the file; none crashes. */
static void corrupt_files(void) {
    const char *dir = join(fixtures, "gguf/corrupt");
    char folder[1024];
    DIR *d;
    struct dirent *e;
    int n = 0;
    snprintf(folder, sizeof folder, "%s", dir);
    d = opendir(folder);
    CHECK(d != NULL, "cannot open %s", folder);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        dpo_model *m = NULL;
        dpo_tokenizer *t = NULL;
        dpo_status s;
        if (len < 5 || strcmp(e->d_name + len - 5, ".gguf") != 0) continue;
        s = dpo_model_load(join(folder, e->d_name), &m);
        CHECK(s == DPO_ERR_FORMAT || s == DPO_ERR_IO, "%s: dpo_model_load returned %s", e->d_name, dpo_status_string(s));
        CHECK(strstr(dpo_last_error(), e->d_name) != NULL, "%s: message does not name the file: %s", e->d_name, dpo_last_error());
        CHECK(m == NULL, "%s: a handle was written", e->d_name);
        s = dpo_tokenizer_load(join(folder, e->d_name), &t);
        CHECK(s != DPO_OK || t != NULL, "%s", e->d_name);
        if (s == DPO_OK) OK(dpo_tokenizer_free(t));
        n++;
    }
    closedir(d);
    CHECK(n >= 25, "only %d corrupt files", n);
}

/* A tiny model saved as GGUF in each type loads back: f32 exactly. */
static void gguf_save_round_trip(void) {
    dpo_model *m = NULL, *back = NULL;
    dpo_model_config c;
    int32_t prompt[] = {1, 2, 3}, completion[] = {4, 5, 6, 7};
    int64_t po[] = {0, 3}, co[] = {0, 4};
    dpo_completion_batch batch;
    double want, got;
    const char *types[] = {"f32", "f16", "bf16", "q8_0"};
    int i;

    c.struct_size = sizeof c;
    OK(dpo_model_default_config(&c));
    c.vocab_size = 64; c.hidden_size = 32; c.intermediate_size = 64; c.num_hidden_layers = 2;
    c.num_attention_heads = 4; c.num_key_value_heads = 2; c.max_position_embeddings = 64;
    OK(dpo_model_create(&c, 5, &m));
    batch.struct_size = sizeof batch;
    batch.count = 1;
    batch.prompts.ids = prompt; batch.prompts.num_ids = 3; batch.prompts.offsets = po;
    batch.completions.ids = completion; batch.completions.num_ids = 4; batch.completions.offsets = co;
    OK(dpo_model_sequence_logps(m, &batch, &want, 1));
    for (i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "tiny-%s.gguf", types[i]);
        OK(dpo_model_save_gguf(m, join(scratch, name), types[i], NULL));
        OK(dpo_model_load(join(scratch, name), &back));
        OK(dpo_model_sequence_logps(back, &batch, &got, 1));
        if (i == 0) CHECK(got == want, "f32 GGUF round trip: %.17g vs %.17g", got, want);
        else CHECK(fabs(got - want) <= 0.05 * fabs(want) + 1e-3, "%s round trip: %.17g vs %.17g", types[i], got, want);
        OK(dpo_model_free(back));
    }
    FAILS(dpo_model_save_gguf(m, join(scratch, "x.gguf"), "q4_0", NULL), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_model_save_gguf(m, join(scratch, "x.gguf"), NULL, NULL), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_model_save_gguf(m, NULL, "f32", NULL), DPO_ERR_INVALID_ARGUMENT);
    FAILS(dpo_model_save_gguf(m, scratch, "f32", NULL), DPO_ERR_IO);
    FAILS(dpo_model_save_gguf(m, join(scratch, "y.gguf"), "f32", (dpo_tokenizer *)m), DPO_ERR_INVALID_ARGUMENT);
    OK(dpo_model_free(m));
}

/* The real model: tokenizer + chat template ids and summed log-probs equal transformers'. */
static void smollm2(const char *gguf) {
    /* tools/make_gguf_fixtures.py, Fixtures/gguf/smollm2.json pairs[0] */
    static const int32_t golden_prompt[] = {1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519,
        28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520,
        9531, 198};
    static const int32_t golden_completion[] = {504, 3575, 282, 4649, 314, 7042, 30, 2};
    const double golden_logp = -2.8369301833820533;
    dpo_tokenizer *t = NULL;
    dpo_model *m = NULL;
    dpo_tokenizer_info info;
    dpo_chat_message msg = {"user", "What is the capital of France?"};
    char text[1024];
    size_t needed = 0;
    int32_t ids[256], completion[64], again[64];
    int64_t n = 0, nc = 0, po[2], co[2];
    dpo_completion_batch batch;
    double logp;
    const char *answer = "The capital of France is Paris.";

    OK(dpo_tokenizer_load(gguf, &t));
    info.struct_size = sizeof info;
    OK(dpo_tokenizer_get_info(t, &info));
    CHECK(info.vocab_size == 49152 && info.bos_token_id == 1 && info.eos_token_id == 2 && info.has_chat_template == 1,
          "info %lld %lld %lld", (long long)info.vocab_size, (long long)info.bos_token_id, (long long)info.eos_token_id);
    OK(dpo_tokenizer_apply_chat_template(t, &msg, 1, 1, text, sizeof text, &needed));
    OK(dpo_tokenizer_encode(t, text, needed - 1, 0, ids, 256, &n));
    CHECK(n == (int64_t)(sizeof golden_prompt / sizeof golden_prompt[0]) && memcmp(ids, golden_prompt, sizeof golden_prompt) == 0,
          "chat-templated prompt ids differ from transformers' (%lld ids)", (long long)n);
    OK(dpo_tokenizer_encode(t, answer, strlen(answer), 0, completion, 63, &nc));
    completion[nc++] = info.eos_token_id;
    CHECK(nc == 8 && memcmp(completion, golden_completion, sizeof golden_completion) == 0, "completion ids differ");
    OK(dpo_tokenizer_decode(t, completion, nc, 1, text, sizeof text, &needed));
    CHECK(strcmp(text, answer) == 0, "decode: '%s'", text);
    OK(dpo_tokenizer_chat_template(t, text, sizeof text, &needed));
    CHECK(strstr(text, "<|im_start|>") != NULL, "template: %s", text);

    OK(dpo_model_load(gguf, &m));
    po[0] = 0; po[1] = n; co[0] = 0; co[1] = nc;
    batch.struct_size = sizeof batch;
    batch.count = 1;
    batch.prompts.ids = ids; batch.prompts.num_ids = n; batch.prompts.offsets = po;
    batch.completions.ids = completion; batch.completions.num_ids = nc; batch.completions.offsets = co;
    OK(dpo_model_sequence_logps(m, &batch, &logp, 1));
    CHECK(fabs(logp - golden_logp) <= 1e-4 * fabs(golden_logp), "log-prob %.9g vs transformers' %.9g", logp, golden_logp);

    /* A bf16 save with the tokenizer passed explicitly reads back with it. */
    OK(dpo_model_save_gguf(m, join(scratch, "smollm2-bf16.gguf"), "bf16", t));
    OK(dpo_model_free(m));
    OK(dpo_tokenizer_free(t));
    OK(dpo_tokenizer_load(join(scratch, "smollm2-bf16.gguf"), &t));
    OK(dpo_tokenizer_encode(t, answer, strlen(answer), 0, again, 64, &nc));
    CHECK(nc == 7 && memcmp(again, golden_completion, 7 * sizeof again[0]) == 0, "tokenizer of the saved GGUF differs");
    OK(dpo_model_load(join(scratch, "smollm2-bf16.gguf"), &m));
    OK(dpo_model_sequence_logps(m, &batch, &logp, 1));
    CHECK(fabs(logp - golden_logp) <= 0.05 * fabs(golden_logp), "bf16 log-prob %.9g vs %.9g", logp, golden_logp);
    OK(dpo_model_free(m));
    OK(dpo_tokenizer_free(t));
}

/* Every golden pair's summed log-prob and every greedy continuation, through the C ABI. */
static void smollm2_golden(const char *gguf, const char *golden) {
    FILE *f = fopen(golden, "r");
    char kind[16];
    dpo_model *m = NULL;
    int pairs = 0, greedy = 0;
    CHECK(f != NULL, "cannot open %s", golden);
    OK(dpo_model_load(gguf, &m));
    while (fscanf(f, "%15s", kind) == 1) {
        int32_t prompt[512], second[512];
        int64_t np = 0, n2 = 0, k, po[2], so[2];
        double logp = 0;
        if (strcmp(kind, "pair") == 0) CHECK(fscanf(f, "%lf", &logp) == 1, "bad golden line");
        CHECK(fscanf(f, "%lld", (long long *)&np) == 1 && np > 0 && np <= 512, "bad golden line");
        for (k = 0; k < np; k++) CHECK(fscanf(f, "%d", &prompt[k]) == 1, "bad golden line");
        CHECK(fscanf(f, "%lld", (long long *)&n2) == 1 && n2 > 0 && n2 <= 512, "bad golden line");
        for (k = 0; k < n2; k++) CHECK(fscanf(f, "%d", &second[k]) == 1, "bad golden line");
        po[0] = 0; po[1] = np; so[0] = 0; so[1] = n2;
        if (strcmp(kind, "pair") == 0) {
            dpo_completion_batch batch;
            double got;
            batch.struct_size = sizeof batch;
            batch.count = 1;
            batch.prompts.ids = prompt; batch.prompts.num_ids = np; batch.prompts.offsets = po;
            batch.completions.ids = second; batch.completions.num_ids = n2; batch.completions.offsets = so;
            OK(dpo_model_sequence_logps(m, &batch, &got, 1));
            CHECK(fabs(got - logp) <= 1e-4 * fabs(logp) + 1e-4, "pair %d: log-prob %.9g vs transformers' %.9g", pairs, got, logp);
            pairs++;
        } else {
            dpo_generate_params g;
            dpo_token_lists prompts;
            int32_t out[512];
            int64_t offsets[2], needed = 0;
            g.struct_size = sizeof g;
            OK(dpo_generate_default_params(&g));
            g.max_new_tokens = n2;
            g.num_eos_token_ids = 0; /* exactly n2 tokens, as transformers' min/max_new_tokens */
            prompts.ids = prompt; prompts.num_ids = np; prompts.offsets = po;
            OK(dpo_model_generate(m, &g, 1, &prompts, out, 512, offsets, &needed));
            CHECK(needed == n2 && memcmp(out, second, (size_t)n2 * sizeof out[0]) == 0, "greedy %d differs from transformers'", greedy);
            greedy++;
        }
    }
    fclose(f);
    OK(dpo_model_free(m));
    CHECK(pairs >= 8 && greedy >= 4, "only %d pairs and %d greedy cases in %s", pairs, greedy, golden);
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: text <scratch-directory> <fixtures-directory> [<smollm2.gguf> <smollm2-golden.txt>]\n");
        return 2;
    }
    snprintf(scratch, sizeof scratch, "%s", argv[1]);
    snprintf(fixtures, sizeof fixtures, "%s", argv[2]);
    tiny_tokenizers();
    corrupt_files();
    gguf_save_round_trip();
    if (argc == 5) {
        smollm2(argv[3]);
        smollm2_golden(argv[3], argv[4]);
    }
    printf("text: %d checks passed%s\n", checks, argc == 5 ? " (with SmolLM2-135M-Instruct: 8 log-probs, 4 greedy continuations)" : "");
    return 0;
}
