#if canImport(Glibc)
import Glibc
#endif

// Grouped-query causal attention over packed segments (see PackedTokens). For a segment with
// n tokens and a parent of np tokens, head h (kv group g = h / (heads / kvHeads)) computes
//   S = scale * Q_h [K_parent,g ; K_own,g]^T            [n, np + n], scale = 1 / sqrt(headDim)
//   P = softmax(S) over the visible keys: all parent keys, own keys j <= i
//   O_h = P [V_parent,g ; V_own,g]
// Only lse = log sum exp of each row's visible scores is kept; the backward recomputes P from it:
//   dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dQ = scale dS K,  dK += scale dS^T Q,  dV += P^T dO
// q, o and their gradients are [tokens, heads * headDim]; k, v and theirs [tokens, kvHeads * headDim].
// A segment's rows go in blocks of `attentionRowBlock`, each scoring only the keys it can see, and
// the (segment or family) x kv-group tasks run in parallel (see attentionTasks).

struct AttentionShape {
    let heads: Int, kvHeads: Int, headDim: Int
    /// The products with bf16 inputs (LlamaModel.bf16).
    var bf16 = false
    var qWidth: Int { heads * headDim }
    var kvWidth: Int { kvHeads * headDim }
    var scale: Float { 1 / Float(headDim).squareRoot() }
}

/// Rows of a segment processed together. Each block's scores cover only the keys its rows can see
/// (the parent and the segment's rows up to the block's last), which skips most of the masked
/// upper triangle: 37.5% of a 256-token segment's score entries.
let attentionRowBlock = 64

/// Scratch floats a segment set needs per worker and score matrix: the largest row block's
/// [rows, np + n] scores.
func attentionScratchCount(_ segments: [PackedTokens.Segment]) -> Int {
    var most = 0
    for s in segments {
        let np = s.parent >= 0 ? segments[s.parent].count : 0
        most = max(most, min(attentionRowBlock, s.count) * (np + s.count))
    }
    return most
}

/// A unit of parallel attention work: the heads of kv group `group` over `segments`.
struct AttentionTask {
    let group: Int
    let segments: [Int]
    let cost: Int  // score entries, sum of n (np + n)
}

/// The tasks of one attention pass, costliest first. The forward splits by (segment, kv group).
/// The backward splits by (family, kv group), a family being a root segment and its children:
/// children add into their parent's dK and dV rows, and the heads of a group into the same
/// columns, so only whole families of one group may run concurrently.
func attentionTasks(_ segments: [PackedTokens.Segment], kvHeads: Int, byFamily: Bool) -> [AttentionTask] {
    var units: [[Int]] = []
    var familyOf = [Int](repeating: -1, count: segments.count)
    for (i, s) in segments.enumerated() {
        if byFamily && s.parent >= 0 {
            units[familyOf[s.parent]].append(i)
            familyOf[i] = familyOf[s.parent]
        } else {
            familyOf[i] = units.count
            units.append([i])
        }
    }
    var tasks: [AttentionTask] = []
    for unit in units {
        let cost = unit.reduce(0) { total, i in
            let np = segments[i].parent >= 0 ? segments[segments[i].parent].count : 0
            return total + segments[i].count * (np + segments[i].count)
        }
        for g in 0..<kvHeads { tasks.append(AttentionTask(group: g, segments: unit, cost: cost)) }
    }
    return tasks.sorted { $0.cost > $1.cost }
}

/// Runs `tasks` on parallel workers (see parallelTasks), each with `scratchPerWorker` floats of
/// `scratch` and its own GEMM tally (merged into GemmCounter after).
private func runAttentionTasks(_ tasks: [AttentionTask], scratch: UnsafeMutablePointer<Float>,
                               scratchPerWorker: Int,
                               _ body: (AttentionTask, UnsafeMutablePointer<Float>, UnsafeMutablePointer<GemmTally>) -> Void) {
    var tallies = [GemmTally](repeating: GemmTally(), count: taskWorkers(tasks.count))
    tallies.withUnsafeMutableBufferPointer { tally in
        parallelTasks(tasks.count) { worker, task in
            body(tasks[task], scratch + worker * scratchPerWorker, tally.baseAddress! + worker)
        }
    }
    GemmCounter.merge(tallies)
}

/// One row block of one segment for one head: rows [r0, r1) of the segment (the head's q/o
/// columns), the kv group's k/v columns of the parent's rows and of the segment's rows [0, r1).
/// Its scores are [n, width]: the parent's np keys, then the segment's first r1 keys; local row i
/// sees all parent keys and the segment's keys up to r0 + i.
private struct HeadView {
    let n: Int, np: Int, r0: Int, own: Int, width: Int
    let qOffset: Int        // into [tokens, qWidth] buffers
    let kvParent: Int       // into [tokens, kvWidth] buffers
    let kvOwn: Int
    let lseOffset: Int      // into [tokens, heads]

