/*
 * dpo.h - the C interface of swift-dpo (libdpo.so): Llama-family models, DPO and SFT training with
 * TRL's names and defaults, checkpoints and generation, on the CPU.
 *
 * Conventions (they hold for every declaration below unless it says otherwise):
 *
 *  - Handles are opaque (dpo_model, dpo_trainer, dpo_sft_trainer). The library creates them and
 *    the host releases each with its *_free function; *_free(NULL) is a no-op. A handle that was
 *    freed, or a pointer that never was a handle, is refused with DPO_ERR_INVALID_ARGUMENT (handles
 *    are never reused, so a stale one cannot alias a new one).
 *  - Every fallible call returns a dpo_status. DPO_OK is 0. Outputs go through pointer arguments
 *    and are written only when the call returns DPO_OK (except *out_needed with
 *    DPO_ERR_BUFFER_TOO_SMALL). A call that fails changes nothing: models, trainers and optimizer
 *    state are as they were before it.
 *  - Every call that takes a handle can return DPO_ERR_INVALID_ARGUMENT (NULL, freed or foreign
 *    handle), DPO_ERR_WRONG_STATE (the handle, or a model it uses, is inside a call on another
 *    thread right now) and DPO_ERR_INTERNAL (a bug in swift-dpo; please report it). The lists at
 *    each function name the further statuses.
 *  - After a failure, dpo_last_error() (per thread) and the handle's *_last_error() (per handle)
 *    give a message naming the argument and the offending value. Calls that return a status
 *    reset both messages on entry, so after DPO_OK they are "".
 *  - Structs that cross the boundary start with `size_t struct_size`, which the CALLER sets to
 *    sizeof(the struct) before passing it, for inputs and outputs alike. The library refuses any
 *    other value (DPO_ERR_INVALID_ARGUMENT), so a host compiled against a different version of
 *    this header fails cleanly instead of being misread. Params structs come from
 *    dpo_*_default_params(): set struct_size, call it, then change the fields you need.
 *  - Strings are NUL-terminated UTF-8. Strings the library returns are owned by the library;
 *    their lifetime is stated at each function.
 *  - Token batches are CSR-style (see dpo_token_lists): flat int32 token arrays plus int64
 *    offsets, so ragged sequences travel without padding.
 *  - Threads: one handle is used by one thread at a time; distinct handles are independent
 *    (a trainer also uses its models' handles' objects). The library parallelises each call
 *    internally over dpo_get_num_threads() threads.
 */
#ifndef DPO_H
#define DPO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Version                                                                                      */
/* ------------------------------------------------------------------------------------------ */

#define DPO_VERSION_MAJOR 0
#define DPO_VERSION_MINOR 2
#define DPO_VERSION_PATCH 0
#define DPO_VERSION_STRING "0.2.0"
/* Bumped whenever a struct layout or a function signature of this header changes. */
#define DPO_ABI_VERSION 1

/* The library's version, e.g. "0.2.0". Static storage; never NULL. */
const char *dpo_version(void);

/* The library's ABI version. A host (or binding) should check it equals DPO_ABI_VERSION. */
int32_t dpo_abi_version(void);

/* ------------------------------------------------------------------------------------------ */
/* Status codes and messages                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef enum dpo_status {
    DPO_OK = 0,
    /* A NULL, freed or foreign pointer/handle; a value out of range; a malformed batch; an
       unknown name; a wrong struct_size. */
    DPO_ERR_INVALID_ARGUMENT = 1,
    /* A file or directory could not be opened, read, written or renamed (or does not exist). */
    DPO_ERR_IO = 2,
    /* A file was read but its content is malformed (config.json, safetensors, checkpoint). */
    DPO_ERR_FORMAT = 3,
    /* The request needs more memory than the machine has (checked before allocating). */
    DPO_ERR_OUT_OF_MEMORY = 4,
    /* A computed loss or gradient is NaN or infinite (nothing was changed). */
    DPO_ERR_NUMERIC = 5,
    /* The call is not valid now (e.g. apply_optimizer with nothing accumulated, or the handle is
       in use by another thread). */
    DPO_ERR_WRONG_STATE = 6,
    /* A broken internal invariant: a bug in swift-dpo. */
    DPO_ERR_INTERNAL = 7,
    /* A caller-owned output buffer is too small; the size needed is reported. */
    DPO_ERR_BUFFER_TOO_SMALL = 8
} dpo_status;

/* Static English text for a status, e.g. "invalid argument". Unknown codes give
   "unknown status". Never NULL. */
const char *dpo_status_string(dpo_status status);

/* The message of the last failed call made by the calling thread, naming the argument and the
   value at fault; "" if the thread's last status-returning call succeeded or it made none.
   Owned by the library; valid until the calling thread's next call into the library (copy it if
   you need it longer). Never NULL. */
const char *dpo_last_error(void);

/* ------------------------------------------------------------------------------------------ */
/* Threads                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* The number of threads the library uses for matrix products (OpenBLAS) and its own parallel
   loops. Default: the number of online cores (matrix products use OpenBLAS's own default, e.g.
   OPENBLAS_NUM_THREADS, until dpo_set_num_threads() is called). Global to the process.
   Only dpo_set_num_threads() changes process-wide state (OpenBLAS's thread count, the environment
   for a moment); every other call leaves OpenBLAS's settings and the environment alone and shares
   no unsynchronised state, so distinct handles can be used in several threads at once. */
int32_t dpo_get_num_threads(void);

/* Sets the thread count (1..1024) for every later call, also OpenBLAS's (openblas_set_num_threads).
   Call it between calls, not while another thread is inside the library.
   The first call also shortens OpenBLAS's idle spin: its worker threads busy-wait about 0.1 s
   after each call by default, which takes the cores from the library's own loops (the tiny
   benchmark step runs about 10% faster without it). Unless OPENBLAS_THREAD_TIMEOUT is set in the
   environment, that first call sets it to 4 (the shortest wait), has OpenBLAS read it, removes it
   again (the environment's contents end as they were, its array may be reallocated) and restarts
   OpenBLAS's thread pool. So make it at start-up, before other threads read the environment or
   call OpenBLAS, e.g. dpo_set_num_threads(dpo_get_num_threads()). The Python package makes it
   when imported, the dpo command when it starts; without it OpenBLAS keeps its default wait.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT if n < 1 or n > 1024. */
dpo_status dpo_set_num_threads(int32_t n);

/* ------------------------------------------------------------------------------------------ */
/* Token batches                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* `count` lists of token ids in one flat array (the count is given by the enclosing batch):
   list i is ids[offsets[i] .. offsets[i+1]). offsets has count+1 entries, offsets[0] == 0, the
   offsets never decrease, and offsets[count] <= num_ids. Token ids must be in [0, vocab_size).
   A batch holds at most 2^28 tokens in all its lists (DPO_MAX_BATCH_TOKENS).
   The library reads these arrays during the call only and never keeps or frees them. */
#define DPO_MAX_BATCH_TOKENS 268435456 /* 2^28 */

typedef struct dpo_token_lists {
    const int32_t *ids;     /* num_ids token ids (may be NULL only when num_ids == 0) */
    int64_t num_ids;        /* entries of ids, 0 <= num_ids <= INT32_MAX */
    const int64_t *offsets; /* count + 1 entries, never NULL */
} dpo_token_lists;

/* A batch of (prompt, completion) items: sequence log-probs, SFT steps. */
typedef struct dpo_completion_batch {
    size_t struct_size;          /* sizeof(dpo_completion_batch) */
    int64_t count;               /* number of items, >= 1 */
    dpo_token_lists prompts;     /* count lists */
    dpo_token_lists completions; /* count lists, each non-empty */
} dpo_completion_batch;

