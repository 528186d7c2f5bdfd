import DPO

/// The demo's synthetic task, in the spirit of the DPO paper's controlled-sentiment experiment:
/// prompts open a short product review; the SFT data continues them positively and negatively in
/// equal measure; the preference pairs prefer the positive continuation. Whether a generation shows
/// the preferred behaviour is decided by a rule (its words), and whether it is fluent by the
/// grammar (it is exactly one of the task's continuations, ended by EOS).
enum ReviewTask {
    static let trainItems = ["pasta", "hotel", "movie", "phone", "laptop", "concert", "museum", "coffee",
                             "bakery", "novel", "sofa", "bike", "garden", "camera", "salad", "jacket",
                             "game", "album", "lamp", "train ride", "burger", "blender", "show", "beach"]
    /// Never seen in training: evaluation prompts are built from these.
    static let heldOutItems = ["pizza", "tablet", "theater", "printer", "soup", "backpack", "podcast",
                               "tent", "watch", "kettle", "sandwich", "headphones"]
    static let openings = ["The ITEM was", "My new ITEM is", "I think the ITEM is", "Honestly, the ITEM was",
                           "Our ITEM turned out", "This ITEM is"]
    // The sentiment is carried by the adjective alone: positive and negative adjectives start with
    // different letters (one byte-level token decides), and the endings are neutral and shared, so
    // the chosen and rejected completions of a pair differ only in the adjective.
    static let positive = ["great", "wonderful", "excellent", "lovely", "superb", "charming"]
    static let negative = ["awful", "terrible", "horrible", "dreadful", "useless", "mediocre"]
    static let endings = [" and I told my friends.", " and that is all I can say.", " in my opinion."]

    /// A training item: a listed one or, half of the time, a made-up word, so the model learns that
    /// the continuation does not depend on the item and carries that to items it never saw.
    static func trainingItem(_ rng: inout Xoshiro256) -> String {
        if rng.next() % 2 == 0 { return trainItems[Int(rng.next() % UInt64(trainItems.count))] }
        let consonants = Array("bcdfghklmnprstvz"), vowels = Array("aeiou")
        while true {
            let n = 3 + Int(rng.next() % 6)
            let word = String((0..<n).map { i in
                i % 2 == 0 ? consonants[Int(rng.next() % UInt64(consonants.count))] : vowels[Int(rng.next() % UInt64(vowels.count))]
            })
            if !heldOutItems.contains(word) { return word }
        }
    }

    static func prompt(_ item: String, _ rng: inout Xoshiro256) -> String {
        openings[Int(rng.next() % UInt64(openings.count))].replacingOccurrences(of: "ITEM", with: item)
    }

    static func adjective(positive: Bool, _ rng: inout Xoshiro256) -> String {
        let adjs = positive ? Self.positive : Self.negative
        return adjs[Int(rng.next() % UInt64(adjs.count))]
    }

    static func ending(_ rng: inout Xoshiro256) -> String { endings[Int(rng.next() % UInt64(endings.count))] }

    static func encodePrompt(_ text: String) -> [Int32] { [ByteTokenizer.bos] + ByteTokenizer.encode(text) }
    static func encodeCompletion(_ text: String) -> [Int32] { ByteTokenizer.encode(text) + [ByteTokenizer.eos] }

    /// SFT examples: each prompt continued positively or negatively with equal probability.
    static func sftData(_ n: Int, items: [String]? = nil, seed: UInt64) -> [SFTExample] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { i in
            let item = items.map { $0[Int(rng.next() % UInt64($0.count))] } ?? trainingItem(&rng)
            let text = " " + adjective(positive: i % 2 == 0, &rng) + ending(&rng)
            return SFTExample(promptIds: encodePrompt(prompt(item, &rng)), completionIds: encodeCompletion(text))
        }
    }

    /// Preference pairs: chosen positive, rejected negative, the same ending (items: the given list,
    /// or training items).
    static func pairs(_ n: Int, items: [String]? = nil, seed: UInt64) -> [PreferencePair] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in
            let item = items.map { $0[Int(rng.next() % UInt64($0.count))] } ?? trainingItem(&rng)
            let p = prompt(item, &rng), good = adjective(positive: true, &rng), bad = adjective(positive: false, &rng)
            let end = ending(&rng)
            return PreferencePair(promptIds: encodePrompt(p), chosenIds: encodeCompletion(" " + good + end),
                                  rejectedIds: encodeCompletion(" " + bad + end))
        }
    }

    static func heldOutPrompts(_ n: Int, seed: UInt64) -> [String] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in prompt(heldOutItems[Int(rng.next() % UInt64(heldOutItems.count))], &rng) }
    }

    /// The rule: a positive adjective and no negative one.
    static func isPositive(_ completion: String) -> Bool {
        positive.contains { completion.contains($0) } && !negative.contains { completion.contains($0) }
    }

    /// Fluent: exactly " <adjective><ending>" of the task's language, ended by EOS.
    static func isWellFormed(_ ids: [Int32]) -> Bool {
        guard ids.last == ByteTokenizer.eos else { return false }
        let text = ByteTokenizer.decode(Array(ids.dropLast()))
        for adj in positive + negative where text.hasPrefix(" " + adj) {
            let rest = String(text.dropFirst(adj.count + 1))
            return endings.contains(rest)
        }
        return false
    }
}
