import Foundation

/// metrics.svg: one panel per metric, train and eval series against optimizer steps.
enum Plot {
    struct Series { let label: String; let color: String; let points: [(Double, Double)] }

    static func svg(title: String, panels: [(title: String, series: [Series])]) -> String {
        let w = 640.0, ph = 200.0, top = 40.0, gap = 50.0, left = 60.0, right = 20.0
        let h = top + Double(panels.count) * (ph + gap)
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(w / 2)\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">\(escape(title))</text>\n"
        for (i, panel) in panels.enumerated() {
            let y0 = top + Double(i) * (ph + gap) + 10
            let pts = panel.series.flatMap(\.points).filter { $0.1.isFinite }
            let xs = pts.map(\.0), ys = pts.map(\.1)
            var (xmin, xmax) = (xs.min() ?? 0, xs.max() ?? 1)
            var (ymin, ymax) = (ys.min() ?? 0, ys.max() ?? 1)
            if xmax <= xmin { xmax = xmin + 1 }
            if ymax - ymin < 1e-12 { ymin -= 0.5; ymax += 0.5 }
            let pad = (ymax - ymin) * 0.05; ymin -= pad; ymax += pad
            func px(_ x: Double) -> Double { left + (x - xmin) / (xmax - xmin) * (w - left - right) }
            func py(_ y: Double) -> Double { y0 + ph - (y - ymin) / (ymax - ymin) * ph }
            s += "<text x=\"\(left)\" y=\"\(y0 - 4)\" font-weight=\"bold\">\(escape(panel.title))</text>\n"
            s += "<rect x=\"\(left)\" y=\"\(y0)\" width=\"\(w - left - right)\" height=\"\(ph)\" fill=\"none\" stroke=\"#999\"/>\n"
            for k in 0...4 {
                let v = ymin + (ymax - ymin) * Double(k) / 4
                s += "<text x=\"\(left - 6)\" y=\"\(py(v) + 4)\" text-anchor=\"end\" fill=\"#555\">\(String(format: "%.3g", v))</text>\n"
                s += "<line x1=\"\(left)\" x2=\"\(w - right)\" y1=\"\(py(v))\" y2=\"\(py(v))\" stroke=\"#eee\"/>\n"
            }
            s += "<text x=\"\(left)\" y=\"\(y0 + ph + 16)\" fill=\"#555\">step \(Int(xmin))</text>\n"
            s += "<text x=\"\(w - right)\" y=\"\(y0 + ph + 16)\" text-anchor=\"end\" fill=\"#555\">step \(Int(xmax))</text>\n"
            for (j, series) in panel.series.enumerated() where !series.points.isEmpty {
                let path = series.points.filter { $0.1.isFinite }.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
                s += "<polyline fill=\"none\" stroke=\"\(series.color)\" stroke-width=\"1.5\" points=\"\(path)\"/>\n"
                if series.points.count < 40 {
                    for p in series.points where p.1.isFinite {
                        s += "<circle cx=\"\(String(format: "%.1f", px(p.0)))\" cy=\"\(String(format: "%.1f", py(p.1)))\" r=\"2.5\" fill=\"\(series.color)\"/>\n"
                    }
                }
                let lx = w - right - 150 + Double(j) * 75
                s += "<rect x=\"\(lx)\" y=\"\(y0 - 14)\" width=\"10\" height=\"10\" fill=\"\(series.color)\"/>"
                s += "<text x=\"\(lx + 14)\" y=\"\(y0 - 5)\">\(escape(series.label))</text>\n"
            }
        }
        return s + "</svg>\n"
    }

    static func escape(_ t: String) -> String {
        t.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// Panels for the named metrics from logged records (train: "name", eval: "eval_name").
    static func fromRecords(_ records: [[String: Double]], metrics: [String], title: String) -> String {
        let panels = metrics.map { m -> (String, [Series]) in
            func points(_ key: String) -> [(Double, Double)] {
                records.compactMap { r in r[key].flatMap { v in r["step"].map { ($0, v) } } }
            }
            return (m, [Series(label: "train", color: "#1f77b4", points: points(m)),
                        Series(label: "eval", color: "#d62728", points: points("eval_" + m))])
        }
        return svg(title: title, panels: panels)
    }
}
