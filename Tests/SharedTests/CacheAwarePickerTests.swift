import Testing

@testable import Shared

/// `routing: cache_aware` as a pure function of the candidates (load, engine queue, cached
/// prefix) and the prompt.
@Suite struct CacheAwarePickerTests {
    let picker = CacheAwarePicker()

    func candidates(_ specs: [(inflight: UInt64, matched: Int)]) -> [RoutingCandidate] {
        specs.enumerated().map { RoutingCandidate(index: $0.offset, isWell: true, inflight: $0.element.inflight, matchedBlocks: $0.element.matched) }
    }

    @Test func theUpstreamHoldingThePrefixWins() {
        let decision = picker.decide(
            RoutingRequest(candidates: candidates([(1, 0), (3, 40), (0, 10), (2, 0)]), promptBlocks: 48, firstBlock: 7))
        #expect(decision.order.first == 1)
        #expect(decision.reason == .prefix)
        #expect(decision.matchedShare == 40.0 / 48.0)
        #expect(Set(decision.order) == [0, 1, 2, 3])
    }

    @Test func aWarmUpstreamIsLeftOnceItsQueueCostsMoreThanThePrefill() {
        // 42 cached blocks are worth 42 / 1.5 = 28 more requests in flight.
        let near = picker.decide(RoutingRequest(candidates: candidates([(0, 0), (27, 42)]), promptBlocks: 42, firstBlock: 7))
        #expect(near.order.first == 1 && near.reason == .prefix)
        let saturated = picker.decide(RoutingRequest(candidates: candidates([(0, 0), (29, 42)]), promptBlocks: 42, firstBlock: 7))
        #expect(saturated.order == [0, 1] && saturated.reason == .load)
    }

    @Test func theEngineQueueCountsAsLoad() {
        var warm = candidates([(0, 0), (0, 40)])
        warm[1].engineWaiting = 9  // queued in its engine: 9 × 4 blocks < 40 cached
        #expect(picker.decide(RoutingRequest(candidates: warm, promptBlocks: 40, firstBlock: 7)).order.first == 1)
        warm[1].engineWaiting = 11  // 44 > 40: the prefill elsewhere is cheaper than the wait
        #expect(picker.decide(RoutingRequest(candidates: warm, promptBlocks: 40, firstBlock: 7)).order.first == 0)
    }

    @Test func promptsSentAndNotYetAnsweredCountAsLoad() {
        // Both hold the prefix; one is still to prefill 60 blocks others sent it (× 0.5 = 30
        // blocks of cost, more than its one fewer request in flight: 1.5 blocks).
        var warm = candidates([(1, 30), (0, 30)])
        warm[1].pendingPrefillBlocks = 60
        let decision = picker.decide(RoutingRequest(candidates: warm, promptBlocks: 40, firstBlock: 7))
        #expect(decision.order == [0, 1] && decision.reason == .prefix)
        #expect(decision.promptBlocks == 40 && decision.uncachedBlocks == 10, "the prefill it brings the chosen one")
        // A warm upstream is left when what it still has to prefill costs more than the prefix.
        warm = candidates([(0, 0), (0, 30)])
        warm[1].pendingPrefillBlocks = 58  // 29 < 30 cached
        #expect(picker.decide(RoutingRequest(candidates: warm, promptBlocks: 40, firstBlock: 7)).order.first == 1)
        warm[1].pendingPrefillBlocks = 62  // 31 > 30
        let left = picker.decide(RoutingRequest(candidates: warm, promptBlocks: 40, firstBlock: 7))
        #expect(left.order.first == 0 && left.uncachedBlocks == 40)
    }

