#!/usr/bin/env python3
"""Golden token ids for the engine's Tokenizer (Sources/DPO/Text), from Hugging Face `tokenizers`
(dev-only; the library and its tests never need Python).

Writes into Tests/DPOTests/Fixtures/tokenizer/:

  corpus.json          the test strings (>= 5,000): English prose, code, digits and number runs,
                       whitespace runs and newlines (\\r\\n, tabs, trailing spaces), CJK, emoji and
                       ZWJ sequences, combining marks, RTL text, edge cases (lone combining marks,
                       noncharacters, U+FFFD, private use, very long words, control characters) and
                       text containing special tokens. Deterministic (seeded).
  spm/                 a SentencePiece-style BPE tokenizer (Llama 2 layout: byte_fallback, the
                       normalizer Prepend("▁") + Replace(" ", "▁"), <unk>/<s>/</s>, "<s> $A"),
                       trained tiny here on the corpus: tokenizer.json, tokenizer_config.json,
                       special_tokens_map.json.
  spm.gguf             the same vocabulary as a vocab-only GGUF (gguf-py): tokenizer.ggml.model
                       "llama", tokens, scores, token types, special ids, add_bos/add_eos, the
                       chat template. No merges: loaders rebuild them from the scores.
  llama3/, qwen2/      tiny byte-level BPE tokenizers with the Llama 3 and Qwen2 split regexes
                       (Qwen2 with its NFC normalizer), trained here: tokenizer.json (+ config).
  <name>.golden.json   per tokenizer: "ids" (encode without special tokens, every corpus string; for
                       spm-gguf the first 2,600), packed to keep the fixtures small: one line per
                       string, each id as `width` characters of the base-64 alphabet ID_DIGITS, most
                       significant first), "with_special" (encode with special tokens, the first 64
                       strings, plain lists),
                       "decoded" ([index, text] where decode(ids) != the string) and
                       "decoded_skip" ([index, text]: decode(ids, skip_special_tokens=True) for
                       strings whose ids contain a special token).

The oracles:
  smollm2   SmolLM2-135M-Instruct's tokenizer, read from the GGUF at
            .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf (git-ignored; this tokenizer is skipped
            with a note when the file is absent). transformers' GGUF conversion
            (AutoTokenizer.from_pretrained(dir, gguf_file=...)) does NOT reproduce SmolLM2: it has
            no split regex for `tokenizer.ggml.pre` = "smollm" and falls back to GPT2Tokenizer's
            ByteLevel pre-tokenizer, which keeps digit runs together (" 2024" is one word), while
            SmolLM2's own tokenizer.json pre-tokenizes with Sequence[Digits(individual_digits=true),
            ByteLevel(add_prefix_space=false, use_regex=true)]. So the oracle `tokenizers.Tokenizer`
            is built here from the GGUF's tokens and merges with SmolLM2's real pre-tokenizer,
            ByteLevel decoder, no post-processor, and its control tokens (token type 3) as special
            added tokens (normalized=false), as in its tokenizer.json. The script checks and
            prints the transformers difference. The built oracle is also saved to
            .cache/tokenizers/smollm2/tokenizer.json (git-ignored) for the benchmark.
  spm       tokenizers on spm/tokenizer.json.
  spm-gguf  transformers: AutoTokenizer.from_pretrained(dir, gguf_file="spm.gguf") (its
            LlamaTokenizer: Metaspace(prepend_scheme="first", split=false), merges rebuilt from
            the scores by `generate_merges`, BOS added per add_bos_token).
  llama3, qwen2   tokenizers on their tokenizer.json.

Run from the repository root:
    .venv-oracle/bin/python tools/make_tokenizer_fixtures.py
"""
import json
import os
import random
import sys
import tempfile

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "DPOTests", "Fixtures", "tokenizer")
SMOLLM2_GGUF = os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
                 "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# MARK: - Corpus

PROSE = """It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of
foolishness. The quick brown fox jumps over the lazy dog. I'm sure you'll agree: we've seen it, they're
here, and she'd know. DON'T SHOUT! He said "hello" -- then left... Prices rose 3.5% in Q3 2024 (up from
2.1%). E-mail me at someone@example.com or visit https://example.org/path?q=1&r=2#frag. Mr. O'Neil's
cat isn't theirs; it's ours. Training language models with direct preference optimization compares a
chosen and a rejected answer for the same prompt. The reference model stays frozen while the policy
learns. Numbers like 1,000,000 and 3.14159265358979 and 007 and 2^31-1 = 2147483647 appear in text.
A tokenizer splits text into words, then words into subword units with byte pair encoding."""

CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "let values = [1, 2, 3].map { $0 * $0 }\nprint(values)",
    '{"key": "value", "list": [1, 2.5, -3e10], "nested": {"a": null}}',
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }\r\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "    if x == y:\n        pass\n    else:\n        raise ValueError('bad')\n",
    "x = a if b else c  # comment with trailing spaces   \n",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "<div class=\"a\">&nbsp;&lt;tag&gt;</div>",
    "$ ls -la /usr/bin | grep -E '^d' && echo done\n",
    "@@ -1,3 +1,4 @@\n-old line\n+new line\n context\n",
]

WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r\n\r\n", " \n ", "\t\t", " \t ", "\u00a0", "\u3000",
              "\u2009", "\u2028", "\u0085", "\x0b", "\x0c", "\r", "    ", "        ", " \r\n  ", "\n \n"]

CJK = ["你好，世界！", "我们正在训练一个语言模型。", "日本語のテキストです。", "カタカナとひらがな", "한국어 텍스트입니다.",
       "漢字かな交じり文", "中文，English 混合 text。", "東京タワー333メートル", "これは１２３です"]

EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "1️⃣", "❤️", "🏳️‍🌈", "🧑🏾‍💻", "🤖 robots", "✨🎉✨", "👩‍❤️‍💋‍👨"]

COMBINING = ["e\u0301", "n\u0303o", "a\u0308\u0304", "\u0301", "\u0301abc", "Z\u0351\u0352\u0353\u0354a\u0355\u0356l\u0357go",
             "caf\u00e9 vs cafe\u0301", "\u0915\u094d\u0937", "\u0e01\u0e34\u0e19", "o\u0338", "\u20dd"]

RTL = ["مرحبا بالعالم", "שלום עולם", "العدد ١٢٣ و 456", "\u200fRTL mark\u200e", "עברית English mixed", "سلام 👋",
       "\u202eevil override\u202c"]

EDGE = ["\ufffd", "\ufffe", "\uffff", "\ufdd0", "\U0001fffe", "\U0010ffff", "\ue000", "\uf8ff", "\U000f0000",
        "\ufeff", "\u200b", "\u200d", "\x00", "\x1b[31m", "\x7f", "\x01\x02", "a" * 300, "x" * 1000,
        "Supercalifragilisticexpialidocious" * 5, "ſ", "'ſ", "ǅungla", "ⅫⅣ", "½ ¾ ²³", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "Ａ Ｂ Ｃ",
        "İstanbul", "straße", "ﬁne", "\u0130i\u0307", "٣٤٥", "໒໓", "𝟙𝟚𝟛"]

SPECIAL_TEXT = ["<|im_start|>user\nHello!<|im_end|>\n", "text<|endoftext|>more", "<|im_start|><|im_end|>",
                "a <|im_start|> b", "<|im_start", "im_end|>", "<s>hello</s>", " <s> </s> ", "<unk>", "x<s>y",
                "<|begin_of_text|>Hi<|end_of_text|>", "  <mask>  tail", "say hello world now", "hello world",
                "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
                "<s>[INST] question [/INST] answer</s>", "<<|im_start|>>", "<|endoftext|><|endoftext|>"]

CONTRACTIONS = ["don't", "I'M", "'S", "we'll've", "y'all'd", "'re'", "rock'n'roll", "it's", "IT'S", "o'clock",
                "''", "'", "can't stop won't stop", "She'LL", "'T is"]

NUMBERS = ["0", "12", "123", "1234", "12345678901234567890", "3.14", "1,000,000", "v2.0.1", "2024-06-01",
           "+1 (555) 012-3456", "0x1F", "1e-9", " 42", "  7", "x1y22z333", "١٢٣", "۱۲۳", "१२३"]


