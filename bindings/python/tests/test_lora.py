"""LoRA: peft_config on DPOTrainer / SFTTrainer, load_adapter, save_pretrained of adapter files,
merge_and_unload, and bad configs."""
import json
import math
import os

import pytest

import dpo
from conftest import TINY, completions, make_pairs


def test_dpo_with_peft_config_trains_only_the_adapter(tmp_path):
    pairs = make_pairs()
    model = dpo.Model.from_config(TINY, seed=1)
    base = dpo.Model.from_config(TINY, seed=1)
    args = dpo.DPOConfig(learning_rate=1e-2, lr_scheduler_type="constant")
    t = dpo.DPOTrainer(model, args=args, peft_config=dpo.LoraConfig(r=4, lora_alpha=16, target_modules="all-linear"))
    assert model.num_adapter_parameters() == 2 * (2 * 128 + 2 * 96 + 3 * 192)
    assert model.peft_config["r"] == 4 and model.peft_config["task_type"] == "CAUSAL_LM"
    history = [t.step(pairs) for _ in range(20)]
    assert math.isclose(history[0]["loss"], math.log(2), rel_tol=1e-9)  # reference = adapter off = policy
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["rewards/accuracies"] == 1.0
    # The adapter's gradient buffer is what the distributed grain exposes.
    with t.gradients() as g:
        assert len(g) == model.num_adapter_parameters()

    # save_pretrained of a model with an adapter writes PEFT's adapter files.
    model.save_pretrained(tmp_path / "adapter")
    assert sorted(os.listdir(tmp_path / "adapter")) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

    # load_adapter on a fresh copy of the base: the same log-probs; then merge_and_unload.
    items = completions(pairs)
    trained = model.sequence_logps(items)
    base.load_adapter(tmp_path / "adapter")
    assert base.sequence_logps(items) == trained
    assert base.merge_and_unload() is base
    assert base.peft_config is None and base.num_adapter_parameters() == 0
    assert max(abs(a - b) for a, b in zip(base.sequence_logps(items), trained)) < 1e-4
    base.save_pretrained(tmp_path / "merged")
    assert os.path.exists(tmp_path / "merged" / "model.safetensors")


def test_unload_removes_the_adapter_without_merging():
    items = completions(make_pairs())
    model = dpo.Model.from_config(TINY, seed=2)
    base = model.sequence_logps(items)
    model.add_adapter(dpo.LoraConfig(r=2, init_lora_weights=False), seed=3)
    assert model.sequence_logps(items) != base
    assert model.unload() is model and model.num_adapter_parameters() == 0
    assert model.sequence_logps(items) == base
    with pytest.raises(dpo.WrongStateError, match="no LoRA adapter"):
        model.unload()


def test_loaded_adapter_trains_against_its_copy(tmp_path):
    pairs = make_pairs()
    model = dpo.Model.from_config(TINY, seed=2).add_adapter(dpo.LoraConfig(r=2, init_lora_weights=False), seed=3)
    t = dpo.DPOTrainer(model, args=dpo.DPOConfig(learning_rate=1e-2))
    first = t.step(pairs)
    assert abs(first["rewards/margins"]) < 1e-9  # TRL's "ref" adapter: the initial adapter
    assert t.step(pairs)["rewards/margins"] != 0


def test_sft_with_peft_config():
    model = dpo.Model.from_config(TINY, seed=1)
    t = dpo.SFTTrainer(model, args=dpo.SFTConfig(learning_rate=1e-2),
                       peft_config=dpo.LoraConfig(r=2, lora_dropout=0.1, use_rslora=True))
    items = completions(make_pairs())
    losses = [t.step(items)["loss"] for _ in range(10)]
    assert losses[-1] < losses[0]
    assert model.num_adapter_parameters() == 2 * (2 * 32 + 2 * 24)  # 2 layers x (q: r (16 + 16), v: r (16 + 8))


def test_bad_configs_are_refused(tmp_path):
    model = dpo.Model.from_config(TINY, seed=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'rank'"):
        dpo.LoraConfig(rank=4)
    with pytest.raises(dpo.InvalidArgumentError, match="modules_to_save"):
        dpo.DPOTrainer(model, peft_config=dpo.LoraConfig(modules_to_save=["lm_head"]))
    with pytest.raises(dpo.InvalidArgumentError, match="lm_head"):
        dpo.DPOTrainer(model, peft_config=dpo.LoraConfig(target_modules=["q_proj", "lm_head"]))
    with pytest.raises(dpo.InvalidArgumentError, match="use_dora"):
        dpo.SFTTrainer(model, peft_config=dpo.LoraConfig(use_dora=True))
    with pytest.raises(dpo.InvalidArgumentError, match="lora_dropout"):
        model.add_adapter(dpo.LoraConfig(lora_dropout=1.5))
    with pytest.raises(dpo.InvalidArgumentError, match="peft_config must be a dpo.LoraConfig"):
        dpo.DPOTrainer(model, peft_config={"r": 8})
    assert model.num_adapter_parameters() == 0  # nothing was attached by the refused calls
    with pytest.raises(dpo.DPOIOError, match="does not exist"):
        model.load_adapter(tmp_path / "missing")
    with pytest.raises(dpo.WrongStateError, match="no LoRA adapter"):
        model.merge_and_unload()
    model.add_adapter(dpo.LoraConfig())
    with pytest.raises(dpo.WrongStateError, match="merge_and_unload"):
        model.save_pretrained(tmp_path / "m.gguf")
    with pytest.raises(dpo.InvalidArgumentError, match="already has a LoRA adapter"):
        dpo.DPOTrainer(model, peft_config=dpo.LoraConfig())
