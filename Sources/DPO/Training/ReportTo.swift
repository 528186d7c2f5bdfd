// `report_to`: the log sinks a TrainingLoop writes to, and where TensorBoard's go.

import Glibc

extension TrainingArguments {
    /// The sinks of `report_to` (validated): "jsonl" -> `output_dir/metrics.jsonl`, "tensorboard"
    /// -> event files in `resolvedLoggingDir()`.
    public func makeLogSinks() -> [LogSink] {
        var sinks: [LogSink] = []
        if reportTo.contains("jsonl") { sinks.append(JSONLLogSink(path: joinPath(outputDir, "metrics.jsonl"))) }
        if reportTo.contains("tensorboard") { sinks.append(TensorBoardLogSink(directory: resolvedLoggingDir())) }
        return sinks
    }

    /// `logging_dir` if set, else as transformers 5's `TensorBoardCallback` (integrations/
    /// integration_utils.py): the environment's `TENSORBOARD_LOGGING_DIR` (a leading `~` or `~/`
    /// expanded from `HOME`; empty counts as unset), else `output_dir/runs/<now>_<hostname>`
    /// with now as `datetime.now().strftime("%b%d_%H-%M-%S")` (local time, C locale: "Mar05_14-03-09").
    public func resolvedLoggingDir() -> String {
        if let dir = loggingDir { return dir }
        if let v = getenv("TENSORBOARD_LOGGING_DIR"), v.pointee != 0 {
            return expandingHome(SystemPath.string(cString: v))
        }
        return joinPath(joinPath(outputDir, "runs"), localTimeStamp() + "_" + hostName())
    }
}

/// Python's `os.path.expanduser` for "~" and "~/..." (another user's "~name" is left as it is).
private func expandingHome(_ path: String) -> String {
    guard path == "~" || path.hasPrefix("~/"), let home = getenv("HOME"), home.pointee != 0 else { return path }
    let h = SystemPath.string(cString: home)
    return path == "~" ? h : joinPath(h, String(path.dropFirst(2)))
}

/// The local time as "%b%d_%H-%M-%S" (strftime; the process's LC_TIME, "C" unless the host set one).
private func localTimeStamp() -> String {
    var now = time(nil)
    var parts = tm()
    localtime_r(&now, &parts)
    var buffer = [CChar](repeating: 0, count: 64)
    let n = strftime(&buffer, 64, "%b%d_%H-%M-%S", &parts)
    return n > 0 ? SystemPath.string(cString: buffer) : "run"
}
