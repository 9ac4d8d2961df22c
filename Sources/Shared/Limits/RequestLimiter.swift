/// Per-key request and token limits, exact across workers: the request bucket is taken
/// before a request is forwarded; the token bucket must not be in debt to admit one, and
/// is charged with the tokens the upstream reports once the answer is complete.
public struct RequestLimiter: Sendable {
    let requests: any LimitStore
    let tokens: any LimitStore

    /// Buckets in the shared segment (the one store today).
    public init(segment: SharedSegment) {
        self.init(
            requests: RateLimitTable(segment: segment, offset: SegmentLayout.requestLimitsOffset),
            tokens: RateLimitTable(segment: segment, offset: SegmentLayout.tokenLimitsOffset))
    }

    /// Buckets in the given stores (one for requests, one for tokens).
    public init(requests: any LimitStore, tokens: any LimitStore) {
        self.requests = requests
        self.tokens = tokens
    }

    /// The verdict plus the `x-ratelimit-*` headers every limited route returns.
    public struct Admission: Sendable {
        /// nil when admitted; else why not.
        public var refusal: MetricsLayout.Limit?
        public var retryAfterSeconds: Int
        public var headers: [(String, String)]
        /// The limits applied (this host's share of them while the hosts cannot share them).
        public var requestsPerMinute = 0
        public var tokensPerMinute = 0

        /// Admitted with no per-key limit applied (no headers).
        public static let unlimited = Admission(refusal: nil, retryAfterSeconds: 0, headers: [])
    }

    /// Microseconds on CLOCK_MONOTONIC (the tables' time base).
    public static func now() -> UInt64 { MonotonicInstant.now().nanoseconds / 1000 }

    /// Takes one request for `identity`, and checks its token bucket.
    public func admit(_ identity: ClientIdentity, now: UInt64 = RequestLimiter.now()) -> Admission {
        let requestOutcome = requests.take(key: identity.keyID, gcra: GCRA(rate: identity.requestsPerMinute), now: now, cost: 1)
        guard case .allowed = requestOutcome, identity.tokensPerMinute > 0 else {
            return Self.admission(identity, requests: requestOutcome, tokens: nil)
        }
        let tokenOutcome = tokens.check(key: identity.keyID, gcra: GCRA(rate: identity.tokensPerMinute), now: now)
        return Self.admission(identity, requests: requestOutcome, tokens: tokenOutcome)
    }

    /// The verdict and headers of a request bucket's outcome and a token bucket's (nil when
    /// not checked), wherever they were decided (this host's segment, or Redis). Without a
    /// request outcome (a refusal remembered from the token bucket), no request headers.
    public static func admission(_ identity: ClientIdentity, requests: RateLimitTable.Outcome?, tokens: RateLimitTable.Outcome?) -> Admission {
        var admission = verdict(identity, requests: requests, tokens: tokens)
        admission.requestsPerMinute = identity.requestsPerMinute
        admission.tokensPerMinute = identity.tokensPerMinute
        return admission
    }

    private static func verdict(_ identity: ClientIdentity, requests: RateLimitTable.Outcome?, tokens: RateLimitTable.Outcome?) -> Admission {
        var headers: [(String, String)] = []
        headers.reserveCapacity(6)
        if let requests {
            headers.append(("x-ratelimit-limit-requests", String(identity.requestsPerMinute)))
            switch requests {
            case .allowed(let remaining, let reset):
                headers.append(("x-ratelimit-remaining-requests", String(remaining)))
                headers.append(("x-ratelimit-reset-requests", duration(reset)))
            case .limited(let retry, let reset):
                headers.append(("x-ratelimit-remaining-requests", "0"))
                headers.append(("x-ratelimit-reset-requests", duration(reset)))
                return Admission(refusal: .requests, retryAfterSeconds: seconds(retry), headers: headers)
            case .tableFull:
                return Admission(refusal: .tableFull, retryAfterSeconds: 1, headers: headers)
            }
        }
        guard identity.tokensPerMinute > 0, let tokens else { return Admission(refusal: nil, retryAfterSeconds: 0, headers: headers) }
        headers.append(("x-ratelimit-limit-tokens", String(identity.tokensPerMinute)))
        switch tokens {
        case .allowed(let remaining, let reset):
            headers.append(("x-ratelimit-remaining-tokens", String(remaining)))
            headers.append(("x-ratelimit-reset-tokens", duration(reset)))
            return Admission(refusal: nil, retryAfterSeconds: 0, headers: headers)
        case .limited(let retry, let reset):
            headers.append(("x-ratelimit-remaining-tokens", "0"))
            headers.append(("x-ratelimit-reset-tokens", duration(reset)))
            return Admission(refusal: .tokens, retryAfterSeconds: seconds(retry), headers: headers)
        case .tableFull:
            return Admission(refusal: .tableFull, retryAfterSeconds: 1, headers: headers)
        }
    }

    /// Charges the tokens an answer used.
    public func charge(_ identity: ClientIdentity, tokens used: Int, now: UInt64 = RequestLimiter.now()) {
        guard identity.tokensPerMinute > 0, used > 0 else { return }
        tokens.charge(key: identity.keyID, gcra: GCRA(rate: identity.tokensPerMinute), now: now, cost: UInt64(used))
    }

    static func seconds(_ micros: UInt64) -> Int { Int((micros + 999_999) / 1_000_000) }

    /// OpenAI's reset format: `1s`, `6m0s`, `0.5s` (under a minute: seconds rounded to the
    /// millisecond, decimals only when there are any). Integer arithmetic: it runs on every
    /// admitted request.
    static func duration(_ micros: UInt64) -> String {
        guard micros < 60_000_000 else {
            let whole = micros / 1_000_000
            return "\(whole / 60)m\(whole % 60)s"
        }
        let millis = Int((micros + 500) / 1000)  // half a millisecond rounds up
        guard millis % 1000 != 0 else { return "\(millis / 1000)s" }
        var text: [UInt8] = []
        DecimalText.appendThousandths(millis, to: &text)
        text.append(UInt8(ascii: "s"))
        return String(decoding: text, as: UTF8.self)
    }
}
