#!/usr/bin/env python3
"""transformers reads the tokenizer files swift-dpo writes (Tokenizer.writeHuggingFaceFiles, and
LlamaModel.save for a GGUF model) as the tokenizer they came from (dev-only; the library and its
tests never need Python).

First it writes Fixtures/tokenizer/llama3.gguf and qwen2.gguf with gguf-py: vocab-only GGUF
files of the llama3/ and qwen2/ tokenizers (tokenizer.ggml.model "gpt2", tokenizer.ggml.pre
"llama-bpe" and "qwen2", tokens by id, control types for the special added tokens, merges, special
ids, add_bos_token, the chat template).

Inputs: the directories TokenizerExportTests writes when DPO_TOKENIZER_EXPORT_DIR is set (the
script runs those tests itself unless --export DIR names an existing export):

    llama3, qwen2, spm   written from Fixtures/tokenizer/<name> (tokenizer.json sources)
    spm-gguf             written from Fixtures/tokenizer/spm.gguf (GGUF "llama")
    llama3-gguf, qwen2-gguf   written from the GGUF files above (GGUF "gpt2")
    smollm2-model        the SmolLM2-135M-Instruct GGUF loaded as a model and saved with
                         LlamaModel.save (GGUF "gpt2", tokenizer.ggml.pre "smollm")

For each, `transformers.AutoTokenizer.from_pretrained(written dir)` is compared with the source's
own tokenizer in transformers on the whole corpus (Fixtures/tokenizer/corpus.json): ids without
and with special tokens, decode, and the chat template (text and ids). The sources:

    llama3, qwen2        AutoTokenizer.from_pretrained(Fixtures/tokenizer/<name>)
    spm                  `tokenizers` on spm/tokenizer.json (the engine's reference, see
                         tools/make_tokenizer_fixtures.py), with the chat template and special
                         tokens of its tokenizer_config.json: transformers 5 does not use that
                         tokenizer.json as written, because the config names `LlamaTokenizer`,
                         which swaps the legacy normalizer Prepend("▁") + Replace(" ", "▁") for
                         Metaspace (other ids for text with leading or repeated spaces). The script
                         prints how many corpus strings that changes.
    spm-gguf             AutoTokenizer.from_pretrained(Fixtures/tokenizer, gguf_file="spm.gguf")
    llama3-gguf, qwen2-gguf   the same with gguf_file="llama3.gguf" / "qwen2.gguf" (transformers'
                         GGUF conversion, integrations/gguf/gguf_tokenizer_mapping.py). For
                         llama3.gguf that conversion also adds "<|endoftext|>" as a new special
                         token (id 1200, past the file's 1200 tokens): it is GPT2Tokenizer's default
                         special token, and this vocabulary lacks it. llama.cpp and the engine have
                         no such token, so the corpus strings that contain "<|endoftext|>" are
                         counted and printed, not compared.
    smollm2              SmolLM2's real tokenizer: `tokenizers` built from the GGUF's tokens and
                         merges with SmolLM2's pre-tokenizer (as tools/make_tokenizer_fixtures.py
                         does), because transformers' GGUF conversion has no split for "smollm" and
                         keeps digit runs together; the script prints how many corpus strings that
                         conversion tokenizes differently (all of them contain digits) and checks
                         that it agrees with the written directory on every other string.

Any difference fails the script. It writes Tests/DPOTests/Fixtures/tokenizer/export-parity.json:
a few dozen corpus strings and, per tokenizer, the ids transformers gives for them from the
written directory (without and with special tokens), its decode of them, and the chat-template
ids for the messages of TokenizerExportTests.messages. TokenizerExportTests checks the engine's
reloaded tokenizer against them.

Run from the repository root (needs the SmolLM2 GGUF at .cache/models, or $DPO_TEST_GGUF):
    /work/venv/oracle/bin/python tools/make_tokenizer_export_fixtures.py
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer

from make_tokenizer_fixtures import vocab_only_gguf_writer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests", "DPOTests", "Fixtures", "tokenizer")
SMOLLM2_GGUF = os.environ.get("DPO_TEST_GGUF") or os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
# The same messages as TokenizerExportTests.messages.
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there 2024!"},
            {"role": "assistant", "content": "Hello <|im_end|> back."}]
# Every SAMPLE_STEP-th corpus string goes into the committed fixture.
SAMPLE_STEP = 130


def write_byte_level_gguf(name, pre):
    """Fixtures/tokenizer/<name>.gguf from <name>/tokenizer.json and tokenizer_config.json."""
    directory = os.path.join(FIXTURES, name)
    data = json.load(open(os.path.join(directory, "tokenizer.json"), encoding="utf-8"))
    config = json.load(open(os.path.join(directory, "tokenizer_config.json"), encoding="utf-8"))
    vocab = data["model"]["vocab"]
    tokens = [None] * (max(vocab.values()) + 1)
    for t, i in vocab.items():
        tokens[i] = t
    special = {a["id"]: a for a in data["added_tokens"]}
    types = [(3 if special[i]["special"] else 4) if i in special else 1 for i in range(len(tokens))]
    w = vocab_only_gguf_writer(os.path.join(FIXTURES, name + ".gguf"))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]])
    for key, add in (("bos_token", w.add_bos_token_id), ("eos_token", w.add_eos_token_id), ("pad_token", w.add_pad_token_id)):
        if config.get(key):
            add(vocab[config[key]])
    w.add_add_bos_token(data["post_processor"]["type"] == "TemplateProcessing")
    if config.get("chat_template"):
        w.add_chat_template(config["chat_template"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def export(directory):
    env = dict(os.environ, DPO_TOKENIZER_EXPORT_DIR=directory, DPO_TEST_GGUF=SMOLLM2_GGUF)
    cmd = ["swift", "test", "-c", "release", "-Xswiftc", "-enable-testing", "--filter",
           "TokenizerExportTests/(testEverySourceRoundTrips|testSavedSmolLM2DirectoryCarriesTheTokenizer)"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


class Source:
    """encode(text, special) -> ids, decode(ids) -> text, chat(gen) -> (text, ids) or None."""

    def __init__(self, tok):
        self.tok = tok

    def encode(self, s, special):
        return self.tok.encode(s, add_special_tokens=special)

    def decode(self, ids):
        return self.tok.decode(ids, clean_up_tokenization_spaces=False)

    def chat(self, generation):
        if not self.tok.chat_template:
            return None
        text = self.tok.apply_chat_template(MESSAGES, add_generation_prompt=generation, tokenize=False)
        return text, self.tok.encode(text, add_special_tokens=False)


class TokenizersSource(Source):
    def __init__(self, tok, chat_template, bos, eos):
        self.tok, self.template, self.bos, self.eos = tok, chat_template, bos, eos

    def encode(self, s, special):
        return self.tok.encode(s, add_special_tokens=special).ids

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=False)

    def chat(self, generation):
        import jinja2
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
        text = env.from_string(self.template).render(messages=MESSAGES, add_generation_prompt=generation,
                                                     bos_token=self.bos, eos_token=self.eos)
        return text, self.encode(text, False)


def smollm2_source():
    """SmolLM2's real tokenizer from the GGUF's tokens and merges (see the docstring)."""
    f = gguf.GGUFReader(SMOLLM2_GGUF).fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    assert f["tokenizer.ggml.pre"].contents() == "smollm"
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                               merges=[tuple(m.split(" ")) for m in f["tokenizer.ggml.merges"].contents()]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    name = lambda key: tokens[f[key].contents()]
    return TokenizersSource(tok, f["tokenizer.chat_template"].contents(), name("tokenizer.ggml.bos_token_id"),
                            name("tokenizer.ggml.eos_token_id"))


def spm_source():
    """`tokenizers` on the spm fixture's tokenizer.json (see the docstring)."""
    directory = os.path.join(FIXTURES, "spm")
    config = json.load(open(os.path.join(directory, "tokenizer_config.json"), encoding="utf-8"))
    return TokenizersSource(Tokenizer.from_file(os.path.join(directory, "tokenizer.json")), config["chat_template"],
                            config["bos_token"], config["eos_token"])


