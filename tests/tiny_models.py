"""Tiny random causal LMs with a small word-level tokenizer, built offline in about a second.

They mirror SmolLM2 where it matters to our code: a Llama architecture, a ChatML chat
template, and a pad token that IS the EOS token (so code that masks padding must not mask
the EOS it needs).
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

WORDS = (
    "the a an is are was be to of and or in on for with as by at from it this that these those "
    "good bad better worse best helpful honest harmless answer question prompt response model "
    "yes no maybe please thanks hello world python code function return print list sum two three "
    "four five one zero number math add plus minus equals cat dog tree sky blue green red write "
    "poem story short long explain why how what when where who safe unsafe help me you i we they "
    "sure here steps first then finally because so but not very really simple clear"
).split()
SPECIAL_TOKENS = ["<unk>", "<|im_start|>", "<|im_end|>", "\n"]


def build_tokenizer():
    """A word-level fast tokenizer (~150 tokens) with ChatML specials; pad = eos = <|im_end|>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + sorted(set(WORDS)) + list(".,?!:;'\"()0123456789"))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)]
    )
    backend.decoder = decoders.WordPiece(prefix="##")  # joins tokens with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def build_causal_lm(tokenizer, *, hidden_size: int = 64, layers: int = 2, seed: int = 0):
    """A random Llama causal LM sized for tests (hidden 64, 2 layers, 4 heads)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def save_tiny_causal_lm(directory: str | Path, *, seed: int = 0) -> Path:
    """Build and save a tiny causal LM with its tokenizer to `directory`; returns the path."""
    directory = Path(directory)
    tokenizer = build_tokenizer()
    model = build_causal_lm(tokenizer, seed=seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
