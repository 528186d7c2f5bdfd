#!/usr/bin/env python3
"""Golden dataset processing for the engine's data layer (Sources/DPO/Data), recorded from TRL's own
trainers (dev-only; the library and its tests never need Python).

For every dataset format TRL's DPOTrainer and SFTTrainer read, this script writes rows (seeded,
deterministic) and runs TRL's actual dataset preparation on them: it constructs the trainer on a tiny
random Llama with SmolLM2-135M-Instruct's tokenizer and chat template, and reads back
`trainer.train_dataset` (for DPO also the collator's truncated sequences, since DPO truncates there).

The tokenizer is SmolLM2's, built from the GGUF at .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
(`make model`) exactly as tools/make_tokenizer_fixtures.py builds its SmolLM2 oracle (transformers'
GGUF conversion misses SmolLM2's digit splitting), wrapped in a PreTrainedTokenizerFast with the
GGUF's special tokens and chat template. Assistant-only loss needs `{% generation %}` markers, which
SmolLM2's template lacks (TRL has no training template for it): those cases use generation.jinja,
SmolLM2's template with the assistant turn (content and <|im_end|>) inside a generation block.

Writes into Tests/DPOTests/Fixtures/datasets/:
  rows/<format>.jsonl   the input rows, one JSON object per line (what the engine reads)
  generation.jinja      the template with generation markers
  golden.json           per case: the trainer ("dpo"/"sft"), the rows file, the config (TRL's
                        names), "kept" (indices of the rows TRL's prepared dataset keeps), and per
                        kept row the ids as space-separated decimal strings:
                          dpo: prompt_ids, chosen_ids, rejected_ids (the prepared dataset) and, for
                               cases with truncation, the collator's chosen/rejected input_ids with
                               their completion start ("chosen_prompt_len": the mask is 0 before it,
                               1 from it on)
                          sft: input_ids and labels (as a mask string, "1" where the label is the
                               token, "0" where it is -100)
                        "truncated": how many kept rows max_length shortened.
  "generation_spans": small templates rendered by transformers' render_jinja_template with
                        return_assistant_tokens_mask=True: the text and its generation_indices
                        converted to UTF-8 byte offsets (blocks in loops, in set blocks, nested,
                        empty, around non-ASCII text).
  The token-id format (prompt_ids/chosen_ids/rejected_ids) is not something TRL 1.16's
  DPOTrainer prepares (it starts with extract_prompt, which needs text); for it the golden is TRL's
  DataCollatorForPreference and the trainer's keep_start filter (`len(prompt_ids) < max_length`).

Run from the repository root:
    .venv-oracle/bin/python tools/make_dataset_fixtures.py
"""
import json
import os
import random
import sys
import tempfile
import warnings

import gguf
import torch
import transformers
import trl
import datasets
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tokenizer_fixtures import SMOLLM2_GGUF, smollm2_oracle  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "DPOTests", "Fixtures", "datasets")
ROWS = 60

GENERATION_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

# MARK: - Rows

WORDS = ("the a cat dog sky blue green river mountain answer question model train token data short long "
         "quickly never always because however python swift function value list 42 3.14 2024 1,000 007 "
         "café naïve über 你好 世界 😀 👍🏽 — … «quoted» don't it's we've").split()
ENDINGS = ["", ".", "!", "?", "\n", " ", "  ", ".\n\n", ":"]


def sentence(rng, lo=2, hi=12):
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    text = " ".join(words)
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return text + rng.choice(ENDINGS)


def completion_text(rng):
    """A completion as people write them: mostly with a leading space, sometimes a newline, sometimes
    ending with the EOS text already, now and then holding special-token text."""
    r = rng.random()
    lead = " " if r < 0.6 else ("\n" if r < 0.75 else "")
    text = lead + sentence(rng, 1, 10)
    if rng.random() < 0.1:
        text += "<|im_end|>"
    if rng.random() < 0.05:
        text = text.replace(" ", " <|im_start|> ", 1)
    return text


def prompt_text(rng):
    return sentence(rng, 1, 14)


def user_turns(rng):
    msgs = []
    if rng.random() < 0.3:
        msgs.append({"role": "system", "content": sentence(rng, 2, 8)})
    msgs.append({"role": "user", "content": sentence(rng)})
    if rng.random() < 0.3:
        msgs.append({"role": "assistant", "content": sentence(rng)})
        msgs.append({"role": "user", "content": sentence(rng)})
    return msgs


def assistant(rng):
    content = sentence(rng, 1, 10)
    if rng.random() < 0.2:
        content = rng.choice(["\n", " ", "\n\n"]) + content
    return [{"role": "assistant", "content": content}]


