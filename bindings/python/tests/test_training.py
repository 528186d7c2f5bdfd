"""Learning runs and exact checkpoint resumes."""
import math

import dpo
from conftest import GOOD, TINY, completions, make_pairs


def test_dpo_learns(trainer, pairs):
    history = [trainer.step(pairs) for _ in range(30)]
    first, last = history[0], history[-1]
    assert math.isclose(first["loss"], math.log(2), rel_tol=1e-9)
    assert last["loss"] < first["loss"] * 0.5
    assert last["rewards/accuracies"] == 1.0
    assert last["rewards/margins"] > 1.0
    assert trainer.global_step == 30


def test_dpo_learns_with_reference_model_and_rpo(pairs):
    policy, ref = dpo.Model.from_config(TINY, seed=1), dpo.Model.from_config(TINY, seed=1)
    args = dpo.DPOConfig(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0], learning_rate=1e-2)
    t = dpo.DPOTrainer(policy, ref_model=ref, args=args)
    losses = [t.step(pairs)["loss"] for _ in range(20)]
    assert losses[-1] < losses[0]
    assert t.evaluate_batch(pairs)["eval_rewards/accuracies"] == 1.0


def test_checkpoint_resume_is_exact(tmp_path, pairs):
    args = dpo.DPOConfig(learning_rate=1e-2)
    a = dpo.Model.from_config(TINY, seed=3)
    ta = dpo.DPOTrainer(a, args=args)
    for _ in range(3):
        ta.step(pairs)
    ta.save_checkpoint(tmp_path / "ckpt")
    for _ in range(2):
        ta.step(pairs)
    b = dpo.Model.from_config(TINY, seed=77)
    tb = dpo.DPOTrainer(b, args=args)
    tb.load_checkpoint(str(tmp_path / "ckpt"))
    assert tb.global_step == 3
    for _ in range(2):
        tb.step(pairs)
    assert a.sequence_logps(completions(pairs)) == b.sequence_logps(completions(pairs))
    assert ta.evaluate_batch(pairs) == tb.evaluate_batch(pairs)


def test_sft_learns_and_generates(tmp_path, pairs):
    m = dpo.Model.from_config(TINY, seed=5)
    t = dpo.SFTTrainer(m, args=dpo.SFTConfig(learning_rate=1e-2, lr_scheduler_type="constant"))
    losses = [t.step(completions(pairs))["loss"] for _ in range(20)]
    assert losses[-1] < losses[0] * 0.5
    assert m.generate(pairs[0]["prompt_ids"], max_new_tokens=3, eos_token_id=[]) == pairs[0]["chosen_ids"]
    out = m.generate([p["prompt_ids"] for p in pairs], max_new_tokens=1, eos_token_id=[])
    assert out == [[GOOD]] * 4
    t.save_checkpoint(tmp_path / "sft")
    t2 = dpo.SFTTrainer(dpo.Model.from_config(TINY, seed=6), args=dpo.SFTConfig())
    t2.load_checkpoint(tmp_path / "sft")
    assert t2.global_step == 20 and t2.args.learning_rate == 2e-5  # args is what it was created with
    assert t2.evaluate_batch(completions(pairs)) == t.evaluate_batch(completions(pairs))


def test_trainer_keeps_freed_model_alive(pairs):
    m = dpo.Model.from_config(TINY, seed=8)
    t = dpo.DPOTrainer(m, args=dpo.DPOConfig(learning_rate=1e-2))
    m.close()
    for _ in range(3):
        t.step(pairs)
    assert t.global_step == 3


def test_pairs_fixture_is_learnable():
    assert all(p["chosen_ids"][0] == GOOD for p in make_pairs())