/* A batch of preference pairs (TRL's prompt_ids / chosen_ids / rejected_ids columns). */
typedef struct dpo_preference_batch {
    size_t struct_size;        /* sizeof(dpo_preference_batch) */
    int64_t num_pairs;         /* >= 1 */
    dpo_token_lists prompts;   /* num_pairs lists (a prompt may be empty) */
    dpo_token_lists chosen;    /* num_pairs non-empty lists */
    dpo_token_lists rejected;  /* num_pairs non-empty lists */
    /* Optional precomputed reference log-prob sums (TRL's ref_chosen_logps / ref_rejected_logps),
       num_pairs finite values <= 0 each, or both NULL to compute them with the reference. Giving
       one without the other, or NaN/Inf, is DPO_ERR_INVALID_ARGUMENT. */
    const double *ref_chosen_logps;
    const double *ref_rejected_logps;
} dpo_preference_batch;

/* ------------------------------------------------------------------------------------------ */
/* Models                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* A Llama-family decoder (model_type "llama": Llama 2/3, SmolLM, TinyLlama; "qwen2"): config and
   fp32 weights. Not thread-safe; see the conventions. */
typedef struct dpo_model dpo_model;
typedef struct dpo_tokenizer dpo_tokenizer; /* see "Tokenizers and chat templates" below */

#define DPO_MAX_EOS_TOKEN_IDS 8

/* Model shape and settings with Hugging Face config.json names. dpo_model_default_config() gives
   transformers' LlamaConfig defaults (which describe Llama-2-7B: set the shape fields for a small
   model). RoPE scaling (rope_scaling / rope_parameters) is not represented here: use
   dpo_model_create_json() / dpo_model_config_json() for it. Supported sizes: vocab_size and
   max_position_embeddings < 2^31, intermediate_size <= 2^24, the other dimensions <= 2^20. */
typedef struct dpo_model_config {
    size_t struct_size;              /* sizeof(dpo_model_config) */
    char model_type[16];             /* "llama" (default) or "qwen2", NUL-terminated */
    int64_t vocab_size;              /* 32000 */
    int64_t hidden_size;             /* 4096 */
    int64_t intermediate_size;       /* 11008 */
    int64_t num_hidden_layers;       /* 32 */
    int64_t num_attention_heads;     /* 32 */
    int64_t num_key_value_heads;     /* 32 */
    int64_t head_dim;                /* 0 = hidden_size / num_attention_heads (default) */
    int64_t max_position_embeddings; /* 2048 */
    double initializer_range;        /* 0.02: std of the random initialisation */
    double rms_norm_eps;             /* 1e-6 */
    double rope_theta;               /* 10000 */
    int32_t tie_word_embeddings;     /* 0 */
    int32_t attention_bias;          /* 0 */
    int32_t mlp_bias;                /* 0 */
    int32_t reserved;                /* must be 0 */
    int64_t bos_token_id;            /* 1; -1 = none; else in [0, vocab_size) */
    int64_t pad_token_id;            /* -1 = none (default); else in [0, vocab_size) */
    int64_t num_eos_token_ids;       /* 1; 0..DPO_MAX_EOS_TOKEN_IDS */
    int64_t eos_token_ids[DPO_MAX_EOS_TOKEN_IDS]; /* {2}; in [0, vocab_size); entries past num_eos_token_ids ignored */
} dpo_model_config;

/* Fills *config with the defaults. The caller sets config->struct_size first.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (config NULL, wrong struct_size). */
dpo_status dpo_model_default_config(dpo_model_config *config);

/* Creates a model with randomly initialised weights (transformers' _init_weights: matrices
   normal(0, initializer_range), norms 1, the pad row 0), deterministic for a seed.
   On DPO_OK, *out_model is a new handle the caller frees with dpo_model_free().
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL pointer, wrong struct_size, a field out of
   range or an unsupported value: the message names the field; token ids outside the vocabulary;
   rope_theta or rope_scaling values whose fp32 rotary frequencies theta^(-2i/head_dim), llama3
   rule applied, are not finite and > 0, e.g. rope_theta 1e-300 or factor 1e-320);
   DPO_ERR_OUT_OF_MEMORY (the weights would not fit in memory). */
dpo_status dpo_model_create(const dpo_model_config *config, uint64_t seed, dpo_model **out_model);

/* Like dpo_model_create() from a config.json text (a JSON object with Hugging Face names; absent
   fields take transformers' defaults; rope_scaling / rope_parameters accepted).
   Returns: as dpo_model_create(); a text that is not a JSON object is DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_model_create_json(const char *config_json, uint64_t seed, dpo_model **out_model);

/* Loads a model from path: a Hugging Face model directory (config.json plus model.safetensors, or
   a sharded set with model.safetensors.index.json; F32, BF16 and F16 weights), or a GGUF file
   (v2/v3, architecture "llama" or "qwen2"; tensor types F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
   Q5_1, Q2_K..Q6_K, dequantized exactly as ggml does; llama.cpp's q/k row permutation undone, so
   the model equals what transformers builds from the file), or a directory holding one .gguf and
   no config.json. Weights are kept as F32. On DPO_OK, *out_model is a new handle the caller frees
   with dpo_model_free(). Only regular files are read (a FIFO or a device is refused), config.json
   up to 16 MiB.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL pointer); DPO_ERR_IO (missing directory or
   file, unreadable, not a regular file, too large); DPO_ERR_FORMAT (config.json not JSON or with
   bad fields, as refused by dpo_model_create(); corrupt or mismatching safetensors; a corrupt
   GGUF, an unsupported architecture or tensor type: the message names the file, tensor and type);
   DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_model_load(const char *path, dpo_model **out_model);

/* Writes config.json and model.safetensors (F32) into directory (created if needed), loadable by
   dpo_model_load() and transformers. A model loaded from a GGUF file whose tokenizer the engine
   reads also gets that tokenizer as tokenizer.json, tokenizer_config.json (chat template, special
   tokens) and special_tokens_map.json, which dpo_tokenizer_load() and transformers' AutoTokenizer
   read; other models write no tokenizer files. All-or-nothing, even if the process is killed: a
   new directory appears whole; in an existing one (other files in it are kept) the written files
   are replaced together or not at all (an interrupted save is completed or removed by the next
   dpo_model_load() or dpo_model_save() of the directory). Saves into one parent directory are
   serialised (a lock on it), so two saves to one path at once never mix. The path is used as the
   bytes given (it need not be UTF-8).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL); DPO_ERR_IO (also: the path is a file). */
dpo_status dpo_model_save(dpo_model *model, const char *directory);

/* Writes the model as one GGUF v3 file at path (llama architecture, llama.cpp tensor names and
   metadata keys, q/k rows permuted as llama.cpp expects), so llama.cpp and Ollama run it and
   transformers and dpo_model_load() read it back. type: "f32", "f16", "bf16" or "q8_0" (1-D
   tensors such as norms stay F32, as llama.cpp's converter keeps them). The tokenizer metadata
   comes from tokenizer if not NULL, else from the GGUF the model was loaded from (if it was);
   other metadata of that GGUF (general.*) is carried over. The token list gets exactly vocab_size
   entries, as llama.cpp requires: a smaller tokenizer is padded with "[PAD<id>]" tokens (as
   llama.cpp's converter pads), a larger one is refused. Written to a temporary file and renamed,
   so path holds the old file or the whole new one, never a part; only a regular file at path is
   replaced.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL model or path, unknown type, invalid tokenizer
   handle, a tokenizer with more tokens than the model's vocab_size); DPO_ERR_IO (also: path is a
   directory, a device, a FIFO or a socket); DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_model_save_gguf(dpo_model *model, const char *path, const char *type,
                               dpo_tokenizer *tokenizer);

/* Releases the handle. A trainer created with this model keeps using the weights (they live
   until the last trainer using them is freed); only this handle becomes invalid.
   Returns: DPO_OK (also for NULL); DPO_ERR_INVALID_ARGUMENT (freed or foreign handle);
   DPO_ERR_WRONG_STATE (inside a call on another thread; nothing is freed). */
