#!/usr/bin/env python3
"""Seeded workloads for benchmarks/routing: conversations to replay against replicas.

Two kinds:

* ``shared``: ``--tenants`` tenants, each with its own long system prompt
  (``--system-tokens`` 1000-2000 tokens); conversations of ``--turns`` 2-6 turns, each
  with a tenant drawn by a Zipf law (``--tenant-skew``: 0 = uniform; 0.6 gives the most
  popular of 20 tenants 18% of the conversations). Each turn re-sends the whole history
  (system prompt, earlier user messages and the replies the server gave) plus a new
  user message of ``--user-tokens`` 40-200 tokens, asking ``--max-tokens`` 24-64 tokens.
  What a replica could reuse is the tenant's system prompt and the conversation's own
  history: sized so that the system prompts alone overflow one replica's cache
  (``--num-gpu-blocks``) but all of it fits in four (``describe`` checks this).
* ``random``: single-turn prompts of 1000-2500 tokens of random text, each different
  from its first block: nothing to share; only load balancing matters.

Text is lower-case pseudo-words; lengths are in the simulator's tokens (4 characters,
see replica_sim.py). The same seed gives the same conversations (the replies come from
the server: the simulator's depend only on the prompt, so they are the same too).

    python3 workload.py [--kind shared|random] [--requests 600] [--seed 1]
        [--num-gpu-blocks 1280 --block-size 16 --replicas 4 --open-conversations 64]

prints the workload's size and whether it fits, as JSON.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replica_sim import CHARS_PER_TOKEN, PrefixCache, block_hashes, count_tokens, render_chat  # noqa: E402

KINDS = ("shared", "random")


@dataclass
class Turn:
    user: str
    max_tokens: int


@dataclass
class Conversation:
    id: str
    tenant: Optional[int]
    system: str
    turns: List[Turn] = field(default_factory=list)

    def messages_for(self, turn_index: int, replies: Sequence[str]) -> List[Dict[str, str]]:
        """The messages of turn turn_index, given the replies to the earlier turns."""
        msgs: List[Dict[str, str]] = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        for i in range(turn_index):
            msgs.append({"role": "user", "content": self.turns[i].user})
            msgs.append({"role": "assistant", "content": replies[i]})
        msgs.append({"role": "user", "content": self.turns[turn_index].user})
        return msgs


@dataclass
class WorkloadParams:
    kind: str = "shared"
    requests: int = 600
    seed: int = 1
    tenants: int = 20
    system_tokens: Tuple[int, int] = (1000, 2000)
    turns: Tuple[int, int] = (2, 6)
    user_tokens: Tuple[int, int] = (40, 200)
    max_tokens: Tuple[int, int] = (24, 64)
    tenant_skew: float = 0.6
    random_tokens: Tuple[int, int] = (1000, 2500)


class TextMaker:
    """Pseudo-word text of an exact length in tokens, from a seeded generator."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(3000)]

    def text(self, tokens: int, head: str = "") -> str:
        want = tokens * CHARS_PER_TOKEN
        parts = [head] if head else []
        size = len(head)
        while size < want:
            w = self.rng.choice(self.words)
            parts.append(w)
            size += len(w) + 1
        return " ".join(parts)[:want]


def zipf_weights(n: int, s: float) -> List[float]:
    w = [1.0 / (i + 1) ** s for i in range(n)]
    total = sum(w)
    return [x / total for x in w]


def build(p: WorkloadParams) -> List[Conversation]:
    """Conversations whose turns add up to exactly p.requests requests."""
    if p.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    rng = random.Random(p.seed)
    tm = TextMaker(random.Random(p.seed * 7919 + 1))
    convs: List[Conversation] = []
    left = p.requests
    if p.kind == "random":
        for i in range(left):
            body = tm.text(rng.randint(*p.random_tokens), head=f"request {i} seed {p.seed} {rng.getrandbits(64):016x}:")
            convs.append(Conversation(f"r{i}", None, "", [Turn(body, rng.randint(*p.max_tokens))]))
        return convs
    systems = [tm.text(rng.randint(*p.system_tokens),
                       head=f"You are the assistant of tenant {t} (seed {p.seed}). Follow these rules:")
               for t in range(p.tenants)]
    weights = zipf_weights(p.tenants, p.tenant_skew)
    i = 0
    while left > 0:
        tenant = rng.choices(range(p.tenants), weights)[0]
        n = min(left, rng.randint(*p.turns))
        turns = [Turn(tm.text(rng.randint(*p.user_tokens), head=f"conversation {i} turn {k}:"),
                      rng.randint(*p.max_tokens)) for k in range(n)]
        convs.append(Conversation(f"c{i}", tenant, systems[tenant], turns))
        left -= n
        i += 1
    return convs