def make_corpus():
    rng = random.Random(20240611)
    words = PROSE.replace("\n", " ").split(" ")
    fixed = (CODE + WHITESPACE + CJK + EMOJI + COMBINING + RTL + EDGE + SPECIAL_TEXT + CONTRACTIONS + NUMBERS
             + PROSE.split("\n") + [PROSE, ""])
    pools = [CODE, WHITESPACE, CJK, EMOJI, COMBINING, RTL, EDGE[:16], SPECIAL_TEXT, CONTRACTIONS, NUMBERS]
    corpus = list(fixed)
    seen = set(corpus)
    while len(corpus) < 5200:
        kind = rng.random()
        if kind < 0.35:  # prose fragment, maybe with odd spacing
            start = rng.randrange(len(words))
            text = " ".join(words[start:start + rng.randint(1, 12)])
            if rng.random() < 0.3:
                text = rng.choice(["", " ", "  ", "\t", "\n"]) + text + rng.choice(["", " ", "   ", "\n", "\r\n", " \n"])
        elif kind < 0.45:  # number runs
            text = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 14)))
            text = rng.choice(["", " ", "$", "x", "v", "#"]) + text + rng.choice(["", ".", " ", "%", "k", ".5"])
        elif kind < 0.55:  # random code points from interesting blocks
            blocks = [(0x20, 0x7e), (0xa0, 0x17f), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x5ff),
                      (0x600, 0x6ff), (0x900, 0x97f), (0x2000, 0x206f), (0x3040, 0x30ff), (0x4e00, 0x4fff),
                      (0xac00, 0xacff), (0xe000, 0xe0ff), (0xfe00, 0xfe0f), (0xfff0, 0xfffd), (0x1f300, 0x1f64f)]
            n = rng.randint(1, 16)
            chars = []
            for _ in range(n):
                lo, hi = rng.choice(blocks)
                chars.append(chr(rng.randint(lo, hi)))
            text = "".join(chars)
        else:  # a mix of fragments from every pool
            parts = [rng.choice(rng.choice(pools)) for _ in range(rng.randint(2, 5))]
            if rng.random() < 0.5:
                start = rng.randrange(len(words))
                parts.insert(rng.randint(0, len(parts)), " ".join(words[start:start + rng.randint(1, 5)]))
            text = rng.choice(["", " ", ""]).join(parts)
        if text not in seen:
            seen.add(text)
            corpus.append(text)
    return corpus


# MARK: - Tokenizers

def byte_tokens():
    return [f"<0x{b:02X}>" for b in range(256)]