dpo_status dpo_model_free(dpo_model *model);

/* The message of the last failed call on this handle ("" if it succeeded). Owned by the handle;
   valid until the next call with it or its free. For an invalid handle, a static text. */
const char *dpo_model_last_error(const dpo_model *model);

/* Writes the model's config into *out_config (caller sets out_config->struct_size).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL, wrong struct_size, or the model has more than
   DPO_MAX_EOS_TOKEN_IDS eos ids or a model_type longer than 15 bytes: use the JSON form). */
dpo_status dpo_model_get_config(dpo_model *model, dpo_model_config *out_config);

/* The model's config.json text (Hugging Face names, including the rope parameters), as
   dpo_model_save() writes it, NUL-terminated, into the caller's buffer.
   *out_needed (if not NULL) receives the size needed including the NUL, on DPO_OK and on
   DPO_ERR_BUFFER_TOO_SMALL. buffer may be NULL when capacity is 0 (to ask for the size).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_BUFFER_TOO_SMALL (nothing written). */
dpo_status dpo_model_config_json(dpo_model *model, char *buffer, size_t capacity, size_t *out_needed);

/* The number of parameters (tied embeddings counted once; the matrices of a base kept quantized
   included).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_model_num_parameters(dpo_model *model, int64_t *out_count);

/* Summed completion log-probs: for item i, sum_j log p(completion_i[j] | prompt_i,
   completion_i[..j]). Prompts must be non-empty (the first completion token needs a preceding
   token). No gradient state changes. out_logps is caller-owned with capacity >= batch->count
   entries; entry i is item i's sum.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL, wrong struct_size, bad lengths or offsets,
   token id out of range, empty prompt or completion); DPO_ERR_BUFFER_TOO_SMALL (capacity <
   count; nothing written); DPO_ERR_NUMERIC (a log-prob is NaN or infinite: the weights are not
   finite or the logits overflowed; nothing written); DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_model_sequence_logps(dpo_model *model, const dpo_completion_batch *batch,
                                    double *out_logps, int64_t capacity);

/* Decoding settings (transformers' generate names). */
typedef struct dpo_generate_params {
    size_t struct_size;             /* sizeof(dpo_generate_params) */
    int64_t max_new_tokens;         /* 32; 0 .. 2^30 */
    double temperature;             /* 0 = greedy (default); > 0 samples from logits / T */
    int64_t top_k;                  /* 0 = off */
    double top_p;                   /* 1 = off; in (0, 1] */
    uint64_t seed;                  /* 0: sampling is deterministic for a seed */
    /* Stop ids: num_eos_token_ids < 0 (default -1) uses the model config's eos_token_id; 0 never
       stops early; > 0 uses eos_token_ids[0 .. num_eos_token_ids). */
    int64_t num_eos_token_ids;
    const int32_t *eos_token_ids;
} dpo_generate_params;

/* Fills *params with the defaults above (caller sets params->struct_size).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_generate_default_params(dpo_generate_params *params);

/* Continues each of num_prompts prompts (non-empty token lists) with a KV cache. The new tokens
   (an EOS that stopped a sequence included) are written CSR-style: out_offsets (caller-owned,
   num_prompts + 1 entries) and out_ids (caller-owned, capacity entries); prompt i's new tokens are
   out_ids[out_offsets[i] .. out_offsets[i+1]). capacity >= num_prompts * max_new_tokens always
   suffices. *out_needed (if not NULL) receives the total number of new tokens on DPO_OK and on
   DPO_ERR_BUFFER_TOO_SMALL. params may be NULL for the defaults.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL, wrong struct_size, bad lengths, offsets or
   token ids, empty prompt, bad params); DPO_ERR_BUFFER_TOO_SMALL (nothing written to out_ids or
   out_offsets); DPO_ERR_NUMERIC (the logits of a decoding step are NaN or infinite; nothing
   written); DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_model_generate(dpo_model *model, const dpo_generate_params *params,
                              int64_t num_prompts, const dpo_token_lists *prompts,
                              int32_t *out_ids, int64_t capacity, int64_t *out_offsets,
                              int64_t *out_needed);

/* ------------------------------------------------------------------------------------------ */
/* Tokenizers and chat templates                                                                */
/* ------------------------------------------------------------------------------------------ */

/* A model's own tokenizer, as transformers' AutoTokenizer: byte-level BPE (GPT-2, SmolLM2,
   Llama 3, Qwen2 pre-tokenizers) or SentencePiece-style BPE with byte fallback (Llama 2,
   TinyLlama, Mistral); added and special tokens are matched before pre-tokenization and never
   split. Not thread-safe; see the conventions. (typedef struct dpo_tokenizer dpo_tokenizer is
   declared with dpo_model above.) */

/* Loads the tokenizer of a model: a directory with tokenizer.json (and tokenizer_config.json,
   special_tokens_map.json if present), or a .gguf file (its tokenizer.* metadata). Other
   tokenizer kinds (Unigram, WordPiece, unknown pre-tokenizers or normalizers) are refused by
   name. On DPO_OK, *out_tokenizer is a new handle the caller frees with dpo_tokenizer_free().
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL pointer); DPO_ERR_IO (missing or unreadable
   file); DPO_ERR_FORMAT (malformed or unsupported tokenizer; the message names what). */
dpo_status dpo_tokenizer_load(const char *path, dpo_tokenizer **out_tokenizer);

/* transformers' tokenizer.save_pretrained: writes tokenizer.json, tokenizer_config.json (chat
   template, special tokens) and special_tokens_map.json into directory (created if needed; other
   files in it are left as they are; each file replaced atomically). dpo_tokenizer_load() and
   transformers' AutoTokenizer read them back as this tokenizer.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL); DPO_ERR_IO (also: the path is a file). */
dpo_status dpo_tokenizer_save_pretrained(dpo_tokenizer *tokenizer, const char *directory);

/* Releases the handle. Returns: DPO_OK (also for NULL); DPO_ERR_INVALID_ARGUMENT;
   DPO_ERR_WRONG_STATE (inside a call on another thread). */
dpo_status dpo_tokenizer_free(dpo_tokenizer *tokenizer);

/* The message of the last failed call on this handle ("" if it succeeded); as
   dpo_model_last_error(). */
const char *dpo_tokenizer_last_error(const dpo_tokenizer *tokenizer);

typedef struct dpo_tokenizer_info {
    size_t struct_size;        /* sizeof(dpo_tokenizer_info) */
    int64_t vocab_size;        /* every token id is < vocab_size; len(tokenizer) in transformers unless ids have gaps */
    int64_t bos_token_id;      /* -1 = none */
    int64_t eos_token_id;      /* -1 = none */
    int64_t pad_token_id;      /* -1 = none */
    int32_t has_chat_template; /* 1 if dpo_tokenizer_apply_chat_template() can be used */
    int32_t reserved;          /* 0 */
} dpo_tokenizer_info;

