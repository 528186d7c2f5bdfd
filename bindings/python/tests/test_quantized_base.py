"""keep_base_quantized: a GGUF base whose matrices stay quantized trains a LoRA adapter; what needs
the fp32 weights is refused; dequantized() gives the fp32 model (merge, save)."""
import math
import os

import pytest

import dpo
from conftest import completions, make_pairs

# Rows of 32 and 64 values: whole Q8_0 blocks.
SMALL = {"vocab_size": 32, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}


@pytest.fixture
def q8_file(tmp_path):
    path = str(tmp_path / "base-q8.gguf")
    with dpo.Model.from_config(SMALL, seed=3) as m:
        m.save_pretrained(path, dtype="q8_0")
    return path


def _close(a, b, rel):
    return all(math.isclose(x, y, rel_tol=rel, abs_tol=rel) for x, y in zip(a, b))


def test_quantized_base_equals_the_fp32_model_and_trains_lora(q8_file, tmp_path):
    items = completions(make_pairs())
    fp = dpo.Model.from_pretrained(q8_file)
    q = dpo.Model.from_pretrained(q8_file, keep_base_quantized=True)
    assert q.is_quantized and not fp.is_quantized and fp.quantized_bytes == 0
    assert q.num_parameters() == fp.num_parameters()
    norms = 2 * 2 * 32 + 32
    assert q.quantized_bytes == (fp.num_parameters() - norms) // 32 * 34  # Q8_0: 34 bytes per 32 weights
    assert _close(q.sequence_logps(items), fp.sequence_logps(items), 1e-6)
    assert q.generate([1, 2, 3], max_new_tokens=6, eos_token_id=[]) == fp.generate([1, 2, 3], max_new_tokens=6, eos_token_id=[])

    args = dpo.DPOConfig(learning_rate=1e-2, lr_scheduler_type="constant")
    t = dpo.DPOTrainer(q, args=args, peft_config=dpo.LoraConfig(r=4, lora_alpha=16, target_modules="all-linear"))
    history = [t.step(make_pairs()) for _ in range(20)]
    assert math.isclose(history[0]["loss"], math.log(2), rel_tol=1e-9)  # the reference: the base, adapter off
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["rewards/accuracies"] == 1.0
    trained = q.sequence_logps(items)

    # The adapter files, on the fp32-loaded base, compute the same.
    q.save_pretrained(tmp_path / "adapter")
    assert sorted(os.listdir(tmp_path / "adapter")) == ["adapter_config.json", "adapter_model.safetensors"]
    fp.load_adapter(tmp_path / "adapter")
    assert _close(fp.sequence_logps(items), trained, 1e-6)

    # dequantized(): an fp32 copy with the adapter, on which merge_and_unload and saving work.
    with pytest.raises(dpo.WrongStateError, match="keep_base_quantized"):
        q.merge_and_unload()
    full = q.dequantized()
    assert not full.is_quantized and q.is_quantized
    assert _close(full.sequence_logps(items), trained, 1e-6)
    full.merge_and_unload().save_pretrained(tmp_path / "merged.gguf")
    assert _close(dpo.Model.from_pretrained(tmp_path / "merged.gguf").sequence_logps(items), trained, 1e-4)


def test_lora_checkpoint_on_a_quantized_base_resumes_bit_identically(q8_file, tmp_path):
    pairs = make_pairs()
    args = dpo.DPOConfig(learning_rate=1e-2, lr_scheduler_type="cosine", max_steps=6, bf16=True)
    peft = dpo.LoraConfig(r=2, lora_dropout=0.1, target_modules=["q_proj", "down_proj"])
    a = dpo.Model.from_pretrained(q8_file, keep_base_quantized=True)
    ta = dpo.DPOTrainer(a, args=args, peft_config=peft)
    for _ in range(3):
        ta.step(pairs)
    ta.save_checkpoint(tmp_path / "ckpt")
    straight = [ta.step(pairs) for _ in range(3)]

    b = dpo.Model.from_pretrained(q8_file, keep_base_quantized=True)
    tb = dpo.DPOTrainer(b, args=args, peft_config=peft)
    tb.load_checkpoint(tmp_path / "ckpt")
    resumed = [tb.step(pairs) for _ in range(3)]
    assert resumed == straight
    assert b.sequence_logps(completions(pairs)) == a.sequence_logps(completions(pairs))


