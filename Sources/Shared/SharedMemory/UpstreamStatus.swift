import Atomics

#if canImport(Glibc)
    import Glibc
#endif

/// An upstream's block in the shared segment: the health the supervisor last saw, the
/// models it serves (from its `/v1/models`) and its circuit breaker. Health and models are
/// written only by the supervisor's poller and read by every worker without locks (the
/// breaker word is updated by every process with compare-and-swap, see
/// ``updateBreaker(_:)``): the models text is published under a sequence counter
/// (a seqlock), only when it changed, and a reader that races a write reads again. A
/// reader never waits for long: a supervisor preempted (or stopped) in the middle of a
/// write leaves the list unreadable, which callers treat as "not known", not as empty.
public struct UpstreamStatus: Sendable {
    /// What the last health check found.
    public enum Health: UInt64, Sendable {
        case unknown = 0
        case up = 1
        case down = 2
    }

    let segment: SharedSegment
    let offset: Int

    private func field(_ f: SegmentLayout.Upstream) -> UnsafeAtomic<UInt64> { segment.atomic(at: offset + f.rawValue) }

    /// The last check's verdict.
    public var health: Health {
        get { Health(rawValue: field(.health).load(ordering: .acquiring)) ?? .unknown }
        nonmutating set { field(.health).store(newValue.rawValue, ordering: .releasing) }
    }

    /// A model an upstream serves: a LoRA adapter names the model it adapts (`parent` in
    /// vLLM's `/v1/models`).
    public struct ServedModel: Sendable, Equatable, ExpressibleByStringLiteral {
        public var name: String
        public var parent: String?

        public init(_ name: String, parent: String? = nil) {
            self.name = name
            self.parent = parent
        }

        public init(stringLiteral name: String) { self.init(name) }
    }

    /// Publishes the served models (supervisor only), one line each: the name, and for a
    /// LoRA adapter a tab and its parent. Models that do not fit are dropped, and so are
    /// names with a tab or line break in them.
    /// The same list as before is not written again, so the workers' readers meet a write
    /// only when the upstream's models change, not at every health check.
    public func publishModels(_ models: [ServedModel]) {
        var text: [UInt8] = []
        for model in models {
            var bytes = Array(model.name.utf8)
            // A name with a line break or tab in it would break the list: not served here.
            if bytes.contains(where: { $0 == 0x0A || $0 == 0x09 }) { continue }
            if let parent = model.parent { bytes += [0x09] + parent.utf8.filter { $0 != 0x0A } }
            if text.count + bytes.count + 1 > SegmentLayout.upstreamModelsCapacity { break }
            if !text.isEmpty { text.append(0x0A) }
            text.append(contentsOf: bytes)
        }
        // The only writer reads its own last write: never torn.
        if readModelList({ $0.elementsEqual(text) }) == true { return }
        let sequence = field(.modelsSequence)
        sequence.wrappingIncrement(ordering: .acquiringAndReleasing)  // odd: writing
        let base = segment.base + offset + SegmentLayout.upstreamModelsOffset
        text.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        field(.modelsLength).store(UInt64(text.count), ordering: .releasing)
        sequence.wrappingIncrement(ordering: .acquiringAndReleasing)  // even: published
    }

    /// Whether the published model list is empty, and whether it has `name`: read in
    /// place, without copying the list (this runs on every request when the models are
    /// discovered rather than configured). Nil when the list could not be read: the
    /// supervisor is in the middle of writing it.
    public func modelList(contains name: String) -> (isEmpty: Bool, contains: Bool)? {
        find(name).map { ($0.isEmpty, $0.isAdapter != nil) }
    }

    /// Whether the upstream serves `name` as a LoRA adapter; nil when the list could not be
    /// read.
    public func servesAdapter(_ name: String) -> Bool? {
        find(name).map { $0.isAdapter ?? false }
    }

