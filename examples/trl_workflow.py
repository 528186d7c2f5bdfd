"""TRL's workflow with swift-dpo (the README's example): a dataset of conversations is tokenized by the
engine with the model's own tokenizer and chat template, as TRL's DPOTrainer prepares it, and train()
runs the engine's training loop. Run from the repository root after `make build` and `make deps`."""
import os

import dpo

MODEL = os.environ.get("DPO_TEST_GGUF", ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")

model = dpo.Model.from_pretrained(MODEL)
tokenizer = dpo.Tokenizer.from_pretrained(MODEL)
train = [{"prompt": [{"role": "user", "content": "Name a fruit."}],
          "chosen": [{"role": "assistant", "content": "An apple."}],
          "rejected": [{"role": "assistant", "content": "A chair, I think, or maybe a table."}]}]
args = dpo.DPOConfig(output_dir="runs/smol", num_train_epochs=1, per_device_train_batch_size=1,
                     learning_rate=1e-6, logging_steps=1)
trainer = dpo.DPOTrainer(model, args=args, train_dataset=train, processing_class=tokenizer)
print(trainer.train_dataset[0]["prompt_ids"][:8])   # TRL's processed row
out = trainer.train()                                 # TrainOutput(global_step, training_loss, metrics)
print(out.global_step, round(out.training_loss, 4))
trainer.save_model()                                  # runs/smol: config.json + model.safetensors
