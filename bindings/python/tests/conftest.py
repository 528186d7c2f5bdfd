import math

import pytest

import dpo

VOCAB = 32
GOOD, BAD = 5, 6

TINY = {"vocab_size": VOCAB, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}


def make_pairs():
    """The learnable task: chosen completions start with GOOD, rejected ones with BAD."""
    pairs = []
    for i in range(4):
        prompt = [1, 10 + 3 * i, 11 + 3 * i, 12 + 3 * i]
        tail = [22 + 2 * i, 23 + 2 * i]
        pairs.append({"prompt_ids": prompt, "chosen_ids": [GOOD] + tail, "rejected_ids": [BAD] + tail})
    return pairs


def completions(pairs):
    return [{"prompt_ids": p["prompt_ids"], "completion_ids": p["chosen_ids"]} for p in pairs]


@pytest.fixture
def pairs():
    return make_pairs()


@pytest.fixture
def model():
    with dpo.Model.from_config(TINY, seed=1) as m:
        yield m


@pytest.fixture
def args():
    return dpo.DPOConfig(learning_rate=1e-2, lr_scheduler_type="constant", max_length=64)


@pytest.fixture
def trainer(model, args):
    with dpo.DPOTrainer(model, args=args) as t:
        yield t


def close(a, b, tol=1e-9):
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
