import DPO
import Foundation

/// The real demo's measured values, the verdict against its plan's targets, the printed table and
/// answer pairs, and summary.json.
struct RealDemoReport {
    let plan: RealDemo.Plan
    let reference: AnswerStats, policy: AnswerStats
    let kl: Double
    let accuracyBefore: Double, accuracyAfter: Double, marginBefore: Double, marginAfter: Double
    let heldOutPairs: Int, trainPairs: Int, trainRate: Double
    let tokensPerSecond: Double
    let samplingSeconds: Double, trainingSeconds: Double, evaluationSeconds: Double, seconds: Double

    var rise: Double { policy.ruleRate - reference.ruleRate }
    /// How far the policy's answers' mean log-prob per token (under the reference) is below the
    /// reference's own answers' (positive: lower).
    var fluencyDrop: Double { reference.referenceLogProbPerToken - policy.referenceLogProbPerToken }

    var riseHeld: Bool { rise >= plan.minRise }
    var rateHeld: Bool { policy.ruleRate >= plan.minRate }
    var fluencyHeld: Bool { fluencyDrop <= plan.fluencyBound }
    var timeHeld: Bool { plan.maxSeconds.map { seconds <= $0 } ?? true }
    var passed: Bool { riseHeld && rateHeld && fluencyHeld && timeHeld }

