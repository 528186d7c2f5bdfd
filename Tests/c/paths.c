/* Paths are used as the bytes given, also when they are not UTF-8 (issue item 10).
 *
 *   paths <scratch-directory>
 *
 * Saves two different models to "m\xff" and "m\xfe" (which a UTF-8 repair would both turn into
 * "m\xef\xbf\xbd", so the second save would overwrite the first), checks both directories exist
 * under exactly those names, and that each loads back as the model saved there. Then the same
 * for a checkpoint. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static dpo_model *model(int64_t vocab) {
    dpo_model_config c;
    dpo_model *m = NULL;
    c.struct_size = sizeof c;
    OK(dpo_model_default_config(&c));
    c.vocab_size = vocab;
    c.hidden_size = 16;
    c.intermediate_size = 32;
    c.num_hidden_layers = 1;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.max_position_embeddings = 64;
    OK(dpo_model_create(&c, 1, &m));
    return m;
}

static int64_t loaded_vocab(const char *dir) {
    dpo_model *m = NULL;
    dpo_model_config c;
    OK(dpo_model_load(dir, &m));
    c.struct_size = sizeof c;
    OK(dpo_model_get_config(m, &c));
    OK(dpo_model_free(m));
    return c.vocab_size;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The names in the scratch directory, sorted bytewise, joined by '|'. */
static void listing(char *out, size_t n) {
    struct dirent **names;
    int k = scandir(scratch, &names, NULL, alphasort), i;
    out[0] = 0;
    for (i = 0; i < k; i++) {
        if (names[i]->d_name[0] != '.') {
            strncat(out, names[i]->d_name, n - strlen(out) - 2);
            strcat(out, "|");
        }
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv) {
    dpo_model *a = model(40), *b = model(48), *policy = model(40);
    dpo_trainer *t = NULL;
    dpo_trainer_params p;
    int64_t step = -1;
    char names[512];

    scratch = argc > 1 ? argv[1] : ".";
    OK(dpo_model_save(a, path("m\xff")));
    OK(dpo_model_save(b, path("m\xfe")));
    CHECK(is_dir(path("m\xff")) && is_dir(path("m\xfe")), "the two directories do not both exist");
    CHECK(!is_dir(path("m\xef\xbf\xbd")), "a path was rewritten to U+FFFD");
    CHECK(loaded_vocab(path("m\xff")) == 40, "m\\xff does not hold the model saved there");
    CHECK(loaded_vocab(path("m\xfe")) == 48, "m\\xfe does not hold the model saved there");
    /* Valid UTF-8, including the scalars the library uses internally to escape bytes. */
    OK(dpo_model_save(a, path("m\xc3\xa9")));
    OK(dpo_model_save(b, path("m\xf4\x8f\xbf\xbf")));
    CHECK(loaded_vocab(path("m\xc3\xa9")) == 40, "m\\xc3\\xa9");
    CHECK(loaded_vocab(path("m\xf4\x8f\xbf\xbf")) == 48, "m\\xf4\\x8f\\xbf\\xbf");
    CHECK(!is_dir(path("m\xff\xff")), "U+10FFFF was taken for an escaped byte");

    p.struct_size = sizeof p;
    OK(dpo_trainer_default_params(&p));
    OK(dpo_trainer_create(policy, a, &p, &t));
    OK(dpo_trainer_save_checkpoint(t, path("ck\x80")));
    CHECK(is_dir(path("ck\x80")), "the checkpoint is not at the path given");
    OK(dpo_trainer_load_checkpoint(t, path("ck\x80")));
    OK(dpo_trainer_global_step(t, &step));
    CHECK(step == 0, "step %lld", (long long)step);

    listing(names, sizeof names);
    CHECK(strcmp(names, "ck\x80|m\xc3\xa9|m\xf4\x8f\xbf\xbf|m\xfe|m\xff|") == 0, "unexpected directory listing: %s", names);
    OK(dpo_trainer_free(t));
    OK(dpo_model_free(a));
    OK(dpo_model_free(b));
    OK(dpo_model_free(policy));
    printf("paths: %d checks passed\n", checks);
    return 0;
}