    init(_ segments: [PackedTokens.Segment], _ index: Int, rows: Range<Int>, head h: Int, group g: Int,
         shape a: AttentionShape) {
        let seg = segments[index]
        n = rows.count; r0 = rows.lowerBound; own = rows.upperBound
        np = seg.parent >= 0 ? segments[seg.parent].count : 0
        width = np + own
        let p0 = seg.parent >= 0 ? segments[seg.parent].start : 0
        qOffset = (seg.start + r0) * a.qWidth + h * a.headDim
        kvParent = p0 * a.kvWidth + g * a.headDim
        kvOwn = seg.start * a.kvWidth + g * a.headDim
        lseOffset = (seg.start + r0) * a.heads + h
    }

    /// Visible score columns of local row i.
    @inline(__always) func visible(_ i: Int) -> Int { np + r0 + i + 1 }

    /// Calls `body` with the view of every (row block, head) of `task`, in order.
    static func forEach(in task: AttentionTask, _ segments: [PackedTokens.Segment], shape a: AttentionShape,
                        _ body: (HeadView) -> Void) {
        let group = a.heads / a.kvHeads
        for index in task.segments {
            let n = segments[index].count
            for r0 in stride(from: 0, to: n, by: attentionRowBlock) {
                for h in task.group * group..<(task.group + 1) * group {
                    body(HeadView(segments, index, rows: r0..<min(r0 + attentionRowBlock, n), head: h,
                                  group: task.group, shape: a))
                }
            }
        }
    }
}

/// Fills row i of `s` [n, width] with its softmax over the visible columns, zeros the rest, and
/// stores the row's log-sum-exp.
private func causalSoftmaxRows(_ s: UnsafeMutablePointer<Float>, view x: HeadView,
                               lse: UnsafeMutablePointer<Float>, lseStride: Int) {
    for i in 0..<x.n {
        let row = s + i * x.width
        let visible = x.visible(i)
        let m = maxOf(row, visible)
        let sum = expShiftInPlace(row, visible, shift: m)
        scaleInPlace(row, visible, by: Float(1 / sum))
        (row + visible).update(repeating: 0, count: x.width - visible)
        lse[i * lseStride] = m + Float(log(sum))
    }
}

/// P recomputed from scores and saved lse (masked entries 0).
private func probabilitiesFromLSE(_ s: UnsafeMutablePointer<Float>, view x: HeadView,
                                  lse: UnsafePointer<Float>, lseStride: Int) {
    for i in 0..<x.n {
        let row = s + i * x.width
        let visible = x.visible(i)
        expShiftInPlace(row, visible, shift: lse[i * lseStride])
        (row + visible).update(repeating: 0, count: x.width - visible)
    }
}

// The three products of a row block and head. "Rows" are the block's rows, the head's columns, of
// a [tokens, qWidth] buffer (q, o, dO, dq); "keys" are the kv group's columns of the parent's rows
// and the segment's first `own` rows of a [tokens, kvWidth] buffer (k, v, dk, dv); a score-shaped
// matrix is [n, width], the parent's np columns first. They run on attention's parallel workers,
// so they go through gemmOnCallingThread (each worker's products on its own thread).

/// s = alpha * rows [keys_parent ; keys_own]^T: the scores (q against k) and dP (dO against v).
private func rowsTimesKeysT(_ s: UnsafeMutablePointer<Float>, rows: UnsafePointer<Float>,
                            keys: UnsafePointer<Float>, alpha: Float, view x: HeadView, shape a: AttentionShape,
                            tally: UnsafeMutablePointer<GemmTally>) {
    if x.np > 0 {
        gemmOnCallingThread(bf16: a.bf16, transB: true, m: x.n, n: x.np, k: a.headDim, alpha: alpha,
                             a: rows + x.qOffset, lda: a.qWidth, b: keys + x.kvParent, ldb: a.kvWidth,
                             c: s, ldc: x.width, tally: tally)
    }
    gemmOnCallingThread(bf16: a.bf16, transB: true, m: x.n, n: x.own, k: a.headDim, alpha: alpha,
                         a: rows + x.qOffset, lda: a.qWidth, b: keys + x.kvOwn, ldb: a.kvWidth,
                         c: s + x.np, ldc: x.width, tally: tally)
}

/// rows = alpha * s [keys_parent ; keys_own] (overwritten): O = P V and dQ = scale dS K.
private func scoresTimesKeys(_ rows: UnsafeMutablePointer<Float>, s: UnsafePointer<Float>,
                             keys: UnsafePointer<Float>, alpha: Float, view x: HeadView, shape a: AttentionShape,
                             tally: UnsafeMutablePointer<GemmTally>) {
    if x.np > 0 {
        gemmOnCallingThread(bf16: a.bf16, m: x.n, n: a.headDim, k: x.np, alpha: alpha, a: s, lda: x.width,
                             b: keys + x.kvParent, ldb: a.kvWidth, c: rows + x.qOffset, ldc: a.qWidth,
                             tally: tally)
    }
    gemmOnCallingThread(bf16: a.bf16, m: x.n, n: a.headDim, k: x.own, alpha: alpha, a: s + x.np, lda: x.width,
                         b: keys + x.kvOwn, ldb: a.kvWidth, beta: x.np > 0 ? 1 : 0,
                         c: rows + x.qOffset, ldc: a.qWidth, tally: tally)
}

