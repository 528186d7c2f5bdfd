"""The public API named in issue 4: models, configs, trainers, metrics, threads, version."""
import math

import pytest

import dpo
from conftest import TINY, VOCAB, completions, make_pairs

TRL_METRICS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
               "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "entropy",
               "mean_token_accuracy", "grad_norm", "learning_rate", "num_tokens"]


def test_version_and_threads():
    assert dpo.__version__ == "0.2.0"
    assert dpo.ABI_VERSION == 1
    n = dpo.get_num_threads()
    assert n >= 1
    dpo.set_num_threads(1)
    assert dpo.get_num_threads() == 1
    with pytest.raises(dpo.InvalidArgumentError, match="n = 0"):
        dpo.set_num_threads(0)
    dpo.set_num_threads(n)


def test_model_config_and_parameters(model):
    c = model.config
    for key, value in TINY.items():
        assert c[key] == value
    assert c["model_type"] == "llama" and c["tie_word_embeddings"] is False
    h, i, v, kv = 16, 32, VOCAB, 8
    per_layer = 2 * h + h * h + 2 * kv * h + h * h + 3 * i * h
    assert model.num_parameters() == 2 * v * h + 2 * per_layer + h
    assert "llama" in repr(model)


def test_from_config_defaults_and_seed():
    a = dpo.Model.from_config(TINY, seed=3)
    b = dpo.Model.from_config(TINY, seed=3)
    c = dpo.Model.from_config(dict(TINY, tie_word_embeddings=True), seed=4)
    batch = completions(make_pairs())
    assert a.sequence_logps(batch) == b.sequence_logps(batch)
    assert c.num_parameters() == a.num_parameters() - VOCAB * 16
    assert c.config["rms_norm_eps"] == 1e-6  # transformers' default


def test_save_and_load(tmp_path, model):
    batch = completions(make_pairs())
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").exists() and (tmp_path / "m" / "model.safetensors").exists()
    loaded = dpo.Model.from_pretrained(str(tmp_path / "m"))
    assert loaded.sequence_logps(batch) == model.sequence_logps(batch)
    assert loaded.config == model.config


def test_sequence_logps(model):
    pairs = make_pairs()
    out = model.sequence_logps(completions(pairs))
    assert len(out) == 4 and all(isinstance(x, float) and x < 0 for x in out)
    # A completion's log-prob is the sum of its tokens' log-probs.
    p = pairs[0]["prompt_ids"]
    c = pairs[0]["chosen_ids"]
    parts = model.sequence_logps([{"prompt_ids": p, "completion_ids": c[:1]},
                                  {"prompt_ids": p + c[:1], "completion_ids": c[1:]}])
    assert math.isclose(out[0], sum(parts), rel_tol=1e-5)


def test_numpy_inputs(model):
    np = pytest.importorskip("numpy")
    pairs = make_pairs()
    as_np = [{k: np.array(v, dtype=np.int64) for k, v in p.items()} for p in pairs]
    assert model.sequence_logps(completions(as_np)) == model.sequence_logps(completions(pairs))
    assert model.generate(np.array([1, 2, 3]), max_new_tokens=3) == model.generate([1, 2, 3], max_new_tokens=3)
    assert model.generate(np.array([[1, 2], [3, 4]]), max_new_tokens=2) == model.generate([[1, 2], [3, 4]], max_new_tokens=2)


def test_generate(model):
    one = model.generate([1, 2, 3], max_new_tokens=5, eos_token_id=[])
    assert len(one) == 5 and all(0 <= t < VOCAB for t in one)
    many = model.generate([[1, 2, 3], [4]], max_new_tokens=4, eos_token_id=[])
    assert len(many) == 2 and many[0] == one[:4]
    stop = one[-1]
    assert model.generate([1, 2, 3], max_new_tokens=5, eos_token_id=stop) == one[:one.index(stop) + 1]
    assert model.generate([1, 2, 3], max_new_tokens=0) == []
    sampled = model.generate([1, 2, 3], max_new_tokens=8, temperature=0.9, top_k=10, top_p=0.9, seed=5)
    assert 1 <= len(sampled) <= 8 and sampled == model.generate([1, 2, 3], max_new_tokens=8, temperature=0.9, top_k=10, top_p=0.9, seed=5)


def test_dpo_config_defaults_are_trl():
    c = dpo.DPOConfig()
    assert c.beta == 0.1 and c.loss_type == ["sigmoid"] and c.loss_weights is None
    assert c.label_smoothing == 0 and c.f_divergence_type == "reverse_kl" and c.ld_alpha is None
    assert c.max_length == 1024 and c.truncation_mode == "keep_start"
    assert c.learning_rate == 1e-6 and c.lr_scheduler_type == "linear" and c.max_grad_norm == 1
    assert c.gradient_accumulation_steps == 1 and c.seed == 42
    rpo = dpo.DPOConfig(loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5], max_length=None)
    assert rpo.loss_type == ["sigmoid", "sft"] and rpo.loss_weights == [1.0, 0.5] and rpo.max_length is None
    assert dpo.DPOConfig(loss_type="ipo").loss_type == ["ipo"]
    c.beta = 0.5
    assert c.beta == 0.5 and c.to_dict()["beta"] == 0.5
    with pytest.raises(dpo.InvalidArgumentError, match="beta"):
        c.beta = -1
    assert c.beta == 0.5
    with pytest.raises(TypeError, match="betta"):
        dpo.DPOConfig(betta=0.1)
    with pytest.raises(AttributeError):
        c.betta = 1