def final_prompt(conv: Conversation) -> str:
    """The last turn's prompt text, replies stood in by max_tokens tokens each (what the
    simulator answers), for sizing."""
    replies = ["x" * (t.max_tokens * CHARS_PER_TOKEN) for t in conv.turns]
    return render_chat(conv.messages_for(len(conv.turns) - 1, replies))


def ideal_hit_rate(convs: Sequence[Conversation], block_size: int = 16) -> float:
    """The prefix-cache hit rate with one cache that never evicts: the best any routing
    can do (every block computed once, in the replica that sees every request)."""
    cache = PrefixCache(1 << 40, block_size)
    queries = hits = 0
    for c in convs:
        replies = ["x" * (t.max_tokens * CHARS_PER_TOKEN) for t in c.turns]
        for k, turn in enumerate(c.turns):
            text = render_chat(c.messages_for(k, replies))
            tokens = count_tokens(text)
            alloc = cache.allocate(block_hashes(text, block_size)[:(tokens - 1) // block_size],
                                   -(-(tokens + turn.max_tokens) // block_size))
            queries += tokens
            hits += alloc.hit_blocks * block_size
            cache.commit(alloc, block_hashes(text + replies[k], block_size))
            cache.release(alloc)
    return hits / queries if queries else 0.0


def describe(convs: Sequence[Conversation], block_size: int = 16, num_gpu_blocks: int = 1280, replicas: int = 4,
             open_conversations: int = 64) -> Dict[str, Any]:
    """Sizes in KV blocks: the distinct prefix data, and what is live at one time (every
    system prompt, and open_conversations conversations at their full length: an upper
    bound)."""
    requests = sum(len(c.turns) for c in convs)
    systems: Dict[int, int] = {}
    tails: List[int] = []
    prompt_tokens: List[int] = []
    for c in convs:
        system_text = render_chat([{"role": "system", "content": c.system}])[:-len("<|im_start|>assistant\n")]
        sys_blocks = len(block_hashes(system_text, block_size)) if c.system else 0
        if c.tenant is not None:
            systems[c.tenant] = sys_blocks
        full = len(block_hashes(final_prompt(c), block_size))
        tails.append(full - sys_blocks)
        replies = ["x" * (t.max_tokens * CHARS_PER_TOKEN) for t in c.turns]
        prompt_tokens += [count_tokens(render_chat(c.messages_for(k, replies))) for k in range(len(c.turns))]
    system_blocks = sum(systems.values())
    avg_tail = sum(tails) / max(1, len(tails))
    live = system_blocks + open_conversations * avg_tail
    return {
        "conversations": len(convs), "requests": requests, "tenants": len(systems),
        "system_prompt_blocks": system_blocks, "conversation_blocks_total": sum(tails),
        "avg_conversation_blocks": round(avg_tail, 1), "live_blocks_estimate": round(live),
        "avg_prompt_tokens": round(sum(prompt_tokens) / max(1, len(prompt_tokens))),
        "ideal_hit_rate": round(ideal_hit_rate(convs, block_size), 4),
        "one_replica_blocks": num_gpu_blocks, "all_replicas_blocks": num_gpu_blocks * replicas,
        "overflows_one_replica": live > num_gpu_blocks,
        "fits_all_replicas": live <= num_gpu_blocks * replicas,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = WorkloadParams()

    def pair(s: str) -> Tuple[int, int]:
        lo, _, hi = s.partition("-")
        return int(lo), int(hi or lo)

    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--tenants", type=int, default=d.tenants)
    p.add_argument("--system-tokens", type=pair, default=d.system_tokens, metavar="MIN-MAX")
    p.add_argument("--turns", type=pair, default=d.turns, metavar="MIN-MAX")
    p.add_argument("--user-tokens", type=pair, default=d.user_tokens, metavar="MIN-MAX")
    p.add_argument("--max-tokens", type=pair, default=d.max_tokens, metavar="MIN-MAX")
    p.add_argument("--tenant-skew", type=float, default=d.tenant_skew, help="Zipf exponent of tenant popularity")
    p.add_argument("--random-tokens", type=pair, default=d.random_tokens, metavar="MIN-MAX",
                   help="prompt length of the random workload")


def params_from(args: argparse.Namespace, kind: str, requests: int) -> WorkloadParams:
    return WorkloadParams(kind=kind, requests=requests, seed=args.seed, tenants=args.tenants,
                          system_tokens=args.system_tokens, turns=args.turns, user_tokens=args.user_tokens,
                          max_tokens=args.max_tokens, tenant_skew=args.tenant_skew, random_tokens=args.random_tokens)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Describe a benchmarks/routing workload")
    p.add_argument("--kind", choices=KINDS, default="shared")
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--num-gpu-blocks", type=int, default=1280)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--open-conversations", type=int, default=64)
    add_arguments(p)
    a = p.parse_args(argv)
    convs = build(params_from(a, a.kind, a.requests))
    print(json.dumps(describe(convs, a.block_size, a.num_gpu_blocks, a.replicas, a.open_conversations), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
