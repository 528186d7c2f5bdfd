"""Paths: str, bytes and os.PathLike are accepted as open() accepts them (bytes passed through
unchanged, UTF-8 or not), and a NUL byte raises ValueError instead of silently cutting the path short (the
library reads C strings: "a\\x00/../../etc" would have been the directory "a")."""
import os
import pathlib

import pytest

import dpo
from conftest import TINY, make_pairs


@pytest.fixture
def saved(tmp_path):
    """A saved model and a DPO and an SFT checkpoint of it."""
    model = dpo.Model.from_config(TINY, seed=3)
    model.save_pretrained(str(tmp_path / "model"))
    trainer = dpo.DPOTrainer(model, args=dpo.DPOConfig(learning_rate=1e-2))
    trainer.save_checkpoint(str(tmp_path / "dpo-ckpt"))
    sft = dpo.SFTTrainer(dpo.Model.from_config(TINY, seed=3))
    sft.save_checkpoint(str(tmp_path / "sft-ckpt"))
    return model, trainer, sft


def _calls(model, trainer, sft):
    """Every path-taking function of the package, as f(path)."""
    return {"save_pretrained": model.save_pretrained, "Model.from_pretrained": dpo.Model.from_pretrained,
            "DPOTrainer.save_checkpoint": trainer.save_checkpoint,
            "DPOTrainer.load_checkpoint": trainer.load_checkpoint,
            "SFTTrainer.save_checkpoint": sft.save_checkpoint, "SFTTrainer.load_checkpoint": sft.load_checkpoint}


@pytest.mark.parametrize("kind", ["str", "bytes", "pathlike"])
def test_nul_byte_raises_value_error_and_writes_nothing(saved, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir("."))
    paths = {"str": "a\x00/../../etc", "bytes": b"a\x00/../../etc", "pathlike": pathlib.Path("a\x00/../../etc")}
    for name, call in _calls(*saved).items():
        with pytest.raises(ValueError, match="null byte"):
            call(paths[kind])
    assert sorted(os.listdir(".")) == before  # no "a" directory
    with pytest.raises(ValueError, match="null byte"):
        open(paths[kind], "rb")  # the same error as Python's own file functions


def test_pathlike_and_bytes_paths_round_trip(saved, tmp_path):
    model, trainer, sft = saved
    model.save_pretrained(tmp_path / "as-pathlike")
    assert dpo.Model.from_pretrained(tmp_path / "as-pathlike").num_parameters() == model.num_parameters()
    # A bytes path reaches the file system unchanged (as open() would pass it).
    raw = os.fsencode(str(tmp_path)) + b"/model-\xc3\xa9"
    model.save_pretrained(raw)
    assert b"model-\xc3\xa9" in os.listdir(os.fsencode(str(tmp_path)))
    assert dpo.Model.from_pretrained(raw).config == model.config
    trainer.step(make_pairs())
    trainer.save_checkpoint(tmp_path / "ckpt-\u00e9")
    trainer.load_checkpoint(os.fsencode(str(tmp_path / "ckpt-\u00e9")))
    assert trainer.global_step == 1
    with pytest.raises(TypeError):
        model.save_pretrained(42)


def test_paths_that_are_not_utf8_keep_their_bytes(saved, tmp_path):
    """Two names that differ only in bytes that are not UTF-8 are two directories (the library once
    turned both into U+FFFD and wrote one over the other); a str with surrogate escapes, as
    os.listdir() returns such names, names the same bytes."""
    model = saved[0]
    other = dpo.Model.from_config(TINY, seed=4)
    base = os.fsencode(str(tmp_path))
    model.save_pretrained(base + b"/model-\xff")
    other.save_pretrained(base + b"/model-\xfe")
    assert {b"model-\xff", b"model-\xfe"} <= set(os.listdir(base))
    a = dpo.Model.from_pretrained(str(tmp_path) + "/model-\udcff")
    b = dpo.Model.from_pretrained(base + b"/model-\xfe")
    ids = {"prompt_ids": [1, 2, 3], "completion_ids": [4, 5]}
    assert a.sequence_logps([ids]) == model.sequence_logps([ids])
    assert b.sequence_logps([ids]) == other.sequence_logps([ids])