    @Test func aColdPromptGoesWhereEveryGatewaySendsItUnlessThatOneIsBusy() {
        let idle = candidates([(0, 0), (0, 0), (0, 0), (0, 0)])
        var firsts: [Int: Int] = [:]
        for key in 0..<400 {
            let decision = picker.decide(RoutingRequest(candidates: idle, promptBlocks: 8, firstBlock: UInt64(key)))
            #expect(decision.reason == .cold)
            #expect(decision.order.first == picker.decide(RoutingRequest(candidates: idle, promptBlocks: 8, firstBlock: UInt64(key))).order.first)
            firsts[decision.order.first!, default: 0] += 1
        }
        #expect(firsts.count == 4 && firsts.values.allSatisfy { $0 > 60 }, "keys spread over all upstreams: \(firsts)")
        let key: UInt64 = 12_345
        let hashed = picker.decide(RoutingRequest(candidates: idle, promptBlocks: 8, firstBlock: key)).order[0]
        var busy = idle
        busy[hashed].inflight = 2  // more than coldSlack (1) over the least loaded
        let moved = picker.decide(RoutingRequest(candidates: busy, promptBlocks: 8, firstBlock: key))
        #expect(moved.order.first != hashed && moved.reason == .load)
        busy[hashed].inflight = 1
        #expect(picker.decide(RoutingRequest(candidates: busy, promptBlocks: 8, firstBlock: key)).order.first == hashed)
    }

    @Test func rendezvousHashingMovesOnlyTheKeysOfAVanishedUpstream() {
        let four = candidates([(0, 0), (0, 0), (0, 0), (0, 0)])
        var three = four
        three[2].isWell = false
        for key in 0..<300 {
            let before = picker.decide(RoutingRequest(candidates: four, promptBlocks: 1, firstBlock: UInt64(key))).order[0]
            let after = picker.decide(RoutingRequest(candidates: three, promptBlocks: 1, firstBlock: UInt64(key))).order[0]
            if before != 2 { #expect(after == before) } else { #expect(after != 2) }
        }
    }

    @Test func aSessionSticksUntilItsUpstreamIsSaturated() {
        var ups = candidates([(0, 30), (0, 0), (0, 0)])
        let session: UInt64 = 99
        let home = picker.decide(RoutingRequest(candidates: ups, promptBlocks: 30, firstBlock: 1, sessionKey: session))
        #expect(home.reason == .session)
        let index = home.order[0]
        ups[index].inflight = 1
        #expect(picker.decide(RoutingRequest(candidates: ups, promptBlocks: 30, firstBlock: 1, sessionKey: session)).order[0] == index)
        ups[index].inflight = 9
        let moved = picker.decide(RoutingRequest(candidates: ups, promptBlocks: 30, firstBlock: 1, sessionKey: session))
        #expect(moved.order[0] != index && moved.reason != .session)
    }

    @Test func anUnwellUpstreamIsNeverFirstWhileAnotherIsWell() {
        var ups = candidates([(0, 0), (9, 40)])
        ups[0].isWell = false
        #expect(picker.decide(RoutingRequest(candidates: ups, promptBlocks: 40, firstBlock: 3)).order == [1, 0])
        ups[1].isWell = false
        #expect(picker.decide(RoutingRequest(candidates: ups, promptBlocks: 40, firstBlock: 3)).order == [0, 1], "all unwell: least loaded")
    }

    @Test func aPromptWithoutAWholeBlockGoesByLoad() {
        let decision = picker.decide(RoutingRequest(candidates: candidates([(2, 0), (1, 0)]), promptBlocks: 0, firstBlock: nil))
        #expect(decision.order == [1, 0] && decision.reason == .load && decision.matchedShare == nil)
    }

    @Test func anAdapterGoesWhereItRunsThenWhereASlotIsFreeThePrefixDecidingWithin() {
        var fleet = candidates([(0, 40), (2, 0), (1, 10), (0, 0)])
        fleet[0].adapter = .full
        fleet[1].adapter = .running
        fleet[2].adapter = .running
        fleet[3].adapter = .freeSlot
        let decision = picker.decide(RoutingRequest(candidates: fleet, promptBlocks: 40, firstBlock: 7))
        #expect(decision.order == [2, 1, 0, 3] || decision.order == [2, 1, 3, 0])
        #expect(decision.order.prefix(2) == [2, 1], "among those running it, the prefix and load decide")
        #expect(decision.reason == .lora)
        fleet[1].adapter = .full
        fleet[2].adapter = .full
        #expect(picker.decide(RoutingRequest(candidates: fleet, promptBlocks: 40, firstBlock: 7)).order.first == 3, "a free slot")
        fleet[3].isWell = false
        let noSlot = picker.decide(RoutingRequest(candidates: fleet, promptBlocks: 40, firstBlock: 7))
        #expect(noSlot.order.first == 0 && noSlot.reason == .prefix, "all full: routed as any model")
        #expect(noSlot.order.last == 3)
    }
}
