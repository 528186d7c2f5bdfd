"""Issue 4, "Bad input gets a clear error and changes nothing", from Python: each case raises the
status's DPOError subclass with the library's message naming the argument and the value, and the
model and trainer are unchanged and usable afterwards.

CSR-level cases (NULL pointers, lengths, offsets, struct_size) cannot be produced through the
high-level API (it builds the arrays itself), so they go through the ctypes layer, dpo._lib."""
import ctypes
import json
import math
import os
from ctypes import byref, c_double, c_int32, c_int64, c_void_p

import pytest

import dpo
from dpo import _batch, _lib
from conftest import TINY, completions, make_pairs


@pytest.fixture
def state(trainer, model, pairs):
    """The trainer after one step; `unchanged()` asserts nothing moved since."""
    trainer.step(pairs)
    before = (trainer.evaluate_batch(pairs), model.sequence_logps(completions(pairs)), trainer.global_step)

    def unchanged():
        assert (trainer.evaluate_batch(pairs), model.sequence_logps(completions(pairs)), trainer.global_step) == before
    return trainer, model, pairs, unchanged


def raw(status, *words):
    """A low-level call's status and thread message."""
    message = _lib.lib.dpo_last_error().decode()
    assert status == 1, (status, message)
    for w in words:
        assert w in message, (w, message)


def bad_pair(pairs, i, **fields):
    out = [dict(p) for p in pairs]
    out[i].update(fields)
    return out


def test_null_handles_and_pointers(state):
    trainer, model, pairs, unchanged = state
    b = _batch.Preference(pairs)
    m = _lib.new(_lib.Metrics)
    raw(_lib.lib.dpo_trainer_step(None, byref(b.struct), byref(m)), "trainer is NULL")
    raw(_lib.lib.dpo_trainer_step(trainer._handle, None, byref(m)), "batch is NULL")
    raw(_lib.lib.dpo_model_num_parameters(model._handle, None), "out_count is NULL")
    raw(_lib.lib.dpo_model_save(None, b"x"), "model is NULL")
    raw(_lib.lib.dpo_model_load(None, byref(c_void_p())), "path is NULL")
    raw(_lib.lib.dpo_model_create_json(None, 0, byref(c_void_p())), "config_json is NULL")
    # foreign and mistyped handles
    raw(_lib.lib.dpo_trainer_step(c_void_p(ctypes.addressof(m)), byref(b.struct), byref(m)), "not a live dpo_trainer")
    raw(_lib.lib.dpo_trainer_step(model._handle, byref(b.struct), byref(m)), "not a live dpo_trainer")
    with pytest.raises(dpo.InvalidArgumentError, match="model must be a dpo.Model"):
        dpo.DPOTrainer("not a model")
    unchanged()


def test_negative_and_overflowing_lengths(state):
    trainer, model, pairs, unchanged = state
    m = _lib.new(_lib.Metrics)
    for field, value, words in [("num_pairs", -1, ["batch->num_pairs = -1"]),
                                ("num_pairs", 2**63 - 1, ["batch->num_pairs = 9223372036854775807"])]:
        b = _batch.Preference(pairs)
        setattr(b.struct, field, value)
        raw(_lib.lib.dpo_trainer_step(trainer._handle, byref(b.struct), byref(m)), *words)
    for lists, value in [("chosen", -5), ("prompts", 2**63 - 1), ("rejected", 2**31)]:
        b = _batch.Preference(pairs)
        getattr(b.struct, lists).num_ids = value
        raw(_lib.lib.dpo_trainer_step(trainer._handle, byref(b.struct), byref(m)), "batch->%s.num_ids = %d" % (lists, value))
    c = _batch.Completion(completions(pairs))
    out = (c_double * 4)()
    raw(_lib.lib.dpo_model_sequence_logps(model._handle, byref(c.struct), out, -1), "capacity = -1")
    assert _lib.lib.dpo_model_sequence_logps(model._handle, byref(c.struct), out, 2) == 8  # BUFFER_TOO_SMALL
    with pytest.raises(dpo.InvalidArgumentError, match="max_new_tokens = -1"):
        model.generate([1, 2], max_new_tokens=-1)
    with pytest.raises(dpo.InvalidArgumentError, match="max_new_tokens"):
        model.generate([1, 2], max_new_tokens=2**70)
    unchanged()