/* Writes the tokenizer's sizes and special ids into *out_info (caller sets struct_size).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_tokenizer_get_info(dpo_tokenizer *tokenizer, dpo_tokenizer_info *out_info);

/* Token ids of text[0 .. text_length) (UTF-8; it may contain NUL bytes), as transformers'
   tokenizer.encode(text, add_special_tokens): with add_special_tokens = 1 the BOS/EOS the
   tokenizer's config asks for are added. Text that spells a special token ("<|im_start|>")
   becomes that token. The ids go to out_ids (caller-owned, capacity entries); *out_count (if not
   NULL) receives their number on DPO_OK and on DPO_ERR_BUFFER_TOO_SMALL (then call again with a
   larger array). text may be NULL when text_length is 0.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL, text not UTF-8, text_length over 2^28, flag not
   0/1, negative capacity); DPO_ERR_BUFFER_TOO_SMALL (nothing written to out_ids). */
dpo_status dpo_tokenizer_encode(dpo_tokenizer *tokenizer, const char *text, size_t text_length,
                                int32_t add_special_tokens, int32_t *out_ids, int64_t capacity,
                                int64_t *out_count);

/* The text of count token ids, as transformers' tokenizer.decode(ids, skip_special_tokens),
   NUL-terminated into buffer (caller-owned, capacity bytes). *out_needed (if not NULL) receives
   the size needed including the NUL on DPO_OK and on DPO_ERR_BUFFER_TOO_SMALL; the text itself
   may contain NUL bytes (a token of U+0000): its length is *out_needed - 1. buffer may be NULL when
   capacity is 0; ids may be NULL when count is 0.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL, an id that is no token: outside [0, vocab_size)
   or in a gap of the ids, flag not 0/1);
   DPO_ERR_BUFFER_TOO_SMALL (nothing written). */
dpo_status dpo_tokenizer_decode(dpo_tokenizer *tokenizer, const int32_t *ids, int64_t count,
                                int32_t skip_special_tokens, char *buffer, size_t capacity,
                                size_t *out_needed);

/* The chat template's Jinja text, NUL-terminated into buffer (as dpo_tokenizer_decode()).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL; the tokenizer has no chat template:
   has_chat_template is 0); DPO_ERR_BUFFER_TOO_SMALL (nothing written). */
dpo_status dpo_tokenizer_chat_template(dpo_tokenizer *tokenizer, char *buffer, size_t capacity,
                                       size_t *out_needed);

/* One chat message: NUL-terminated UTF-8 strings, read during the call only. */
typedef struct dpo_chat_message {
    const char *role;    /* "system", "user", "assistant", ... */
    const char *content;
} dpo_chat_message;

/* Renders the tokenizer's chat template (tokenizer_config.json's chat_template or GGUF's
   tokenizer.chat_template) over count messages, as transformers'
   apply_chat_template(messages, add_generation_prompt, tokenize=False), NUL-terminated into
   buffer (as dpo_tokenizer_decode()). The text already holds the special tokens: encode it with
   add_special_tokens = 0, as transformers does with tokenize=True. The template runs in a Jinja
   interpreter of the subset real chat templates use; a construct outside it is an error naming it
   and its line:column, never a silently different prompt.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL, a string not UTF-8, flag not 0/1, count < 0,
   no chat template, the template raised an error, e.g. roles that do not alternate: the message
   is the template's); DPO_ERR_FORMAT (a template this interpreter cannot run; the message names
   the construct); DPO_ERR_BUFFER_TOO_SMALL (nothing written). */
dpo_status dpo_tokenizer_apply_chat_template(dpo_tokenizer *tokenizer, const dpo_chat_message *messages,
                                             int64_t count, int32_t add_generation_prompt,
                                             char *buffer, size_t capacity, size_t *out_needed);

/* ------------------------------------------------------------------------------------------ */
/* DPO training                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* TRL's DPOTrainer: a policy trained against a reference. Not thread-safe; see conventions. */
typedef struct dpo_trainer dpo_trainer;

/* TRL DPOConfig fields (same names and defaults; the math is in dpo-math.md) plus the
   transformers TrainingArguments fields that drive the optimizer. String fields point to
   NUL-terminated text the caller owns (read during the create call only); NULL means the
   default. dpo_trainer_default_params() sets them to static strings of the library. */
typedef struct dpo_trainer_params {
    size_t struct_size;              /* sizeof(dpo_trainer_params) */
    double beta;                     /* 0.1 */
    /* One loss or several, comma-separated, e.g. "sigmoid" (default) or "sigmoid,sft" (RPO).
       Names: sigmoid, hinge, ipo, sigmoid_norm, exo_pair, nca_pair, robust, bco_pair, sppo_hard,
       aot, aot_unpaired, apo_zero, apo_down, discopop, sft. At most 64 names. */
    const char *loss_type;
    const double *loss_weights;      /* one weight per loss type, or NULL for all 1 (default) */
    int64_t num_loss_weights;        /* entries of loss_weights (0 when NULL) */
    double label_smoothing;          /* 0 */
    const char *f_divergence_type;   /* "reverse_kl" | forward_kl | js_divergence | alpha_divergence */
    double f_alpha_divergence_coef;  /* 0.5 */
    double ld_alpha;                 /* LD-DPO weight in [0, 1]; negative = None (default -1) */
    int32_t use_weighting;           /* 0; 1 = WPO weights */
    int32_t precompute_ref_log_probs;/* 0; 1 = batches carry reference log-probs, no reference held */
    double discopop_tau;             /* 0.05 */
    int64_t max_length;              /* 1024; 0 = None (no limit); else >= 2 */
    const char *truncation_mode;     /* "keep_start" (default) | "keep_end" */
    int32_t sync_ref_model;          /* 0; 1 = TR-DPO */
    int32_t reserved;                /* must be 0 */
    double ref_model_mixup_alpha;    /* 0.6 */
    int64_t ref_model_sync_steps;    /* 512 */
    /* Optimizer (transformers TrainingArguments, AdamW as torch.optim.AdamW). */
    double learning_rate;            /* 1e-6 */
    double weight_decay;             /* 0 (not applied to biases and norm weights) */
    double adam_beta1;               /* 0.9 */
    double adam_beta2;               /* 0.999 */
    double adam_epsilon;             /* 1e-8 */
    double max_grad_norm;            /* 1.0; 0 = no clipping */
    const char *lr_scheduler_type;   /* "linear" (default) | constant | cosine | constant_with_warmup */
    int64_t warmup_steps;            /* 0 */
    double warmup_ratio;             /* 0 */
    int64_t max_steps;               /* 1000: the schedule's length in optimizer steps */
    int64_t gradient_accumulation_steps; /* 1 */
    uint64_t seed;                   /* 42 */
} dpo_trainer_params;

/* Fills *params with TRL's defaults (caller sets params->struct_size). String fields point to
   static storage of the library.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_trainer_default_params(dpo_trainer_params *params);

/* The complete DPOConfig as JSON (TRL names; loss_type as a list, None as null): the fields of
   fields_json (a JSON object, or NULL for none) over the defaults, validated. As in TRL, where
   DPOConfig extends transformers' TrainingArguments, it also holds the training loop's fields
   (output_dir, num_train_epochs, per_device_train_batch_size, logging_steps, eval_strategy,
   save_strategy, report_to, ...: see "Datasets and the training loop"); max_steps,
   gradient_accumulation_steps and seed serve both the optimizer and the loop. Written
   NUL-terminated into the caller's buffer; *out_needed (if not NULL) gets the size needed
   including the NUL on DPO_OK and DPO_ERR_BUFFER_TOO_SMALL.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (not a JSON object, unknown field, wrong type, invalid
   value or combination); DPO_ERR_BUFFER_TOO_SMALL. */
dpo_status dpo_trainer_config_json(const char *fields_json, char *buffer, size_t capacity,
                                   size_t *out_needed);

/* Per-step metrics with TRL's names (dpo-math.md). Means over the batch's pairs; for an optimizer
   step with gradient accumulation, means over the accumulated micro-batches. */