def test_sft_config_defaults():
    c = dpo.SFTConfig()
    assert c.learning_rate == 2e-5 and c.max_length == 1024
    assert dpo.SFTConfig(max_length=None, learning_rate=1e-3).learning_rate == 1e-3
    with pytest.raises(TypeError, match="beta"):
        dpo.SFTConfig(beta=0.1)


def test_step_metric_keys(trainer, pairs):
    m = trainer.step(pairs)
    assert list(m) == TRL_METRICS
    assert math.isclose(m["loss"], math.log(2), rel_tol=1e-9)  # policy == snapshot at step 1
    assert m["learning_rate"] == 1e-2 and m["num_tokens"] == 56
    e = trainer.evaluate_batch(pairs)
    assert list(e) == ["eval_" + k for k in TRL_METRICS[:11]]
    assert trainer.global_step == 1


def test_evaluate_changes_nothing(trainer, model, pairs):
    trainer.step(pairs)
    before = model.sequence_logps(completions(pairs))
    a = trainer.evaluate_batch(pairs)
    b = trainer.evaluate_batch(pairs)
    assert a == b and trainer.global_step == 1
    assert model.sequence_logps(completions(pairs)) == before


def test_gradient_accumulation(model, pairs):
    t = dpo.DPOTrainer(model, args=dpo.DPOConfig(learning_rate=1e-2, gradient_accumulation_steps=2))
    first = t.step(pairs[:2])
    assert "grad_norm" not in first and t.global_step == 0
    second = t.step(pairs[2:])
    assert "grad_norm" in second and t.global_step == 1


def test_distributed_grain_equals_step(pairs):
    a, b = dpo.Model.from_config(TINY, seed=9), dpo.Model.from_config(TINY, seed=9)
    args = dpo.DPOConfig(learning_rate=1e-2)
    ta, tb = dpo.DPOTrainer(a, args=args), dpo.DPOTrainer(b, args=args)
    ma = ta.step(pairs)
    with pytest.raises(dpo.WrongStateError, match="no gradients"):
        tb.apply_optimizer()
    tb.accumulate(pairs)
    grads = tb.gradients()
    assert len(grads) == b.num_parameters() and any(g != 0 for g in grads)
    for i in range(len(grads)):  # an all-reduce average over two identical ranks
        grads[i] = (grads[i] + grads[i]) / 2
    mb = tb.apply_optimizer()
    assert ma["loss"] == mb["loss"] and ma["grad_norm"] == mb["grad_norm"]
    assert a.sequence_logps(completions(pairs)) == b.sequence_logps(completions(pairs))


def test_gradients_numpy_view(trainer, pairs):
    np = pytest.importorskip("numpy")
    trainer.accumulate(pairs)
    g = np.frombuffer(trainer.gradients(), dtype=np.float32)
    assert g.shape == (trainer.model.num_parameters(),) and np.isfinite(g).all() and np.abs(g).sum() > 0
    g[:] = np.nan  # a broken all-reduce
    with pytest.raises(dpo.NumericError, match="norm"):
        trainer.apply_optimizer()
    g[:] = 0
    trainer.apply_optimizer()
    assert trainer.global_step == 1


def test_precompute_ref_log_probs(model, pairs):
    ref = dpo.Model.from_config(TINY, seed=2)
    t = dpo.DPOTrainer(model, ref_model=ref, args=dpo.DPOConfig(learning_rate=1e-2))
    with_ref = t.precompute_ref_log_probs(pairs)
    assert all(set(p) == {"prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps"}
               for p in with_ref)
    assert "ref_chosen_logps" not in pairs[0]
    assert math.isclose(t.evaluate_batch(pairs)["eval_loss"], t.evaluate_batch(with_ref)["eval_loss"], rel_tol=1e-12)
    pre = dpo.DPOTrainer(dpo.Model.from_config(TINY, seed=1),
                         args=dpo.DPOConfig(precompute_ref_log_probs=True, learning_rate=1e-2))
    pre.step(with_ref)
    with pytest.raises(dpo.InvalidArgumentError, match="ref_chosen_logps"):
        pre.step(pairs)


def test_sft_trainer(model, pairs):
    t = dpo.SFTTrainer(model, args=dpo.SFTConfig(learning_rate=1e-2))
    m = t.step(completions(pairs))
    assert list(m) == ["loss", "mean_token_accuracy", "entropy", "grad_norm", "learning_rate", "num_tokens"]
    assert list(t.evaluate_batch(completions(pairs))) == ["eval_loss", "eval_mean_token_accuracy", "eval_entropy"]
    assert t.global_step == 1


def test_close_and_context_manager(pairs):
    with dpo.Model.from_config(TINY) as m:
        assert m.num_parameters() > 0
    with pytest.raises(dpo.InvalidArgumentError, match="not a live dpo_model"):
        m.num_parameters()
    m.close()  # closing twice is harmless


def test_library_found_by_itself():
    """Without DPO_LIBRARY the package loads the repository's .build/release/libdpo.so."""
    import os
    if "DPO_LIBRARY" in os.environ:
        pytest.skip("DPO_LIBRARY is set")
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    assert dpo.library_path == os.path.join(root, ".build", "release", "libdpo.so")