def test_bad_offsets(state):
    trainer, model, pairs, unchanged = state
    m = _lib.new(_lib.Metrics)
    cases = [("chosen", 2, 1, "batch->chosen.offsets are not non-decreasing: offsets[2] = 1"),
             ("rejected", 0, 1, "batch->rejected.offsets[0] = 1 must be 0"),
             ("prompts", 4, 100, "batch->prompts.offsets[4] = 100 is past the end of the token array")]
    for lists, index, value, words in cases:
        b = _batch.Preference(pairs)
        b.parts[{"prompts": "prompt_ids", "chosen": "chosen_ids", "rejected": "rejected_ids"}[lists]].offsets[index] = value
        raw(_lib.lib.dpo_trainer_step(trainer._handle, byref(b.struct), byref(m)), words)
    b = _batch.Preference(pairs)
    b.struct.chosen.ids = None
    raw(_lib.lib.dpo_trainer_step(trainer._handle, byref(b.struct), byref(m)), "batch->chosen.ids is NULL")
    unchanged()


def test_token_ids_out_of_range(state):
    trainer, model, pairs, unchanged = state
    with pytest.raises(dpo.InvalidArgumentError, match=r"pair 1: chosen_ids\[0\] = -1 is outside the vocabulary"):
        trainer.step(bad_pair(pairs, 1, chosen_ids=[-1, 3]))
    with pytest.raises(dpo.InvalidArgumentError, match=r"pair 0: rejected_ids\[1\] = 32 is outside the vocabulary \[0, 32\)"):
        trainer.step(bad_pair(pairs, 0, rejected_ids=[6, 32]))
    with pytest.raises(dpo.InvalidArgumentError, match=r"pair 2: prompt_ids\[0\] = 1099511627776"):
        trainer.step(bad_pair(pairs, 2, prompt_ids=[2**40]))
    with pytest.raises(dpo.InvalidArgumentError, match=r"item 0: completion_ids\[0\] = 99"):
        model.sequence_logps([{"prompt_ids": [1], "completion_ids": [99]}])
    with pytest.raises(dpo.InvalidArgumentError, match=r"prompt 0: token \[1\] = 40"):
        model.generate([1, 40])
    with pytest.raises(dpo.InvalidArgumentError, match=r"chosen_ids\[0\] = 'a' is not an integer"):
        trainer.step(bad_pair(pairs, 0, chosen_ids=["a"]))
    with pytest.raises(dpo.InvalidArgumentError, match="pair 3 has no 'rejected_ids'"):
        trainer.step([pairs[0], pairs[1], pairs[2], {"prompt_ids": [1], "chosen_ids": [2]}])
    unchanged()


def test_empty_completion(state):
    trainer, model, pairs, unchanged = state
    with pytest.raises(dpo.InvalidArgumentError, match="pair 2: chosen_ids is empty"):
        trainer.step(bad_pair(pairs, 2, chosen_ids=[]))
    with pytest.raises(dpo.InvalidArgumentError, match="pair 0: rejected_ids is empty"):
        trainer.evaluate_batch(bad_pair(pairs, 0, rejected_ids=[]))
    with pytest.raises(dpo.InvalidArgumentError, match="item 1: completion is empty"):
        model.sequence_logps([{"prompt_ids": [1], "completion_ids": [2]}, {"prompt_ids": [1], "completion_ids": []}])
    with pytest.raises(dpo.InvalidArgumentError, match="batch is empty"):
        trainer.step([])
    unchanged()


def test_prompt_longer_than_max_length(state):
    trainer, model, pairs, unchanged = state
    short = dpo.DPOTrainer(model, args=dpo.DPOConfig(max_length=4))
    with pytest.raises(dpo.InvalidArgumentError, match="pair 0: the prompt alone has 4 tokens, max_length is 4"):
        short.step(pairs)
    with pytest.raises(dpo.InvalidArgumentError, match="pair 1: the prompt alone has 9 tokens, max_length is 8"):
        dpo.DPOTrainer(model, args=dpo.DPOConfig(max_length=8)).step(bad_pair(pairs, 1, prompt_ids=[1] * 9))
    unchanged()


def test_nan_or_inf_reference_logps(state):
    trainer, model, pairs, unchanged = state
    with_ref = trainer.precompute_ref_log_probs(pairs)
    for key, value in [("ref_chosen_logps", math.nan), ("ref_rejected_logps", math.inf), ("ref_chosen_logps", -math.inf)]:
        bad = [dict(p) for p in with_ref]
        bad[2][key] = value
        with pytest.raises(dpo.InvalidArgumentError, match=r"%s\[2\] = %s" % (key, str(value).replace("inf", "-?inf"))):
            trainer.step(bad)
    bad = [dict(p) for p in with_ref]
    del bad[1]["ref_rejected_logps"]
    with pytest.raises(dpo.InvalidArgumentError, match="ref_rejected_logps"):
        trainer.step(bad)
    with pytest.raises(dpo.InvalidArgumentError, match="give them for all pairs or none"):
        trainer.step(with_ref[:2] + pairs[2:])
    unchanged()


