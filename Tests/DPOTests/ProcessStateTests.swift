import COpenBLAS
import Dispatch
import XCTest
@testable import DPO

/// Computations change no process-wide state, so distinct trainers are independent across threads:
/// attention's parallel tasks leave OpenBLAS's global thread count alone (they used to set it to 1
/// for their duration, racing with any other thread's products), the GEMM counters are opt-in for
/// benchmarks and exact when two trainers run at once, and two trainers stepping in two threads
/// give bit for bit the results of running them one after the other.
final class ProcessStateTests: XCTestCase {
    private var savedThreads = 0

    override func setUp() {
        savedThreads = Threads.count
        Threads.setCount(2)
        GemmCounter.isEnabled = false
        GemmCounter.reset()
    }

    override func tearDown() {
        GemmCounter.isEnabled = false
        Threads.setCount(savedThreads)
    }

    func testParallelTasksLeaveOpenBLASThreadCountAlone() {
        XCTAssertEqual(openblas_get_num_threads(), 2)
        var seen = [Int32](repeating: 0, count: 16)
        seen.withUnsafeMutableBufferPointer { seen in
            parallelTasks(seen.count) { _, task in seen[task] = openblas_get_num_threads() }
        }
        XCTAssertEqual(seen, [Int32](repeating: 2, count: 16))
        XCTAssertEqual(openblas_get_num_threads(), 2)
    }

    func testGemmCounterIsOptIn() throws {
        let trainer = try makeTrainer(seed: 1)
        let pairs = PreferenceTask.pairs(4, seed: 5)
        _ = try trainer.step(pairs)
        XCTAssertEqual(GemmCounter.flops, 0, "sgemm counted work without being asked to")
        XCTAssertEqual(GemmCounter.seconds, 0)
        GemmCounter.isEnabled = true
        _ = try trainer.step(pairs)
        XCTAssertGreaterThan(GemmCounter.flops, 0)
        XCTAssertGreaterThan(GemmCounter.seconds, 0)
    }

    func testTwoTrainersInTwoThreadsEqualSequentialRuns() throws {
        GemmCounter.isEnabled = true  // also checks that concurrent counting loses nothing
        let sequential = try [run(seed: 1), run(seed: 2)]
        let sequentialFlops = GemmCounter.flops
        XCTAssertNotEqual(sequential[0].weights, sequential[1].weights)

        GemmCounter.reset()
        var concurrent: [Run?] = [nil, nil]
        var failures: [Error?] = [nil, nil]
        concurrent.withUnsafeMutableBufferPointer { out in
            failures.withUnsafeMutableBufferPointer { failed in
                DispatchQueue.concurrentPerform(iterations: 2) { i in
                    do { out[i] = try run(seed: UInt64(i + 1)) } catch { failed[i] = error }
                }
            }
        }
        for f in failures { if let f { throw f } }
        for i in 0..<2 {
            XCTAssertEqual(concurrent[i]?.losses, sequential[i].losses, "run \(i + 1): losses")
            XCTAssertTrue(concurrent[i]?.weights == sequential[i].weights, "run \(i + 1): weights differ")
        }
        XCTAssertEqual(GemmCounter.flops, sequentialFlops)
        XCTAssertEqual(openblas_get_num_threads(), 2)
    }

    /// Attention's products are split into blocks OpenBLAS computes on the calling thread; the
    /// result is the one product's (up to rounding), for every transpose and every way of
    /// splitting: rows, columns and k, with partial blocks at the ends (and k = 0: C = beta C).
    func testSgemmOnCallingThreadEqualsOneProduct() {
        var rng = Xoshiro256(seed: 11)
        let sizes = [(70, 300, 64), (130, 70, 200), (16, 900, 40), (5, 7, 9), (70, 5000, 0)]
        let transposes = [(false, false), (false, true), (true, false), (true, true)]
        for (m, n, k) in sizes {
            for (transA, transB) in transposes {
                let a = (0..<(m * k)).map { _ in Float(rng.nextNormal()) }
                let b = (0..<(k * n)).map { _ in Float(rng.nextNormal()) }
                let lda = transA ? m : k, ldb = transB ? k : n
                var whole = [Float](repeating: 1, count: m * n), blocks = whole
                var tally = GemmTally()
                sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb,
                      beta: 0.25, c: &whole, ldc: n)
                sgemmOnCallingThread(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda,
                                     b: b, ldb: ldb, beta: 0.25, c: &blocks, ldc: n, tally: &tally)
                for i in 0..<(m * n) where abs(whole[i] - blocks[i]) > 1e-4 * max(1, abs(whole[i])) {
                    XCTFail("\(m)x\(n)x\(k), transA \(transA), transB \(transB): entry \(i): \(whole[i]) vs \(blocks[i])")
                    break
                }
            }
        }
    }

    private struct Run {
        var losses: [Double]
        var weights: [Float]
    }

    private func makeTrainer(seed: UInt64) throws -> DPOTrainer {
        var config = PreferenceTask.config
        config.maxPositionEmbeddings = 256
        let policy = try LlamaModel.randomlyInitialized(config: config, seed: seed)
        var c = DPOConfig()
        c.optimizer.learningRate = 1e-2
        return try DPOTrainer(policy: policy, config: c)
    }

    /// Three steps on pairs long enough that attention splits into many parallel tasks.
    private func run(seed: UInt64) throws -> Run {
        let trainer = try makeTrainer(seed: seed)
        var rng = Xoshiro256(seed: seed &+ 50)
        func words(_ n: Int) -> [Int32] { (0..<n).map { _ in Int32(4 + rng.next() % 24) } }
        let pairs = (0..<4).map { _ in
            PreferencePair(promptIds: words(40), chosenIds: [PreferenceTask.good] + words(30),
                           rejectedIds: [PreferenceTask.bad] + words(20))
        }
        var losses: [Double] = []
        for _ in 0..<3 { losses.append(try trainer.step(pairs).metrics.loss) }
        return Run(losses: losses, weights: trainer.policy.parameters.array)
    }
}
