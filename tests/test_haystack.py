from __future__ import annotations

import gzip
import lzma
import random
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from longqa.input import text
from longqa.lab.generate import babi
from longqa.lab.generate.haystack import Haystack, NoiseBank, build, parse_length, to_text

WORDS = (
    "the of and to in a that he it was his with for as had you not be her on at by which this have from she "
    "they all were one said but we him there my when so an if no what would out up or time about into then "
    "more than could them some old river house light long night people way little great morning road letter"
).split()


def noise_text(seed: int, n_lines: int = 300) -> str:
    """Paragraph lines with the awkward parts of real text: short sentences, quotes, abbreviations,
    lines that end without punctuation, and an over-long run with no sentence end."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        sents = []
        for _ in range(rng.randint(1, 6)):
            words = [rng.choice(WORDS) for _ in range(rng.choice([2, 3, 8, 15, 25, 40]))]
            if rng.random() < 0.1:
                words.insert(1, "Mr. Smith")
            end = rng.choice([".", ".", ".", "!", "?", '."', "?'", ".)"])
            sents.append(" ".join(words).capitalize() + end)
        line = " ".join(sents)
        if i % 17 == 0:
            line += " and then a heading without an end"
        if i % 97 == 0:
            line += " " + " ".join(rng.choice(WORDS) for _ in range(400))
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=text.SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    rng = random.Random(0)
    babi_text = [" ".join(f for t in babi.TASKS for f in babi.generate(t, rng).facts) for _ in range(20)]
    tok.train_from_iterator([noise_text(1, 60)] + babi_text, trainer)
    return tok


@pytest.fixture(scope="module")
def noise_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("noise") / "noise.txt"
    path.write_text(noise_text(2), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bank(noise_file: Path, tokenizer: Tokenizer) -> NoiseBank:
    return NoiseBank(noise_file, tokenizer)


def test_parse_length() -> None:
    cases = {"0K": 0, "1K": 1000, "2K": 2000, "4K": 4000, "8K": 8000, "16K": 16000, "32K": 32000}
    cases |= {"64K": 64000, "128K": 128000, "256K": 256000, "512K": 512000, "1M": 1_000_000, "10M": 10_000_000}
    cases |= {"4k": 4000, " 1m ": 1_000_000, "4096": 4096}
    for name, n in cases.items():
        assert parse_length(name) == n
    assert parse_length(4096) == 4096
    for bad in ["", "K", "1G", "1.5K", "-1K", "4KB", "one"]:
        with pytest.raises(ValueError, match="length"):
            parse_length(bad)
    with pytest.raises(ValueError):
        parse_length(-5)


def test_bank_contents(bank: NoiseBank, noise_file: Path, tokenizer: Tokenizer) -> None:
    assert len(bank) > 200
    assert (bank.lengths >= 10).all()
    assert bank.ids.dtype == np.int32 and bank.n_tokens == len(bank.ids) == int(bank.lengths.sum())
    for i in range(0, len(bank), 37):
        assert bank.ids[bank.offsets[i] : bank.offsets[i + 1]].tolist() == text.encode_sentences(
            tokenizer, [bank.sentences[i]]
        )[0]
    assert not any(s.endswith("without an end") for s in bank.sentences)
    with_short = NoiseBank(noise_file, tokenizer, min_tokens=1)
    assert len(with_short) > len(bank) and min(with_short.lengths) < 10


def test_bank_compressed(noise_file: Path, tokenizer: Tokenizer, bank: NoiseBank, tmp_path: Path) -> None:
    data = noise_file.read_bytes()
    (tmp_path / "n.txt.gz").write_bytes(gzip.compress(data))
    (tmp_path / "n.txt.xz").write_bytes(lzma.compress(data))
    for name in ["n.txt.gz", "n.txt.xz"]:
        other = NoiseBank(tmp_path / name, tokenizer)
        assert other.sentences == bank.sentences and (other.ids == bank.ids).all()
    both = NoiseBank([tmp_path / "n.txt.gz", noise_file], tokenizer)
    assert both.sentences == bank.sentences * 2


def test_sample_run(bank: NoiseBank) -> None:
    rng = random.Random(0)
    n = len(bank)
    assert bank.sample_run(rng, 0) == []
    for want in [1, 5, 50, 700, bank.n_tokens - 1, bank.n_tokens, 3 * bank.n_tokens + 17]:
        for _ in range(30):
            run = bank.sample_run(rng, want)
            assert all((b - a) % n == 1 for a, b in zip(run, run[1:]))  # contiguous, wrapping
            got = int(bank.lengths[run].sum())
            assert got >= want > got - int(bank.lengths[run[-1]])  # the shortest such run
            assert bank.run_ids(run).tolist() == [
                i for k in run for i in bank.ids[bank.offsets[k] : bank.offsets[k + 1]].tolist()
            ]
    starts = {bank.sample_run(rng, 10)[0] for _ in range(200)}
    assert len(starts) > 100  # random start


def test_sentence_ids(bank: NoiseBank, tokenizer: Tokenizer) -> None:
    rng = random.Random(0)
    every = {tuple(ids) for ids in text.encode_sentences(tokenizer, bank.sentences)}
    drawn = {tuple(bank.sentence_ids(rng)) for _ in range(100)}
    assert drawn <= every and len(drawn) > 50


# (target tokens, samples): the last target wraps around the whole bank.
TARGETS = [(0, 4), (1, 4), (40, 4), (500, 4), (1000, 4), (4000, 2), (40_000, 1)]


@pytest.mark.parametrize("task", babi.TASKS)
def test_build(task: str, bank: NoiseBank, tokenizer: Tokenizer) -> None:
    rng = random.Random(task)
    assert bank.n_tokens < 40_000
    for target, reps in TARGETS:
        for _ in range(reps):
            sample = babi.generate(task, rng)
            h = build(sample, bank, tokenizer, target, rng)
            assert (h.question, h.answer, h.task) == (sample.question, sample.answer, task)
            assert h.n_tokens == len(h.context_ids)
            # fact_ends: each fact's text ends there
            assert len(h.fact_ends) == len(sample.facts)
            for end, fact in zip(h.fact_ends, sample.facts):
                assert tokenizer.decode(h.context_ids[: end + 1].tolist()).endswith(fact)
            # The context is exactly the project's encoding of its sentences.
            per_sentence = text.encode_sentences(tokenizer, h.sentences)
            context = h.context_ids.tolist()
            assert context == [i for ids in per_sentence for i in ids]
            assert context == text.encode_text(tokenizer, " ".join(h.sentences))
            assert text.encode_text(tokenizer, to_text(h)) == context
            assert to_text(h).splitlines() == h.sentences == text.split_sentences(to_text(h))
            # Facts all present, in story order, and the rest is noise.
            fact_set = set(sample.facts)
            assert [s for s in h.sentences if s in fact_set] == sample.facts
            noise_lens = [len(ids) for s, ids in zip(h.sentences, per_sentence) if s not in fact_set]
            fact_tokens = h.n_tokens - sum(noise_lens)
            if target <= fact_tokens:
                assert noise_lens == []
            else:  # reaches the target, overshooting by less than one noise sentence
                assert h.n_tokens >= target > h.n_tokens - noise_lens[-1]


def test_build_facts_only_and_gaps(bank: NoiseBank, tokenizer: Tokenizer) -> None:
    rng = random.Random(0)
    sample = babi.generate("qa3", rng)
    h = build(sample, None, tokenizer, 0, rng)
    assert h.sentences == sample.facts
    assert build(sample, bank, tokenizer, 0, rng).sentences == sample.facts
    with pytest.raises(ValueError):
        build(sample, None, tokenizer, 10_000, rng)
    # Facts land at random gaps: first-fact positions spread over the context.
    firsts = set()
    for _ in range(50):
        s = babi.generate("qa1", rng)
        h = build(s, bank, tokenizer, 3000, rng)
        firsts.add(h.sentences.index(s.facts[0]) * 10 // len(h.sentences))
    assert len(firsts) >= 4


def test_build_determinism(bank: NoiseBank, tokenizer: Tokenizer) -> None:
    def make(seed: int, keep: bool = True) -> Haystack:
        rng = random.Random(seed)
        return build(babi.generate("qa2", rng), bank, tokenizer, 2000, rng, keep_sentences=keep)

    def same(a: Haystack, b: Haystack) -> bool:
        fields = (a.sentences, a.question, a.answer) == (b.sentences, b.question, b.answer)
        return fields and np.array_equal(a.context_ids, b.context_ids)

    assert same(make(3), make(3))
    assert not same(make(3), make(4))
    lean = make(3, keep=False)
    assert lean.sentences is None and np.array_equal(lean.context_ids, make(3).context_ids)
    with pytest.raises(ValueError):
        to_text(lean)
