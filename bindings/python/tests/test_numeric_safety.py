"""Non-finite numbers never crash the process and never return OK: NaN or overflowing weights give
NumericError (or the load refuses them), an optimizer step that would make the weights non-finite is
refused and changes nothing, and configs whose derived values are out of range are refused."""
import json
import math
import struct

import pytest

import dpo
from conftest import TINY, completions, make_pairs


def nan_checkpoint(tmp_path, model, tensor="model.norm.weight"):
    """Saves the model, then overwrites one tensor of model.safetensors with NaN."""
    path = tmp_path / "nan-model"
    model.save_pretrained(str(path))
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    begin, end = header[tensor]["data_offsets"]
    base = 8 + n
    data[base + begin:base + end] = struct.pack("<f", math.nan) * ((end - begin) // 4)
    f.write_bytes(bytes(data))
    return str(path)


def test_nan_checkpoint_is_refused_or_gives_numeric_errors(tmp_path, model, pairs):
    path = nan_checkpoint(tmp_path, model)
    try:
        bad = dpo.Model.from_pretrained(path)
    except (dpo.FormatError, dpo.NumericError):
        return  # refusing the load is as good
    with bad:
        with pytest.raises(dpo.NumericError):
            bad.sequence_logps(completions(pairs))
        with pytest.raises(dpo.NumericError):
            bad.generate([1, 2, 3], max_new_tokens=4)
        with pytest.raises(dpo.NumericError):
            bad.generate([1, 2, 3], max_new_tokens=4, temperature=0.8, seed=1)
        args = dpo.DPOConfig(learning_rate=1e-2, max_length=64)
        with dpo.DPOTrainer(bad, args=args) as t:
            with pytest.raises(dpo.NumericError):
                t.evaluate_batch(pairs)
            with pytest.raises(dpo.NumericError):
                t.step(pairs)
            assert t.global_step == 0
        # A NaN reference for a good policy.
        with dpo.DPOTrainer(model, ref_model=bad, args=args) as t:
            before = model.sequence_logps(completions(pairs))
            with pytest.raises(dpo.NumericError):
                t.step(pairs)
            with pytest.raises(dpo.NumericError):
                t.evaluate_batch(pairs)
            assert model.sequence_logps(completions(pairs)) == before
        with dpo.SFTTrainer(bad, args=dpo.SFTConfig(max_length=64)) as t:
            with pytest.raises(dpo.NumericError):
                t.evaluate_batch(completions(pairs))


def test_optimizer_step_that_makes_weights_non_finite_is_refused(model, pairs):
    args = dpo.DPOConfig(learning_rate=1e-2, weight_decay=1e300, max_length=64)
    with dpo.DPOTrainer(model, args=args) as t:
        before = model.sequence_logps(completions(pairs))
        for _ in range(2):
            with pytest.raises(dpo.NumericError):
                t.step(pairs)
        assert t.global_step == 0
        assert model.sequence_logps(completions(pairs)) == before
    # Nothing non-finite can be saved afterwards: the weights are the initial ones.


@pytest.mark.parametrize("lr", [1e9, 1e10])
def test_huge_learning_rate_gives_numeric_errors_not_a_crash(lr, model, pairs):
    args = dpo.DPOConfig(learning_rate=lr, max_grad_norm=0, lr_scheduler_type="constant", max_length=64)
    refused = 0
    with dpo.DPOTrainer(model, args=args) as t:
        for _ in range(5):
            try:
                t.step(pairs)
            except dpo.NumericError:
                refused += 1
    assert refused > 0
    with pytest.raises(dpo.NumericError):
        model.generate([1, 2, 3], max_new_tokens=2)


@pytest.mark.parametrize("field,value", [
    ("rope_theta", 1e-300),
    ("rope_theta", 1e300),
    ("rope_scaling", {"rope_type": "llama3", "factor": 1e-320, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32}),
    ("pad_token_id", TINY["vocab_size"]),
    ("bos_token_id", -1),
    ("eos_token_id", [2, 1000]),
])
def test_configs_with_out_of_range_derived_values_are_refused(field, value, tmp_path):
    config = dict(TINY, **{field: value})
    with pytest.raises(dpo.InvalidArgumentError, match=field):
        dpo.Model.from_config(config)
    # The same in a model directory's config.json.
    with dpo.Model.from_config(TINY) as m:
        m.save_pretrained(str(tmp_path / "m"))
    cfg = tmp_path / "m" / "config.json"
    j = json.loads(cfg.read_text())
    if field == "rope_scaling":
        del j["rope_parameters"]  # the transformers 4 spelling instead
    j[field] = value
    if field == "rope_theta":
        j["rope_parameters"]["rope_theta"] = value
    cfg.write_text(json.dumps(j))
    with pytest.raises(dpo.FormatError, match=field):
        dpo.Model.from_pretrained(str(tmp_path / "m"))


def test_loss_type_count_is_capped(model):
    with pytest.raises(dpo.InvalidArgumentError, match="loss_type"):
        dpo.DPOTrainer(model, args=dpo.DPOConfig(loss_type=["sigmoid"] * 100_000))
    with dpo.DPOTrainer(model, args=dpo.DPOConfig(loss_type=["sigmoid"] * 64)):
        pass
