#!/usr/bin/env python3
"""The DPO step of `dpo bench`, in PyTorch eager, for side-by-side comparison (dev-only).

Runs what TRL's DPOTrainer does per step (before its fused LM head) on a randomly initialised
LlamaForCausalLM of the same shape as `dpo bench --shape ...` (Sources/dpo-cli/Bench.swift):
chosen and rejected rows concatenated into one [2 * pairs, prompt + completion] batch (the prompt
duplicated), a frozen reference forward under torch.no_grad (or, with --reference precomputed,
reference log-probs computed once before timing), per-token log-probs of the completion tokens
by log_softmax + gather over the full logits, summed per sequence, the sigmoid loss (beta 0.1),
backward, clip_grad_norm_(1.0), AdamW (lr 1e-7) and zero_grad. Prints the fields `dpo bench`
prints, with the same names; --json prints one JSON object.

--bf16 runs the policy's and the reference's forward (and so the backward of the autocast ops)
under torch.autocast("cpu", dtype=torch.bfloat16), as `dpo bench --bf16` runs its products in bf16
(weights, gradients and AdamW stay fp32). --trl times TRL's own DPOTrainer instead of the step
written out here: TRL 1.16's defaults (padded batches, gradient checkpointing, its fused LM head),
the same model, pairs and frozen reference, learning rate 1e-7, `bf16` as --bf16 says (TRL's
default is bf16=True), each step timed by a callback.

Install (CPU wheels) and run:
    python3 -m venv venv && venv/bin/pip install torch transformers \
        --extra-index-url https://download.pytorch.org/whl/cpu
    venv/bin/python tools/bench_torch.py --shape tiny --steps 5 --warmup 1
    venv/bin/python tools/bench_torch.py --shape smollm2-135m --json
    venv/bin/python tools/bench_torch.py --shape smollm2-135m --bf16 [--trl]   (--trl: pip install trl)
tools/compare_bench.sh runs this and `dpo bench` alternately and prints the ratios.

--lora: TRL + PEFT's LoRA step instead (`dpo bench --lora`'s counterpart): peft.get_peft_model with
LoraConfig(r=--lora-r, lora_alpha=2r, target_modules="all-linear", lora_dropout=0), the reference
forward under `model.disable_adapter()` as TRL does for a peft_config run (no reference copy), AdamW
over the adapter parameters only (needs `pip install peft`). With --trl, TRL's DPOTrainer gets the
plain model and `peft_config=` that LoraConfig, and no reference model, as a TRL + PEFT user runs it.
"""
import argparse
import copy
import json
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

# The shapes of BenchShape in Sources/dpo-cli/Bench.swift (other fields: Swift's LlamaConfig defaults).
SHAPES = {
    "tiny": dict(vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=4, tie_word_embeddings=True,
                 rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=2048),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                         rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=8192),
}
BETA = 0.1


def gemm_flops_per_step(c, seq_len, rows, reference_model):
    """Analytic matrix-product FLOPs of one step (2 FLOPs per multiply-add).

    One forward over `rows` sequences of `seq_len` tokens (tokens = rows * seq_len):
      linear = 2 * tokens * (layers * (H*q + 2*H*kv + q*H + 3*H*I) + V*H)
               q = heads * head_dim, kv = kv_heads * head_dim; the last term is the (tied) LM head
      attn   = layers * 4 * rows * (seq_len^2 / 2) * heads * head_dim
               (Q K^T and P V, causal: half the score matrix)
    Step = policy forward + policy backward (2x forward) + reference forward (held model only)
         = 4 * forward (reference model) or 3 * forward (precomputed reference).
    """
    h, i, v, layers = c.hidden_size, c.intermediate_size, c.vocab_size, c.num_hidden_layers
    hd = h // c.num_attention_heads
    q, kv = c.num_attention_heads * hd, c.num_key_value_heads * hd
    tokens = rows * seq_len
    linear = 2 * tokens * (layers * (h * q + 2 * h * kv + q * h + 3 * h * i) + v * h)
    attn = layers * 4 * rows * (seq_len ** 2 / 2) * c.num_attention_heads * hd
    return (4 if reference_model else 3) * (linear + attn)