def test_unknown_names_and_bad_values(state):
    trainer, model, pairs, unchanged = state
    with pytest.raises(dpo.InvalidArgumentError, match="loss_type: unknown loss 'sigmod'"):
        dpo.DPOConfig(loss_type="sigmod")
    with pytest.raises(dpo.InvalidArgumentError, match="loss_type: unknown loss 'dpo'"):
        dpo.DPOConfig(loss_type=["sigmoid", "dpo"])
    with pytest.raises(dpo.InvalidArgumentError, match="lr_scheduler_type: unknown value 'linearr'"):
        dpo.DPOConfig(lr_scheduler_type="linearr")
    with pytest.raises(dpo.InvalidArgumentError, match="lr_scheduler_type: unknown value 'exp'"):
        dpo.SFTConfig(lr_scheduler_type="exp")
    with pytest.raises(dpo.InvalidArgumentError, match="f_divergence_type: unknown value 'kl'"):
        dpo.DPOConfig(f_divergence_type="kl")
    with pytest.raises(dpo.InvalidArgumentError, match="truncation_mode: unknown value 'middle'"):
        dpo.DPOConfig(truncation_mode="middle")
    with pytest.raises(dpo.InvalidArgumentError, match="beta must be > 0, got -1"):
        dpo.DPOConfig(beta=-1)
    with pytest.raises(dpo.InvalidArgumentError, match="max_steps = 1e\\+30 is out of range"):
        dpo.DPOConfig(max_steps=10**30)
    with pytest.raises(TypeError, match="unexpected keyword argument 'betta'"):
        dpo.DPOConfig(betta=0.1)
    with pytest.raises(dpo.InvalidArgumentError, match="top_p must be in"):
        model.generate([1], top_p=0)
    unchanged()


def test_wrong_struct_size(state):
    trainer, model, pairs, unchanged = state
    b = _batch.Preference(pairs)
    m = _lib.new(_lib.Metrics)
    for size in (0, ctypes.sizeof(_lib.PreferenceBatch) - 8, ctypes.sizeof(_lib.PreferenceBatch) + 8):
        b.struct.struct_size = size
        raw(_lib.lib.dpo_trainer_step(trainer._handle, byref(b.struct), byref(m)), "batch->struct_size = %d" % size,
            "sizeof(dpo_preference_batch)")
    b = _batch.Preference(pairs)
    m.struct_size = 8
    raw(_lib.lib.dpo_trainer_step(trainer._handle, byref(b.struct), byref(m)), "out_metrics->struct_size = 8")
    g = _lib.new(_lib.GenerateParams)
    g.struct_size = 1
    raw(_lib.lib.dpo_generate_default_params(byref(g)), "params->struct_size = 1")
    unchanged()