typedef struct dpo_metrics {
    size_t struct_size;          /* sizeof(dpo_metrics), set by the caller */
    double loss;                 /* loss */
    double rewards_chosen;       /* rewards/chosen = mean beta * (policy - ref) logp of chosen */
    double rewards_rejected;     /* rewards/rejected */
    double rewards_accuracies;   /* rewards/accuracies = mean 1[rewards chosen > rejected] */
    double rewards_margins;      /* rewards/margins */
    double logps_chosen;         /* logps/chosen: mean summed completion log-prob */
    double logps_rejected;       /* logps/rejected */
    double logits_chosen;        /* logits/chosen: token-weighted mean logit */
    double logits_rejected;      /* logits/rejected */
    double entropy;              /* entropy: token-weighted mean over completion positions */
    double mean_token_accuracy;  /* mean_token_accuracy: argmax hits on chosen completions */
    double grad_norm;            /* grad_norm before clipping; NaN unless optimizer_stepped */
    double learning_rate;        /* learning_rate used; NaN unless optimizer_stepped */
    double num_tokens;           /* num_tokens: cumulative tokens trained on (chosen + rejected rows) */
    int32_t optimizer_stepped;   /* 1 if this call ran the optimizer */
    int32_t reserved;            /* 0 */
    int64_t global_step;         /* optimizer steps taken so far (after this call) */
} dpo_metrics;

/* Creates a trainer. policy is trained in place. reference is a separate frozen model with the
   same vocabulary, or NULL: then the reference is a snapshot of the policy's weights taken at the
   first step (or, with precompute_ref_log_probs, no model: batches carry the log-probs). The
   trainer keeps both models alive; freeing their handles later is allowed. params may be NULL for
   the defaults. On DPO_OK, *out_trainer is a new handle freed with dpo_trainer_free().
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL, invalid model handle, reference == policy,
   vocabularies differ, wrong struct_size, unknown loss/scheduler/f-divergence/truncation name,
   invalid value or combination); DPO_ERR_OUT_OF_MEMORY (optimizer state would not fit). */
dpo_status dpo_trainer_create(dpo_model *policy, dpo_model *reference,
                              const dpo_trainer_params *params, dpo_trainer **out_trainer);

/* Like dpo_trainer_create() with the config as a JSON object of TRL-named fields (see
   dpo_trainer_config_json; NULL = defaults). Returns: as dpo_trainer_create(). */
dpo_status dpo_trainer_create_json(dpo_model *policy, dpo_model *reference, const char *config_json,
                                   dpo_trainer **out_trainer);

/* Releases the trainer (and the models only it still keeps).
   Returns: DPO_OK (also for NULL); DPO_ERR_INVALID_ARGUMENT; DPO_ERR_WRONG_STATE (in use). */
dpo_status dpo_trainer_free(dpo_trainer *trainer);

/* The message of the last failed call on this trainer; lifetime as dpo_model_last_error(). */
const char *dpo_trainer_last_error(const dpo_trainer *trainer);

/* One training step on a batch: forward and backward of policy and reference, gradients
   accumulated; every gradient_accumulation_steps-th call also clips and steps AdamW (then
   out_metrics->optimizer_stepped is 1). out_metrics may be NULL.
   Validation (bad offsets, token ids, empty completions, a prompt alone >= max_length with
   keep_start, NaN/Inf reference log-probs) happens before anything changes.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_NUMERIC (the policy's or reference's
   log-probs, the loss or the gradient are not finite, or the optimizer step would make a weight
   or AdamW moment non-finite; nothing changed, the micro-batch is not kept); DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_trainer_step(dpo_trainer *trainer, const dpo_preference_batch *batch,
                            dpo_metrics *out_metrics);

/* Metrics of a batch without any change (TRL's evaluate; hosts prefix the names with "eval_").
   out_metrics is required; its grad_norm and learning_rate are NaN.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_NUMERIC (log-probs or loss not finite);
   DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_trainer_evaluate(dpo_trainer *trainer, const dpo_preference_batch *batch,
                                dpo_metrics *out_metrics);

/* Reference log-prob sums of each pair (LD-weighted like the loss uses them), computed with the
   reference model, or with the policy's current weights when there is none; to be passed back
   as ref_chosen_logps / ref_rejected_logps of later batches (TRL's precompute_ref_log_probs).
   out_chosen and out_rejected are caller-owned with capacity >= num_pairs entries. The batch's
   own ref_* arrays are ignored.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_BUFFER_TOO_SMALL; DPO_ERR_NUMERIC (log-probs
   not finite; nothing written); DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_trainer_precompute_ref_logps(dpo_trainer *trainer, const dpo_preference_batch *batch,
                                            double *out_chosen, double *out_rejected,
                                            int64_t capacity);

/* Distributed grain, 1/3: forward and backward of one micro-batch; its gradient (already divided
   by gradient_accumulation_steps) is added to the gradient buffer. Never steps the optimizer.
   out_metrics (may be NULL) gets the micro-batch's metrics.
   Returns: as dpo_trainer_step(). */
dpo_status dpo_trainer_accumulate(dpo_trainer *trainer, const dpo_preference_batch *batch,
                                  dpo_metrics *out_metrics);

/* Distributed grain, 2/3: the flat fp32 gradient buffer of the policy (all parameters, in
   checkpoint order; with a LoRA adapter, the adapter's A and B entries in its tensor order), for an all-reduce between accumulate and apply_optimizer. The host may
   read and overwrite the values in place (e.g. replace them with the average over ranks).
   The pointer is owned by the library and stays valid and unchanged until the trainer is freed
   (another trainer on the same policy model shares it). Do not touch it while a call on this
   trainer runs.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_trainer_gradients(dpo_trainer *trainer, float **out_data, int64_t *out_count);

/* Distributed grain, 3/3: clip by max_grad_norm, AdamW at the scheduled learning rate, TR-DPO
   sync if enabled, then zero the gradients. out_metrics (may be NULL) gets the mean metrics of
   the accumulated micro-batches with grad_norm and learning_rate.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_WRONG_STATE (nothing accumulated);
   DPO_ERR_NUMERIC (gradient norm not finite, e.g. after a host all-reduce, or the step would make
   a weight or AdamW moment non-finite, e.g. weight_decay 1e300; nothing changed, the gradients
   stay accumulated). */
dpo_status dpo_trainer_apply_optimizer(dpo_trainer *trainer, dpo_metrics *out_metrics);

/* Optimizer steps taken. Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_trainer_global_step(dpo_trainer *trainer, int64_t *out_step);

/* Writes a checkpoint directory (policy, reference, optimizer moments, pending gradients, step
   counters, RNG, config, and a manifest.json with the size and CRC-32 of every file). Resuming
   gives bit-identical training. All-or-nothing, even if the process is killed: the checkpoint is
   written beside the path and renamed into place; the path then holds the old checkpoint or the
   new one (an interrupted save is repaired by the next save or load of the path). Only an empty
   directory or a swift-dpo checkpoint is replaced: anything else at the path is refused with
   DPO_ERR_IO and left as it is. The path is used as the bytes given.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_IO. */
dpo_status dpo_trainer_save_checkpoint(dpo_trainer *trainer, const char *directory);

/* Restores a checkpoint written by dpo_trainer_save_checkpoint() into this trainer (created with
   the same model config and reference kind). Everything is read and checked first (every file
   against the manifest's size and CRC-32, every weight and optimizer value finite); on failure
   the trainer is unchanged.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL; written by an SFT trainer; different model
   config or reference kind); DPO_ERR_IO (missing directory or files); DPO_ERR_FORMAT (corrupt,
   damaged, no manifest, NaN or infinite values). */
