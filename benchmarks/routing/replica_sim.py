#!/usr/bin/env python3
"""A vLLM replica simulator for benchmarks/routing: one process is one replica.

It models what makes routing across replicas matter, and nothing else (no model runs;
time passes in asyncio sleeps, so four replicas and a load generator fit on 2 cores):

* **Tokens.** The prompt is rendered (chat: a ChatML template, ``render_chat``;
  completions: the prompt string) and cut into tokens of ``CHARS_PER_TOKEN`` (4)
  characters: ``prompt_tokens = ceil(len(text) / 4)``. Generated tokens are 4-character
  words (" abc"), so a reply that the client sends back in the next turn tokenises the
  same way it was generated.
* **Prefix cache** (vLLM's automatic prefix caching, ``PrefixCache``): ``--num-gpu-blocks``
  KV blocks of ``--block-size`` tokens. Only full blocks are cached; block *i*'s hash
  chains the hash of block *i-1* with its own text, so a block matches only when every
  block before it matched. A request hits the longest run of cached leading blocks (at
  most ``prompt_tokens - 1`` tokens: the last token is always computed, as in vLLM).
  Blocks held by running requests are pinned; freed blocks stay cached and are evicted
  least recently used first (a request's tail blocks before its head, as vLLM frees them).
  The prompt's full blocks are cached as each chunk of its prefill is scheduled, before
  the step computes them (vLLM v1's ``KVCacheManager.allocate_slots`` caches the blocks of
  ``computed + new`` tokens), so a request scheduled after another with the same prefix,
  even in the same step, hits it; the reply's full blocks when the request finishes (the
  next turn of a chat hits its own history).
* **KV capacity.** A request is admitted only when blocks for ``prompt + max_tokens``
  can be had (cached hits are shared, not copied); otherwise it waits (no preemption).
* **Engine steps** (continuous batching, chunked prefill): at most ``--max-num-seqs``
  running requests; each step decodes one token for every running request past its
  prefill and gives the rest of ``--max-num-batched-tokens`` to uncached prompt tokens,
  oldest first, then admits waiting requests in arrival order. A step lasts
  ``decode_ms_per_step + decode_us_per_seq * decoding + prefill_us_per_token * prefilled``:
  an uncached prompt delays its own first token *and* every other sequence's next one.
* **Output.** Exactly ``max_tokens`` (or ``max_completion_tokens``, default
  ``--default-max-tokens``) tokens, ``finish_reason: "length"``, the same text for the
  same prompt.

HTTP (vLLM's shapes)::

    GET  /health, /ping                     200, empty body
    GET  /version                           {"version": "0.32.0"}
    GET  /v1/models                         the served model (+ LoRA adapters, with parent)
    POST /v1/chat/completions               plain and SSE (stream: true, data: [DONE])
    POST /v1/completions                    plain and SSE
    POST /tokenize                          {"count", "max_model_len", "tokens", "token_strs"}
    POST /v1/chat/completions/render        vLLM's render routes: {"token_ids", "sampling_params", ...}
    POST /v1/completions/render             (vllm-router's cache_aware policy asks for these)
    GET  /metrics                           Prometheus text with vLLM's names (below)
    POST /reset_prefix_cache                drop the cached blocks not in use (vLLM's dev route)
    POST /reset                             drop cached blocks and zero every counter and
                                            histogram; 409 while requests are in flight
    GET  /sim/state                         JSON: cache, queue and counters

``usage`` always carries ``prompt_tokens_details.cached_tokens`` (vLLM needs
``--enable-prompt-tokens-details`` for that). ``/metrics`` copies vLLM 0.32's exposition
(labels ``engine``, ``model_name`` sorted by name, ``_created`` gauges, counters typed
with their ``_total`` name): ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:num_requests_waiting_by_reason``, ``vllm:kv_cache_usage_perc`` (0..1),
``vllm:prefix_cache_queries_total`` and ``vllm:prefix_cache_hits_total`` (tokens),
``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
``vllm:request_success_total{finished_reason}``, ``vllm:num_preemptions_total``,
histograms ``vllm:time_to_first_token_seconds``, ``vllm:e2e_request_latency_seconds``,
``vllm:request_queue_time_seconds``, ``vllm:iteration_tokens_total``, the info gauges
``vllm:cache_config_info{block_size,num_gpu_blocks,...}`` (1) and, with LoRA on
(``--max-loras N`` > 0 or ``--lora-modules``),
``vllm:lora_requests_info{max_lora,running_lora_adapters,waiting_lora_adapters}`` (the
time of the last change, one series per adapter set seen, as vLLM leaves them).
``fixtures/vllm-metrics-sample.txt`` is a real vLLM 0.32.0 scrape to compare with.

Run it::

    python3 replica_sim.py --port 0 [--model sim-model] [--num-gpu-blocks 1280]
        [--block-size 16] [--max-num-seqs 8] [--prefill-us-per-token 100]
        [--decode-ms-per-step 15] [--ready-file F]

It listens on 127.0.0.1 only; ``--port 0`` picks a free port, printed on a
``replica_sim listening ...`` line and written (JSON) to the ready file.
``ReplicaSim.start(...)`` (below, stdlib only) runs it as a subprocess.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections import OrderedDict, deque
from typing import Any, Dict, List, Optional, Sequence, Tuple

# The fake vLLM's process helpers (stdlib only at import): one copy of the log tail and of the
# process-group stop.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "integration"))
from fake_vllm import _tail, _terminate  # noqa: E402

CHARS_PER_TOKEN = 4
VLLM_VERSION = "0.32.0"  # the vLLM whose /metrics this copies
DEFAULT_MODEL = "sim-model"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

# 4-character reply tokens: a space and three letters.
REPLY_WORDS = [" " + w for w in (
    "the and for are but not you all any can had her was one our out day get has him his how "
    "man new now old see two way who boy did its let put say she too use art big box car cup "
    "dog eye fun hat ice job key law map net oil pen red sea sun tea top van war yes zoo").split()]


# --------------------------------------------------------------------------------------
# Tokens and block hashes (pure)
# --------------------------------------------------------------------------------------

def message_text(content: Any) -> str:
    """A chat message's content as text (a string, or the text parts of a list)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def render_chat(messages: Sequence[Dict[str, Any]]) -> str:
    """The prompt text of a chat request: ChatML, ending with the assistant's header."""
    parts = [f"<|im_start|>{m.get('role', 'user')}\n{message_text(m.get('content'))}<|im_end|>\n" for m in messages]
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def count_tokens(text: str) -> int:
    """Tokens in text: one per CHARS_PER_TOKEN characters (at least 1)."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def token_ids(text: str) -> List[int]:
    """Token ids for text (for /tokenize and the render routes): one per 4-character token,
    a hash of its characters in a 151,936-id vocabulary (Qwen2's size)."""
    w = CHARS_PER_TOKEN
    return [zlib.crc32(text[i:i + w].encode("utf-8")) % 151_936 for i in range(0, len(text), w)] or [0]


def block_hashes(text: str, block_size: int) -> List[bytes]:
    """Chained hashes of text's full blocks: block i = characters [i*B*4, (i+1)*B*4),
    hash_i = H(hash_{i-1} || block_i). Equal hashes mean equal text from the start."""
    width = block_size * CHARS_PER_TOKEN
    out: List[bytes] = []
    parent = b""
    for i in range(len(text) // width):
        parent = hashlib.blake2b(parent + text[i * width:(i + 1) * width].encode("utf-8"), digest_size=16).digest()
        out.append(parent)
    return out


def reply_tokens(prompt_text: str, n: int) -> List[str]:
    """The n reply tokens for a prompt: the same prompt always gets the same reply."""
    rng = random.Random(int.from_bytes(hashlib.blake2b(prompt_text.encode("utf-8"), digest_size=8).digest(), "big"))
    return [rng.choice(REPLY_WORDS) for _ in range(n)]


class Allocation:
    """The blocks one request holds: cached (hashed) ones, shared by refcount, in prompt
    order, and ``anon`` blocks not (yet) holding a full hashed block."""
    __slots__ = ("hashes", "anon", "hit_blocks")

    def __init__(self, hashes: List[bytes], anon: int):
        self.hashes = hashes
        self.anon = anon
        self.hit_blocks = len(hashes)


class PrefixCache:
    """vLLM-style block pool with automatic prefix caching (no I/O, no clock).

    Every cached block has a refcount; blocks with refcount 0 are free but still cached,
    in ``evictable`` (least recently freed first) until a new allocation needs the room.
    """

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref: Dict[bytes, int] = {}
        self.evictable: "OrderedDict[bytes, None]" = OrderedDict()
        self.anon = 0
        self.evictions = 0

    # -- views --
    @property
    def used_blocks(self) -> int:
        """Blocks held by running requests (what vLLM's kv_cache_usage_perc counts)."""
        return len(self.ref) - len(self.evictable) + self.anon

    @property
    def cached_blocks(self) -> int:
        return len(self.ref)

    @property
    def usage(self) -> float:
        return self.used_blocks / self.num_blocks

    def match(self, hashes: Sequence[bytes]) -> int:
        """How many leading hashes are cached (in use or evictable)."""
        n = 0
        for h in hashes:
            if h not in self.ref:
                break
            n += 1
        return n

    # -- transitions --
    def allocate(self, hashes: Sequence[bytes], total_blocks: int) -> Optional[Allocation]:
        """Pins the cached leading blocks of hashes and reserves the rest of total_blocks
        (evicting LRU free blocks as needed). None, with nothing changed, if it cannot fit."""
        hits = list(hashes[:self.match(hashes)])[:total_blocks]
        need = total_blocks - len(hits)
        hits_evictable = sum(1 for h in hits if self.ref[h] == 0)
        empty = self.num_blocks - len(self.ref) - self.anon
        if empty + len(self.evictable) - hits_evictable < need:
            return None
        for h in hits:
            if self.ref[h] == 0:
                del self.evictable[h]
            self.ref[h] += 1
        while self.num_blocks - len(self.ref) - self.anon < need:
            h, _ = self.evictable.popitem(last=False)
            del self.ref[h]
            self.evictions += 1
        self.anon += need
        return Allocation(hits, need)

    def commit(self, alloc: Allocation, hashes: Sequence[bytes]) -> None:
        """The request has computed, or is scheduled to compute, the full blocks hashes (its
        prompt, or prompt+reply): those it holds as anonymous blocks become cached. A block
        another request cached meanwhile is shared instead (vLLM keeps a duplicate; the hits
        are the same)."""
        for h in hashes[len(alloc.hashes):]:
            if alloc.anon == 0:
                break
            if h in self.ref:  # another request computed it meanwhile: share it, free ours
                if self.ref[h] == 0:
                    del self.evictable[h]
                self.ref[h] += 1
            else:
                self.ref[h] = 1
            alloc.anon -= 1
            self.anon -= 1
            alloc.hashes.append(h)

    def release(self, alloc: Allocation) -> None:
        """The request is done: its blocks are freed, tail first, and stay cached."""
        for h in reversed(alloc.hashes):
            self.ref[h] -= 1
            if self.ref[h] == 0:
                self.evictable[h] = None
        self.anon -= alloc.anon
        alloc.hashes = []
        alloc.anon = 0

    def reset(self) -> int:
        """Drops every cached block that no request holds; returns how many."""
        n = len(self.evictable)
        for h in self.evictable:
            del self.ref[h]
        self.evictable.clear()
        return n


# --------------------------------------------------------------------------------------
# Metrics (vLLM 0.32's exposition)
# --------------------------------------------------------------------------------------

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                   480.0, 960.0, 1920.0, 7680.0)
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")


def go_float(v: float) -> str:
    """A sample value as prometheus_client writes it (Go-style exponents for big numbers)."""
    d = float(v)
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return s


def _labels(labels: Dict[str, Any]) -> str:
    if not labels:
        return ""
    inner = ",".join('{}="{}"'.format(k, str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"'))
                     for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Histogram:
    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(float(b) for b in buckets)
        self.reset()

    def reset(self) -> None:
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0
        self.created = time.time()

    def observe(self, v: float) -> None:
        self.count += 1
        self.sum += v
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
                break

    def samples(self, name: str, labels: Dict[str, Any]) -> List[str]:
        out, acc = [], 0
        for b, c in zip(self.buckets, self.counts):
            acc += c
            out.append(f"{name}_bucket{_labels({**labels, 'le': go_float(b)})} {go_float(acc)}")
        out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {go_float(self.count)}")
        out.append(f"{name}_count{_labels(labels)} {go_float(self.count)}")
        out.append(f"{name}_sum{_labels(labels)} {go_float(self.sum)}")
        return out


class Stats:
    """Counters and histograms, zeroed by POST /reset."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        now = time.time()
        self.created = now
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.preemptions = 0
        self.success = {r: 0 for r in FINISH_REASONS}
        self.requests_received = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.e2e = Histogram(LATENCY_BUCKETS)
        self.queue = Histogram(LATENCY_BUCKETS)
        self.iteration_tokens = Histogram(ITERATION_TOKENS_BUCKETS)


# --------------------------------------------------------------------------------------
# Engine: scheduler, steps, requests
# --------------------------------------------------------------------------------------

class SimRequest:
    def __init__(self, prompt_text: str, max_tokens: int, model: str, lora: Optional[str] = None):
        self.id = uuid.uuid4().hex[:16]
        self.prompt_text = prompt_text
        self.prompt_tokens = count_tokens(prompt_text)
        self.max_tokens = max_tokens
        self.model = model
        self.lora = lora
        self.hashes: List[bytes] = []
        self.alloc: Optional[Allocation] = None
        self.hit_tokens = 0
        self.prefill_left = self.prompt_tokens
        self.tokens: List[str] = []
        self.reply: Optional[List[str]] = None
        self.arrival = time.monotonic()
        self.scheduled: Optional[float] = None
        self.first_token: Optional[float] = None
        self.finished = False
        self.aborted = False
        self.events: "asyncio.Queue[Tuple[str, Any]]" = asyncio.Queue()

    def usage(self) -> Dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens + len(self.tokens),
                "completion_tokens": len(self.tokens), "prompt_tokens_details": {"cached_tokens": self.hit_tokens}}


class Engine:
    def __init__(self, cfg: argparse.Namespace):
        self.cfg = cfg
        self.cache = PrefixCache(cfg.num_gpu_blocks, cfg.block_size)
        self.waiting: "deque[SimRequest]" = deque()
        self.running: List[SimRequest] = []
        self.stats = Stats()
        self.wake = asyncio.Event()
        self.steps = 0
        self.lora_enabled = cfg.max_loras > 0
        self.lora_series: Dict[Tuple[str, str], float] = {}
        if self.lora_enabled:
            self._lora_changed()

    # -- requests --
    def submit(self, req: SimRequest) -> None:
        req.hashes = block_hashes(req.prompt_text, self.cfg.block_size)
        self.stats.requests_received += 1
        self.waiting.append(req)
        self._lora_changed()
        self.wake.set()

    def abort(self, req: SimRequest) -> None:
        if req.finished or req.aborted:
            return
        req.aborted = True
        if req in self.waiting:
            self.waiting.remove(req)
        if req in self.running:
            self.running.remove(req)
            if req.alloc is not None:
                self.cache.release(req.alloc)
        self.stats.success["abort"] += 1
        self._lora_changed()

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    # -- scheduling --
    def _admit(self, req: SimRequest) -> bool:
        bs = self.cfg.block_size
        max_hit_blocks = (req.prompt_tokens - 1) // bs
        total_blocks = -(-(req.prompt_tokens + req.max_tokens) // bs)
        alloc = self.cache.allocate(req.hashes[:max_hit_blocks], total_blocks)
        if alloc is None:
            return False
        req.alloc = alloc
        req.hit_tokens = alloc.hit_blocks * bs
        req.prefill_left = req.prompt_tokens - req.hit_tokens
        req.scheduled = time.monotonic()
        self.stats.prefix_queries += req.prompt_tokens
        self.stats.prefix_hits += req.hit_tokens
        self.stats.queue.observe(req.scheduled - req.arrival)
        return True

    def schedule(self) -> Tuple[List[SimRequest], List[Tuple[SimRequest, int]]]:
        """One step's batch: (decoding requests, [(prefilling request, tokens)])."""
        budget = self.cfg.max_num_batched_tokens
        decode = [r for r in self.running if r.prefill_left == 0]
        budget -= len(decode)
        prefill: List[Tuple[SimRequest, int]] = []
        for r in self.running:
            if r.prefill_left > 0 and budget > 0:
                n = min(r.prefill_left, budget)
                prefill.append((r, n))
                budget -= n
                self._cache_scheduled(r, n)
        skipped: List[SimRequest] = []
        loras = {r.lora for r in self.running if r.lora}
        while self.waiting and len(self.running) < self.cfg.max_num_seqs and budget > 0:
            r = self.waiting[0]
            if r.lora and r.lora not in loras and len(loras) >= max(1, self.cfg.max_loras):
                skipped.append(self.waiting.popleft())  # vLLM skips it and looks further
                continue
            if not self._admit(r):
                break
            self.waiting.popleft()
            self.running.append(r)
            if r.lora:
                loras.add(r.lora)
            n = min(r.prefill_left, budget)
            prefill.append((r, n))
            budget -= n
            self._cache_scheduled(r, n)
        for r in reversed(skipped):
            self.waiting.appendleft(r)
        if skipped or prefill:
            self._lora_changed()
        return decode, prefill

    def _cache_scheduled(self, r: SimRequest, n: int) -> None:
        """The prompt's full blocks up to the end of the chunk just scheduled become cached
        now, before the step computes them, as vLLM v1's KV-cache manager does
        (``allocate_slots`` caches ``computed + new`` tokens' blocks): a request scheduled
        after this one, in this step or a later one, hits them."""
        done = r.prompt_tokens - r.prefill_left + n
        self.cache.commit(r.alloc, r.hashes[:done // self.cfg.block_size])

    def step_seconds(self, decode: List[SimRequest], prefill: List[Tuple[SimRequest, int]]) -> float:
        c = self.cfg
        return (c.decode_ms_per_step / 1e3 + c.decode_us_per_seq / 1e6 * len(decode)
                + c.prefill_us_per_token / 1e6 * sum(n for _, n in prefill))

    def complete_step(self, decode: List[SimRequest], prefill: List[Tuple[SimRequest, int]]) -> None:
        now = time.monotonic()
        self.steps += 1
        self.stats.iteration_tokens.observe(len(decode) + sum(n for _, n in prefill))
        for r, n in prefill:
            if r.aborted:
                continue
            r.prefill_left -= n
            if r.prefill_left == 0:
                self.cache.commit(r.alloc, r.hashes)
                self._emit(r, now)
        for r in decode:
            if not r.aborted:
                self._emit(r, now)

    def _emit(self, r: SimRequest, now: float) -> None:
        if r.reply is None:
            r.first_token = now
            self.stats.ttft.observe(now - r.arrival)
            r.reply = reply_tokens(r.prompt_text, r.max_tokens)
        tok = r.reply[len(r.tokens)]
        r.tokens.append(tok)
        self.stats.generation_tokens += 1
        done = len(r.tokens) >= r.max_tokens
        r.events.put_nowait(("token", tok))
        if done:
            self._finish(r, now)

    def _finish(self, r: SimRequest, now: float) -> None:
        r.finished = True
        self.running.remove(r)
        full = block_hashes(r.prompt_text + "".join(r.tokens), self.cfg.block_size)
        self.cache.commit(r.alloc, full)
        self.cache.release(r.alloc)
        self.stats.prompt_tokens += r.prompt_tokens
        self.stats.success["length"] += 1
        self.stats.e2e.observe(now - r.arrival)
        self._lora_changed()
        r.events.put_nowait(("done", None))

    def _lora_changed(self) -> None:
        if not self.lora_enabled:
            return
        running = ",".join(sorted({r.lora for r in self.running if r.lora}))
        waiting = ",".join(sorted({r.lora for r in self.waiting if r.lora}))
        self.lora_series[(running, waiting)] = time.time()

    async def run(self) -> None:
        while True:
            if not self.busy:
                self.wake.clear()
                await self.wake.wait()
                continue
            decode, prefill = self.schedule()
            if not decode and not prefill:
                # Waiting requests that cannot be admitted with nothing running: cannot
                # happen for a request that fits (checked at arrival); do not spin.
                await asyncio.sleep(self.cfg.decode_ms_per_step / 1e3)
                continue
            await asyncio.sleep(self.step_seconds(decode, prefill))
            self.complete_step(decode, prefill)

    # -- views --
    def reset(self) -> Dict[str, Any]:
        dropped = self.cache.reset()
        self.cache.evictions = 0
        self.stats.reset()
        self.lora_series.clear()
        self._lora_changed()
        return {"dropped_blocks": dropped}

    def state(self) -> Dict[str, Any]:
        c, s = self.cache, self.stats
        return {
            "replica": self.cfg.replica_id, "model": self.cfg.model, "running": len(self.running),
            "waiting": len(self.waiting), "steps": self.steps,
            "cache": {"num_gpu_blocks": c.num_blocks, "block_size": c.block_size, "used_blocks": c.used_blocks,
                      "cached_blocks": c.cached_blocks, "evictable_blocks": len(c.evictable),
                      "evictions": c.evictions, "usage": c.usage},
            "counters": {"prefix_cache_queries": s.prefix_queries, "prefix_cache_hits": s.prefix_hits,
                         "prompt_tokens": s.prompt_tokens, "generation_tokens": s.generation_tokens,
                         "requests_received": s.requests_received, "request_success": dict(s.success)},
        }

    def metrics_text(self) -> str:
        cfg, s, c = self.cfg, self.stats, self.cache
        base = {"engine": "0", "model_name": cfg.model}
        out: List[str] = []

        def family(name: str, kind: str, help_text: str, samples: List[str]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)

        def gauge(name: str, help_text: str, value: float, extra: Optional[Dict[str, Any]] = None) -> None:
            family(name, "gauge", help_text, [f"{name}{_labels({**base, **(extra or {})})} {go_float(value)}"])

        def counter(name: str, help_text: str, values: List[Tuple[Dict[str, Any], float]]) -> None:
            family(f"{name}_total", "counter", help_text,
                   [f"{name}_total{_labels({**base, **extra})} {go_float(v)}" for extra, v in values])
            family(f"{name}_created", "gauge", help_text,
                   [f"{name}_created{_labels({**base, **extra})} {go_float(s.created)}" for extra, _ in values])

        def histogram(name: str, help_text: str, h: Histogram) -> None:
            family(name, "histogram", help_text, h.samples(name, base))
            family(f"{name}_created", "gauge", help_text, [f"{name}_created{_labels(base)} {go_float(h.created)}"])

        gauge("vllm:num_requests_running", "Number of requests in model execution batches.", len(self.running))
        gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", len(self.waiting))
        family("vllm:num_requests_waiting_by_reason", "gauge",
               "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; "
               "'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). "
               "Sum of all reasons equals vllm:num_requests_waiting.",
               [f"vllm:num_requests_waiting_by_reason{_labels({**base, 'reason': reason})} {go_float(n)}"
                for reason, n in (("capacity", len(self.waiting)), ("deferred", 0))])
        gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", c.usage)
        counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                [({}, s.prefix_queries)])
        counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
                [({}, s.prefix_hits)])
        counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", [({}, s.preemptions)])
        counter("vllm:prompt_tokens", "Number of prefill tokens processed.", [({}, s.prompt_tokens)])
        counter("vllm:generation_tokens", "Number of generation tokens processed.", [({}, s.generation_tokens)])
        counter("vllm:request_success", "Count of successfully processed requests.",
                [({"finished_reason": r}, s.success[r]) for r in FINISH_REASONS])
        histogram("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", s.iteration_tokens)
        histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", s.ttft)
        histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", s.e2e)
        histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", s.queue)
        if self.lora_enabled:
            family("vllm:lora_requests_info", "gauge", "Running stats on lora requests.",
                   [f"vllm:lora_requests_info{_labels(lbl)} {go_float(t)}" for lbl, t in (
                       ({"max_lora": cfg.max_loras, "running_lora_adapters": run, "waiting_lora_adapters": wait}, t)
                       for (run, wait), t in self.lora_series.items())])
        cache_info = {
            "_block_size_resolved": "True", "block_size": cfg.block_size, "cache_dtype": "auto",
            "enable_prefix_caching": "True", "engine": "0", "gpu_memory_utilization": "0.9",
            "is_attention_free": "False", "kv_cache_memory_bytes": "None", "num_cpu_blocks": "None",
            "num_gpu_blocks": cfg.num_gpu_blocks, "num_gpu_blocks_override": "None",
            "prefix_caching_hash_algo": "sha256", "sliding_window": "None",
            "user_specified_block_size": "True",
        }
        family("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig",
               [f"vllm:cache_config_info{_labels(cache_info)} 1.0"])
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------

def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error_body(message: str, status: int, err_type: str, param: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": status}}


def build_app(engine: Engine):
    from aiohttp import web

    cfg = engine.cfg
    served = [cfg.model] + list(cfg.lora_modules)

    def jresp(obj: Any, status: int = 200):
        return web.Response(text=_dumps(obj), status=status, content_type="application/json")

    async def read_body(request) -> Tuple[Optional[Dict[str, Any]], Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return None, jresp(error_body("Invalid JSON body", 400, "BadRequestError"), 400)
        if not isinstance(body, dict):
            return None, jresp(error_body("Request body must be a JSON object", 400, "BadRequestError"), 400)
        model = body.get("model") or cfg.model
        if model not in served:
            return None, jresp(error_body(f"The model `{model}` does not exist.", 404, "NotFoundError", "model"), 404)
        return body, None

    def max_tokens_of(body: Dict[str, Any]) -> int:
        v = body.get("max_completion_tokens") or body.get("max_tokens") or cfg.default_max_tokens
        try:
            return max(1, int(v))
        except (TypeError, ValueError):
            return cfg.default_max_tokens

    async def generate(request, body: Dict[str, Any], prompt_text: str, kind: str):
        model = body.get("model") or cfg.model
        max_tokens = max_tokens_of(body)
        prompt_tokens = count_tokens(prompt_text)
        if prompt_tokens + max_tokens > cfg.max_model_len:
            return jresp(error_body(
                f"This model's maximum context length is {cfg.max_model_len} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                "completion). Please reduce the length of the messages or completion.", 400, "BadRequestError"), 400)
        req = SimRequest(prompt_text, max_tokens, model, lora=model if model != cfg.model else None)
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + req.id
        created = int(time.time())
        obj = "chat.completion" if kind == "chat" else "text_completion"
        engine.submit(req)
        try:
            if not body.get("stream"):
                while True:
                    ev, _ = await req.events.get()
                    if ev == "done":
                        break
                text = "".join(req.tokens)
                choice = ({"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                   "tool_calls": []}, "logprobs": None, "finish_reason": "length",
                           "stop_reason": None} if kind == "chat" else
                          {"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None})
                return jresp({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice],
                              "usage": req.usage()})
            resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8",
                                                           "Cache-Control": "no-cache"})
            resp.headers["x-sim-replica"] = cfg.replica_id
            await resp.prepare(request)
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunk_obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

            async def send(payload: Any) -> None:
                await resp.write(b"data: " + _dumps(payload).encode("utf-8") + b"\n\n")

            sent = 0
            while True:
                ev, tok = await req.events.get()
                if ev == "done":
                    break
                sent += 1
                last = sent >= req.max_tokens
                if kind == "chat":
                    if sent == 1:
                        await send({"id": rid, "object": chunk_obj, "created": created, "model": model,
                                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                 "logprobs": None, "finish_reason": None}]})
                    choice = {"index": 0, "delta": {"content": tok}, "logprobs": None,
                              "finish_reason": "length" if last else None}
                else:
                    choice = {"index": 0, "text": tok, "logprobs": None, "finish_reason": "length" if last else None}
                if last:
                    choice["stop_reason"] = None
                await send({"id": rid, "object": chunk_obj, "created": created, "model": model, "choices": [choice]})
            if include_usage:
                await send({"id": rid, "object": chunk_obj, "created": created, "model": model, "choices": [],
                            "usage": req.usage()})
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        finally:
            if not req.finished:
                engine.abort(req)

    async def chat_completions(request):
        body, err = await read_body(request)
        if err is not None:
            return err
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return jresp(error_body("messages must be a non-empty list", 400, "BadRequestError", "messages"), 400)
        return await generate(request, body, render_chat(messages), "chat")

    async def completions(request):
        body, err = await read_body(request)
        if err is not None:
            return err
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, list):  # token ids: one token each
            prompt = "".join(f"{int(t) % 10000:04d}" for t in prompt)
        if not isinstance(prompt, str) or not prompt:
            return jresp(error_body("prompt must be a non-empty string", 400, "BadRequestError", "prompt"), 400)
        return await generate(request, body, prompt, "completion")

    def prompt_of(body: Dict[str, Any]) -> Optional[str]:
        if isinstance(body.get("messages"), list):
            text = render_chat(body["messages"])
            return text if body.get("add_generation_prompt", True) else text[:-len("<|im_start|>assistant\n")]
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt = prompt[0]
        return prompt if isinstance(prompt, str) else None

    async def tokenize(request):
        body, err = await read_body(request)
        if err is not None:
            return err
        text = prompt_of(body)
        if text is None:
            return jresp(error_body("prompt or messages required", 400, "BadRequestError"), 400)
        ids = token_ids(text)
        return jresp({"count": len(ids), "max_model_len": cfg.max_model_len, "tokens": ids, "token_strs": None})

    def rendered(body: Dict[str, Any], text: str) -> Dict[str, Any]:
        return {"request_id": uuid.uuid4().hex, "token_ids": token_ids(text), "token_offsets": None, "features": None,
                "content_parts": None, "sampling_params": {"max_tokens": max_tokens_of(body)},
                "model": body.get("model") or cfg.model, "stream": bool(body.get("stream")),
                "stream_options": body.get("stream_options"), "cache_salt": None, "priority": 0,
                "kv_transfer_params": None}

    async def render_chat_route(request):
        body, err = await read_body(request)
        if err is not None:
            return err
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return jresp(error_body("messages must be a non-empty list", 400, "BadRequestError", "messages"), 400)
        return jresp(rendered(body, render_chat(body["messages"])))

    async def render_completion_route(request):
        body, err = await read_body(request)
        if err is not None:
            return err
        text = prompt_of(body)
        if not text:
            return jresp(error_body("prompt must be a non-empty string", 400, "BadRequestError", "prompt"), 400)
        return jresp([rendered(body, text)])

    async def health(request):
        return web.Response(status=200)

    async def version(request):
        return jresp({"version": VLLM_VERSION})

    async def models(request):
        now = int(time.time())
        data = [{"id": cfg.model, "object": "model", "created": now, "owned_by": "vllm", "root": cfg.model,
                 "parent": None, "max_model_len": cfg.max_model_len}]
        data += [{"id": m, "object": "model", "created": now, "owned_by": "vllm", "root": m, "parent": cfg.model,
                  "max_model_len": None} for m in cfg.lora_modules]
        return jresp({"object": "list", "data": data})

    async def metrics(request):
        return web.Response(text=engine.metrics_text(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def reset(request):
        if engine.busy:
            return jresp(error_body(f"{len(engine.running)} running and {len(engine.waiting)} waiting requests",
                                    409, "ConflictError"), 409)
        return jresp({"status": "ok", **engine.reset()})

    async def reset_prefix_cache(request):
        engine.cache.reset()
        return web.Response(status=200)

    async def state(request):
        return jresp(engine.state())

    @web.middleware
    async def log_unknown(request, handler):
        try:
            return await handler(request)
        except web.HTTPNotFound:
            print(f"replica_sim: 404 {request.method} {request.path}", file=sys.stderr, flush=True)
            return jresp(error_body(f"Not Found: {request.path}", 404, "NotFoundError"), 404)

    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[log_unknown])
    app.router.add_get("/health", health)
    app.router.add_get("/ping", health)
    app.router.add_post("/ping", health)
    app.router.add_get("/version", version)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/v1/chat/completions/render", render_chat_route)
    app.router.add_post("/v1/completions/render", render_completion_route)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/reset", reset)
    app.router.add_post("/reset_prefix_cache", reset_prefix_cache)
    app.router.add_get("/sim/state", state)

    async def start_engine(app_):
        app_["engine_task"] = asyncio.get_running_loop().create_task(engine.run())

    async def stop_engine(app_):
        app_["engine_task"].cancel()

    app.on_startup.append(start_engine)
    app.on_cleanup.append(stop_engine)
    return app


async def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    if args.host not in LOOPBACK_HOSTS:
        raise SystemExit(f"replica_sim: refusing to listen on non-loopback host {args.host!r}")
    engine = Engine(args)
    app = build_app(engine)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0,
                           keepalive_timeout=args.keepalive_timeout)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, reuse_address=True)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    if not args.replica_id:
        args.replica_id = str(port)
    info = {"port": port, "pid": os.getpid(), "url": f"http://{args.host}:{port}", "replica": args.replica_id}
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, args.ready_file)
    print(f"replica_sim listening on http://{args.host}:{port} pid {os.getpid()} model {args.model} "
          f"blocks {args.num_gpu_blocks}x{args.block_size}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="vLLM replica simulator (prefix cache, batching, vLLM metrics)")
    p.add_argument("--host", default="127.0.0.1", help="loopback only")
    p.add_argument("--port", type=int, required=True, help="0 = pick a free port")
    p.add_argument("--model", default=DEFAULT_MODEL, help="served model name")
    p.add_argument("--replica-id", default="", help="name in /sim/state and the x-sim-replica header (default: port)")
    p.add_argument("--num-gpu-blocks", type=int, default=1280, help="KV blocks in the prefix cache")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    p.add_argument("--max-num-seqs", type=int, default=8, help="running requests at most (the batch)")
    p.add_argument("--max-num-batched-tokens", type=int, default=2048, help="tokens per engine step")
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--prefill-us-per-token", type=float, default=100.0, help="step time per uncached prompt token")
    p.add_argument("--decode-ms-per-step", type=float, default=15.0, help="base time of one engine step")
    p.add_argument("--decode-us-per-seq", type=float, default=250.0, help="step time per decoding sequence")
    p.add_argument("--default-max-tokens", type=int, default=16, help="output tokens when the request sets none")
    p.add_argument("--max-loras", type=int, default=0,
                   help="LoRA adapters per batch; > 0 turns LoRA (and its metric) on")
    p.add_argument("--lora-modules", default="", help="comma-separated adapter names served besides --model")
    p.add_argument("--keepalive-timeout", type=float, default=5.0, help="idle keep-alive (uvicorn's default)")
    p.add_argument("--ready-file", default=None, help="write {port, pid, url} JSON here when listening")
    args = p.parse_args(argv)
    args.lora_modules = [m for m in args.lora_modules.split(",") if m]
    if args.lora_modules and args.max_loras == 0:
        args.max_loras = 1
    if args.max_model_len > args.num_gpu_blocks * args.block_size:
        args.max_model_len = args.num_gpu_blocks * args.block_size
    for name in ("num_gpu_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    asyncio.run(serve(parse_args(argv)))


# --------------------------------------------------------------------------------------
# Process handle (stdlib only)
# --------------------------------------------------------------------------------------

class ReplicaSimError(RuntimeError):
    pass


class ReplicaSim:
    """A replica_sim.py subprocess. ``ReplicaSim.start(workdir=..., num_gpu_blocks=64)``:
    keyword options map to flags (num_gpu_blocks=64 -> --num-gpu-blocks 64)."""

    def __init__(self, proc: subprocess.Popen, info: Dict[str, Any], log_path: str):
        self.proc = proc
        self.info = info
        self.log_path = log_path
        self.port: int = info["port"]
        self.url = f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, workdir: Optional[str] = None, name: Optional[str] = None, timeout: float = 15.0,
              **options: Any) -> "ReplicaSim":
        """name: file names in workdir (name.log, name.ready.json; default unique)."""
        workdir = workdir or tempfile.mkdtemp(prefix="replica_sim_")
        os.makedirs(workdir, exist_ok=True)
        tag = name or f"replica_{os.getpid()}_{time.monotonic_ns()}"
        ready = os.path.join(workdir, f"{tag}.ready.json")
        log_path = os.path.join(workdir, f"{tag}.log")
        if os.path.exists(ready):
            os.unlink(ready)
        argv = [sys.executable, os.path.abspath(__file__), "--port", str(options.pop("port", 0)), "--ready-file", ready]
        for k, v in options.items():
            if v is not None:
                argv += ["--" + k.replace("_", "-"), str(v)]
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(ready):
                with open(ready) as f:
                    return cls(proc, json.load(f), log_path)
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        _terminate(proc)
        raise ReplicaSimError(f"replica_sim did not start (rc={proc.poll()}):\n{_tail(log_path)}")

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        return _terminate(self.proc, timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return _tail(self.log_path, 10_000)

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        status, data = self.request(method, path, body, timeout)
        if status != 200:
            raise ReplicaSimError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data)

    def state(self) -> Dict[str, Any]:
        return self.json("GET", "/sim/state")

    def metrics_text(self) -> str:
        status, data = self.request("GET", "/metrics")
        if status != 200:
            raise ReplicaSimError(f"GET /metrics: {status}")
        return data.decode()

    def metrics(self) -> List[Tuple[str, Dict[str, str], float]]:
        return parse_metrics(self.metrics_text())

    def reset(self, timeout: float = 30.0) -> Dict[str, Any]:
        """POST /reset, retried while requests are still in flight (409)."""
        deadline = time.monotonic() + timeout
        while True:
            status, data = self.request("POST", "/reset")
            if status == 200:
                return json.loads(data)
            if status != 409 or time.monotonic() > deadline:
                raise ReplicaSimError(f"POST /reset: {status} {data[:300]!r}")
            time.sleep(0.1)

    def __repr__(self) -> str:
        return f"<ReplicaSim pid={self.proc.pid} url={self.url}>"


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> List[Tuple[str, Dict[str, str], float]]:
    """Prometheus text -> [(sample name, labels, value)]; comments skipped. Small and
    stdlib only (the tests also check the text with prometheus_client's parser)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise ValueError(f"not a Prometheus sample line: {line[:200]!r}")
        labels = {k: re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), v)
                  for k, v in _LABEL_RE.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def metric_sum(samples: Sequence[Tuple[str, Dict[str, str], float]], name: str, **labels: str) -> float:
    """Sum of the samples called name whose labels include labels."""
    return sum(v for n, lbl, v in samples if n == name and all(lbl.get(k) == x for k, x in labels.items()))


if __name__ == "__main__":
    main()