def sequence_logps(model, input_ids, completion_mask):
    """Summed log-probs of the completion tokens: log_softmax over the full logits, then gather."""
    logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits
    logps = torch.gather(logits[:, :-1].log_softmax(-1), 2, input_ids[:, 1:, None]).squeeze(2)
    return (logps * completion_mask[:, 1:]).sum(1)


def sgemm_gflops(m=1024, n=1536, k=576, runs=5):
    """torch.mm rate on float32 [m, k] @ [k, n], median of `runs` after one warm-up."""
    a, b = torch.rand(m, k) - 0.5, torch.rand(k, n) - 0.5
    torch.mm(a, b)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * m * n * k / statistics.median(times) / 1e9


def bf16_mm_gflops(m=1024, n=1536, k=576, runs=5):
    """torch.mm rate on bfloat16 [m, k] @ [k, n] (what autocast runs a linear layer with)."""
    a, b = (torch.rand(m, k) - 0.5).bfloat16(), (torch.rand(k, n) - 0.5).bfloat16()
    torch.mm(a, b)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * m * n * k / statistics.median(times) / 1e9


def trl_step_times(a, config, policy, ref, prompt, chosen, rejected, peft_config=None):
    """Step times of TRL's DPOTrainer (its defaults, `bf16=a.bf16`, `peft_config`) on the pairs, one
    batch per step, and the number of parameters it trained."""
    import tempfile
    import warnings

    from datasets import Dataset
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    class PreTokenized(DPOTrainer):
        """TRL 1.16 cannot take a pre-tokenized dataset (see tools/make_trl_fixtures.py): pass it through."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.t0)

    # A tokenizer only for the collator's pad id (token k is "t<k>"; 0 pads).
    vocab = {f"t{i}": i for i in range(config.vocab_size)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0")),
                                  pad_token="t0", eos_token="t0")
    rows = [{"prompt_ids": prompt[i].tolist(), "chosen_ids": chosen[i].tolist(), "rejected_ids": rejected[i].tolist()}
            for i in range(a.pairs)]
    total = a.warmup + a.steps
    timer = Timer()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's renamings of TRL's arguments
    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(output_dir=tmp, per_device_train_batch_size=a.pairs, max_steps=total, learning_rate=1e-7,
                         bf16=a.bf16, use_cpu=True, max_length=None, report_to="none", save_strategy="no",
                         logging_steps=total, disable_tqdm=True, dataloader_num_workers=0,
                         precompute_ref_log_probs=ref is None and peft_config is None)
        trainer = PreTokenized(model=policy, ref_model=ref, args=args, processing_class=tok,
                               train_dataset=Dataset.from_list(rows * total), callbacks=[timer],
                               peft_config=peft_config)
        trainer.remove_callback(PrinterCallback)  # disable_tqdm adds it; it prints the logs to stdout
        trainer.train()
        trained = sum(x.numel() for x in trainer.model.parameters() if x.requires_grad)
    return timer.times[a.warmup:], trained


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=SHAPES, default="tiny")
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--prompt-length", type=int, default=128)
    p.add_argument("--completion-length", type=int, default=128)
    p.add_argument("--reference", choices=["model", "precomputed"], default="model")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa", help="attention implementation")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--bf16", action="store_true", help="forwards under torch.autocast(\"cpu\", dtype=torch.bfloat16)")
    p.add_argument("--trl", action="store_true", help="time TRL's DPOTrainer (its defaults) instead of the plain step")
    p.add_argument("--lora", action="store_true", help="TRL + PEFT LoRA step (reference = adapters disabled)")
    p.add_argument("--lora-r", type=int, default=16)
    a = p.parse_args()
    if min(a.pairs, a.prompt_length, a.completion_length, a.steps, a.threads) < 1 or a.warmup < 0:
        p.error("--pairs, --prompt-length, --completion-length, --steps, --threads must be >= 1, --warmup >= 0")

    torch.set_num_threads(a.threads)
    config = LlamaConfig(**SHAPES[a.shape], attn_implementation=a.attn)
    torch.manual_seed(1)
    policy = LlamaForCausalLM(config).float().train()
    ref = None
    peft_config = None
    if a.lora:
        from peft import LoraConfig, get_peft_model
        peft_config = LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
        if not a.trl:  # TRL wraps the model itself
            policy = get_peft_model(policy, peft_config)
            policy.train()
    elif a.reference == "model":  # a frozen copy, as TRL's create_reference_model makes
        ref = copy.deepcopy(policy).eval().requires_grad_(False)
    trainable = [x for x in policy.parameters() if x.requires_grad]
    # TRL 1.16's default optimizer is adamw_torch_fused, without weight decay (as DPOConfig in Swift).
    opt = torch.optim.AdamW(trainable, lr=1e-7, weight_decay=0.0, fused=True)

    # Batch: chosen rows then rejected rows, each prompt + completion (prompt duplicated, no padding).
    g = torch.Generator().manual_seed(7)
    P, C, n = a.prompt_length, a.completion_length, a.pairs
    prompt = torch.randint(config.vocab_size, (n, P), generator=g)
    chosen, rejected = (torch.randint(config.vocab_size, (n, C), generator=g) for _ in range(2))
    input_ids = torch.cat([torch.cat([prompt, chosen], 1), torch.cat([prompt, rejected], 1)], 0)
    completion_mask = torch.cat([torch.zeros(2 * n, P), torch.ones(2 * n, C)], 1)

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16)
    precomputed = None
    if ref is None and not a.trl and not a.lora:  # TRL's precompute_ref_log_probs without a ref model: the initial policy, once
        with torch.no_grad(), autocast:
            precomputed = sequence_logps(policy.eval(), input_ids, completion_mask)
        policy.train()

    def step():
        with autocast:
            logps = sequence_logps(policy, input_ids, completion_mask)
            if a.lora:
                with torch.no_grad(), policy.disable_adapter():
                    ref_logps = sequence_logps(policy, input_ids, completion_mask)
            elif ref is not None:
                with torch.no_grad():
                    ref_logps = sequence_logps(ref, input_ids, completion_mask)
            else:
                ref_logps = precomputed
        chosen_logps, rejected_logps = logps.chunk(2)
        ref_chosen, ref_rejected = ref_logps.chunk(2)
        delta = (chosen_logps - rejected_logps) - (ref_chosen - ref_rejected)
        loss = -F.logsigmoid(BETA * delta).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad()

    trained = sum(x.numel() for x in trainable)
    if a.trl:
        times, trained = trl_step_times(a, config, policy, ref, prompt, chosen, rejected, peft_config)
    else:
        times = []
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            step()
            if i >= a.warmup:
                times.append(time.perf_counter() - t0)

    t = statistics.median(times)
    tokens = n * (2 * P + 2 * C)  # TRL's num_tokens per step
    # LoRA: policy forward, a backward without weight gradients of the frozen matrices (about one
    # forward), the reference forward: 3 forwards' worth, as the precomputed case (the adapters'
    # own rank-r products are not counted).
    flops = gemm_flops_per_step(config, P + C, 2 * n, ref is not None)
    sgemm = sgemm_gflops()
    result = {
        "threads": torch.get_num_threads(),
        "parameters": sum(x.numel() for x in policy.parameters()),  # tied head counted once
        "bf16": int(a.bf16),
        **({"lora_parameters": trained} if a.lora else {}),
        "step_seconds": t, "tokens_per_step": tokens, "tokens_per_second": tokens / t,
        "gemm_flops_per_step": flops, "achieved_gflops": flops / t / 1e9,
        "sgemm_gflops": sgemm, "ratio_to_sgemm": flops / t / 1e9 / sgemm, "bf16_mm_gflops": bf16_mm_gflops(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
    }
    if a.json:
        print(json.dumps({"shape": a.shape, "mode": "step", "reference": "adapters_disabled" if a.lora else a.reference,
                          "packing": "plain", "lora": a.lora, "runner": "trl" if a.trl else "eager", **result}))
    else:
        print(f"shape {a.shape}, mode step, {n} pairs x ({P} prompt + 2 x {C} completion), "
              f"reference {'the base (adapters disabled), LoRA r %d all-linear' % a.lora_r if a.lora else a.reference}, "
              f"packing plain (torch {torch.__version__}, attn {a.attn}"
              + (", TRL's DPOTrainer" if a.trl else "") + (", bf16 autocast" if a.bf16 else "") + ")")
        for k, v in result.items():
            print(f"  {k:<20} {v:.4g}")


if __name__ == "__main__":
    main()