def test_files(tmp_path, state):
    trainer, model, pairs, unchanged = state
    with pytest.raises(dpo.DPOIOError, match="missing-dir"):
        dpo.Model.from_pretrained(tmp_path / "missing-dir")
    model.save_pretrained(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(dpo.FormatError, match="model.safetensors"):
        dpo.Model.from_pretrained(tmp_path / "corrupt")
    model.save_pretrained(tmp_path / "truncated")
    weights = tmp_path / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(dpo.FormatError, match="extends past end of data"):
        dpo.Model.from_pretrained(tmp_path / "truncated")
    model.save_pretrained(tmp_path / "badjson")
    (tmp_path / "badjson" / "config.json").write_text('{"vocab_size": 32,')
    with pytest.raises(dpo.FormatError, match="config.json"):
        dpo.Model.from_pretrained(tmp_path / "badjson")
    model.save_pretrained(tmp_path / "huge")
    config = json.loads((tmp_path / "huge" / "config.json").read_text())
    config["num_hidden_layers"] = 10**18
    (tmp_path / "huge" / "config.json").write_text(json.dumps(config))
    with pytest.raises(dpo.FormatError, match="num_hidden_layers"):
        dpo.Model.from_pretrained(tmp_path / "huge")
    with pytest.raises(dpo.DPOIOError, match="trainer_state.json"):
        trainer.load_checkpoint(tmp_path / "corrupt")
    with pytest.raises(dpo.DPOIOError):
        model.save_pretrained("/proc/no/such/dir")
    unchanged()


def test_bad_model_configs():
    with pytest.raises(dpo.InvalidArgumentError, match="hidden_size 30 is not divisible by num_attention_heads 4"):
        dpo.Model.from_config(dict(TINY, hidden_size=30))
    with pytest.raises(dpo.InvalidArgumentError, match="hidden_size must be > 0, got -16"):
        dpo.Model.from_config(dict(TINY, hidden_size=-16))
    with pytest.raises(dpo.InvalidArgumentError, match="hidden_size = 1e\\+30 is larger than the supported maximum"):
        dpo.Model.from_config(dict(TINY, hidden_size=10**30))
    with pytest.raises(dpo.InvalidArgumentError, match="model_type 'gpt2' is not supported"):
        dpo.Model.from_config(dict(TINY, model_type="gpt2"))
    with pytest.raises(dpo.OutOfMemoryError, match="GiB"):
        dpo.Model.from_config(dict(TINY, hidden_size=16384, intermediate_size=65536, num_attention_heads=128,
                                   num_key_value_heads=128, num_hidden_layers=2**20))


def test_trainer_after_model_freed(state):
    trainer, model, pairs, unchanged = state
    model.close()
    with pytest.raises(dpo.InvalidArgumentError, match="model = 0x[0-9a-f]+ is not a live dpo_model handle"):
        model.sequence_logps(completions(pairs))
    with pytest.raises(dpo.InvalidArgumentError, match="policy = 0x[0-9a-f]+ is not a live dpo_model handle"):
        dpo.DPOTrainer(model)
    before = trainer.global_step
    trainer.step(pairs)  # the trainer keeps the weights alive
    assert trainer.global_step == before + 1
    trainer.close()
    with pytest.raises(dpo.InvalidArgumentError, match="trainer = 0x[0-9a-f]+ is not a live dpo_trainer handle"):
        trainer.step(pairs)
    assert _lib.lib.dpo_trainer_last_error(trainer._handle) == b"invalid dpo_trainer handle"


def test_per_handle_message(state):
    trainer, model, pairs, unchanged = state
    with pytest.raises(dpo.InvalidArgumentError):
        trainer.step(bad_pair(pairs, 0, chosen_ids=[]))
    assert b"pair 0: chosen_ids is empty" in _lib.lib.dpo_trainer_last_error(trainer._handle)
    trainer.evaluate_batch(pairs)
    assert _lib.lib.dpo_trainer_last_error(trainer._handle) == b""
    assert _lib.lib.dpo_last_error() == b""


def test_error_hierarchy():
    assert issubclass(dpo.InvalidArgumentError, dpo.DPOError) and issubclass(dpo.InvalidArgumentError, ValueError)
    assert issubclass(dpo.DPOIOError, OSError) and issubclass(dpo.OutOfMemoryError, MemoryError)
    e = dpo.InvalidArgumentError("x")
    assert e.status == 1 and e.message == "x"
    assert os.path.exists(dpo.library_path)


def test_messages_are_per_thread(trainer, pairs):
    import threading
    seen = {}

    def fail_in_thread():
        try:
            trainer.step(bad_pair(pairs, 0, chosen_ids=[]))
        except dpo.InvalidArgumentError:
            seen["thread"] = _lib.lib.dpo_last_error()

    trainer.evaluate_batch(pairs)
    t = threading.Thread(target=fail_in_thread)
    t.start()
    t.join()
    assert b"chosen_ids is empty" in seen["thread"]
    assert _lib.lib.dpo_last_error() == b""  # this thread's last call succeeded


def test_concurrent_use_of_one_trainer_is_refused_not_corrupting(pairs):
    """One handle is for one thread at a time: a second thread's call while one runs gets
    WrongStateError (never a crash or a corrupted state)."""
    import threading
    big = dict(TINY, hidden_size=64, intermediate_size=128, num_hidden_layers=4)
    m = dpo.Model.from_config(big, seed=1)
    t = dpo.DPOTrainer(m, args=dpo.DPOConfig(learning_rate=1e-3))
    errors, done = [], threading.Event()

    def train():
        try:
            for _ in range(30):
                try:
                    t.step(pairs * 8)
                except dpo.WrongStateError:
                    pass
        finally:
            done.set()

    worker = threading.Thread(target=train)
    worker.start()
    while not done.is_set():
        try:
            m.sequence_logps(completions(pairs))
        except dpo.WrongStateError as e:
            errors.append(str(e))
    worker.join()
    assert all("in use by another call" in e for e in errors)
    # Whichever calls won, the trainer is intact and usable.
    steps = t.global_step
    assert all(math.isfinite(v) for v in t.step(pairs).values()) and t.global_step == steps + 1
