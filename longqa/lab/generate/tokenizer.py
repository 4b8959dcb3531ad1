"""Byte-level BPE tokenizer, trained by our own code with `tokenizers` and saved beside the weights."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from longqa.input.text import SPECIAL_TOKENS


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192) -> Tokenizer:
    """Train on an iterator of texts; special tokens get ids 0.. in SPECIAL_TOKENS order (PAD=0, GEN=1, EOS=2)."""
    tok = Tokenizer(models.BPE())
    # We add the leading space ourselves (text.encode_sentences), so the pre-tokenizer must not.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_babilong_tokenizer(noise_files: list[str], vocab_size: int = 4096, seed: int = 0) -> Tokenizer:
    """Our tokenizer: BPE over the training noise plus generated bAbI stories, so that every name,
    room and object of the tasks is one token."""
    import random

    from longqa.lab.generate import babi

    rng = random.Random(seed)

    def texts():
        for path in noise_files:
            with open(path, encoding="utf-8") as f:
                yield from f
        for _ in range(20000):
            s = babi.generate(rng.choice(babi.TASKS), rng)
            yield " ".join(s.facts + [s.question, s.answer])

    return train_tokenizer(texts(), vocab_size)
