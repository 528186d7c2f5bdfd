"""DPO in Python: a tiny model learns to prefer completions that start with token 5 over token 6.
PYTHONPATH=bindings/python python3 examples/train.py"""
import dpo

# Two preference pairs of token ids (TRL's prompt_ids / chosen_ids / rejected_ids columns).
batch = [
    {"prompt_ids": [1, 10, 11], "chosen_ids": [5, 20], "rejected_ids": [6, 20]},
    {"prompt_ids": [1, 12, 13], "chosen_ids": [5, 21], "rejected_ids": [6, 21]},
]

model = dpo.Model.from_config({"vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
                               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
                              seed=0)
args = dpo.DPOConfig(beta=0.1, loss_type="sigmoid", learning_rate=1e-2)   # TRL's names and defaults
trainer = dpo.DPOTrainer(model, ref_model=None, args=args)                # None: reference = snapshot

for step in range(1, 21):
    metrics = trainer.step(batch)
    if step % 5 == 0:
        print("step %2d  loss %.4f  rewards/accuracies %.2f  rewards/margins %.4f"
              % (step, metrics["loss"], metrics["rewards/accuracies"], metrics["rewards/margins"]))
model.save_pretrained("dpo-model")
