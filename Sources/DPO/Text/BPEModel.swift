import Glibc

/// The BPE model of HF tokenizers (tokenizers/src/models/bpe): a word starts as one symbol per
/// character (per byte for byte-level vocabularies), then the adjacent pair with the lowest merge
/// rank is merged, leftmost first on ties, until no pair has a merge. Results are cached per word.
///
/// Byte-level vocabularies are keyed here by the raw bytes their tokens spell (ByteLevel.swift),
/// so words go in as raw bytes and are never spelled out. Other vocabularies (SentencePiece-style)
/// are keyed by the token text; a character missing from the vocabulary becomes its UTF-8 bytes as
/// `<0xXX>` tokens with `byteFallback`, else the unknown token (runs fused with `fuseUnk`), else
/// nothing, as in HF's `merge_word`.
final class BPEModel {
    struct Options: Equatable {
        var byteLevel = false
        var byteFallback = false
        var fuseUnk = false
        var ignoreMerges = false
        var unkID: Int32? = nil
    }

    let options: Options
    /// Merge table: (left id << 32 | right id) -> (rank << 32 | merged id).
    private let merges: [UInt64: UInt64]
    /// Byte-level: the symbol of each byte, -1 if the vocabulary lacks it.
    private var byteSymbol = [Int32](repeating: -1, count: 256)
    /// Other vocabularies: the symbol of each single-character token.
    private var charSymbol: [UInt32: Int32] = [:]
    /// `<0xXX>` tokens for byte fallback, -1 where missing.
    private var fallbackSymbol = [Int32](repeating: -1, count: 256)
    /// Whole words (their bytes) for `ignoreMerges`.
    private var wordVocab: [[UInt8]: Int32] = [:]

    /// Words are merged with a linear scan up to this many symbols, with a heap beyond.
    static let linearLimit = 48