dpo_status dpo_trainer_load_checkpoint(dpo_trainer *trainer, const char *directory);

/* ------------------------------------------------------------------------------------------ */
/* SFT training                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Supervised fine-tuning (TRL's SFTTrainer with completion-only loss): token-mean cross-entropy
   on completion tokens. Not thread-safe; see conventions. */
typedef struct dpo_sft_trainer dpo_sft_trainer;

/* TRL SFTConfig fields that apply here. Same conventions as dpo_trainer_params. */
typedef struct dpo_sft_params {
    size_t struct_size;              /* sizeof(dpo_sft_params) */
    int64_t max_length;              /* 1024; 0 = None; else >= 2. Truncation keeps the start. */
    double learning_rate;            /* 2e-5 (TRL's SFT default) */
    double weight_decay;             /* 0 */
    double adam_beta1;               /* 0.9 */
    double adam_beta2;               /* 0.999 */
    double adam_epsilon;             /* 1e-8 */
    double max_grad_norm;            /* 1.0 */
    const char *lr_scheduler_type;   /* "linear" */
    int64_t warmup_steps;            /* 0 */
    double warmup_ratio;             /* 0 */
    int64_t max_steps;               /* 1000 */
    int64_t gradient_accumulation_steps; /* 1 */
    uint64_t seed;                   /* 42 */
} dpo_sft_params;

/* Fills *params with the defaults (caller sets params->struct_size).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_sft_default_params(dpo_sft_params *params);

/* The complete SFTConfig as JSON; as dpo_trainer_config_json(). Besides max_length, the
   optimizer and the loop's fields, it holds the dataset fields truncation_mode,
   completion_only_loss (null = TRL's default), assistant_only_loss and dataset_text_field. */
dpo_status dpo_sft_trainer_config_json(const char *fields_json, char *buffer, size_t capacity,
                                       size_t *out_needed);

/* SFT metrics, TRL's names. */
typedef struct dpo_sft_metrics {
    size_t struct_size;          /* sizeof(dpo_sft_metrics), set by the caller */
    double loss;                 /* token-mean cross-entropy on completion tokens */
    double mean_token_accuracy;
    double entropy;
    double grad_norm;            /* NaN unless optimizer_stepped */
    double learning_rate;        /* NaN unless optimizer_stepped */
    double num_tokens;           /* cumulative prompt + completion tokens trained on */
    int32_t optimizer_stepped;
    int32_t reserved;
    int64_t global_step;
} dpo_sft_metrics;

/* Creates an SFT trainer of model (kept alive by the trainer). params may be NULL (defaults).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_sft_trainer_create(dpo_model *model, const dpo_sft_params *params,
                                  dpo_sft_trainer **out_trainer);

/* Like dpo_sft_trainer_create() with a JSON object of TRL-named fields (NULL = defaults). */
dpo_status dpo_sft_trainer_create_json(dpo_model *model, const char *config_json,
                                       dpo_sft_trainer **out_trainer);

/* Returns: DPO_OK (also for NULL); DPO_ERR_INVALID_ARGUMENT; DPO_ERR_WRONG_STATE. */
dpo_status dpo_sft_trainer_free(dpo_sft_trainer *trainer);

/* Lifetime as dpo_model_last_error(). */
const char *dpo_sft_trainer_last_error(const dpo_sft_trainer *trainer);

/* One SFT step on a batch of (prompt, completion) items (a prompt may be empty; completions
   not). out_metrics may be NULL.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_NUMERIC; DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_sft_trainer_step(dpo_sft_trainer *trainer, const dpo_completion_batch *batch,
                                dpo_sft_metrics *out_metrics);

/* Metrics without an update (out_metrics required).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_NUMERIC (log-probs not finite);
   DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_sft_trainer_evaluate(dpo_sft_trainer *trainer, const dpo_completion_batch *batch,
                                    dpo_sft_metrics *out_metrics);

/* Distributed grain: as dpo_trainer_accumulate / _gradients / _apply_optimizer. */
dpo_status dpo_sft_trainer_accumulate(dpo_sft_trainer *trainer, const dpo_completion_batch *batch,
                                      dpo_sft_metrics *out_metrics);
dpo_status dpo_sft_trainer_gradients(dpo_sft_trainer *trainer, float **out_data, int64_t *out_count);
dpo_status dpo_sft_trainer_apply_optimizer(dpo_sft_trainer *trainer, dpo_sft_metrics *out_metrics);

/* Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_sft_trainer_global_step(dpo_sft_trainer *trainer, int64_t *out_step);

/* As dpo_trainer_save_checkpoint / dpo_trainer_load_checkpoint (a DPO checkpoint is refused). */
dpo_status dpo_sft_trainer_save_checkpoint(dpo_sft_trainer *trainer, const char *directory);
dpo_status dpo_sft_trainer_load_checkpoint(dpo_sft_trainer *trainer, const char *directory);

/* ------------------------------------------------------------------------------------------ */
/* LoRA adapters (PEFT)                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* PEFT's LoraConfig fields, same names and defaults (bias "none"; DoRA, rank/alpha patterns and
   modules_to_save are not supported). A model with an adapter has frozen base weights: its
   forwards add scaling * B A dropout(x) to every adapted linear layer (scaling = lora_alpha / r,
   lora_alpha / sqrt(r) with use_rslora), trainers train the adapter alone (no gradient or AdamW
   state for the base), dpo_model_save() writes the adapter files exactly as PEFT's
   save_pretrained (adapter_config.json + adapter_model.safetensors, loadable with
   PeftModel.from_pretrained), and dpo_model_save_gguf() is refused until
   dpo_model_merge_and_unload(). */
typedef struct dpo_lora_params {
    size_t struct_size;          /* sizeof(dpo_lora_params) */
    int64_t r;                   /* 8; 1..65536 */
    double lora_alpha;           /* 8; finite, non-zero */
    double lora_dropout;         /* 0; in [0, 1) (on the adapter's input, in training steps only) */
    /* NULL = PEFT's default for Llama, "q_proj,v_proj"; else comma-separated names among q_proj,
       k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or "all-linear" (all seven; the LM
       head is never adapted). */
    const char *target_modules;
    int32_t use_rslora;          /* 0 */
    /* 1 (PEFT's True, default): A Kaiming-uniform as nn.Linear, B 0 (a fresh adapter changes
       nothing); 0 (False): B random too; 2 ("gaussian"): A normal(0, 1/r), B 0. */
    int32_t init_lora_weights;
} dpo_lora_params;

/* Fills *params with PEFT's defaults (caller sets params->struct_size).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_lora_default_params(dpo_lora_params *params);

/* Attaches a fresh adapter (PEFT's get_peft_model / transformers' add_adapter), initialised from
   seed. Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL, wrong struct_size, a field out of range,
   an unknown or unsupported target module); DPO_ERR_WRONG_STATE (the model already has an adapter,
   or a trainer holds accumulated gradients of it); DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_model_add_adapter(dpo_model *model, const dpo_lora_params *params, uint64_t seed);

/* Like dpo_model_add_adapter() with a JSON object of PEFT LoraConfig fields (see
   dpo_trainer_create_peft_json). */
dpo_status dpo_model_add_adapter_json(dpo_model *model, const char *peft_config_json, uint64_t seed);

