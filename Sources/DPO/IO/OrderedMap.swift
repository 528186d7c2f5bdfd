/// String-keyed values that remember the order their keys were first set in: JSON objects
/// (`JSONObject`) and GGUF metadata (`GGUFMetadata`) keep the order of the file they came from and
/// write it back in that order.
///
/// Equality ignores key order: two maps are equal when they hold the same keys with equal values.
public struct OrderedMap<Value: Equatable & Sendable>: Equatable, Sendable, ExpressibleByDictionaryLiteral {
    /// The keys in insertion order.
    public private(set) var keys: [String] = []
    private var values: [String: Value] = [:]

    /// An empty map.
    public init() {}

    /// A map with the given pairs in order; a repeated key keeps its first position and last value.
    public init(dictionaryLiteral elements: (String, Value)...) {
        for (key, value) in elements { self[key] = value }
    }

    /// The value for `key`. Setting `nil` removes the key; setting a new key appends it.
    public subscript(key: String) -> Value? {
        get { values[key] }
        set {
            if let newValue {
                if values.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if values.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    /// The number of keys.
    public var count: Int { keys.count }

    /// Whether the map has no keys.
    public var isEmpty: Bool { keys.isEmpty }

    /// (key, value) pairs in insertion order.
    public var entries: [(key: String, value: Value)] { keys.compactMap { k in values[k].map { (k, $0) } } }

    public static func == (lhs: OrderedMap, rhs: OrderedMap) -> Bool {
        lhs.values == rhs.values
    }
}