def standard_rows(rng):
    rows = [{"prompt": prompt_text(rng), "chosen": completion_text(rng), "rejected": completion_text(rng)}
            for _ in range(ROWS)]
    rows[3]["prompt"] = ""  # an empty prompt
    rows[4]["chosen"] = rows[4]["rejected"] = " same answer"
    rows[5]["chosen"] = ""  # an empty completion: only the EOS TRL appends
    return rows


def conversational_rows(rng):
    return [{"prompt": user_turns(rng), "chosen": assistant(rng), "rejected": assistant(rng)} for _ in range(ROWS)]


def implicit_standard_rows(rng):
    rows = []
    for i in range(ROWS):
        prefix = prompt_text(rng)
        c, r = completion_text(rng), completion_text(rng)
        if i % 5 == 0:  # both completions start with the same word: the prompt grows into them
            word = " " + rng.choice(WORDS)
            c, r = word + c, word + r
        rows.append({"chosen": prefix + c, "rejected": prefix + r})
    rows[1] = {"chosen": "Yes ", "rejected": "No"}          # differ at 0 while chosen ends with " "
    rows[2] = {"chosen": "The sky is blue", "rejected": "The sky is blue today"}  # one is a prefix
    rows[3] = {"chosen": "same text", "rejected": "same text"}  # identical
    rows[4] = {"chosen": "Answer: one two", "rejected": "Answer: one three"}  # differ right after a space
    return rows


def implicit_conversational_rows(rng):
    rows = []
    for _ in range(ROWS):
        prompt = user_turns(rng)
        rows.append({"chosen": prompt + assistant(rng), "rejected": prompt + assistant(rng)})
    return rows


def token_id_rows(rng):
    def ids(lo, hi):
        return [rng.randrange(49152) for _ in range(rng.randint(lo, hi))]
    return [{"prompt_ids": ids(0, 30), "chosen_ids": ids(1, 20), "rejected_ids": ids(1, 20)} for _ in range(ROWS)]


def text_rows(rng):
    return [{"text": sentence(rng, 1, 30) + (sentence(rng) if rng.random() < 0.5 else "")} for _ in range(ROWS)]


def prompt_completion_rows(rng):
    rows = [{"prompt": prompt_text(rng), "completion": completion_text(rng)} for _ in range(ROWS)]
    rows[2]["completion"] = ""
    return rows


def conversational_prompt_completion_rows(rng):
    return [{"prompt": user_turns(rng), "completion": assistant(rng)} for _ in range(ROWS)]


def messages_rows(rng):
    return [{"messages": user_turns(rng) + assistant(rng)} for _ in range(ROWS)]


# MARK: - TRL

def sft_token_id_rows(rng):
    """TRL's processed SFT columns: input_ids with a completion_mask."""
    rows = []
    for _ in range(ROWS):
        prompt, completion = rng.randint(0, 20), rng.randint(1, 20)
        rows.append({"input_ids": [rng.randrange(49152) for _ in range(prompt + completion)],
                     "completion_mask": [0] * prompt + [1] * completion})
    return rows


def hf_tokenizer():
    reader = gguf.GGUFReader(SMOLLM2_GGUF)
    f = reader.fields
    tokens = f["tokenizer.ggml.tokens"].contents()

    def token(key):
        return tokens[f[key].contents()]
    return PreTrainedTokenizerFast(
        tokenizer_object=smollm2_oracle(), bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"), unk_token=token("tokenizer.ggml.unknown_token_id"),
        pad_token=token("tokenizer.ggml.padding_token_id"), chat_template=f["tokenizer.chat_template"].contents())


def tiny_model(vocab):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096))


def ids_text(ids):
    return " ".join(str(int(t)) for t in ids)


def common_args(tmp):
    return dict(output_dir=tmp, report_to=[], bf16=False, use_cpu=True, dataset_num_proc=None, seed=0)


def run_dpo(tok, rows, config):
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(**common_args(tmp), max_length=config.get("max_length", 1024),
                         truncation_mode=config.get("truncation_mode", "keep_start"))
        ds = Dataset.from_list([{**row, "_row": i} for i, row in enumerate(rows)])
        trainer = DPOTrainer(model=tiny_model(len(tok)), ref_model=tiny_model(len(tok)), args=args, train_dataset=ds, processing_class=tok)
        prepared = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
        return prepared, trainer.data_collator


