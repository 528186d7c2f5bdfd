/* The checking harness the C tests share (smoke.c, loop.c, paths.c): a failed check prints where and why,
 * with the library's last message, and exits 1; OK(call) requires DPO_OK; path() names a file in
 * the test's scratch directory (set `scratch` from argv); tiny_model() makes a small random model. */
#ifndef DPO_TEST_CHECK_H
#define DPO_TEST_CHECK_H

#include "dpo.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int checks = 0;
static const char *scratch = ".";

static void fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s:%d: FAILED: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n  dpo_last_error(): %s\n", dpo_last_error());
    exit(1);
}

#define CHECK(cond, ...) do { checks++; if (!(cond)) fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define OK(call) do { dpo_status s_ = (call); checks++; \
    if (s_ != DPO_OK) fail(__FILE__, __LINE__, "%s returned %s", #call, dpo_status_string(s_)); } while (0)

/* scratch/name, in one of four rotating buffers (so a call may take two or three paths). */
static char *path(const char *name) {
    static char buf[4][1024];
    static int next = 0;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", scratch, name);
    return p;
}

/* A tiny random model (hidden 16, 2 layers, 4 heads over 2 kv heads), deterministic for a seed. */
static inline dpo_model *tiny_model(int64_t vocab, uint64_t seed) {
    dpo_model_config cfg;
    dpo_model *m = NULL;
    cfg.struct_size = sizeof cfg;
    OK(dpo_model_default_config(&cfg));
    cfg.vocab_size = vocab;
    cfg.hidden_size = 16;
    cfg.intermediate_size = 32;
    cfg.num_hidden_layers = 2;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.max_position_embeddings = 64;
    OK(dpo_model_create(&cfg, seed, &m));
    return m;
}

#endif
