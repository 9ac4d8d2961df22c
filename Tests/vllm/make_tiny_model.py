#!/usr/bin/env python3
"""Builds a tiny random-weight Llama that vLLM can serve, with no network access.

    python Tests/vllm/make_tiny_model.py OUT_DIR

- Model: LlamaForCausalLM, hidden 256, 2 layers, 4 heads, random weights (fixed seed).
- Tokenizer: byte-level BPE trained here (tokenizers library) on a generated corpus.
  Special tokens: <|endoftext|>, <|im_start|>, <|im_end|>. <tool_call>, </tool_call>,
  <tool_response>, </tool_response> are ordinary (non-special) added tokens, so vLLM's
  hermes tool parser finds them in the vocabulary and skip_special_tokens keeps them.
- Chat template: ChatML that renders `tools` (Hermes/Qwen style) and tool calls/results.

Deterministic: the same OUT_DIR contents every run (fixed seeds, fixed corpus).
Needs torch, transformers and tokenizers (the vLLM venv has them). Prints OUT_DIR.
"""
import json
import os
import random
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VOCAB_SIZE = 2048
HIDDEN = 256
LAYERS = 2
HEADS = 4
MAX_POS = 4096
SEED = 1234

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PLAIN_ADDED = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

CHAT_TEMPLATE = r"""{%- if messages and messages[0].role == 'system' -%}
{%- set system_message = messages[0].content -%}
{%- set rest = messages[1:] -%}
{%- else -%}
{%- set system_message = none -%}
{%- set rest = messages -%}
{%- endif -%}
{%- if tools -%}
{{- '<|im_start|>system\n' -}}
{%- if system_message -%}{{- system_message + '\n\n' -}}{%- endif -%}
{{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
{%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' -}}
{%- elif system_message -%}
{{- '<|im_start|>system\n' + system_message + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in rest -%}
{%- if message.role == 'assistant' and message.tool_calls -%}
{{- '<|im_start|>assistant' -}}
{%- if message.content -%}{{- '\n' + message.content -}}{%- endif -%}
{%- for tool_call in message.tool_calls -%}
{%- if tool_call.function is defined -%}{%- set tool_call = tool_call.function -%}{%- endif -%}
{{- '\n<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' -}}
{%- if tool_call.arguments is string -%}{{- tool_call.arguments -}}{%- else -%}{{- tool_call.arguments | tojson -}}{%- endif -%}
{{- '}\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or rest[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\n<tool_response>\n' + (message.content if message.content is string else (message.content | tojson)) + '\n</tool_response>' -}}
{%- if loop.last or rest[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- else -%}
{{- '<|im_start|>' + message.role + '\n' + (message.content if message.content is string else '') + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""


def corpus():
    """A fixed, generated corpus: English-ish words, numbers, JSON and code-like text."""
    rng = random.Random(SEED)
    words = (
        "the a an of to in on for with and or but not is are was were be been have has "
        "hello world weather city today tomorrow temperature rain sun cloud wind paris "
        "london tokyo berlin number count list item name value function call tool result "
        "user assistant system message answer question please thank you model gateway "
        "request response stream token limit error retry upstream route key scope"
    ).split()
    lines = []
    for _ in range(3000):
        n = rng.randint(4, 16)
        lines.append(" ".join(rng.choice(words) for _ in range(n)).capitalize() + rng.choice(".?!"))
    for _ in range(800):
        obj = {
            "name": rng.choice(["get_weather", "lookup", "add", "search", "send_email"]),
            "arguments": {rng.choice(words): rng.choice([rng.randint(0, 9999), rng.choice(words)])},
        }
        lines.append("<tool_call>\n" + json.dumps(obj) + "\n</tool_call>")
        lines.append(json.dumps({"type": "object", "properties": {rng.choice(words): {"type": "string"}}}))
    for i in range(500):
        lines.append(f"{i} + {i * 7 % 97} = {i + i * 7 % 97}; x_{i} = [{i}, {i * 3}, {i * 5}]")
    return lines


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    out = os.path.abspath(sys.argv[1])
    os.makedirs(out, exist_ok=True)

    random.seed(SEED)
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from tokenizers import AddedToken
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, GenerationConfig

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)

    # Byte-level BPE, trained on the spot.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in PLAIN_ADDED])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=MAX_POS,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    vocab = len(fast)
    eos_id = fast.convert_tokens_to_ids("<|im_end|>")
    pad_id = fast.convert_tokens_to_ids("<|endoftext|>")
    for t in PLAIN_ADDED:
        ids = fast.encode(t, add_special_tokens=False)
        assert len(ids) == 1, (t, ids)

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=HIDDEN * 2,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=MAX_POS,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)  # float32: works on any x86 CPU (AVX2 has no bf16)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id, eos_token_id=[eos_id, pad_id], pad_token_id=pad_id
    )
    model.save_pretrained(out, safe_serialization=True)

    # Sanity: the template renders tools and a tool call.
    msgs = [
        {"role": "user", "content": "weather in paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"paris\"}"}}]},
        {"role": "tool", "content": "sunny"},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    text = fast.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=True)
    assert "<tools>" in text and "<tool_call>" in text and text.endswith("<|im_start|>assistant\n"), text
    print(out)


if __name__ == "__main__":
    main()
