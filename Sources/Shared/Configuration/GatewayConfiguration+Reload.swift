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

    /// How this configuration authenticates clients, in words for a log line.
    public var authenticationMode: String {
        let token = !(auth.bearerToken ?? "").isEmpty
        switch (token, auth.keys.count) {
        case (false, 0): return "off"
        case (true, 0): return "BEARER_TOKEN"
        case (false, let n): return "\(n) key(s) from the config file"
        case (true, let n): return "BEARER_TOKEN and \(n) key(s) from the config file"
        }
    }

    /// Checks a reload (this freshly loaded configuration) against the one running: a
    /// reload never turns authentication off — a config file that lost its `keys:` (or an
    /// empty file) is far likelier a mistake than a wish, and the price of taking it at its
    /// word is an open gateway. Turning it off takes a restart.
    /// - Returns: a line for the log when the authentication mode changes, else nil.
    /// - Throws: ``ConfigurationError`` naming `keys` when authentication would go off.
    public func checkingAuthentication(against running: GatewayConfiguration) throws -> String? {
        if running.auth.isEnabled && !auth.isEnabled {
            throw ConfigurationError(
                key: configFile.map { "\($0): keys" } ?? "keys",
                reason: "the reloaded configuration has no keys and no BEARER_TOKEN, which would turn authentication off "
                    + "(it is \(running.authenticationMode) now); restart the gateway to run without authentication")
        }
        guard running.auth != auth else { return nil }
        let before = running.authenticationMode
        let after = authenticationMode
        return before == after ? "reload: the client keys changed (\(after))" : "reload: authentication changes from \(before) to \(after)"
    }
}