    /// `vocab`: token -> id as the file spells it; `merges`: pairs of tokens in rank order.
    init(vocab: [String: Int32], merges mergeList: [(String, String)], options: Options) throws {
        self.options = options
        var keyed: [[UInt8]: Int32] = [:]
        keyed.reserveCapacity(vocab.count)
        for (token, id) in vocab {
            if options.byteLevel {
                // Tokens outside the byte alphabet can never be produced from bytes.
                if let bytes = ByteLevel.bytes(of: token) { keyed[bytes] = id }
            } else {
                keyed[Array(token.utf8)] = id
                var scalars = token.unicodeScalars.makeIterator()
                if let s = scalars.next(), scalars.next() == nil { charSymbol[s.value] = id }
            }
        }
        if options.byteLevel {
            for b in 0..<256 { if let id = keyed[[UInt8(b)]] { byteSymbol[b] = id } }
        }
        if options.byteFallback {
            for b in 0..<256 {
                let hex = Array("0123456789ABCDEF")
                if let id = vocab["<0x\(hex[b >> 4])\(hex[b & 15])>"] { fallbackSymbol[b] = id }
            }
        }
        if options.ignoreMerges { wordVocab = keyed }
        var table: [UInt64: UInt64] = [:]
        table.reserveCapacity(mergeList.count)
        for (rank, (a, b)) in mergeList.enumerated() {
            guard let ia = vocab[a], let ib = vocab[b], let merged = vocab[a + b] else {
                let missing = vocab[a] == nil ? a : vocab[b] == nil ? b : a + b
                throw DPOError.format("merge \(rank) ('\(a) \(b)'): token '\(missing)' is not in the vocabulary")
            }
            let key = UInt64(UInt32(bitPattern: ia)) << 32 | UInt64(UInt32(bitPattern: ib))
            // The first (lowest-rank) merge of a pair wins, as in HF where later ones are shadowed.
            if table[key] == nil { table[key] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged)) }
        }
        self.merges = table
        pthread_mutex_init(&cacheLock, nil)
    }

    deinit { pthread_mutex_destroy(&cacheLock) }

    // MARK: - Cache

    /// HF's capacity: words stop being added once it holds this many (`DEFAULT_CACHE_CAPACITY`).
    static let cacheCapacity = 10_000
    /// Words of this many bytes or more are not cached (HF's `MAX_LENGTH`).
    static let cacheMaxLength = 256
    private var shortCache: [UInt64: UInt64] = [:]
    private var longCache: [[UInt8]: UInt64] = [:]
    private var cacheIDs: [Int32] = []
    private var cacheLock = pthread_mutex_t()

    /// Runs `body` holding the cache if no other thread does; otherwise without the cache, so
    /// concurrent encodes never wait or race.
    func withCache<R>(_ body: (Bool) -> R) -> R {
        guard pthread_mutex_trylock(&cacheLock) == 0 else { return body(false) }
        defer { pthread_mutex_unlock(&cacheLock) }
        return body(true)
    }

    /// Words of up to 7 bytes packed into one integer with their length: a cache key that needs
    /// no allocation.
    @inline(__always) private static func shortKey(_ b: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> UInt64? {
        guard r.count <= 7 else { return nil }
        var key = UInt64(r.count) << 56
        var shift: UInt64 = 0
        for i in r { key |= UInt64(b[i]) << shift; shift += 8 }
        return key
    }

    // MARK: - Encoding

    /// Appends the ids of the word `bytes[range]` to `out`.
    func tokenize(_ b: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, useCache: Bool, into out: inout [Int32]) {
        if r.isEmpty { return }
        if options.ignoreMerges, let id = wordVocab[Array(b[r])] { out.append(id); return }
        guard useCache, r.count < BPEModel.cacheMaxLength else { merge(b, r, into: &out); return }
        let short = BPEModel.shortKey(b, r)
        let hit = short.map { shortCache[$0] } ?? longCache[Array(b[r])]
        if let hit {
            let start = Int(hit >> 32), count = Int(hit & 0xFFFF_FFFF)
            out.append(contentsOf: cacheIDs[start..<(start + count)])
            return
        }
        let before = out.count
        merge(b, r, into: &out)
        if shortCache.count + longCache.count < BPEModel.cacheCapacity {
            let entry = UInt64(cacheIDs.count) << 32 | UInt64(out.count - before)
            cacheIDs.append(contentsOf: out[before...])
            if let short { shortCache[short] = entry } else { longCache[Array(b[r])] = entry }
        }
    }

    /// The symbols a word starts as (HF `merge_word` before `merge_all`).
    private func initialSymbols(_ b: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> [Int32] {
        var symbols: [Int32] = []
        symbols.reserveCapacity(r.count)
        if options.byteLevel && !options.byteFallback && options.unkID == nil {
            for i in r where byteSymbol[Int(b[i])] >= 0 { symbols.append(byteSymbol[Int(b[i])]) }
            return symbols
        }
        var pendingUnk = false
        var i = r.lowerBound
        while i < r.upperBound {
            var id: Int32 = -1
            var charBytes: [UInt8]
            if options.byteLevel {
                id = byteSymbol[Int(b[i])]
                charBytes = Array(String(Unicode.Scalar(ByteLevel.byteToScalar[Int(b[i])]) ?? "?").utf8)
                i += 1
            } else {
                let (v, n) = decodeScalar(b, i, r.upperBound)
                id = charSymbol[v] ?? -1
                charBytes = Array(b[i..<(i + n)])
                i += n
            }
            if id >= 0 {
                if pendingUnk, let unk = options.unkID { symbols.append(unk); pendingUnk = false }
                symbols.append(id)
                continue
            }
            if options.byteFallback && charBytes.allSatisfy({ fallbackSymbol[Int($0)] >= 0 }) {
                for c in charBytes { symbols.append(fallbackSymbol[Int(c)]) }
                continue
            }
            if let unk = options.unkID {
                if pendingUnk && !options.fuseUnk { symbols.append(unk) }
                pendingUnk = true
            }
        }
        if pendingUnk, let unk = options.unkID { symbols.append(unk) }
        return symbols
    }

    @inline(__always) private func lookup(_ a: Int32, _ b: Int32) -> UInt64? {
        merges[UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))]
    }

    /// Merges the word's symbols and appends them to `out`.
    private func merge(_ b: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, into out: inout [Int32]) {
        let symbols = initialSymbols(b, r)
        if symbols.count > BPEModel.linearLimit {
            out.append(contentsOf: mergeWithHeap(symbols))
        } else {
            out.append(contentsOf: mergeLinear(symbols))
        }
    }

    /// The merge loop for short words: each step scans the pair ranks for the lowest (leftmost on
    /// ties) and merges it; only the two pairs next to the merge are looked up again.
    func mergeLinear(_ start: [Int32]) -> [Int32] {
        var symbols = start
        if symbols.count < 2 { return symbols }
        let none = UInt64.max
        var pairs = [UInt64](repeating: none, count: symbols.count - 1)
        for k in 0..<(symbols.count - 1) { pairs[k] = lookup(symbols[k], symbols[k + 1]) ?? none }
        while !pairs.isEmpty {
            var best = 0
            for k in 1..<pairs.count where pairs[k] >> 32 < pairs[best] >> 32 { best = k }
            let value = pairs[best]
            if value == none { break }
            symbols[best] = Int32(bitPattern: UInt32(truncatingIfNeeded: value))
            symbols.remove(at: best + 1)
            pairs.remove(at: best)
            if best > 0 { pairs[best - 1] = lookup(symbols[best - 1], symbols[best]) ?? none }
            if best < pairs.count { pairs[best] = lookup(symbols[best], symbols[best + 1]) ?? none }
        }
        return symbols
    }

    /// HF's `Word::merge_all` for long words: symbols in a linked list, candidate merges in a
    /// min-heap ordered by (rank, position); entries made stale by earlier merges are skipped.
    func mergeWithHeap(_ start: [Int32]) -> [Int32] {
        let n = start.count
        if n < 2 { return start }
        var symbol = start
        var prev = (0..<n).map { $0 - 1 }
        var next = (0..<n).map { $0 + 1 }  // n means none
        var alive = [Bool](repeating: true, count: n)
        var heap = MergeHeap()
        for k in 0..<(n - 1) {
            if let v = lookup(symbol[k], symbol[k + 1]) { heap.push(rank: v >> 32, pos: k, newID: Int32(bitPattern: UInt32(truncatingIfNeeded: v))) }
        }
        while let top = heap.pop() {
            let p = top.pos
            guard alive[p], next[p] < n else { continue }
            let q = next[p]
            guard let v = lookup(symbol[p], symbol[q]), Int32(bitPattern: UInt32(truncatingIfNeeded: v)) == top.newID else { continue }
            symbol[p] = top.newID
            alive[q] = false
            next[p] = next[q]
            if next[q] < n { prev[next[q]] = p }
            if prev[p] >= 0, let w = lookup(symbol[prev[p]], symbol[p]) {
                heap.push(rank: w >> 32, pos: prev[p], newID: Int32(bitPattern: UInt32(truncatingIfNeeded: w)))
            }
            if next[p] < n, let w = lookup(symbol[p], symbol[next[p]]) {
                heap.push(rank: w >> 32, pos: p, newID: Int32(bitPattern: UInt32(truncatingIfNeeded: w)))
            }
        }
        var result: [Int32] = []
        var k = 0
        while k < n { result.append(symbol[k]); k = next[k] }
        return result
    }
}

/// A binary min-heap of candidate merges keyed by (rank, position).
private struct MergeHeap {
    struct Entry { var key: UInt64; var pos: Int; var newID: Int32 }
    private var items: [Entry] = []

    mutating func push(rank: UInt64, pos: Int, newID: Int32) {
        items.append(Entry(key: rank << 32 | UInt64(pos), pos: pos, newID: newID))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent].key <= items[i].key { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && items[l].key < items[m].key { m = l }
                if r < items.count && items[r].key < items[m].key { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
