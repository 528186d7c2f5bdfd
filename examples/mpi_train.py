"""Data-parallel DPO in Python over MPI (mpi4py), with the distributed grain of the dpo package:
every rank holds the same model, accumulates its shard of each global batch, the gradient buffer
is averaged over the ranks in place through a numpy view of the library's own memory (no copy),
and every rank takes the same optimizer step. Rank 0 prints the metrics of each step, reduced over
the whole global batch, and saves the model. The same training as examples/mpi_train.c.

    PYTHONPATH=bindings/python mpirun -np 2 python3 examples/mpi_train.py 2 out   # 2 ranks x 2 pairs
    PYTHONPATH=bindings/python python3 examples/mpi_train.py 4 out1               # one process, 4 pairs

The global micro-batch is per-device batch x ranks consecutive pairs; rank r takes the r-th
per-device batch of them (as Accelerate splits batches). Averaging the ranks' gradients is exact
here because every rank has the same number of pairs and the loss (sigmoid) is a mean over pairs;
`mpirun -np N dpo train` also handles uneven shards and batch-coupled losses exactly."""
import json
import sys

import numpy as np
from mpi4py import MPI

import dpo

PAIRS, STEPS, ACCUMULATION = 24, 3, 2
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()


def pair(i):
    """Pair i of the dataset (the C example's): prompt [1, ...], chosen starts with 30, rejected with 31."""
    lengths = (2 + i % 3, 2 + i % 4, 2 + (i // 2) % 3)
    ids = [[(1, 30, 31)[j] if t == 0 else 4 + (i * 7 + (t + j) * 5) % 24 for t in range(lengths[j])] for j in range(3)]
    return {"prompt_ids": ids[0], "chosen_ids": ids[1], "rejected_ids": ids[2]}


# Means over pairs, and token means over chosen, rejected or all completion tokens.
PAIR_MEANS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
              "logps/chosen", "logps/rejected"]
TOKEN_MEANS = {"logits/chosen": "chosen", "mean_token_accuracy": "chosen", "logits/rejected": "rejected",
               "entropy": "all"}


def main():
    batch_size = int(sys.argv[1]) if len(sys.argv) > 1 else 2  # pairs per rank and micro-batch
    output = sys.argv[2] if len(sys.argv) > 2 else "mpi-model"

    # The same model on every rank: the same config and seed give the same weights.
    model = dpo.Model.from_config({"vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
                                   "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
                                  seed=0)
    args = dpo.DPOConfig(learning_rate=1e-2, max_steps=STEPS, gradient_accumulation_steps=ACCUMULATION)
    trainer = dpo.DPOTrainer(model, ref_model=None, args=args)
    gradients = np.frombuffer(trainer.gradients(), dtype=np.float32)  # the library's buffer, not a copy

    for step in range(1, STEPS + 1):
        mean = dict.fromkeys(PAIR_MEANS + list(TOKEN_MEANS), 0.0)
        for micro in range(ACCUMULATION):
            first = (((step - 1) * ACCUMULATION + micro) * size + rank) * batch_size
            batch = [pair((first + k) % PAIRS) for k in range(batch_size)]
            m = trainer.accumulate(batch)  # gradient divided by gradient_accumulation_steps
            # The global micro-batch's metrics from the ranks' own, weighted by pairs or tokens.
            weights = {"pairs": len(batch), "chosen": sum(len(p["chosen_ids"]) for p in batch),
                       "rejected": sum(len(p["rejected_ids"]) for p in batch)}
            weights["all"] = weights["chosen"] + weights["rejected"]
            names = PAIR_MEANS + list(TOKEN_MEANS)
            kinds = ["pairs"] * len(PAIR_MEANS) + list(TOKEN_MEANS.values())
            sums = np.array([m[n] * weights[k] for n, k in zip(names, kinds)] + [weights[k] for k in ["pairs", "chosen", "rejected", "all"]])
            comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
            total = dict(zip(["pairs", "chosen", "rejected", "all"], sums[len(names):]))
            for i, (n, k) in enumerate(zip(names, kinds)):
                mean[n] += sums[i] / total[k] / ACCUMULATION  # a step's metrics: the mean of its micro-batches'
        num_tokens = comm.allreduce(m["num_tokens"], op=MPI.SUM)  # this rank's tokens so far, summed

        comm.Allreduce(MPI.IN_PLACE, gradients, op=MPI.SUM)  # in place, in the library's memory
        gradients /= size
        step_metrics = trainer.apply_optimizer()  # the same gradient everywhere: identical steps
        if rank == 0:
            record = {"step": step, **mean, "grad_norm": step_metrics["grad_norm"],
                      "learning_rate": step_metrics["learning_rate"], "num_tokens": num_tokens}
            print(json.dumps(record), flush=True)
    del gradients  # the view keeps the buffer alive; drop it before the trainer goes
    if rank == 0:
        model.save_pretrained(output)


if __name__ == "__main__":
    main()