/// [keys_parent ; keys_own] += alpha * s^T rows: dK += scale dS^T Q and dV += P^T dO (parent rows
/// receive from every child segment).
private func addScoresTTimesRows(_ keys: UnsafeMutablePointer<Float>, s: UnsafePointer<Float>,
                                 rows: UnsafePointer<Float>, alpha: Float, view x: HeadView,
                                 shape a: AttentionShape, tally: UnsafeMutablePointer<GemmTally>) {
    if x.np > 0 {
        gemmOnCallingThread(bf16: a.bf16, transA: true, m: x.np, n: a.headDim, k: x.n, alpha: alpha, a: s, lda: x.width,
                             b: rows + x.qOffset, ldb: a.qWidth, beta: 1,
                             c: keys + x.kvParent, ldc: a.kvWidth, tally: tally)
    }
    gemmOnCallingThread(bf16: a.bf16, transA: true, m: x.own, n: a.headDim, k: x.n, alpha: alpha, a: s + x.np, lda: x.width,
                         b: rows + x.qOffset, ldb: a.qWidth, beta: 1,
                         c: keys + x.kvOwn, ldc: a.kvWidth, tally: tally)
}

/// out[tokens, qWidth] = attention(q, k, v); lse[tokens, heads] saved for the backward.
/// `scratch` holds one score matrix per worker (`scratchCount` floats each, Threads.count workers).
func attentionForward(out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
                      q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                      segments: [PackedTokens.Segment], shape a: AttentionShape,
                      scratch: UnsafeMutablePointer<Float>, scratchCount: Int) {
    let tasks = attentionTasks(segments, kvHeads: a.kvHeads, byFamily: false)
    runAttentionTasks(tasks, scratch: scratch, scratchPerWorker: scratchCount) { task, s, tally in
        HeadView.forEach(in: task, segments, shape: a) { x in
            rowsTimesKeysT(s, rows: q, keys: k, alpha: a.scale, view: x, shape: a, tally: tally)  // S
            causalSoftmaxRows(s, view: x, lse: lse + x.lseOffset, lseStride: a.heads)
            scoresTimesKeys(out, s: s, keys: v, alpha: 1, view: x, shape: a, tally: tally)      // O = P V
        }
    }
}

/// Backward of `attentionForward`. dq is overwritten; dk and dv are accumulated into (zero them
/// first). `out` receives the forward's output, recomputed from the probabilities (O = P V; the
/// caller needs it for o_proj's weight gradient). `scratch` holds two score matrices per worker
/// (`scratchCount` floats each).
func attentionBackward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
                       dv: UnsafeMutablePointer<Float>, dOut: UnsafePointer<Float>,
                       out: UnsafeMutablePointer<Float>, lse: UnsafePointer<Float>,
                       q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                       segments: [PackedTokens.Segment], shape a: AttentionShape,
                       scratch: UnsafeMutablePointer<Float>, scratchCount: Int) {
    let tasks = attentionTasks(segments, kvHeads: a.kvHeads, byFamily: true)
    runAttentionTasks(tasks, scratch: scratch, scratchPerWorker: 2 * scratchCount) { task, p, tally in
        let dp = p + scratchCount
        HeadView.forEach(in: task, segments, shape: a) { x in
            let width = x.width
            let doh = dOut + x.qOffset, oh = out + x.qOffset
            rowsTimesKeysT(p, rows: q, keys: k, alpha: a.scale, view: x, shape: a, tally: tally)        // S
            probabilitiesFromLSE(p, view: x, lse: lse + x.lseOffset, lseStride: a.heads)
            scoresTimesKeys(out, s: p, keys: v, alpha: 1, view: x, shape: a, tally: tally)             // O = P V
            rowsTimesKeysT(dp, rows: dOut, keys: v, alpha: 1, view: x, shape: a, tally: tally)         // dP = dO V^T
            // dS = P * (dP - D_i), D_i = dO_i . O_i
            for i in 0..<x.n {
                var d: Float = 0
                let dor = doh + i * a.qWidth, or = oh + i * a.qWidth
                for j in 0..<a.headDim { d += dor[j] * or[j] }
                let pr = p + i * width, dr = dp + i * width
                for j in 0..<width { dr[j] = pr[j] * (dr[j] - d) }
            }
            scoresTimesKeys(dq, s: dp, keys: k, alpha: a.scale, view: x, shape: a, tally: tally)      // dQ = scale dS K
            addScoresTTimesRows(dk, s: dp, rows: q, alpha: a.scale, view: x, shape: a, tally: tally)  // dK += scale dS^T Q
            addScoresTTimesRows(dv, s: p, rows: dOut, alpha: 1, view: x, shape: a, tally: tally)      // dV += P^T dO
        }
    }
}
