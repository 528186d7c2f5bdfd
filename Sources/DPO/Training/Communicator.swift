/// Data parallelism over several processes (ranks) that each hold the same model: the one
/// collective the engine needs, MPI's `MPI_Allreduce(..., MPI_SUM, ...)`. The engine has no MPI
/// of its own; a host implements this over MPI (the `dpo` command does, through the small shim
/// Sources/dpo-mpi/dpo_mpi.c that it loads only under `mpirun`) or anything with the same meaning.
///
/// Contract: every rank makes the same calls, in the same order, with the same counts; after a
/// call every rank holds the element-wise sum over all ranks, the same bits on every rank (as
/// MPI's reductions give on homogeneous ranks), so the ranks step their optimizers identically.
/// A call throws only for a failure of the transport.
///
/// With a communicator set (`DPOTrainer.communicator`, `SFTTrainer.communicator`), a trainer's
/// calls are collective: every rank passes its shard of a global batch, the global batch being the
/// shards concatenated in rank order (a shard may be empty). The loss, its gradient and the
/// metrics are those of the global batch (so a short last batch that leaves a rank nothing is
/// still exact), and the optimizer steps with the sum of the ranks' gradients.
public protocol Communicator: AnyObject {
    /// This process's index, 0 ..< size.
    var rank: Int { get }
    /// Number of ranks (>= 1).
    var size: Int { get }
    /// Replaces `values` on every rank with their element-wise sum over all ranks.
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws
    /// Replaces `values` on every rank with their element-wise sum over all ranks.
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws
}

extension Communicator {
    /// `allreduceSum` of an array.
    public func allreduceSum(_ values: inout [Double]) throws {
        try values.withUnsafeMutableBufferPointer { try allreduceSum($0) }
    }

    /// Where this rank's shard of `total` examples starts when every rank takes `perRank`
    /// consecutive examples in rank order (Accelerate's split of a global batch): rank r gets
    /// `r * perRank ..< (r + 1) * perRank`, clipped to `total` (possibly empty).
    public func shard(of total: Int, perRank: Int) -> Range<Int> {
        let lo = min(rank * perRank, total), hi = min(lo + perRank, total)
        return lo..<hi
    }
}

/// The communicator's rank and size, checked before they index or size anything.
func checkRanks(_ c: Communicator) throws {
    guard c.size >= 1 && c.size <= 1 << 20 && c.rank >= 0 && c.rank < c.size else {
        throw DPOError.invalidArgument("communicator: rank \(c.rank) of size \(c.size) is not a rank of 1 ... 2^20 ranks")
    }
}

/// A count that came back from an allreduce: an integer in [0, 2^40] (the sum of the ranks' counts),
/// or an error naming it; never a trap on a communicator that returned something else.
func exactCount(_ x: Double, _ what: String) throws -> Int {
    guard x >= 0 && x <= 0x1p40 && x == x.rounded() else {
        throw DPOError.internal("communicator: \(what) came back from the allreduce as \(x), not a count")
    }
    return Int(x)
}

/// One collective call's view of the global batch: which examples are this rank's, found with one
/// allreduce of the ranks' counts. The same allreduce carries whether each rank's local part
/// (packing, forward) failed, so that all ranks throw together instead of waiting forever for a
/// rank that gave up.
struct GlobalBatch {
    /// This rank's examples are `offset ..< offset + count` of the global batch of `total`.
    let offset: Int, count: Int, total: Int

    /// Collective. `localFailure` is this rank's error of the local part, if any: then every rank
    /// throws (this one its own error, the others an error of the same kind naming the rank).
    init(count: Int, localFailure: Error?, _ c: Communicator) throws {
        try checkRanks(c)
        let n = c.size
        // [count of each rank | error kind + 1 of each rank (0: fine)]
        var v = [Double](repeating: 0, count: 2 * n)
        v[c.rank] = Double(count)
        if let e = localFailure { v[n + c.rank] = Double(GlobalBatch.kindCode(e)) }
        try c.allreduceSum(&v)
        if let e = localFailure { throw e }
        let counts = try v.map { try exactCount($0, "a rank's example count or error code") }
        if let r = (0..<n).first(where: { counts[n + $0] != 0 }) {
            throw GlobalBatch.error(kind: counts[n + r], "rank \(r) of \(n) failed on its part of this batch (its own message says why); nothing was changed")
        }
        if counts[c.rank] != count { throw DPOError.internal("communicator: the allreduce changed this rank's own count \(count) to \(counts[c.rank])") }
        self.count = count
        offset = counts[..<c.rank].reduce(0, +)
        total = counts[..<n].reduce(0, +)
    }

    /// The ranks' per-example columns concatenated in rank order (each given column holds this
    /// rank's `count` values) and the ranks' `sums` added: one allreduce of zero-padded columns,
    /// so every rank gets the same values in the single-process order.
    func gather(columns: [[Double]], sums: [Double], _ c: Communicator) throws -> (columns: [[Double]], sums: [Double]) {
        var v = [Double](repeating: 0, count: columns.count * total + sums.count)
        for (j, column) in columns.enumerated() {
            precondition(column.count == count, "a gathered column has one value per local example")
            for (i, x) in column.enumerated() { v[j * total + offset + i] = x }
        }
        for (j, x) in sums.enumerated() { v[columns.count * total + j] = x }
        try c.allreduceSum(&v)
        let out = (0..<columns.count).map { j in Array(v[j * total ..< (j + 1) * total]) }
        return (out, Array(v[(columns.count * total)...]))
    }

    private static func kindCode(_ e: Error) -> Int {
        switch e as? DPOError {
        case .invalidArgument?: return 1
        case .io?: return 2
        case .format?: return 3
        case .outOfMemory?: return 4
        case .numeric?: return 5
        case .wrongState?: return 6
        default: return 7
        }
    }

    private static func error(kind: Int, _ message: String) -> DPOError {
        switch kind {
        case 1: return .invalidArgument(message)
        case 2: return .io(message)
        case 3: return .format(message)
        case 4: return .outOfMemory(message)
        case 5: return .numeric(message)
        case 6: return .wrongState(message)
        default: return .internal(message)
        }
    }
}
