import Foundation

/// Progress of a long loop: a redrawn bar with rate and ETA on a terminal, plain log lines otherwise.
final class Progress {
    let total: Int, title: String
    let isTerminal = isatty(STDOUT_FILENO) == 1
    private let start = now()
    private var startCount = 0
    private var lastDraw = 0.0

    init(title: String, total: Int, startingAt: Int = 0) {
        self.title = title; self.total = total; startCount = startingAt
    }

    static func clock(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "--:--" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }

    /// Redraws the bar (terminal only; at most 10 times a second unless `force`).
    func update(_ done: Int, _ detail: String, force: Bool = false) {
        guard isTerminal else { return }
        let t = now()
        if !force && t - lastDraw < 0.1 && done < total { return }
        lastDraw = t
        let elapsed = t - start, rate = Double(done - startCount) / max(elapsed, 1e-9)
        let eta = Double(total - done) / max(rate, 1e-9)
        let width = 24, filled = total > 0 ? min(width, width * done / total) : width
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = "\(title) [\(bar)] \(done)/\(total) \(String(format: "%.2f", rate)) it/s ETA \(Progress.clock(eta))  \(detail)"
        FileHandle.standardOutput.write(("\r\u{1B}[2K" + line).data(using: .utf8)!)
        if done >= total { FileHandle.standardOutput.write("\n".data(using: .utf8)!) }
    }

    /// A log line: on a terminal it is printed above the bar; elsewhere it is the only output.
    func log(_ text: String) {
        if isTerminal { FileHandle.standardOutput.write("\r\u{1B}[2K".data(using: .utf8)!) }
        print(text)
        fflush(stdout)
    }

    var elapsed: Double { now() - start }
}
