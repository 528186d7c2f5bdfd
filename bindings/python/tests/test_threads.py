"""OpenBLAS's idle worker threads sleep right after a step instead of busy-waiting (the library
shortens their idle spin once, also when loaded through ctypes, which hides OpenBLAS's symbols)."""
import os
import statistics
import time

import pytest

import dpo


def _process_cpu_ticks():
    total = 0
    for task in os.listdir("/proc/self/task"):
        with open("/proc/self/task/%s/stat" % task) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or "OPENBLAS_THREAD_TIMEOUT" in os.environ
                    or not os.path.isdir("/proc/self/task"),
                    reason="needs 2 cores, Linux /proc and no user-set OPENBLAS_THREAD_TIMEOUT")
def test_openblas_workers_sleep_between_steps():
    saved = dpo.get_num_threads()
    dpo.set_num_threads(2)
    try:
        # Large enough for OpenBLAS to run its products on 2 threads.
        model = dpo.Model.from_config({"vocab_size": 4096, "hidden_size": 256, "intermediate_size": 704,
                                       "num_hidden_layers": 2, "num_attention_heads": 8,
                                       "num_key_value_heads": 4}, seed=0)
        trainer = dpo.DPOTrainer(model, args=dpo.DPOConfig(learning_rate=1e-4))
        pair = {"prompt_ids": list(range(1, 129)), "chosen_ids": list(range(200, 328)),
                "rejected_ids": list(range(400, 528))}
        idle = []
        for _ in range(5):
            trainer.step([pair, pair])
            before = _process_cpu_ticks()
            time.sleep(0.08)
            idle.append(_process_cpu_ticks() - before)
        # A busy-waiting worker burns the whole 80 ms (8 ticks at 100 Hz); asleep, about 0.
        ticks_per_80ms = os.sysconf("SC_CLK_TCK") * 0.08
        assert statistics.median(idle) < ticks_per_80ms / 2, idle
    finally:
        dpo.set_num_threads(saved)