def dpo_golden(tok, rows, config, token_ids=False):
    max_length = config.get("max_length", 1024)
    mode = config.get("truncation_mode", "keep_start")
    if token_ids:
        prepared = [{**row, "_row": i} for i, row in enumerate(rows)
                    if max_length is None or mode != "keep_start" or len(row["prompt_ids"]) < max_length]
        collator = DataCollatorForPreference(pad_token_id=tok.pad_token_id, max_length=max_length, truncation_mode=mode)
    else:
        prepared, collator = run_dpo(tok, rows, config)
    out = {"kept": [p["_row"] for p in prepared], "prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    truncated = 0
    record_collator = max_length is not None and max_length < 1024
    if record_collator:
        for k in ("chosen_input_ids", "chosen_prompt_len", "rejected_input_ids", "rejected_prompt_len"):
            out[k] = []
    for p in prepared:
        for k in ("prompt_ids", "chosen_ids", "rejected_ids"):
            out[k].append(ids_text(p[k]))
        batch = collator([{k: p[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}])
        full = [len(p["prompt_ids"]) + len(p["chosen_ids"]), len(p["prompt_ids"]) + len(p["rejected_ids"])]
        truncated += any(n > max_length for n in full) if max_length is not None else 0
        if record_collator:
            for j, side in enumerate(("chosen", "rejected")):
                n = int(batch["attention_mask"][j].sum())
                ids = batch["input_ids"][j][:n].tolist()
                mask = batch["completion_mask"][j][:n].tolist()
                start = mask.index(1) if 1 in mask else n
                assert mask == [0] * start + [1] * (n - start), mask
                out[f"{side}_input_ids"].append(ids_text(ids))
                out[f"{side}_prompt_len"].append(start)
    out["truncated"] = truncated
    return out


def run_sft(tok, rows, config):
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(**common_args(tmp), max_length=config.get("max_length", 1024),
                         truncation_mode=config.get("truncation_mode", "keep_start"),
                         completion_only_loss=config.get("completion_only_loss"),
                         assistant_only_loss=config.get("assistant_only_loss", False),
                         dataset_text_field=config.get("dataset_text_field", "text"))
        ds = Dataset.from_list([{**row, "_row": i} for i, row in enumerate(rows)])
        trainer = SFTTrainer(model=tiny_model(len(tok)), args=args, train_dataset=ds, processing_class=tok)
        return [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]


def sft_golden(tok, rows, config):
    prepared = run_sft(tok, rows, config)
    untruncated = {p["_row"]: len(p["input_ids"]) for p in run_sft(tok, rows, {**config, "max_length": None})}
    max_length = config.get("max_length", 1024)
    return {"kept": [p["_row"] for p in prepared],
            "input_ids": [ids_text(p["input_ids"]) for p in prepared],
            "labels": ["".join("0" if l == -100 else "1" for l in p["labels"]) for p in prepared],
            "truncated": sum(1 for p in prepared if max_length is not None and untruncated[p["_row"]] > max_length)}


# MARK: - Generation spans

SPAN_MESSAGES = [{"role": "user", "content": "Grüß dich 😀"}, {"role": "assistant", "content": "Hallo — ça va?"},
                 {"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]
SPAN_TEMPLATES = {
    "loop": GENERATION_TEMPLATE,
    "whitespace_control": "{%- for m in messages %}\n  {%- if m.role == 'assistant' %}\n    {%- generation -%}\n"
                          "      [{{ m.content }}]\n    {%- endgeneration %}\n  {%- else %}<{{ m.content }}>{% endif %}\n{%- endfor %}",
    # Spans of blocks inside `set` do not lie where their text ends up; their lengths are compared
    # in bytes, so what they render is ASCII (the text before them is not).
    "set_block": "{% for m in messages %}{% set x %}({% generation %}{{ m.role }}{% endgeneration %}|{{ m.content }})"
                 "{% endset %}{{ m.role }}:{{ x }};{% endfor %}",
    "nested": "{% for m in messages %}{% generation %}<{% generation %}{{ m.role }}{% endgeneration %}|"
              "{{ m.content }}>{% endgeneration %}{% endfor %}",
    "empty_and_conditional": "{% for m in messages %}{{ m.role }}{% generation %}{% if m.role == 'assistant' %}"
                             "{{ m.content }}{% endif %}{% endgeneration %}.{% endfor %}",
}


def generation_spans():
    from transformers.utils.chat_template_utils import render_jinja_template
    out = []
    for name, template in SPAN_TEMPLATES.items():
        rendered, indices = render_jinja_template(conversations=[SPAN_MESSAGES], chat_template=template,
                                                  return_assistant_tokens_mask=True)
        text = rendered[0]

        def byte(i):
            return len(text[:i].encode("utf-8"))
        out.append({"name": name, "template": template, "text": text,
                    "spans": [[byte(a), byte(b)] for a, b in indices[0]]})
    return out


# MARK: - Cases

FORMATS = {
    "standard": standard_rows, "conversational": conversational_rows, "implicit_standard": implicit_standard_rows,
    "implicit_conversational": implicit_conversational_rows, "token_ids": token_id_rows, "text": text_rows,
    "prompt_completion": prompt_completion_rows,
    "conversational_prompt_completion": conversational_prompt_completion_rows, "messages": messages_rows,
    "sft_token_ids": sft_token_id_rows,
}

# (name, trainer, rows, config, template): config holds TRL's DPOConfig / SFTConfig names.
CASES = [
    ("dpo_standard", "dpo", "standard", {}, "model"),
    ("dpo_conversational", "dpo", "conversational", {}, "model"),
    ("dpo_implicit_standard", "dpo", "implicit_standard", {}, "model"),
    ("dpo_implicit_conversational", "dpo", "implicit_conversational", {}, "model"),
    ("dpo_token_ids", "dpo", "token_ids", {"max_length": 24}, "model"),
    ("dpo_token_ids_keep_end", "dpo", "token_ids", {"max_length": 24, "truncation_mode": "keep_end"}, "model"),
    ("dpo_standard_keep_start_16", "dpo", "standard", {"max_length": 16}, "model"),
    ("dpo_standard_keep_end_12", "dpo", "standard", {"max_length": 12, "truncation_mode": "keep_end"}, "model"),
    ("dpo_conversational_keep_start_44", "dpo", "conversational", {"max_length": 44}, "model"),
    ("dpo_conversational_keep_end_40", "dpo", "conversational", {"max_length": 40, "truncation_mode": "keep_end"}, "model"),
    ("sft_text", "sft", "text", {}, "model"),
    ("sft_text_keep_start_10", "sft", "text", {"max_length": 10}, "model"),
    ("sft_prompt_completion", "sft", "prompt_completion", {}, "model"),
    ("sft_prompt_completion_full_loss", "sft", "prompt_completion", {"completion_only_loss": False}, "model"),
    ("sft_prompt_completion_keep_start_12", "sft", "prompt_completion", {"max_length": 12}, "model"),
    ("sft_prompt_completion_keep_end_8", "sft", "prompt_completion", {"max_length": 8, "truncation_mode": "keep_end"}, "model"),
    ("sft_conversational_prompt_completion", "sft", "conversational_prompt_completion", {}, "model"),
    ("sft_conversational_prompt_completion_assistant", "sft", "conversational_prompt_completion",
     {"assistant_only_loss": True}, "generation"),
    ("sft_messages", "sft", "messages", {}, "model"),
    ("sft_messages_assistant", "sft", "messages", {"assistant_only_loss": True}, "generation"),
    ("sft_messages_assistant_keep_start_48", "sft", "messages", {"assistant_only_loss": True, "max_length": 48}, "generation"),
    ("sft_messages_assistant_keep_end_30", "sft", "messages",
     {"assistant_only_loss": True, "max_length": 30, "truncation_mode": "keep_end"}, "generation"),
    ("sft_token_ids", "sft", "sft_token_ids", {}, "model"),
    ("sft_token_ids_completion_only", "sft", "sft_token_ids", {"completion_only_loss": True}, "model"),
    ("sft_token_ids_keep_start_12", "sft", "sft_token_ids", {"max_length": 12}, "model"),
    ("sft_token_ids_keep_end_12", "sft", "sft_token_ids", {"max_length": 12, "truncation_mode": "keep_end"}, "model"),
]


def main():
    if not os.path.exists(SMOLLM2_GGUF):
        sys.exit(f"{SMOLLM2_GGUF} is missing: run `make model`")
    warnings.filterwarnings("ignore")
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    os.makedirs(os.path.join(OUT, "rows"), exist_ok=True)
    rows = {}
    for i, (name, make) in enumerate(FORMATS.items()):
        rows[name] = make(random.Random(1000 + i))
        with open(os.path.join(OUT, "rows", f"{name}.jsonl"), "w") as fh:
            for row in rows[name]:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(os.path.join(OUT, "generation.jinja"), "w") as fh:
        fh.write(GENERATION_TEMPLATE)

    model_tok = hf_tokenizer()
    generation_tok = hf_tokenizer()
    generation_tok.chat_template = GENERATION_TEMPLATE
    cases = []
    for name, trainer, fmt, config, template in CASES:
        tok = generation_tok if template == "generation" else model_tok
        if trainer == "dpo":
            golden = dpo_golden(tok, rows[fmt], config, token_ids=fmt == "token_ids")
        else:
            golden = sft_golden(tok, rows[fmt], config)
        cases.append({"name": name, "trainer": trainer, "rows": f"rows/{fmt}.jsonl", "config": config,
                      "chat_template": template, **golden})
        print(f"{name}: {len(golden['kept'])} of {len(rows[fmt])} rows kept, {golden['truncated']} truncated")
    with open(os.path.join(OUT, "golden.json"), "w") as fh:
        json.dump({"trl": trl.__version__, "transformers": transformers.__version__, "messages": SPAN_MESSAGES,
                   "generation_spans": generation_spans(), "cases": cases}, fh,
                  ensure_ascii=False, separators=(",", ":"))
        fh.write("\n")


if __name__ == "__main__":
    main()
