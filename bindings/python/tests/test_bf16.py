"""bf16=True (TRL's name): the configs carry it to the library, the trainers compute their matrix
products with bf16 inputs (close to fp32, not equal), and checkpoints restore it."""
import math

import pytest

import dpo
from conftest import TINY, completions


def test_bf16_is_a_config_field_with_trls_name():
    assert dpo.DPOConfig().bf16 is False          # fp32 unless asked (TRL 1.16 defaults to True)
    assert dpo.DPOConfig(bf16=True).bf16 is True
    assert dpo.DPOConfig(bf16=True).to_dict()["bf16"] is True
    assert dpo.SFTConfig(bf16=True).bf16 is True
    args = dpo.DPOConfig()
    args.bf16 = True
    assert args == dpo.DPOConfig(bf16=True)
    with pytest.raises(ValueError, match="bf16"):
        dpo.DPOConfig(bf16="yes")


def run(pairs, bf16, steps=12):
    policy, ref = dpo.Model.from_config(TINY, seed=1), dpo.Model.from_config(TINY, seed=2)
    t = dpo.DPOTrainer(policy, ref_model=ref, args=dpo.DPOConfig(learning_rate=1e-2, bf16=bf16))
    return [t.step(pairs) for _ in range(steps)]


def test_bf16_training_is_close_to_fp32_and_learns(pairs):
    fp32, bf16 = run(pairs, False), run(pairs, True)
    assert [m["loss"] for m in fp32] != [m["loss"] for m in bf16]  # the products ran in bf16
    # The first step runs on equal weights: bf16 input rounding alone (measured 3e-5 relative).
    assert math.isclose(fp32[0]["logps/chosen"], bf16[0]["logps/chosen"], rel_tol=1e-3)
    # Then the runs drift apart as AdamW amplifies small gradient differences (measured <= 1.4%).
    for a, b in zip(fp32, bf16):
        assert math.isclose(a["loss"], b["loss"], rel_tol=0.03), (a["loss"], b["loss"])
    assert bf16[-1]["loss"] < bf16[0]["loss"] * 0.5
    assert bf16[-1]["rewards/accuracies"] == 1.0


def test_bf16_checkpoint_restores_it(tmp_path, pairs):
    a = dpo.Model.from_config(TINY, seed=3)
    ta = dpo.DPOTrainer(a, args=dpo.DPOConfig(learning_rate=1e-2, bf16=True))
    for _ in range(2):
        ta.step(pairs)
    ta.save_checkpoint(tmp_path / "ckpt")
    b = dpo.Model.from_config(TINY, seed=77)
    tb = dpo.DPOTrainer(b, args=dpo.DPOConfig(learning_rate=1e-2))   # fp32 until the load
    tb.load_checkpoint(str(tmp_path / "ckpt"))
    assert [ta.step(pairs)["loss"] for _ in range(2)] == [tb.step(pairs)["loss"] for _ in range(2)]

    s = dpo.SFTTrainer(dpo.Model.from_config(TINY, seed=5), args=dpo.SFTConfig(learning_rate=1e-2, bf16=True))
    s.step(completions(pairs))
    s.save_checkpoint(tmp_path / "sft")
    s2 = dpo.SFTTrainer(dpo.Model.from_config(TINY, seed=6), args=dpo.SFTConfig(learning_rate=1e-2))
    s2.load_checkpoint(tmp_path / "sft")
    assert s2.step(completions(pairs))["loss"] == s.step(completions(pairs))["loss"]
