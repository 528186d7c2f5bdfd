import ArgumentParser
import DPO
import Foundation

/// `dpo bench-tokenizer`: encode throughput of the engine's Tokenizer on one thread, for
/// comparison with HF tokenizers (tools/bench_tokenizer.py runs the same measurement there).
struct BenchTokenizer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-tokenizer",
        abstract: "Time Tokenizer.encode on a text file, line by line, on one thread.")

    @Option(help: "A model directory with tokenizer.json, or a .gguf file.") var tokenizer: String
    @Option(help: "A UTF-8 text file; each line is encoded on its own (without special tokens).") var text: String
    @Option(help: "Timed passes over the file (the best is reported).") var passes: Int = 5

    func run() throws {
        let tok = try Tokenizer.load(path: tokenizer)
        guard let data = FileManager.default.contents(atPath: text) else { throw CLIError("cannot read '\(text)'") }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        let bytes = lines.reduce(0) { $0 + $1.utf8.count }
        var count = 0, checksum = 0
        for line in lines {  // warm-up pass, also the token count and checksum
            let ids = tok.encode(line, addSpecialTokens: false)
            count += ids.count
            for (i, id) in ids.enumerated() { checksum = (checksum &* 31 &+ Int(id) &+ i) & 0xFFFF_FFFF }
        }
        var best = Double.infinity
        for _ in 0..<max(passes, 1) {
            let start = DispatchTime.now().uptimeNanoseconds
            var n = 0
            for line in lines { n &+= tok.encode(line, addSpecialTokens: false).count }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            guard n == count else { throw CLIError("encode gave \(n) tokens, then \(count)") }
            best = min(best, seconds)
        }
        print("lines \(lines.count) bytes \(bytes) tokens \(count) checksum \(checksum)")
        print(String(format: "swift-dpo encode: %.4f s, %.2f MB/s, %.0f tokens/s", best, Double(bytes) / best / 1e6, Double(count) / best))
    }
}
