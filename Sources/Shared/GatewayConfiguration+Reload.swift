extension GatewayConfiguration {
    /// This (freshly loaded) configuration arranged so that everything the shared segment
    /// indexes by position keeps its position after a reload: upstreams that stay keep
    /// their index, removed ones remain as retired placeholders, new ones are appended;
    /// model metric labels only ever grow.
    /// - Throws: ``ConfigurationError`` when the upstreams no longer fit the segment.
    public func keepingPositions(of previous: GatewayConfiguration) throws -> GatewayConfiguration {
        var result = self
        var upstreams: [Upstream] = []
        for old in previous.upstreams {
            if var kept = self.upstreams.first(where: { $0.name == old.name }) {
                kept.retired = false
                upstreams.append(kept)
            } else {
                var retired = old
                retired.retired = true
                upstreams.append(retired)
            }
        }
        upstreams += self.upstreams.filter { fresh in !previous.upstreams.contains { $0.name == fresh.name } }
        guard upstreams.count <= SegmentLayout.maxUpstreams else {
            throw ConfigurationError(
                key: configFile.map { "\($0): upstreams" } ?? "upstreams",
                reason: "more than \(SegmentLayout.maxUpstreams) upstreams counting those removed since start-up; restart to reload")
        }
        result.upstreams = upstreams
        result.metricModels = previous.metricModels + self.models.map(\.name).filter { !previous.metricModels.contains($0) }
        return result
    }
}
