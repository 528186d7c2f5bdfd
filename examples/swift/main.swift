// DPO in Swift: a tiny model learns to prefer completions that start with token 5 over token 6.
// swift run -c release train-example
import DPO
import Foundation

// Two preference pairs of token ids (TRL's prompt_ids / chosen_ids / rejected_ids).
let batch = [
    PreferencePair(promptIds: [1, 10, 11], chosenIds: [5, 20], rejectedIds: [6, 20]),
    PreferencePair(promptIds: [1, 12, 13], chosenIds: [5, 21], rejectedIds: [6, 21]),
]

let config = LlamaConfig(vocabSize: 32, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 2,
                         numAttentionHeads: 4, numKeyValueHeads: 2)
let model = try LlamaModel.randomlyInitialized(config: config, seed: 0)
var args = DPOConfig()                      // TRL's names (Swift-cased) and defaults
args.beta = 0.1
args.lossType = [.sigmoid]
args.optimizer.learningRate = 1e-2
let trainer = try DPOTrainer(policy: model, reference: nil, config: args)   // nil: reference = snapshot

for step in 1...20 {
    let m = try trainer.step(batch).metrics
    if step % 5 == 0 {
        print(String(format: "step %2d  loss %.4f  rewards/accuracies %.2f  rewards/margins %.4f",
                     step, m.loss, m.rewardsAccuracies, m.rewardsMargins))
    }
}
try model.save(directory: "dpo-model")