def train_spm(corpus):
    """Llama-2 layout: vocabulary <unk>, <s>, </s>, the 256 byte tokens, then the trained pieces."""
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer_tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens(),
                                  limit_alphabet=90, show_progress=False)
    trainer_tok.train_from_iterator(corpus * 2, trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    vocab, merges = model["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ["<unk>", "<s>", "</s>"]])
    # Added tokens beyond the base vocabulary, to exercise the AddedToken flags.
    tok.add_special_tokens([AddedToken("<|im_start|>", special=True, normalized=False),
                            AddedToken("<|im_end|>", special=True, normalized=False),
                            AddedToken("<mask>", special=True, normalized=False, lstrip=True, rstrip=True)])
    tok.add_tokens([AddedToken("hello world", special=False, normalized=True)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    return tok


def train_byte_level(corpus, split, specials, normalizer=None, ignore_merges=False, bos=None):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus * 2, trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def smollm2_oracle():
    reader = gguf.GGUFReader(SMOLLM2_GGUF)
    f = reader.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    merges = f["tokenizer.ggml.merges"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    assert f["tokenizer.ggml.model"].contents() == "gpt2" and f["tokenizer.ggml.pre"].contents() == "smollm"
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    return tok


def transformers_smollm2_check(oracle, corpus):
    """How many corpus strings transformers' own GGUF conversion tokenizes differently."""
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(os.path.dirname(SMOLLM2_GGUF), gguf_file=os.path.basename(SMOLLM2_GGUF))
    bad = [s for s in corpus if hf.encode(s, add_special_tokens=False) != oracle.encode(s, add_special_tokens=False).ids]
    print(f"smollm2: transformers' GGUF conversion differs from SmolLM2's real pre-tokenizer on {len(bad)} of "
          f"{len(corpus)} strings (e.g. {bad[:2]!r})")


def vocab_only_gguf_writer(path):
    """A gguf-py writer for a vocab-only file: the tiny llama hyperparameters loaders ask for,
    no tensors; the caller adds the tokenizer keys."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_layer_norm_rms_eps(1e-5)
    return w


def write_spm_gguf(tok, path):
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    added = {a["content"]: a for a in data["added_tokens"]}
    for a in data["added_tokens"]:
        if a["id"] >= len(tokens):
            tokens.extend([None] * (a["id"] + 1 - len(tokens)))
        tokens[a["id"]] = a["content"]
    scores, types = [], []
    for i, t in enumerate(tokens):
        if t in added:
            types.append(3 if added[t]["special"] else 4)
            scores.append(0.0)
        elif t.startswith("<0x") and len(t) == 6:
            types.append(6)
            scores.append(0.0)
        else:
            types.append(1)
            scores.append(-float(i))  # the merge order: pieces created earlier score higher
    w = vocab_only_gguf_writer(path)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(vocab["<s>"])
    w.add_eos_token_id(vocab["</s>"])
    w.add_unk_token_id(vocab["<unk>"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.add_chat_template(CHAT_TEMPLATE)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


ID_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"


def pack_ids(ids):
    """Every id as `width` base-64 digits (ID_DIGITS), one line per string."""
    top = max((max(x) for x in ids if x), default=0)
    width = 1
    while 64 ** width <= top:
        width += 1

    def digits(v):
        return "".join(ID_DIGITS[(v >> (6 * k)) & 63] for k in reversed(range(width)))
    return width, "\n".join("".join(digits(v) for v in x) for x in ids)


def goldens(encode, decode, special_ids, corpus):
    ids = [encode(s, False) for s in corpus]
    decoded = [[i, decode(x, False)] for i, x in enumerate(ids) if decode(x, False) != corpus[i]]
    skip = [[i, decode(x, True)] for i, x in enumerate(ids) if any(t in special_ids for t in x)]
    width, packed = pack_ids(ids)
    return {"count": len(ids), "width": width, "ids": packed, "with_special": [encode(s, True) for s in corpus[:64]], "decoded": decoded, "decoded_skip": skip}


def tokenizers_goldens(tok, corpus):
    data = json.loads(tok.to_str())
    special = {a["id"] for a in data["added_tokens"] if a["special"]}
    return goldens(lambda s, a: tok.encode(s, add_special_tokens=a).ids,
                   lambda x, skip: tok.decode(x, skip_special_tokens=skip), special, corpus)


def save_dir(tok, name, config):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"), pretty=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as fh:
        json.dump(config, fh, indent=2, ensure_ascii=False)
    specials = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if config.get(k)}
    with open(os.path.join(d, "special_tokens_map.json"), "w") as fh:
        json.dump(specials, fh, indent=2, ensure_ascii=False)


def write_golden(name, data):
    with open(os.path.join(OUT, f"{name}.golden.json"), "w") as fh:
        json.dump(data, fh, ensure_ascii=False, separators=(",", ":"))
    print(f"{name}: {data['count']} strings, {len(data['ids'])} id characters, {len(data['decoded'])} strings decode differently, "
          f"{len(data['decoded_skip'])} with special tokens")


def main():
    os.makedirs(OUT, exist_ok=True)
    corpus = make_corpus()
    with open(os.path.join(OUT, "corpus.json"), "w") as fh:
        json.dump(corpus, fh, ensure_ascii=False, indent=0)
    print(f"corpus: {len(corpus)} strings, {sum(len(s) for s in corpus)} characters")

    spm = train_spm(corpus)
    save_dir(spm, "spm", {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                          "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False,
                          "legacy": True, "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer",
                          "chat_template": CHAT_TEMPLATE})
    write_golden("spm", tokenizers_goldens(Tokenizer.from_file(os.path.join(OUT, "spm", "tokenizer.json")), corpus))

    gguf_path = os.path.join(OUT, "spm.gguf")
    write_spm_gguf(spm, gguf_path)
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(OUT, gguf_file="spm.gguf")
    special = set(hf.all_special_ids) | {i for i, t in hf.added_tokens_decoder.items() if t.special}
    write_golden("spm-gguf", goldens(lambda s, a: hf.encode(s, add_special_tokens=a),
                                     lambda x, skip: hf.decode(x, skip_special_tokens=skip), special, corpus[:2600]))

    llama3 = train_byte_level(corpus, LLAMA3_SPLIT, ["<|begin_of_text|>", "<|end_of_text|>"], ignore_merges=True,
                              bos="<|begin_of_text|>")
    save_dir(llama3, "llama3", {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                                "clean_up_tokenization_spaces": True, "model_max_length": 131072,
                                "tokenizer_class": "PreTrainedTokenizerFast"})
    write_golden("llama3", tokenizers_goldens(llama3, corpus))

    qwen2 = train_byte_level(corpus, QWEN2_SPLIT, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                             normalizer=normalizers.NFC())
    save_dir(qwen2, "qwen2", {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                              "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE,
                              "tokenizer_class": "Qwen2Tokenizer"})
    write_golden("qwen2", tokenizers_goldens(qwen2, corpus))

    if os.path.exists(SMOLLM2_GGUF):
        oracle = smollm2_oracle()
        cache = os.path.join(ROOT, ".cache", "tokenizers", "smollm2")
        os.makedirs(cache, exist_ok=True)
        oracle.save(os.path.join(cache, "tokenizer.json"))
        write_golden("smollm2", tokenizers_goldens(oracle, corpus))
        transformers_smollm2_check(oracle, corpus)
    else:
        print(f"note: {SMOLLM2_GGUF} is absent; smollm2.golden.json not regenerated", file=sys.stderr)


if __name__ == "__main__":
    main()
