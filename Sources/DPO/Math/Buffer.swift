/// A zero-initialised, fixed-size `Float` allocation owned by one object (llm.c style flat buffers).
/// Hot loops take `pointer` into a local and index it directly.
public final class FloatBuffer {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    /// Allocates `count` zeroed floats. `count` must already be validated by the caller (>= 0).
    public init(count: Int) {
        self.count = count
        pointer = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { pointer.deallocate() }

    public var buffer: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: pointer, count: count)
    }

    public func zero() { pointer.update(repeating: 0, count: count) }

    public func copy(from other: FloatBuffer) {
        precondition(other.count == count, "FloatBuffer.copy: size mismatch (internal)")
        pointer.update(from: other.pointer, count: count)
    }

    public var array: [Float] { Array(buffer) }
}
