#!/usr/bin/env python3
"""transformers reads the tokenizer files swift-dpo writes (Tokenizer.writeHuggingFaceFiles, and
LlamaModel.save for a GGUF model) as the tokenizer they came from (dev-only; the library and its
tests never need Python).

Inputs: the directories TokenizerExportTests writes when DPO_TOKENIZER_EXPORT_DIR is set (the
script runs those tests itself unless --export DIR names an existing export):

    llama3, qwen2, spm   written from Fixtures/tokenizer/<name> (tokenizer.json sources)
    spm-gguf             written from Fixtures/tokenizer/spm.gguf (GGUF "llama")
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests", "DPOTests", "Fixtures", "tokenizer")
SMOLLM2_GGUF = os.environ.get("DPO_TEST_GGUF") or os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
# The same messages as TokenizerExportTests.messages.
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there 2024!"},
            {"role": "assistant", "content": "Hello <|im_end|> back."}]
# Every SAMPLE_STEP-th corpus string goes into the committed fixture.
SAMPLE_STEP = 130


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
    with tempfile.TemporaryDirectory() as temp:
        root = args.export or temp
        if not args.export:
            export(root)
        sources = {
            "llama3": Source(AutoTokenizer.from_pretrained(os.path.join(FIXTURES, "llama3"))),
            "qwen2": Source(AutoTokenizer.from_pretrained(os.path.join(FIXTURES, "qwen2"))),
            "spm": spm_source(),
            "spm-gguf": Source(AutoTokenizer.from_pretrained(FIXTURES, gguf_file="spm.gguf")),
            "smollm2": smollm2_source(),
        }
        directories = {"smollm2": "smollm2-model"}
        sample = corpus[::SAMPLE_STEP]
        out = {"strings": sample, "tokenizers": {}}
        failures = []
        for name, source in sources.items():
            written = Source(AutoTokenizer.from_pretrained(os.path.join(root, directories.get(name, name))))
            diffs, strings = compare(name, written, source, corpus)
            failures += diffs
            print(f"{name}: {len(corpus) - strings} of {len(corpus)} corpus strings identical (ids with and "
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