/* Loads a PEFT adapter directory (adapter_config.json + adapter_model.safetensors, F32/F16/BF16)
   and attaches it (transformers' load_adapter). A DPO trainer created afterwards with no reference
   trains it against a frozen copy of these weights (TRL's "ref" adapter).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL); DPO_ERR_IO (missing directory or file);
   DPO_ERR_FORMAT (a config with unsupported features, or tensors missing, of the wrong shape,
   unexpected or not finite: the message names the file and tensor); DPO_ERR_WRONG_STATE (the
   model already has an adapter); DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_model_load_adapter(dpo_model *model, const char *directory);

/* PEFT's merge_and_unload: W += scaling * B A for every adapted layer, then the adapter is
   removed (the model is a plain model again; save it with dpo_model_save / dpo_model_save_gguf).
   A trainer created while the adapter was attached refuses further steps.
   Returns: DPO_OK; DPO_ERR_WRONG_STATE (no adapter, or a trainer holds accumulated gradients). */
dpo_status dpo_model_merge_and_unload(dpo_model *model);

/* PEFT's unload(): removes the adapter without merging it; the model computes its base again.
   A trainer created while the adapter was attached refuses further steps.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_WRONG_STATE (no adapter, or a trainer holds
   accumulated gradients). */
dpo_status dpo_model_unload(dpo_model *model);

/* The number of adapter parameters (all A and B entries), 0 when the model has no adapter.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_model_adapter_num_parameters(dpo_model *model, int64_t *out_count);

/* The adapter's adapter_config.json text (as dpo_model_save writes it), NUL-terminated into the
   caller's buffer; *out_needed as in dpo_model_config_json.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_WRONG_STATE (no adapter);
   DPO_ERR_BUFFER_TOO_SMALL. */
dpo_status dpo_model_adapter_config_json(dpo_model *model, char *buffer, size_t capacity, size_t *out_needed);

/* TRL's DPOTrainer(..., peft_config=...): as dpo_trainer_create(), after attaching a fresh adapter
   to policy (initialised from params->seed; refused if policy already has one). With reference
   NULL (and no precompute_ref_log_probs), the reference is the policy with the adapter switched
   off: no copy of any weights. params may be NULL for the defaults; peft_config must not be NULL.
   On failure the policy is left without the adapter.
   Returns: as dpo_trainer_create(); DPO_ERR_INVALID_ARGUMENT also for a NULL or bad peft_config
   and when policy already has an adapter. */
dpo_status dpo_trainer_create_peft(dpo_model *policy, dpo_model *reference, const dpo_trainer_params *params,
                                   const dpo_lora_params *peft_config, dpo_trainer **out_trainer);

/* Like dpo_trainer_create_peft() with JSON: config_json as dpo_trainer_create_json(), peft_config_json
   a JSON object of PEFT LoraConfig fields (r, lora_alpha, lora_dropout, target_modules as a list
   or "all-linear", use_rslora, init_lora_weights, bias, modules_to_save, ...; absent = default). */
dpo_status dpo_trainer_create_peft_json(dpo_model *policy, dpo_model *reference, const char *config_json,
                                        const char *peft_config_json, dpo_trainer **out_trainer);

/* TRL's SFTTrainer(..., peft_config=...), as dpo_trainer_create_peft(). */
dpo_status dpo_sft_trainer_create_peft(dpo_model *model, const dpo_sft_params *params,
                                       const dpo_lora_params *peft_config, dpo_sft_trainer **out_trainer);
dpo_status dpo_sft_trainer_create_peft_json(dpo_model *model, const char *config_json,
                                            const char *peft_config_json, dpo_sft_trainer **out_trainer);

/* ------------------------------------------------------------------------------------------ */
/* A GGUF base kept quantized (keep_base_quantized), for LoRA                                   */
/* ------------------------------------------------------------------------------------------ */

/* Loads a GGUF model (path: a .gguf file, or a directory holding one and no config.json) as
   dpo_model_load() does, but keeps its matrices (the linear weights of every decoder layer, the
   embedding and the LM head) in their quantized GGUF form; only norms and biases are fp32.
   Forwards and the input-gradient products of backwards dequantize the weights tile by tile, so
   log-probs equal the fp32-loaded model's within 1e-6 relative. SmolLM2-135M-Instruct Q4_1 takes
   96 MB of weights this way instead of 538 MB. Such a model computes log-probs, generates and
   trains a LoRA adapter (dpo_trainer_create_peft, or an adapter added or loaded before
   dpo_trainer_create; with no reference the reference is the base with the adapter off, so no
   fp32 weights exist at all). What needs fp32 base weights is refused with DPO_ERR_WRONG_STATE:
   a trainer of it without an adapter (full fine-tuning), sync_ref_model, dpo_model_save() without
   an adapter (with one it writes the adapter files), dpo_model_save_gguf() and
   dpo_model_merge_and_unload(); use dpo_model_dequantize() for those. As a trainer's reference it
   works too; checkpoints then do not hold the reference (it cannot change), and loading one keeps
   the trainer's own.
   Returns: as dpo_model_load(); DPO_ERR_INVALID_ARGUMENT also for a Hugging Face model directory
   (its weights are not quantized). */
dpo_status dpo_model_load_quantized(const char *path, dpo_model **out_model);

/* *out_quantized = 1 if model keeps its base quantized (dpo_model_load_quantized), else 0;
   *out_bytes (out_bytes may be NULL) = the bytes its quantized matrices take (0 if none).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_model_is_quantized(dpo_model *model, int32_t *out_quantized, int64_t *out_bytes);

/* A new fp32 model equal to model (*out_model, freed with dpo_model_free()): its quantized
   matrices dequantized exactly as dpo_model_load() reads them, the other weights, the GGUF
   metadata and a copy of its adapter (if any) carried over; model itself is unchanged. On the copy
   dpo_model_merge_and_unload(), dpo_model_save() and dpo_model_save_gguf() work. A model that is
   not quantized is copied the same way.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_model_dequantize(dpo_model *model, dpo_model **out_model);

/* ------------------------------------------------------------------------------------------ */
/* Datasets and the training loop                                                               */
/* ------------------------------------------------------------------------------------------ */

/* A dataset prepared for one trainer exactly as its TRL counterpart prepares train_dataset
   (TRL 1.16): rows in TRL's formats are tokenized with the model's tokenizer and chat template
   and kept as token ids. DPO rows: prompt/chosen/rejected strings or conversations (lists of
   {"role", "content"}), chosen/rejected only (implicit prompt), or prompt_ids/chosen_ids/
   rejected_ids. SFT rows: text (dataset_text_field), messages, prompt/completion (strings or
   conversations), or input_ids (+ completion_mask, assistant_masks) or prompt_ids/completion_ids.
   The format is fixed by the first row; a row that does not fit it, with a missing or mistyped
   field, is refused naming its index (or file and line) and the field. Rows TRL drops (their
   prompt alone fills max_length) are counted, never silently lost. Not thread-safe. */
typedef struct dpo_dataset dpo_dataset;

/* A new empty dataset for the trainer (its max_length, truncation_mode, SFT loss fields and its
   model's vocabulary). tokenizer may be NULL: then only token-id rows are accepted. The dataset
   does not keep the trainer or the tokenizer alive.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL out_dataset, invalid handles). */
dpo_status dpo_trainer_dataset_create(dpo_trainer *trainer, dpo_tokenizer *tokenizer,
                                      dpo_dataset **out_dataset);
dpo_status dpo_sft_trainer_dataset_create(dpo_sft_trainer *trainer, dpo_tokenizer *tokenizer,
                                          dpo_dataset **out_dataset);

/* Adds rows given as JSON text of `length` bytes (UTF-8): one row object, or an array of row
   objects. All or nothing: if a row is refused, none of the call's rows is added.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (bad JSON, bad row; the message names the row). */
dpo_status dpo_dataset_add_rows(dpo_dataset *dataset, const char *json, size_t length);

