import Foundation
@testable import DPO

/// An in-process `Communicator` for tests: the ranks are threads of this process, and an
/// allreduce sums the ranks' buffers in rank order (deterministic, the same bits on every rank, as
/// MPI's reductions). No MPI needed. A rank that fails (see `runRanks`) or a wait longer than
/// `timeout` makes every waiting rank throw, so a broken test fails instead of hanging.
final class LocalGroup {
    let size: Int
    let timeout: Double
    private let cond = NSCondition()
    private var arrived = 0, generation = 0
    private var floats: [UnsafeMutableBufferPointer<Float>?]
    private var doubles: [UnsafeMutableBufferPointer<Double>?]
    private var failure: String?
    /// Allreduce calls completed, and elements summed by them.
    private(set) var calls = 0, elements = 0

    init(size: Int, timeout: Double = 120) {
        self.size = size; self.timeout = timeout
        floats = Array(repeating: nil, count: size); doubles = Array(repeating: nil, count: size)
    }

    func communicator(rank: Int) -> LocalCommunicator { LocalCommunicator(group: self, rank: rank) }

    func fail(_ message: String) {
        cond.lock(); defer { cond.unlock() }
        if failure == nil { failure = message }
        cond.broadcast()
    }

    func allreduce(rank: Int, floats f: UnsafeMutableBufferPointer<Float>?, doubles d: UnsafeMutableBufferPointer<Double>?) throws {
        cond.lock(); defer { cond.unlock() }
        if let failure { throw DPOError.io("local group: \(failure)") }
        floats[rank] = f; doubles[rank] = d
        arrived += 1
        let gen = generation
        if arrived == size {
            try reduce()
            arrived = 0; generation += 1
            cond.broadcast()
            return
        }
        let deadline = Date(timeIntervalSinceNow: timeout)
        while generation == gen && failure == nil {
            if !cond.wait(until: deadline) && generation == gen {
                failure = "rank \(rank) waited more than \(timeout) s for the other ranks"
                cond.broadcast()
            }
        }
        if generation == gen, let failure { throw DPOError.io("local group: \(failure)") }
    }

    /// Called with all ranks arrived: sums in rank order, writes the sum to every rank's buffer.
    private func reduce() throws {
        func sum<F: FloatingPoint>(_ bufs: [UnsafeMutableBufferPointer<F>?]) throws {
            let all = bufs.compactMap { $0 }
            guard all.count == size, Set(all.map(\.count)).count == 1 else {
                failure = "the ranks' allreduce calls differ in type or count"
                cond.broadcast()
                throw DPOError.io("local group: \(failure!)")
            }
            for i in 0..<all[0].count {
                var s = all[0][i]
                for r in 1..<size { s += all[r][i] }
                for r in 0..<size { all[r][i] = s }
            }
            calls += 1; elements += all[0].count
        }
        if floats[0] != nil { try sum(floats) } else { try sum(doubles) }
        floats = Array(repeating: nil, count: size); doubles = Array(repeating: nil, count: size)
    }

    /// Runs `body(rank, communicator)` on `size` threads at once and returns the results in rank
    /// order; a rank that throws fails the group (the others' waits throw), and the first error
    /// (by rank) is rethrown.
    func runRanks<R>(_ body: @escaping (Int, LocalCommunicator) throws -> R) throws -> [R] {
        let results = try runRanksCatching(body)
        return try results.map { try $0.get() }
    }

    /// As `runRanks`, with every rank's outcome.
    func runRanksCatching<R>(_ body: @escaping (Int, LocalCommunicator) throws -> R) throws -> [Result<R, Error>] {
        let box = ResultBox<R>(count: size)
        let done = DispatchGroup()
        let lock = NSLock()
        for r in 0..<size {
            done.enter()
            let t = Thread { [self] in
                let out: Result<R, Error>
                do { out = .success(try body(r, communicator(rank: r))) } catch {
                    out = .failure(error)
                    fail("rank \(r) failed: \(error)")
                }
                lock.lock(); box.results[r] = out; lock.unlock()
                done.leave()
            }
            t.stackSize = 8 << 20
            t.start()
        }
        done.wait()
        return box.results.map { $0! }
    }
}

private final class ResultBox<R>: @unchecked Sendable {
    var results: [Result<R, Error>?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
}

final class LocalCommunicator: Communicator {
    let group: LocalGroup
    let rank: Int
    var size: Int { group.size }
    init(group: LocalGroup, rank: Int) { self.group = group; self.rank = rank }
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws { try group.allreduce(rank: rank, floats: values, doubles: nil) }
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws { try group.allreduce(rank: rank, floats: nil, doubles: values) }
}