    /// Whether the published list is empty, and the line of `name` in it, read in place:
    /// nil when it has none, else whether it names a parent (a LoRA adapter).
    private func find(_ name: String) -> (isEmpty: Bool, isAdapter: Bool?)? {
        var name = name
        return name.withUTF8 { wanted in
            readModelList { text in
                var start = 0
                while start < text.count {
                    let end = text[start...].firstIndex(of: 0x0A) ?? text.count
                    let tab = text[start..<end].firstIndex(of: 0x09)
                    let nameEnd = tab ?? end
                    if nameEnd - start == wanted.count && wanted.count > 0 && text[start..<nameEnd].elementsEqual(wanted) {
                        return (false, tab != nil)
                    }
                    start = end + 1
                }
                return (text.isEmpty, nil)
            }
        }
    }

    /// The served model names as last published (empty when none were seen).
    public var models: [String] {
        readModelList { text in
            text.split(separator: 0x0A).map { line in String(decoding: line.prefix { $0 != 0x09 }, as: UTF8.self) }
        } ?? []
    }

    /// `read` over the published list (names separated by LF), retried until no
    /// ``publishModels(_:)`` ran meanwhile (sequence lock: odd while writing); nil if the
    /// list stayed unreadable. What `read` returns from a torn read is thrown away.
    ///
    /// A write takes microseconds, unless the supervisor is preempted in the middle of it
    /// (on a busy machine, for a scheduler slice or more): after a short spin the reader
    /// yields its CPU, which lets a writer waiting for that CPU finish, and gives up after
    /// ``readAttempts`` tries.
    private func readModelList<T>(_ read: (UnsafeRawBufferPointer) -> T) -> T? {
        let sequence = field(.modelsSequence)
        for attempt in 0..<Self.readAttempts {
            let before = sequence.load(ordering: .acquiring)
            if before & 1 == 0 {
                let length = min(Int(field(.modelsLength).load(ordering: .acquiring)), SegmentLayout.upstreamModelsCapacity)
                let result = read(UnsafeRawBufferPointer(start: segment.base + offset + SegmentLayout.upstreamModelsOffset, count: length))
                if sequence.load(ordering: .acquiring) == before { return result }
            }
            if attempt >= Self.spinAttempts { sched_yield() }
        }
        return nil
    }

    /// Reads tried before giving up, the first ``spinAttempts`` without yielding.
    static let readAttempts = 320
    static let spinAttempts = 64
}

extension SharedSegment {
    /// The block of the upstream numbered `index` in the configuration.
    public func upstream(_ index: Int) -> UpstreamStatus {
        precondition((0..<SegmentLayout.maxUpstreams).contains(index), "upstream \(index) out of range")
        return UpstreamStatus(segment: self, offset: SegmentLayout.upstreamsOffset + index * SegmentLayout.upstreamSize)
    }

    /// Requests in flight to `upstream` summed over every worker slot ever used (a slot is
    /// used once ``WorkerSlot/reset(generation:now:)`` prepared it for a worker).
    public func inflightRequests(upstream: Int) -> UInt64 {
        var total: UInt64 = 0
        for slot in 0..<slotsUsed { total &+= workerSlot(slot).inflightRequests(upstream: upstream) }
        return total
    }

    /// Requests in flight to `upstream` and the prompt blocks they sent it that it has not
    /// started answering (its prefill queue as this gateway knows it), summed over every
    /// worker slot ever used, in one pass (on every routed request: two workers touch two
    /// slots, not ``SegmentLayout/maxWorkers``).
    public func upstreamLoad(upstream: Int) -> (requests: UInt64, prefillBlocks: UInt64) {
        var requests: UInt64 = 0
        var blocks: UInt64 = 0
        for index in 0..<slotsUsed {
            let slot = workerSlot(index)
            requests &+= slot.inflightRequests(upstream: upstream)
            blocks &+= slot.pendingPrefillBlocks(upstream: upstream)
        }
        return (requests, blocks)
    }
}
