"""/v1/audio/transcriptions and /v1/audio/translations with the official `openai` SDK,
against the whisper vLLM (a tiny random Whisper, make_tiny_whisper.py; see
conftest.whisper_server) and through the gateway.

The weights are random, so the text is noise (greedy decoding stops at the model's
max_new_tokens, 24): the tests assert shapes, object names, usage and the model name (the
gateway's alias on the way back). The audio is a sine tone made here with `wave` (16 kHz,
mono, 16-bit), no files.

vLLM 0.32's answers: non-stream `{"text", "usage": {"type": "duration", "seconds": ceil(s)}}`
(translations: `{"text"}` only); with the form field `stream=true`, SSE `data:` events of
object `transcription.chunk` (`translation.chunk`) with `choices[0].delta.content`, the last
with a `finish_reason`, then `data: [DONE]`; `stream_include_usage=true` adds a last chunk
with `choices: []` and `usage` (prompt/completion/total tokens).
"""
from __future__ import annotations

import functools
import json
import math
import struct
import wave
from io import BytesIO

import httpx
import openai
import pytest
from gateway import parse_metrics, parse_sse, wait_until

TRANSCRIPTIONS = "/v1/audio/transcriptions"
TRANSLATIONS = "/v1/audio/translations"
RATE = 16000
DEFAULT_BODY_CAP = 1024 * 1024  # the gateway's MAX_REQUEST_BODY_BYTES default


@functools.lru_cache(maxsize=None)
def tone_wav(seconds: float, freq: float = 440.0) -> bytes:
    """A WAV file: seconds of a sine at freq, 16 kHz mono 16-bit (32 KB a second)."""
    n = int(seconds * RATE)
    amp = 0.3 * 32767
    samples = struct.pack(f"<{n}h", *(int(amp * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n)))
    out = BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples)
    return out.getvalue()


def upload(seconds: float = 1.0):
    return ("tone.wav", tone_wav(seconds), "audio/wav")


def post_form(target, path: str, fields, seconds: float = 1.0, headers=None) -> httpx.Response:
    """The multipart request the SDK would send, by hand (for what the SDK does not expose:
    streamed translations, a request without a key)."""
    hdrs = target.auth() if headers is None else headers
    return httpx.post(target.url + path, data=fields, files={"file": upload(seconds)}, headers=hdrs, timeout=60.0)


def requests_total(gw, route: str, status: str = "200") -> float:
    return sum(value for name, labels, value in parse_metrics(gw.metrics_text())
               if name == "llm_gateway_http_requests_total" and labels.get("route") == route
               and labels.get("method") == "POST" and labels.get("status") == status)


def check_stream(chunks, target, obj: str, usage: bool):
    """The chunks (dicts) of a streamed transcription or translation."""
    assert chunks, "no chunks"
    assert {c["object"] for c in chunks} == {obj}, chunks[:3]
    assert {c["model"] for c in chunks} == {target.model}
    assert len({c["id"] for c in chunks}) == 1
    content = [c for c in chunks if c["choices"]]
    assert content and all(isinstance(c["choices"][0]["delta"]["content"], str) for c in content)
    assert "".join(c["choices"][0]["delta"]["content"] for c in content)
    finishes = [c["choices"][0].get("finish_reason") for c in content if c["choices"][0].get("finish_reason")]
    assert finishes in (["length"], ["stop"]), finishes
    with_usage = [c for c in chunks if c.get("usage")]
    if not usage:
        assert not with_usage, with_usage
        return
    assert with_usage == [chunks[-1]], with_usage
    assert chunks[-1]["choices"] == []
    u = chunks[-1]["usage"]
    assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