/* Adds every row of a JSON Lines file (one object per line) or a JSON file holding an array of
   row objects, read as a stream. All or nothing, as dpo_dataset_add_rows().
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (bad row: file and line named); DPO_ERR_FORMAT (a
   line that is not JSON, or longer than 64 MiB); DPO_ERR_IO. */
dpo_status dpo_dataset_add_file(dpo_dataset *dataset, const char *path);

typedef struct dpo_dataset_info {
    size_t struct_size;   /* sizeof(dpo_dataset_info), set by the caller */
    int64_t rows;         /* rows added */
    int64_t kept;         /* rows kept (rows - dropped) */
    int64_t dropped;      /* rows TRL drops (DPO: the prompt fills max_length; SFT: no learned token left) */
    int64_t truncated;    /* kept rows that max_length shortens */
    const char *format;   /* the format, e.g. "conversational preference" ("" before the first row);
                             a static string */
} dpo_dataset_info;

/* Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_dataset_get_info(dpo_dataset *dataset, dpo_dataset_info *out_info);

/* Kept row `index` as TRL's processed dataset holds it, as a JSON object: prompt_ids,
   chosen_ids, rejected_ids (DPO, untruncated: the trainer truncates as TRL's collator does);
   input_ids and completion_mask / assistant_masks where the row has them (SFT, truncated).
   Written as dpo_trainer_config_json() writes.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (index out of range); DPO_ERR_BUFFER_TOO_SMALL. */
dpo_status dpo_dataset_row_json(dpo_dataset *dataset, int64_t index, char *buffer, size_t capacity,
                                size_t *out_needed);

/* Returns: DPO_OK (also for NULL); DPO_ERR_INVALID_ARGUMENT; DPO_ERR_WRONG_STATE. */
dpo_status dpo_dataset_free(dpo_dataset *dataset);

/* Lifetime as dpo_model_last_error(). */
const char *dpo_dataset_last_error(const dpo_dataset *dataset);

/* The training loop of transformers' Trainer.train() in the engine, for either trainer: epochs
   over the train dataset in a seeded order (shuffle, data_seed), micro-batches of
   per_device_train_batch_size, gradient accumulation, a log record every logging_steps (means
   over the window), evaluation and checkpoints (checkpoint-<step> in output_dir) by strategy,
   save_total_limit, resume with bit-identical weights, report_to sinks (metrics.jsonl). The same
   loop runs the dpo command and Python's DPOTrainer.train(). Not thread-safe; while a loop call
   runs, its trainer and models are in use (calls on them from the callback fail with
   DPO_ERR_WRONG_STATE). */
typedef struct dpo_loop dpo_loop;

typedef enum dpo_loop_event {
    DPO_EVENT_TRAIN_BEGIN = 0,  /* {"global_step", "max_steps", "epoch"} */
    DPO_EVENT_STEP_END = 1,     /* an optimizer step: {"global_step", "max_steps", "epoch", "metrics": {...}} */
    DPO_EVENT_LOG = 2,          /* a log record: {"step", "epoch", "loss", ...} (train, eval_ or summary) */
    DPO_EVENT_SAVE = 3          /* a checkpoint was written: {"global_step", ..., "checkpoint": path} */
} dpo_loop_event;

/* Called on the thread that runs the loop with an event and its JSON (valid during the call).
   Return 0 to go on; non-zero stops the run before the next micro-batch, after a checkpoint of
   the exact state (named by dpo_loop_train's "interrupted_checkpoint"): e.g. on Ctrl-C. */
typedef int32_t (*dpo_loop_callback)(void *user_data, int32_t event, const char *json);

typedef struct dpo_loop_params {
    size_t struct_size;          /* sizeof(dpo_loop_params) */
    const char *args_json;       /* TrainingArguments fields over the trainer's config (NULL: as
                                    the trainer was created), e.g. {"output_dir": "run", "num_train_epochs": 2} */
    dpo_dataset *train_dataset;  /* NULL: the loop can only evaluate */
    dpo_dataset *eval_dataset;   /* NULL unless eval_strategy is "steps" or "epoch" */
    dpo_loop_callback callback;  /* may be NULL */
    void *user_data;             /* passed to callback */
} dpo_loop_params;

/* A loop over the trainer (kept alive by the loop). The datasets' rows are copied: the dataset
   handles may be freed afterwards; a dataset of the other trainer kind is refused; train and eval
   may be the same dataset. Every example is checked as a step would check it (token ids within
   the model's vocabulary, non-empty completions, prompts shorter than max_length, ...); the first
   refused one is named by its row (and file and line).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (NULL, wrong struct_size, unknown or invalid
   argument, empty dataset, eval_strategy without eval_dataset). */
dpo_status dpo_trainer_loop_create(dpo_trainer *trainer, const dpo_loop_params *params, dpo_loop **out_loop);
dpo_status dpo_sft_trainer_loop_create(dpo_sft_trainer *trainer, const dpo_loop_params *params,
                                       dpo_loop **out_loop);

/* Trains to max_steps (or num_train_epochs), from resume_from_checkpoint if not NULL (a
   checkpoint-<step> folder; else the args' resume_from_checkpoint). *out_json (may be NULL
   for none) gets TrainOutput as JSON: {"global_step", "training_loss", "metrics": {train_runtime,
   train_samples_per_second, train_steps_per_second, train_loss, epoch}, "interrupted_checkpoint"},
   owned by the loop and valid until its next call.
   The trainer continues from its own step count; one that already reached max_steps (without a
   checkpoint to resume) is refused. Every example was checked when the loop was made, so no
   example fails mid-run; a run that saves checkpoints makes output_dir before its first step.
   Returns: DPO_OK (also when the callback stopped the run); DPO_ERR_INVALID_ARGUMENT (no train
   dataset, nothing left to train, checkpoint of another run shape); DPO_ERR_IO; DPO_ERR_FORMAT;
   DPO_ERR_NUMERIC; DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_loop_train(dpo_loop *loop, const char *resume_from_checkpoint, const char **out_json);

/* Evaluates dataset (NULL: the loop's eval_dataset) in batches of per_device_eval_batch_size and
   logs the record. *out_json: the eval_ metrics as a JSON object (lifetime as dpo_loop_train).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT (no dataset); DPO_ERR_NUMERIC; DPO_ERR_OUT_OF_MEMORY. */
dpo_status dpo_loop_evaluate(dpo_loop *loop, dpo_dataset *dataset, const char **out_json);

/* Logs a record (a JSON object of finite numbers) as transformers' Trainer.log: epoch and step
   are added, it joins log_history and the report_to sinks, the callback gets it.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_IO. */
dpo_status dpo_loop_log(dpo_loop *loop, const char *record_json);

/* The loop's state as transformers' trainer_state.json names it: {"global_step", "epoch",
   "max_steps", ..., "log_history": [...]}. Lifetime as dpo_loop_train.
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT. */
dpo_status dpo_loop_state(dpo_loop *loop, const char **out_json);

/* Saves the trained model (config.json + model.safetensors) to directory (NULL: output_dir).
   Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_IO. */
dpo_status dpo_loop_save_model(dpo_loop *loop, const char *directory);

/* Writes output_dir/checkpoint-<step> now (then applies save_total_limit). *out_json (may be
   NULL): {"checkpoint": path}. Returns: DPO_OK; DPO_ERR_INVALID_ARGUMENT; DPO_ERR_IO. */
dpo_status dpo_loop_save_checkpoint(dpo_loop *loop, const char **out_json);

/* Returns: DPO_OK (also for NULL); DPO_ERR_INVALID_ARGUMENT; DPO_ERR_WRONG_STATE. */
dpo_status dpo_loop_free(dpo_loop *loop);

/* Lifetime as dpo_model_last_error(). */
const char *dpo_loop_last_error(const dpo_loop *loop);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DPO_H */