def test_checkpoints_with_a_reference_kept_quantized(q8_file, tmp_path):
    """A quantized ref_model is not written to checkpoints (it cannot change) and loading keeps the
    trainer's own; a checkpoint with an fp32 reference loads into a trainer whose reference is
    quantized (the reference is replaced); LoRA with PEFT's default target_modules resumes."""
    pairs = make_pairs()
    args = dpo.DPOConfig(learning_rate=1e-2, lr_scheduler_type="constant")
    Q = lambda: dpo.Model.from_pretrained(q8_file, keep_base_quantized=True)
    F = lambda: dpo.Model.from_pretrained(q8_file)
    a = dpo.DPOTrainer(Q(), ref_model=Q(), args=args, peft_config=dpo.LoraConfig(r=4))
    a.step(pairs)
    a.save_checkpoint(tmp_path / "q-ref")
    assert not os.path.exists(tmp_path / "q-ref" / "reference")
    straight = a.step(pairs)
    b = dpo.DPOTrainer(Q(), ref_model=Q(), args=args, peft_config=dpo.LoraConfig(r=4))
    b.load_checkpoint(tmp_path / "q-ref")
    assert b.step(pairs) == straight

    c = dpo.DPOTrainer(Q(), ref_model=F(), args=args, peft_config=dpo.LoraConfig(r=4))
    c.step(pairs)
    c.save_checkpoint(tmp_path / "f-ref")
    straight = c.step(pairs)
    d = dpo.DPOTrainer(Q(), ref_model=Q(), args=args, peft_config=dpo.LoraConfig(r=4))
    d.load_checkpoint(tmp_path / "f-ref")
    assert d.step(pairs) == straight


def test_a_failed_constructor_leaves_no_adapter(q8_file):
    q = dpo.Model.from_pretrained(q8_file, keep_base_quantized=True)
    with pytest.raises(dpo.DPOError):
        dpo.DPOTrainer(q, args=dpo.DPOConfig(), train_dataset=[{"prompt": "a", "chosen": "b", "rejected": "c"}],
                       peft_config=dpo.LoraConfig(r=2))  # text rows, and the model has no tokenizer
    assert q.num_adapter_parameters() == 0
    with pytest.raises(dpo.DPOError):
        dpo.SFTTrainer(q, args=dpo.SFTConfig(), train_dataset=[{"text": "a"}], peft_config=dpo.LoraConfig(r=2))
    assert q.num_adapter_parameters() == 0
    dpo.DPOTrainer(q, args=dpo.DPOConfig(), peft_config=dpo.LoraConfig(r=2))  # the model takes an adapter again


def test_what_needs_fp32_weights_is_refused(q8_file, tmp_path):
    q = dpo.Model.from_pretrained(q8_file, keep_base_quantized=True)
    with pytest.raises(dpo.WrongStateError, match="keep_base_quantized"):
        dpo.DPOTrainer(q, args=dpo.DPOConfig())  # full fine-tuning
    with pytest.raises(dpo.WrongStateError, match="keep_base_quantized"):
        dpo.SFTTrainer(q, args=dpo.SFTConfig())
    with pytest.raises(dpo.WrongStateError, match="keep_base_quantized"):
        q.save_pretrained(tmp_path / "base")
    with pytest.raises(dpo.WrongStateError, match="keep_base_quantized"):
        q.save_pretrained(tmp_path / "base.gguf")
    with pytest.raises(dpo.WrongStateError, match="sync_ref_model's reference needs the fp32 weights"):
        dpo.DPOTrainer(dpo.Model.from_pretrained(q8_file), ref_model=q, args=dpo.DPOConfig(sync_ref_model=True))
    with pytest.raises(dpo.InvalidArgumentError, match="sync_ref_model cannot be used with LoRA"):
        dpo.DPOTrainer(q, args=dpo.DPOConfig(sync_ref_model=True), peft_config=dpo.LoraConfig())
    q.add_adapter(dpo.LoraConfig(r=2))
    with pytest.raises(dpo.WrongStateError, match="keep_base_quantized.*dequantize"):
        q.save_pretrained(tmp_path / "adapted.gguf")  # the advice that works: dequantize, not merge


def test_bad_keep_base_quantized_arguments(tmp_path):
    with pytest.raises(dpo.InvalidArgumentError, match="keep_base_quantized"):
        dpo.Model.from_pretrained("x.gguf", keep_base_quantized="yes")
    with dpo.Model.from_config(SMALL, seed=1) as m:
        m.save_pretrained(tmp_path / "hf")
    with pytest.raises(dpo.InvalidArgumentError, match="Hugging Face model directory"):
        dpo.Model.from_pretrained(tmp_path / "hf", keep_base_quantized=True)
    with pytest.raises(dpo.DPOIOError):
        dpo.Model.from_pretrained(tmp_path / "missing.gguf", keep_base_quantized=True)
