import Yams

extension ConfigLoader {
    /// `metrics: {histograms: full | coarse | off, reasons: all | seen}`.
    static func readMetrics(_ node: Node, reader: inout ConfigReader) -> MetricsDetail {
        guard let entries = reader.mapping(node, at: "metrics") else { return MetricsDetail() }
        var detail = MetricsDetail()
        for (key, value) in entries {
            let path = ConfigReader.path("metrics", key)
            switch key {
            case "histograms":
                if let choice = readChoice(value, at: path, as: MetricsDetail.Histograms.self, reader: &reader) {
                    detail.histograms = choice
                }
            case "reasons":
                if let choice = readChoice(value, at: path, as: MetricsDetail.Reasons.self, reader: &reader) {
                    detail.reasons = choice
                }
            default:
                reader.report(path, "unknown key")
            }
        }
        return detail
    }

    /// One of an enumeration's raw values; an error lists them all.
    private static func readChoice<Choice: RawRepresentable & CaseIterable>(
        _ node: Node, at path: String, as: Choice.Type, reader: inout ConfigReader
    ) -> Choice? where Choice.RawValue == String {
        guard let text = reader.string(node, at: path) else { return nil }
        if let choice = Choice(rawValue: text) { return choice }
        let names = Choice.allCases.map { "\"\($0.rawValue)\"" }
        reader.report(
            path, "must be \(names.dropLast().joined(separator: ", ")) or \(names.last ?? ""), got \"\(text)\"")
        return nil
    }
}
