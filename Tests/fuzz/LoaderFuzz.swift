// libFuzzer target for the model loaders (`make fuzz`; a short run is part of `make test`).
// Built together with the engine's sources by Tests/fuzz/run.sh with -sanitize=fuzzer,address.
//
// An input starting with the GGUF magic ("GGUF") is a GGUF file: the target writes it as
// model.gguf, opens it with `GGUFFile.open`, dequantizes every tensor it can (up to 2^20
// elements each) and loads it with `LlamaModel.load(ggufFile:)`.
// Any other input is a model folder: [UInt32 little-endian n][n bytes: config.json][rest:
// model.safetensors]. The target writes the two files into a private folder under /dev/shm (or
// $TMPDIR) and loads it with `LlamaModel.load(directory:)`. Every input must end in a model or a DPOError: a crash, a
// hang, a sanitizer report or an allocation above libFuzzer's -malloc_limit_mb is a failure.
// A model that loads is also run forward once on a two-token sequence (its log-prob must be
// finite or the forward must throw), so weights the file makes NaN/inf are exercised too.

import Glibc

private let folder: String = {
    Threads.setCount(1)
    let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp")
    let path = "\(base)/dpo-loader-fuzz-\(getpid())"
    mkdir(path, 0o700)
    return path
}()

private func write(_ bytes: UnsafeRawBufferPointer, _ name: String) {
    let fd = open("\(folder)/\(name)", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { return }
    var done = 0
    while done < bytes.count {
        let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
        if n <= 0 { break }
        done += n
    }
    close(fd)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func loaderFuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    if size >= 4 && input[0] == 0x47 && input[1] == 0x47 && input[2] == 0x55 && input[3] == 0x46 {
        write(input, "model.gguf")
        let path = "\(folder)/model.gguf"
        if let file = try? GGUFFile.open(path: path) {
            for t in file.tensors where t.type.isReadableAsFloat && t.count <= 1 << 20 { _ = try? file.floats(t.name) }
        }
        guard let model = try? LlamaModel.load(ggufFile: path) else { return 0 }
        check(model)
        return 0
    }
    var n = 0
    if size >= 4 { for i in 0..<4 { n |= Int(input[i]) << (8 * i) } }
    let configEnd = min(4 + n, size), start = min(4, size)
    write(UnsafeRawBufferPointer(rebasing: input[start..<configEnd]), "config.json")
    write(UnsafeRawBufferPointer(rebasing: input[configEnd..<size]), "model.safetensors")
    guard let model = try? LlamaModel.load(directory: folder) else { return 0 }
    check(model)
    return 0
}

/// A loaded model's forward gives a finite log-prob or throws.
private func check(_ model: LlamaModel) {
    let last = Int32(model.config.vocabSize - 1)
    if let logps = try? model.sequenceLogProbs([(prompt: [0], completion: [last])]), !logps.allSatisfy({ $0.isFinite }) {
        fatalError("a forward returned a non-finite log-prob instead of throwing: \(logps)")
    }
}
