#!/usr/bin/env python3
"""Builds a tiny random-weight Whisper that vLLM can serve (/v1/audio/*), with no network.

    python Tests/vllm/make_tiny_whisper.py OUT_DIR

- Model: WhisperForConditionalGeneration, d_model 64, 1 encoder + 1 decoder layer,
  2 heads, 80 mel bins, 1500 source positions (30 s windows, like every real Whisper),
  448 target positions; random weights (fixed seed), float32.
- Feature extractor: WhisperFeatureExtractor defaults (16 kHz, 80 mels, hop 160, 30 s);
  transformers 5 saves it inside processor_config.json (no preprocessor_config.json);
  AutoProcessor (which vLLM uses) reads it back as a WhisperProcessor.
- Tokenizer: byte-level BPE trained here (tokenizers library) on a generated corpus, then
  Whisper's special tokens appended in Whisper's order: <|endoftext|>,
  <|startoftranscript|>, one <|xx|> per language transformers knows (vLLM's language
  detection constrains sampling to <|xx|> of every language it supports), <|translate|>,
  <|transcribe|>, <|startoflm|>, <|startofprev|>, <|nocaptions|>, <|notimestamps|>, then
  the timestamps <|0.00|> .. <|30.00|> (verbose_json needs <|0.00|> and takes every id at
  or above it as a timestamp, so they come last). Saved as a WhisperTokenizer.
- The decoder's embedding rows of every special and timestamp token are zero (the output
  projection is tied to it), so greedy decoding (temperature 0, vLLM's default here) yields ordinary BPE
  text, never a special or a timestamp.
- generation_config.json: max_new_tokens 24, so the model, which never says
  <|endoftext|>, stops soon (vLLM takes it as the default max_tokens).

Deterministic: the same OUT_DIR contents every run (fixed seeds, fixed corpus).
Needs torch, transformers and tokenizers (the vLLM venv has them). Prints OUT_DIR.
vLLM needs `soundfile` (or `av`) to decode uploads; that is not part of this model.
"""
import json
import os
import random
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BPE_VOCAB = 1000
D_MODEL = 64
LAYERS = 1
HEADS = 2
FFN = 128
MEL_BINS = 80
SOURCE_POSITIONS = 1500   # = chunk_length 30 s * 16000 / hop 160 / 2 (conv stride)
TARGET_POSITIONS = 448    # the decoder's context: serve with --max-model-len 448
MAX_NEW_TOKENS = 24
SEED = 1234


def corpus():
    """A fixed, generated English-ish corpus."""
    rng = random.Random(SEED)
    words = (
        "the a an of to in on for with and or but not is are was were be been have has "
        "hello world weather city today tomorrow temperature rain sun cloud wind paris "
        "london tokyo berlin number count list item name value audio sound speech voice "
        "transcribe translate listen music tone sine wave second minute model gateway "
        "request response stream token limit error retry upstream route key scope"
    ).split()
    lines = []
    for _ in range(3000):
        n = rng.randint(3, 14)
        lines.append(" ".join(rng.choice(words) for _ in range(n)).capitalize() + rng.choice(".?!,"))
    for i in range(300):
        lines.append(f"{i} {i * 7 % 97} {i * 3}.")
    return lines


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    out = os.path.abspath(sys.argv[1])
    os.makedirs(out, exist_ok=True)

    random.seed(SEED)
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)

    # Byte-level BPE without special tokens: the specials go after it, as in Whisper.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus(), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab = state["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]

    specials = (
        ["<|endoftext|>", "<|startoftranscript|>"]
        + [f"<|{code}|>" for code in LANGUAGES]
        + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
           "<|nocaptions|>", "<|notimestamps|>"]
    )
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]

    tok = WhisperTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=TARGET_POSITIONS,
        clean_up_tokenization_spaces=False,
    )
    # Whisper's order: <|endoftext|> (already added as unk/bos/eos) first, then the rest.
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    tok.add_tokens(timestamps)  # not special, like Whisper's: ids above every special
    fe = WhisperFeatureExtractor(
        feature_size=MEL_BINS, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400
    )
    processor = WhisperProcessor(feature_extractor=fe, tokenizer=tok)
    processor.save_pretrained(out)

    ids = {t: tok.convert_tokens_to_ids(t) for t in specials + timestamps[:1] + timestamps[-1:]}
    eot = ids["<|endoftext|>"]
    sot = ids["<|startoftranscript|>"]
    assert eot == len(vocab), (eot, len(vocab))
    assert list(ids.values()) == list(range(eot, eot + len(specials))) + [eot + len(specials), eot + len(specials) + 1500]
    prompt = "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"
    assert tok.encode(prompt, add_special_tokens=False) == [
        sot, ids["<|en|>"], ids["<|transcribe|>"], ids["<|notimestamps|>"]], tok.encode(prompt)
    vocab_size = len(tok)
    lang_ids = [ids[f"<|{c}|>"] for c in LANGUAGES]

    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=MEL_BINS,
        encoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_layers=LAYERS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN,
        d_model=D_MODEL,
        max_source_positions=SOURCE_POSITIONS,
        max_target_positions=TARGET_POSITIONS,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        begin_suppress_tokens=[eot],
        suppress_tokens=[],
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    model = WhisperForConditionalGeneration(config)
    model.eval()
    # The output projection is tied to the decoder's token embedding. Zero rows give the
    # specials and timestamps a logit of exactly 0, so greedy decoding (vLLM's default
    # temperature for /v1/audio/* is 0) picks ordinary text tokens: the transcript is words,
    # not `<|11.70|><|11.70|>...`, and it ends by length (max_new_tokens), not by <|endoftext|>.
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight[eot:] = 0.0
    model.generation_config = GenerationConfig(
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        max_new_tokens=MAX_NEW_TOKENS,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={f"<|{c}|>": ids[f"<|{c}|>"] for c in LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        is_multilingual=True,
    )
    model.save_pretrained(out, safe_serialization=True)

    # Sanity: the features of 1 s of silence go through the encoder and one decoder step.
    feats = fe([0.0] * 16000, sampling_rate=16000, return_tensors="pt").input_features
    assert tuple(feats.shape) == (1, MEL_BINS, 3000), feats.shape
    with torch.no_grad():
        logits = model(input_features=feats, decoder_input_ids=torch.tensor([[sot, lang_ids[0]]])).logits
    assert tuple(logits.shape) == (1, 2, vocab_size), logits.shape
    assert int(logits[0, -1].argmax()) < eot, "greedy decoding would pick a special token"
    print(out)


if __name__ == "__main__":
    main()
