import CDPOHeader
import DPO

/// Checks of model configs that must run before the engine sees them: each dimension bounded so
/// that products of up to three of them fit in 64 bits (the engine multiplies them in Int).
enum ConfigGuard {
    /// The engine's limits (`LlamaConfig.validate` applies them too).
    static let dimensionLimits: [(String, Int64)] = LlamaConfig.dimensionLimits.map { ($0.name, Int64($0.limit)) }

    static func checkDimension(_ name: String, _ value: Int64) throws {
        guard let limit = dimensionLimits.first(where: { $0.0 == name })?.1 else { return }
        if value > limit { throw APIError.invalid("config: \(name) = \(value) is larger than the supported maximum \(limit)") }
    }

    /// The same bounds on a config.json object (before `LlamaConfig(json:)` multiplies them).
    /// `fileError` turns the message into a format error (a file) instead of an invalid argument.
    static func checkJSON(_ object: JSONObject, _ source: String, fileError: Bool) throws {
        func fail(_ m: String) -> APIError {
            APIError(status: fileError ? DPO_ERR_FORMAT : DPO_ERR_INVALID_ARGUMENT, message: "\(source): \(m)")
        }
        for (name, limit) in dimensionLimits {
            if let d = object[name]?.double, d > Double(limit) {
                throw fail("\(name) = \(d) is larger than the supported maximum \(limit)")
            }
        }
        for key in ["rope_parameters", "rope_scaling"] {
            if let rope = object[key]?.object, let v = rope["original_max_position_embeddings"] {
                guard let d = v.double, d.isFinite, abs(d) <= Double(Int32.max) else {
                    throw fail("\(key).original_max_position_embeddings must be an integer below 2^31, got \(JSON.serialize(v, pretty: false))")
                }
            }
        }
    }
}
