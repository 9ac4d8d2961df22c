import CGatewayShims
import Testing

@testable import Shared

@Suite struct SharedSegmentTests {
    @Test func aWorkerAttachesAndSeesTheSameWords() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let fd = dup(segment.fileDescriptor)
        let worker = try SharedSegment.attach(fileDescriptor: fd)
        segment.workerSlot(3).reset(generation: 7, now: MonotonicInstant(nanoseconds: 5))
        worker.workerSlot(3).state = .ready
        worker.workerSlot(3).requestStarted(upstream: 2)
        #expect(segment.workerSlot(3).state == .ready)
        #expect(segment.workerSlot(3).generation == 7)
        #expect(segment.inflightRequests(upstream: 2) == 1)
        segment.workerSlot(3).release()  // a dead worker's in-flight count goes with it
        #expect(worker.inflightRequests(upstream: 2) == 0)
        segment.isDraining = true
        #expect(worker.isDraining)
    }

    @Test func pendingPrefillIsSummedOverWorkersAndGoesWithADeadOne() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let worker = try SharedSegment.attach(fileDescriptor: dup(segment.fileDescriptor))
        for index in [0, 5] { segment.workerSlot(index).reset(generation: 1, now: MonotonicInstant(nanoseconds: 1)) }
        worker.workerSlot(0).requestStarted(upstream: 15)
        worker.workerSlot(0).prefillStarted(upstream: 15, blocks: 30)
        worker.workerSlot(5).requestStarted(upstream: 15)
        worker.workerSlot(5).prefillStarted(upstream: 15, blocks: 12)
        worker.workerSlot(5).prefillStarted(upstream: 14, blocks: 1)
        #expect(segment.upstreamLoad(upstream: 15) == (requests: 2, prefillBlocks: 42))
        #expect(segment.upstreamLoad(upstream: 14) == (requests: 0, prefillBlocks: 1))
        worker.workerSlot(0).prefillEnded(upstream: 15, blocks: 30)  // its answer started
        #expect(segment.upstreamLoad(upstream: 15) == (requests: 2, prefillBlocks: 12))
        segment.workerSlot(5).release()  // worker 5 died: what it had sent goes with it
        #expect(segment.upstreamLoad(upstream: 15) == (requests: 1, prefillBlocks: 0))
        #expect(segment.upstreamLoad(upstream: 14) == (requests: 0, prefillBlocks: 0))
        // The last upstream's counters end inside the slot: the next slot's pid is untouched.
        worker.workerSlot(1).prefillStarted(upstream: SegmentLayout.maxUpstreams - 1, blocks: 3)
        #expect(segment.workerSlot(2).pid == 0)
        #expect(SegmentLayout.slotPrefillOffset + SegmentLayout.maxUpstreams * 8 <= SegmentLayout.workerSlotSize)
    }

    @Test func modelsArePublishedAndReadBack() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let status = segment.upstream(0)
        #expect(status.models.isEmpty)
        status.publishModels(["Qwen/Qwen2.5-7B-Instruct-AWQ", "other"])
        #expect(status.models == ["Qwen/Qwen2.5-7B-Instruct-AWQ", "other"])
        status.publishModels([])
        #expect(status.models.isEmpty)
        let many = (0..<1000).map { "model-\($0)-with-a-long-name" }
        status.publishModels(many.map { .init($0) })
        #expect(status.models.count < many.count && status.models.count > 10)  // bounded, never torn
        #expect(status.models == Array(many.prefix(status.models.count)))
    }

    @Test func aModelIsLookedUpInPlaceAsTheListSaysIt() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let status = segment.upstream(0)
        #expect(try #require(status.modelList(contains: "m")) == (isEmpty: true, contains: false))
        status.publishModels(["Qwen/Qwen2.5-7B-Instruct-AWQ", "m", "model-b"])
        for name in ["Qwen/Qwen2.5-7B-Instruct-AWQ", "m", "model-b"] {
            #expect(try #require(status.modelList(contains: name)) == (isEmpty: false, contains: true), "\(name)")
        }
        for name in ["", "M", "model", "model-bb", "Qwen/Qwen2.5-7B-Instruct-AWQ\nm", "odel-b", "ß"] {
            #expect(try #require(status.modelList(contains: name)) == (isEmpty: false, contains: false), "\(name)")
        }
        status.publishModels([])
        #expect(try #require(status.modelList(contains: "m")) == (isEmpty: true, contains: false))
    }

    @Test func theSameListIsNotWrittenAgain() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let status = segment.upstream(0)
        let sequence = segment.atomic(at: status.offset + SegmentLayout.Upstream.modelsSequence.rawValue)
        status.publishModels(["a", "b"])
        let written = sequence.load(ordering: .relaxed)
        status.publishModels(["a", "b"])  // every health check publishes what it found
        #expect(sequence.load(ordering: .relaxed) == written)
        status.publishModels(["a"])
        #expect(sequence.load(ordering: .relaxed) == written + 2)
        #expect(status.models == ["a"])
    }

    /// A supervisor stopped in the middle of a write (preempted on a loaded machine, or
    /// SIGSTOPped) leaves the sequence odd: the list cannot be read, and a discovered model
    /// is then sent for the upstream to judge, not refused with 404 (nor /ready failed).
    @Test func anUnreadableListLetsTheUpstreamDecide() throws {
        let segment = try SharedSegment.create(supervisorPID: 1)
        let status = segment.upstream(0)
        status.publishModels(["m"])
        status.health = .up
        let registry = ModelRegistry(configuration: GatewayConfiguration())
        #expect(registry.resolve("m", segment: segment) != nil)
        #expect(registry.resolve("n", segment: segment) == nil)
        let sequence = segment.atomic(at: status.offset + SegmentLayout.Upstream.modelsSequence.rawValue)
        sequence.wrappingIncrement(ordering: .releasing)  // odd: "writing"
        #expect(status.modelList(contains: "m") == nil)
        #expect(registry.resolve("m", segment: segment)?.upstreamModel == "m")
        #expect(registry.resolve("n", segment: segment) != nil)
        #expect(registry.notReadyReason(segment: segment) == nil)
        sequence.wrappingIncrement(ordering: .releasing)  // even again: the write never finished, the old list stands
        #expect(registry.resolve("n", segment: segment) == nil)
        #expect(registry.resolve("m", segment: segment) != nil)
    }

    @Test func attachRefusesAnotherLayout() throws {
        let fd = gwTestMemfd(size: 4096)
        #expect(throws: SegmentError.self) { try SharedSegment.attach(fileDescriptor: fd) }
    }
}

#if canImport(Glibc)
    import Glibc
#endif

func gwTestMemfd(size: Int) -> Int32 {
    let fd = gw_memfd_create("test")
    ftruncate(fd, off_t(size))
    return fd
}
