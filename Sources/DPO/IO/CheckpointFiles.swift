// The weights of a Hugging Face model directory: either one `model.safetensors`, or shards listed
// by `model.safetensors.index.json` ({"weight_map": {"<tensor name>": "<shard file name>"}, ...}).

/// The safetensors weights of a model directory, single-file or sharded.
public final class SafetensorsCheckpoint: Sendable {
    /// The directory the checkpoint was opened from.
    public let directory: String
    /// The tensor names: header order for a single file, `weight_map` order for a sharded checkpoint.
    public let tensorNames: [String]

    /// The open files (one, or each distinct shard once).
    private let files: [SafetensorsFile]
    /// Tensor name -> index into `files`.
    private let fileOfTensor: [String: Int]

    private init(directory: String, tensorNames: [String], files: [SafetensorsFile], fileOfTensor: [String: Int]) {
        self.directory = directory
        self.tensorNames = tensorNames
        self.files = files
        self.fileOfTensor = fileOfTensor
    }

    /// Opens the weights in `directory`: `model.safetensors` if present, else the shards named by
    /// `model.safetensors.index.json`. For a sharded checkpoint the `weight_map` is authoritative:
    /// every tensor it names must exist in its shard, and tensors it does not name are not exposed.
    public static func open(directory: String) throws -> SafetensorsCheckpoint {
        let single = joinPath(directory, "model.safetensors")
        if fileExists(single) {
            let file = try SafetensorsFile.open(single)
            return SafetensorsCheckpoint(directory: directory, tensorNames: file.tensorNames, files: [file],
                                         fileOfTensor: Dictionary(uniqueKeysWithValues: file.tensorNames.map { ($0, 0) }))
        }
        let indexPath = joinPath(directory, "model.safetensors.index.json")
        if fileExists(indexPath) {
            return try openSharded(directory: directory, indexPath: indexPath)
        }
        throw DPOError.io("no model.safetensors or model.safetensors.index.json in \(directory)")
    }

    private static func openSharded(directory: String, indexPath: String) throws -> SafetensorsCheckpoint {
        func fail(_ message: String) -> DPOError { .format("\(indexPath): \(message)") }
        let index: JSONValue
        do {
            index = try JSON.parse(try readFile(indexPath))
        } catch DPOError.format(let message) {
            throw fail(message)
        }
        guard let weightMap = index.object?["weight_map"]?.object else {
            throw fail("missing or non-object 'weight_map'")
        }

        var files: [SafetensorsFile] = []
        var fileOfShard: [String: Int] = [:]
        var fileOfTensor: [String: Int] = [:]
        for tensor in weightMap.keys {
            guard let shard = weightMap[tensor]!.string else {
                throw fail("weight_map entry for tensor '\(tensor)' is not a string")
            }
            guard !shard.isEmpty, !shard.contains("/"), !shard.contains(".."), !shard.contains("\0") else {
                throw fail("invalid shard file name '\(shard)' for tensor '\(tensor)'")
            }
            let fileIndex: Int
            if let known = fileOfShard[shard] {
                fileIndex = known
            } else {
                fileIndex = files.count
                files.append(try SafetensorsFile.open(joinPath(directory, shard)))
                fileOfShard[shard] = fileIndex
            }
            guard files[fileIndex].info(tensor) != nil else {
                throw fail("tensor '\(tensor)' is mapped to shard '\(shard)' but is not in it")
            }
            fileOfTensor[tensor] = fileIndex
        }
        return SafetensorsCheckpoint(directory: directory, tensorNames: weightMap.keys, files: files,
                                     fileOfTensor: fileOfTensor)
    }

    /// The header entry of tensor `name`, or nil if the checkpoint has no such tensor.
    public func info(_ name: String) -> SafetensorsTensorInfo? {
        fileOfTensor[name].flatMap { files[$0].info(name) }
    }

    /// Reads tensor `name` into `destination` as `Float` (see `SafetensorsFile.readFloats`).
    public func readFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let fileIndex = fileOfTensor[name] else {
            throw DPOError.invalidArgument("no tensor '\(name)' in the checkpoint in \(directory)")
        }
        try files[fileIndex].readFloats(name, into: destination)
    }

    /// Reads tensor `name` into a new array.
    public func floats(_ name: String) throws -> [Float] {
        guard let fileIndex = fileOfTensor[name] else {
            throw DPOError.invalidArgument("no tensor '\(name)' in the checkpoint in \(directory)")
        }
        return try files[fileIndex].floats(name)
    }
}
