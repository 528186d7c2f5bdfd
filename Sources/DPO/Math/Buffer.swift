#if canImport(Glibc)
import Glibc
#endif

/// A zero-initialised, fixed-size `Float` allocation owned by one object (llm.c style flat buffers).
/// Hot loops take `pointer` into a local and index it directly.
public final class FloatBuffer {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    /// Allocates `count` zeroed floats, or throws `DPOError.outOfMemory` naming `what` when they
    /// do not fit (`MemoryLimit`) or the system refuses them: never a trap. Large buffers (model
    /// weights, gradients, optimizer moments, activations) are allocated this way.
    public convenience init(checkedCount count: Int, for what: String) throws {
        guard count >= 0 else { throw DPOError.internal("FloatBuffer: negative size \(count) for \(what)") }
        try MemoryLimit.check(Double(count) * 4, what)
        guard let raw = FloatBuffer.zeroedFloats(count) else {
            throw DPOError.outOfMemory("\(what): the system refused \(MemoryLimit.text(Double(count) * 4))")
        }
        self.init(count: count, pointer: raw)
    }

    /// Allocates `count` zeroed floats for small internal buffers whose size the caller has
    /// already bounded; a refused allocation here is a bug and traps.
    public convenience init(count: Int) {
        guard count >= 0, let raw = FloatBuffer.zeroedFloats(count) else {
            preconditionFailure("FloatBuffer: cannot allocate \(count) floats (internal: sizes must be checked before)")
        }
        self.init(count: count, pointer: raw)
    }

    private init(count: Int, pointer: UnsafeMutablePointer<Float>) {
        self.count = count
        self.pointer = pointer
    }

    /// calloc: zeroed pages straight from the kernel, and nil (not a trap) when refused.
    private static func zeroedFloats(_ count: Int) -> UnsafeMutablePointer<Float>? {
        calloc(max(count, 1), MemoryLayout<Float>.stride)?.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    deinit { free(pointer) }

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