@pytest.mark.routes(TRANSCRIPTIONS)
def test_transcription(audio_target):
    r = audio_target.openai().audio.transcriptions.create(model=audio_target.model, file=upload())
    assert isinstance(r.text, str) and r.text
    assert r.usage.type == "duration" and r.usage.seconds == 1
    if audio_target.name == "gateway":
        # No key: 401 in OpenAI's error shape; a wrong key: the SDK's AuthenticationError.
        anon = post_form(audio_target, TRANSCRIPTIONS, {"model": audio_target.model}, headers={})
        assert anon.status_code == 401, anon.text
        err = anon.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"], err
        wrong = openai.OpenAI(base_url=audio_target.base_url, api_key="sk-wrong", max_retries=0, timeout=60.0)
        with pytest.raises(openai.AuthenticationError):
            wrong.audio.transcriptions.create(model=audio_target.model, file=upload())


@pytest.mark.routes(TRANSCRIPTIONS)
def test_transcription_json_usage_and_metrics(audio_target):
    gw = audio_target.gateway
    before = requests_total(gw, TRANSCRIPTIONS) if gw else 0.0
    raw = audio_target.openai().audio.transcriptions.with_raw_response.create(
        model=audio_target.model, file=upload(), response_format="json")
    assert raw.status_code == 200
    body = json.loads(raw.text)
    assert isinstance(body["text"], str)
    assert body["usage"] == {"type": "duration", "seconds": 1}, body
    assert raw.parse().text == body["text"]
    if gw:
        # Counted when the answer is done, which may be just after the client has it.
        wait_until(lambda: requests_total(gw, TRANSCRIPTIONS) >= before + 1, 5, interval=0.1,
                   what=f'llm_gateway_http_requests_total{{route="{TRANSCRIPTIONS}",status="200"}} to grow')


@pytest.mark.routes(TRANSCRIPTIONS)
def test_transcription_stream_with_usage(audio_target):
    stream = audio_target.openai().audio.transcriptions.create(
        model=audio_target.model, file=upload(), stream=True, extra_body={"stream_include_usage": True})
    # vLLM's chunks are not one of the SDK's transcript.text.* event types: it keeps them
    # as they came (object, model, choices, usage).
    check_stream([event.to_dict() for event in stream], audio_target, "transcription.chunk", usage=True)


@pytest.mark.routes(TRANSCRIPTIONS)
def test_transcription_stream_without_usage(audio_target):
    """A client that did not ask for usage gets no usage chunk (the gateway may ask vLLM
    for one to count tokens, and must then take it out)."""
    stream = audio_target.openai().audio.transcriptions.create(model=audio_target.model, file=upload(), stream=True)
    check_stream([event.to_dict() for event in stream], audio_target, "transcription.chunk", usage=False)


@pytest.mark.routes(TRANSLATIONS)
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # openai 3.52 marks it deprecated
def test_translation(audio_target):
    r = audio_target.openai().audio.translations.create(model=audio_target.model, file=upload())
    assert isinstance(r.text, str) and r.text


@pytest.mark.routes(TRANSLATIONS)
def test_translation_stream(audio_target):
    """The SDK does not stream translations; vLLM does (`stream=true` in the form)."""
    r = post_form(audio_target, TRANSLATIONS,
                  {"model": audio_target.model, "stream": "true", "stream_include_usage": "true"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [data for _, data in parse_sse(r.content)]
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    check_stream([json.loads(e) for e in events[:-1]], audio_target, "translation.chunk", usage=True)


@pytest.mark.routes(TRANSCRIPTIONS)
def test_transcription_large_upload(audio_target):
    """40 s of audio: a 1.28 MB body, over the gateway's default body cap (1 MiB; the fixture
    sets 8 MiB), which the gateway streams on; vLLM splits it into two 30 s windows."""
    wav = tone_wav(40.0)
    assert len(wav) > DEFAULT_BODY_CAP
    r = audio_target.openai(timeout=120.0).audio.transcriptions.create(model=audio_target.model, file=upload(40.0))
    assert isinstance(r.text, str) and r.text
    assert r.usage.type == "duration" and r.usage.seconds == 40