    func pct(_ x: Double) -> String { String(format: "%5.1f%%", 100 * x) }
    func num(_ x: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", x) }

    func printTable(answers perPrompt: Int) {
        func row(_ name: String, _ a: String, _ b: String) -> String {
            name.padding(toLength: 44, withPad: " ", startingAt: 0) + a.padding(toLength: 16, withPad: " ", startingAt: 0) + b
        }
        print("""

        Results on held-out instructions (never seen in training)
        \(row("", "reference", "policy (DPO)"))
        \(row("  short and complete (EOS within \(plan.limit) tokens)", pct(reference.ruleRate), pct(policy.ruleRate)))
        \(row("  mean answer length, tokens", num(reference.meanLength, 1), num(policy.meanLength, 1)))
        \(row("  held-out reward accuracy", num(accuracyBefore), num(accuracyAfter)))
        \(row("  held-out reward margin", num(marginBefore), num(marginAfter)))
        \(row("  KL(policy || reference), nats/answer", "-", num(kl)))
        \(row("  log-prob/token under the reference", num(reference.referenceLogProbPerToken, 3), num(policy.referenceLogProbPerToken, 3)))
        \(row("    of the short and complete answers only", num(reference.acceptedLogProbPerToken, 3), num(policy.acceptedLogProbPerToken, 3)))
          (\(plan.heldOutInstructions) instructions x \(perPrompt) answers each, temperature \(plan.temperature), at most \(plan.limit) tokens; reward
           accuracy and margin over \(heldOutPairs) held-out pairs of the reference's answers (the reference's own
           rewards are 0 by definition); KL is the mean of log pi(y|x) - log pi_ref(y|x) over the policy's
           answers; log-prob/token scores the answers' text (EOS excluded) with the reference model)

        """)
    }

    /// Four held-out prompts, reference and policy answer side by side (each model's first answer,
    /// drawn with the same seed): two where the reference's answer broke the rule, two where it kept it.
    func printSideBySide(prompts: [String], perPrompt: Int, reference: [[Int32]], policy: [[Int32]],
                         rule: ConcisenessRule, tokenizer: Tokenizer) {
        let firsts = prompts.indices.map { $0 * perPrompt }
        let broke = firsts.filter { !rule.accepts(reference[$0]) }, kept = firsts.filter { rule.accepts(reference[$0]) }
        let chosen = Array(broke.prefix(2)) + Array(kept.prefix(2))
        func show(_ ids: [Int32]) -> String {
            let text = (try? tokenizer.decode(ids, skipSpecialTokens: false)) ?? ""
            return "\(text.debugDescription) (\(ids.count) tokens\(rule.accepts(ids) ? "" : ", breaks the rule"))"
        }
        print("Side by side (same prompt, same sampling seed; two where the reference broke the rule, two where it kept it):")
        for i in chosen.sorted() {
            print("  prompt:    \(prompts[i / perPrompt].debugDescription)")
            print("  reference: \(show(reference[i]))")
            print("  policy:    \(show(policy[i]))\n")
        }
    }

    var verdictLine: String {
        let time = Progress.clock(seconds) + (plan.maxSeconds.map { " (target <= \(Progress.clock($0)))" } ?? "")
        return "\(passed ? "PASS" : "FAIL"): short-and-complete rate \(pct(reference.ruleRate).trimmingCharacters(in: .whitespaces)) -> \(pct(policy.ruleRate).trimmingCharacters(in: .whitespaces)) "
            + "(target: +\(Int(plan.minRise * 100)) points and >= \(Int(plan.minRate * 100))%), "
            + "fluency \(num(policy.referenceLogProbPerToken, 3)) vs \(num(reference.referenceLogProbPerToken, 3)) nats/token (target: at most \(num(plan.fluencyBound, 2)) below), "
            + "held-out reward accuracy \(num(accuracyAfter)), KL \(num(kl)) nats/answer, time \(time)."
    }

    var summary: JSONObject {
        var s = JSONObject()
        let fields: [(String, Double)] = [
            ("reference_rule_rate", reference.ruleRate), ("policy_rule_rate", policy.ruleRate), ("rule_rate_rise", rise),
            ("reference_mean_length", reference.meanLength), ("policy_mean_length", policy.meanLength),
            ("heldout_reward_accuracy_before", accuracyBefore), ("heldout_reward_accuracy", accuracyAfter),
            ("heldout_reward_margin_before", marginBefore), ("heldout_reward_margin", marginAfter),
            ("heldout_pairs", Double(heldOutPairs)), ("kl_policy_reference", kl),
            ("reference_logprob_per_token", reference.referenceLogProbPerToken),
            ("policy_logprob_per_token", policy.referenceLogProbPerToken), ("fluency_drop", fluencyDrop),
            ("reference_accepted_logprob_per_token", reference.acceptedLogProbPerToken),
            ("policy_accepted_logprob_per_token", policy.acceptedLogProbPerToken),
            ("train_pairs", Double(trainPairs)), ("train_answers_rule_rate", trainRate),
            ("sampling_tokens_per_second", tokensPerSecond),
            ("seconds_sampling", samplingSeconds), ("seconds_training", trainingSeconds),
            ("seconds_evaluation", evaluationSeconds), ("seconds", seconds),
        ]
        for (k, v) in fields { s[k] = v.isFinite ? .number(v) : .null }
        var t = JSONObject()
        t["min_rule_rate_rise"] = .number(plan.minRise); t["min_policy_rule_rate"] = .number(plan.minRate)
        t["max_fluency_drop"] = .number(plan.fluencyBound)
        t["max_seconds"] = plan.maxSeconds.map { .number($0) } ?? .null
        s["targets"] = .object(t)
        var c = JSONObject()
        c["limit"] = .number(Double(plan.limit)); c["temperature"] = .number(plan.temperature)
        c["train_instructions"] = .number(Double(plan.trainInstructions)); c["samples_per_instruction"] = .number(Double(plan.samplesPerInstruction))
        c["heldout_instructions"] = .number(Double(plan.heldOutInstructions)); c["samples_per_heldout"] = .number(Double(plan.samplesPerHeldOut))
        c["steps"] = .number(Double(plan.steps)); c["batch_size"] = .number(Double(plan.batchSize))
        c["beta"] = .number(plan.beta); c["learning_rate"] = .number(plan.learningRate)
        c["bf16"] = .bool(plan.bf16)
        c["lora_r"] = plan.lora.map { .number(Double($0.r)) } ?? .null
        c["keep_base_quantized"] = .bool(plan.keepBaseQuantized)
        s["config"] = .object(c)
        s["pass"] = .bool(passed)
        return s
    }
}
