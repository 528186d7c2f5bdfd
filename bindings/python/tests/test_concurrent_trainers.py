"""Distinct trainers are independent across threads (include/dpo.h): two trainers stepping in two
threads at the same time (ctypes releases the GIL during library calls) give exactly the results of
running them one after the other, and leave the library's and OpenBLAS's thread settings as they
were (attention runs its heads in parallel without switching OpenBLAS's global thread count)."""
import threading

import dpo
from conftest import TINY, completions, make_pairs

# Long enough that the steps overlap in time and attention splits into several tasks.
CONFIG = dict(TINY, hidden_size=32, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)
STEPS = 4


def _batch(seed):
    pairs = []
    for i in range(4):
        prompt = [(seed + 7 * i + j) % 30 + 1 for j in range(40)]
        pairs.append({"prompt_ids": prompt, "chosen_ids": [5] + prompt[:20], "rejected_ids": [6] + prompt[5:30]})
    return pairs


def _run(seed, results, start=None):
    model = dpo.Model.from_config(CONFIG, seed=seed)
    trainer = dpo.DPOTrainer(model, args=dpo.DPOConfig(learning_rate=1e-2, max_length=256))
    if start is not None:
        start.wait()
    metrics = [trainer.step(_batch(seed)) for _ in range(STEPS)]
    results[seed] = (metrics, model.sequence_logps(completions(make_pairs())))
    trainer.close()
    model.close()


def test_two_trainers_in_two_threads_equal_sequential_runs():
    threads_before = dpo.get_num_threads()
    sequential = {}
    for seed in (1, 2):
        _run(seed, sequential)
    concurrent = {}
    start = threading.Barrier(2)
    workers = [threading.Thread(target=_run, args=(seed, concurrent, start)) for seed in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert concurrent == sequential  # bit for bit: metrics of every step and the trained weights
    assert dpo.get_num_threads() == threads_before
