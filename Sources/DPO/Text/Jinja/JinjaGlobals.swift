// The functions a chat template can call: jinja2's `range`, `namespace` and `dict`, and the ones
// transformers adds to its environment: `raise_exception(message)` and `strftime_now(format)`.

#if canImport(Glibc)
import Glibc
#endif

/// A local date and time, the clock `strftime_now` reads (injectable so renderings are reproducible).
public struct JinjaDateTime: Equatable {
    public var year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int

    public init(year: Int, month: Int, day: Int, hour: Int = 0, minute: Int = 0, second: Int = 0) {
        (self.year, self.month, self.day, self.hour, self.minute, self.second) = (year, month, day, hour, minute, second)
    }

    /// The current local time (Python's `datetime.now()`).
    public static func now() -> JinjaDateTime {
        var t = time(nil)
        var parts = tm()
        guard localtime_r(&t, &parts) != nil else { return JinjaDateTime(year: 1970, month: 1, day: 1) }
        return JinjaDateTime(year: Int(parts.tm_year) + 1900, month: Int(parts.tm_mon) + 1, day: Int(parts.tm_mday),
                             hour: Int(parts.tm_hour), minute: Int(parts.tm_min), second: Int(parts.tm_sec))
    }

    /// Python's `datetime.strftime(format)`, which hands the format to the C library's `strftime`
    /// (in the C locale: English names); `%f` is the microsecond (always 0 here), `%z`/`%Z` are empty
    /// for a naive datetime.
    public func strftime(_ format: String) throws -> String {
        guard (1...12).contains(month), (1...31).contains(day), (0...23).contains(hour), (0...59).contains(minute),
              (0...61).contains(second), (1...9999).contains(year) else {
            throw JinjaRuntimeError("strftime_now: invalid date \(year)-\(month)-\(day)")
        }
        // Python's own directives first (Lib/_strptime-free path of datetime._wrap_strftime).
        var expanded = ""
        var it = format.unicodeScalars.makeIterator()
        while let c = it.next() {
            guard c == "%" else { expanded.unicodeScalars.append(c); continue }
            guard let d = it.next() else { expanded += "%"; break }
            switch d {
            case "f": expanded += "000000"
            case "z", "Z": break
            default: expanded += "%"; expanded.unicodeScalars.append(d)
            }
        }
        guard expanded.utf8.count <= 4096 else { throw JinjaRuntimeError("strftime_now: the format is longer than 4096 bytes") }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        parts.tm_wday = Int32(Self.weekday(year, month, day))
        parts.tm_yday = Int32(Self.dayOfYear(year, month, day) - 1)
        parts.tm_isdst = -1
        var buffer = [CChar](repeating: 0, count: 256 + expanded.utf8.count * 16)
        let n = Glibc.strftime(&buffer, buffer.count, expanded, &parts)
        if n == 0 && !expanded.isEmpty { throw JinjaRuntimeError("strftime_now: the formatted date is too long") }
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func isLeap(_ y: Int) -> Bool { (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 }

    private static func dayOfYear(_ y: Int, _ m: Int, _ d: Int) -> Int {
        let days = [31, isLeap(y) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        return days.prefix(m - 1).reduce(0, +) + d
    }

    /// 0 = Sunday (C's tm_wday), by Zeller-style counting from 0001-01-01 (a Monday).
    private static func weekday(_ y: Int, _ m: Int, _ d: Int) -> Int {
        let yy = y - 1
        let days = yy * 365 + yy / 4 - yy / 100 + yy / 400 + dayOfYear(y, m, d)
        return days % 7
    }
}

enum JinjaGlobals {
    /// The global functions, with `strftime_now` reading `clock`.
    static func make(clock: @escaping () -> JinjaDateTime, limits: JinjaLimits) -> [String: JinjaValue] {
        var g: [String: JinjaValue] = [:]
        g["range"] = .callable(JinjaCallable(name: "range") { args in
            guard !args.positional.isEmpty, args.positional.count <= 3, args.keywords.isEmpty else {
                throw JinjaRuntimeError("range() takes 1 to 3 integer arguments")
            }
            let ints = try args.positional.map { v -> Int in
                guard let i = v.intValue else { throw JinjaRuntimeError("'\(v.typeName)' object cannot be interpreted as an integer") }
                return i
            }
            let (start, stop, step) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count == 3 ? ints[2] : 1)
            guard step != 0 else { throw JinjaRuntimeError("range() arg 3 must not be zero") }
            // Items made one by one (no overflow), within the sandbox's bound (jinja2 MAX_RANGE).
            var items: [JinjaValue] = []
            var v = start
            while step > 0 ? v < stop : v > stop {
                guard items.count < JinjaLimits.maxRange else {
                    throw JinjaRuntimeError("Range too big. The sandbox blocks ranges larger than MAX_RANGE (\(JinjaLimits.maxRange)).")
                }
                items.append(.int(v))
                let (next, overflow) = v.addingReportingOverflow(step)
                if overflow { break }
                v = next
            }
            return .list(items)
        })
        g["namespace"] = .callable(JinjaCallable(name: "namespace") { args in
            .namespace(JinjaNamespace(try dictArguments(args, "namespace")))
        })
        g["dict"] = .callable(JinjaCallable(name: "dict") { args in
            .dict(try dictArguments(args, "dict"))
        })
        g["raise_exception"] = .callable(JinjaCallable(name: "raise_exception") { args in
            let message = try args.bind(["message"], "raise_exception()")[0] ?? .undefined("message")
            throw JinjaRaisedError(message: try message.pythonStr())
        })
        g["strftime_now"] = .callable(JinjaCallable(name: "strftime_now") { args in
            guard let format = try args.bind(["format"], "strftime_now()")[0].string("strftime_now()") else {
                throw JinjaRuntimeError("strftime_now() needs a format string")
            }
            return .string(try clock().strftime(format))
        })
        return g
    }

    /// `dict(mapping, **kwargs)` / `namespace(mapping, **kwargs)`; names starting with "_" are refused
    /// as transformers' namespace does.
    private static func dictArguments(_ args: JinjaArguments, _ what: String) throws -> JinjaDict {
        guard args.positional.count <= 1 else { throw JinjaRuntimeError("\(what)() takes at most one positional argument") }
        var d = JinjaDict()
        if let first = args.positional.first {
            switch first {
            case .dict(let m): d = m
            case .namespace(let ns): d = ns.attributes
            default: throw JinjaRuntimeError("\(what)() positional argument must be a mapping")
            }
        }
        for (k, v) in args.keywords { d[k] = v }
        if what == "namespace", let bad = d.keys.first(where: { $0.hasPrefix("_") }) {
            throw JinjaRuntimeError("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '\(bad)'")
        }
        for v in d.values { try checkNestingStandalone(v, 1) }
        return d
    }

    private static func checkNestingStandalone(_ v: JinjaValue, _ level: Int) throws {
        if level > JinjaLimits.maxNesting { throw JinjaRuntimeError("values nested more than \(JinjaLimits.maxNesting) levels deep") }
        switch v {
        case .list(let a), .tuple(let a): for x in a { try checkNestingStandalone(x, level + 1) }
        case .dict(let d): for x in d.values { try checkNestingStandalone(x, level + 1) }
        case .namespace(let ns): for x in ns.attributes.values { try checkNestingStandalone(x, level + 1) }
        default: break
        }
    }
}