def compare(name, written, source, corpus):
    """Every difference between the written directory and the source on the corpus, and the
    number of corpus strings that differ."""
    diffs, strings = [], 0
    for i, s in enumerate(corpus):
        before = len(diffs)
        for special in (False, True):
            a, b = written.encode(s, special), source.encode(s, special)
            if a != b:
                diffs.append(f"{name} #{i} special={special} {s!r}: {a} != {b}")
        ids = source.encode(s, False)
        if written.decode(ids) != source.decode(ids):
            diffs.append(f"{name} #{i} decode {s!r}: {written.decode(ids)!r} != {source.decode(ids)!r}")
        strings += len(diffs) > before
    for generation in (False, True):
        if written.chat(generation) != source.chat(generation):
            diffs.append(f"{name} chat template (generation={generation}): {written.chat(generation)!r} != {source.chat(generation)!r}")
    return diffs, strings


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--export", help="an existing DPO_TOKENIZER_EXPORT_DIR (default: run the Swift tests)")
    args = parser.parse_args()
    corpus = json.load(open(os.path.join(FIXTURES, "corpus.json"), encoding="utf-8"))
    write_byte_level_gguf("llama3", "llama-bpe")
    write_byte_level_gguf("qwen2", "qwen2")
    with tempfile.TemporaryDirectory() as temp:
        root = args.export or temp
        if not args.export:
            export(root)
        sources = {
            "llama3": Source(AutoTokenizer.from_pretrained(os.path.join(FIXTURES, "llama3"))),
            "qwen2": Source(AutoTokenizer.from_pretrained(os.path.join(FIXTURES, "qwen2"))),
            "spm": spm_source(),
            "spm-gguf": Source(AutoTokenizer.from_pretrained(FIXTURES, gguf_file="spm.gguf")),
            "llama3-gguf": Source(AutoTokenizer.from_pretrained(FIXTURES, gguf_file="llama3.gguf")),
            "qwen2-gguf": Source(AutoTokenizer.from_pretrained(FIXTURES, gguf_file="qwen2.gguf")),
            "smollm2": smollm2_source(),
        }
        directories = {"smollm2": "smollm2-model"}
        sample = corpus[::SAMPLE_STEP]
        out = {"strings": sample, "tokenizers": {}}
        failures = []
        for name, source in sources.items():
            written = Source(AutoTokenizer.from_pretrained(os.path.join(root, directories.get(name, name))))
            skip = (lambda s: "<|endoftext|>" in s) if name == "llama3-gguf" else None
            compared = [s for s in corpus if not (skip and skip(s))]
            diffs, strings = compare(name, written, source, compared)
            failures += diffs
            if skip:
                print(f"{name}: {len(corpus) - len(compared)} corpus strings with \"<|endoftext|>\" left out "
                      f"(transformers' conversion adds that token)")
            print(f"{name}: {len(compared) - strings} of {len(compared)} corpus strings identical (ids with and "
                  f"without special tokens, decode); chat template {'identical' if not any('chat' in d for d in diffs) else 'DIFFERS'}"
                  f"{'' if written.chat(False) else ' (none)'}")
            chat = [written.chat(g) for g in (False, True)]
            out["tokenizers"][name] = {
                "ids": [written.encode(s, False) for s in sample],
                "with_special": [written.encode(s, True) for s in sample],
                "decoded": [written.decode(written.encode(s, False)) for s in sample],
                "chat_ids": [c[1] for c in chat] if chat[0] else None,
            }
            if name == "spm":
                hf = Source(AutoTokenizer.from_pretrained(os.path.join(FIXTURES, "spm")))
                differ = sum(hf.encode(s, False) != source.encode(s, False) for s in corpus)
                print(f"spm: transformers' LlamaTokenizer on the source directory differs from its tokenizer.json "
                      f"on {differ} of {len(corpus)} strings")
            if name == "smollm2":
                hf = Source(AutoTokenizer.from_pretrained(os.path.dirname(SMOLLM2_GGUF), gguf_file=os.path.basename(SMOLLM2_GGUF)))
                differ = [s for s in corpus if hf.encode(s, False) != written.encode(s, False)]
                wrong = [s for s in differ if not any(c.isdigit() for c in s)]
                print(f"smollm2: transformers' own GGUF conversion differs from the written directory on "
                      f"{len(differ)} of {len(corpus)} strings, {len(wrong)} of them without a digit")
                failures += [f"smollm2 vs transformers' GGUF conversion on a string without digits: {s!r}" for s in wrong]
        for d in failures[:20]:
            print(d, file=sys.stderr)
        if failures:
            sys.exit(f"{len(failures)} differences")
    path = os.path.join(FIXTURES, "export-parity.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({len(sample)} strings)")


if __name__ == "__main__":
    main()
