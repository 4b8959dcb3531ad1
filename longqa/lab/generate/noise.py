"""Offline "noise" text: real English prose taken from Debian packages (docs/tasks.md says which text plays which role).

BABILong hides its facts in PG19 books, which cannot be downloaded here. Debian ships freely licensed
prose (Bibles, commentaries, fortunes, dictionaries, Perl docs) that `apt-get download` fetches without
root and without installing anything. This module downloads those packages, reads each format with
the standard library only, and writes one clean UTF-8 file per source: one paragraph or entry per
line, whitespace collapsed, no markup. Training uses TRAIN; HELDOUT sources are of other genres and
measure how a checkpoint does on text it never saw.

    python -m longqa.lab.generate.noise OUT_DIR [--debs DIR] [--sample PATH]
"""

from __future__ import annotations

import argparse
import gzip
import html
import os
import random
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    packages: tuple[str, ...]
    paths: tuple[str, ...]  # inside the extracted package tree
    fmt: str  # "sword" | "fortune" | "dictd" | "pod"
    kind: str
    licence: str


SOURCES: dict[str, Source] = {
    "kjv": Source(("sword-text-kjv",), ("usr/share/sword/modules/texts/ztext/engKJV2006eb",),
                  "sword", "1769 King James Bible", "public domain"),
    "web": Source(("sword-text-web",), ("usr/share/sword/modules/texts/ztext/engWEB2015eb",),
                  "sword", "World English Bible (modern)", "public domain"),
    "mhcc": Source(("sword-comm-mhcc",), ("usr/share/sword/modules/comments/zcom/mhcc",),
                   "sword", "1706 commentary prose", "public domain"),
    "tdavid": Source(("sword-comm-tdavid",), ("usr/share/sword/modules/comments/zcom/tdavid",),
                     "sword", "Victorian sermon prose", "public domain"),
    "fortunes": Source(("fortunes", "fortunes-min", "fortune-anarchism"), ("usr/share/games/fortunes",),
                       "fortune", "quotes, jokes, short poems", "BSD / public domain"),
    "devil": Source(("dict-devil",), ("usr/share/dictd/devil",),
                    "dictd", "Bierce's Devil's Dictionary", "public domain"),
    "jargon": Source(("dict-jargon",), ("usr/share/dictd/jargon",),
                     "dictd", "hacker lexicon prose", "public domain"),
    "perldoc": Source(("perl-doc",), ("usr/share/perl/5.36.0/pod",),
                      "pod", "technical documentation", "GPL / Artistic"),
}
# The public-domain sample shipped for tests and examples (write_sample; data/NOTICE.md): eval's default noise.
SAMPLE = str(Path(__file__).resolve().parent / "data" / "noise-sample.txt")
# Different genres on each side, so held-out scores say something about unseen kinds of text.
TRAIN = ("kjv", "web", "mhcc", "tdavid", "jargon")
HELDOUT = ("fortunes", "devil", "perldoc")

_WS = re.compile(r"\s+")


def _clean(text: str) -> str:
    """Collapse whitespace and re-attach punctuation that line wrapping pushed away ("applet . There")."""
    text = _WS.sub(" ", text).strip()
    return re.sub(r" ([.,;:!?])(?=\s|$)", r"\1", text)


# --------------------------------------------------------------------------- download

def _apt(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = ["apt-get", *args]
    if os.geteuid() == 0:  # apt's sandbox user cannot write into root-owned dirs; silences a warning
        cmd[1:1] = ["-o", "APT::Sandbox::User=root"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def download(debs_dir: Path, sources: Iterable[str] = tuple(SOURCES)) -> Path:
    """apt-get download the packages of `sources` into debs_dir and dpkg-deb -x each one.

    Returns the extraction root; package P lies under root/P. Already present .debs are reused."""
    debs_dir = Path(debs_dir)
    debs_dir.mkdir(parents=True, exist_ok=True)
    root = debs_dir / "x"
    updated = False
    for pkg in dict.fromkeys(p for s in sources for p in SOURCES[s].packages):
        debs = sorted(debs_dir.glob(f"{pkg}_*.deb"))
        if not debs:
            r = _apt(["download", pkg], debs_dir)
            if r.returncode != 0 and not updated:  # usually: no package lists yet
                updated = True
                _apt(["update"], debs_dir)
                r = _apt(["download", pkg], debs_dir)
            if r.returncode != 0:
                raise RuntimeError(f"apt-get download {pkg} failed:\n{r.stderr}")
            debs = sorted(debs_dir.glob(f"{pkg}_*.deb"))
        dest = root / pkg
        if not dest.exists():
            tmp = root / f".{pkg}.tmp"
            tmp.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], check=True)
            tmp.rename(dest)  # only a complete extraction gets the real name
    return root


# --------------------------------------------------------------------------- SWORD zText / zCom

def sword_blocks(idx: bytes, data: bytes) -> list[bytes]:
    """Decompress every block: idx holds 12-byte LE records (offset, compressed_size, raw_size)."""
    blocks = []
    for off, csize, rsize in struct.iter_unpack("<III", idx[: len(idx) // 12 * 12]):
        raw = zlib.decompress(data[off: off + csize]) if csize else b""
        blocks.append(raw[:rsize] if rsize else raw)
    return blocks


def _verse_records(vidx: bytes, blocks: list[bytes]) -> list[tuple[int, int, int]] | None:
    """Parse the verse index, (block, offset, size) per verse.

    zText uses 10-byte records (size u16), zCom4 12-byte ones (size u32); the mhcc module says zCom4
    but ships 10-byte records (why libsword mis-reads it), so pick the width whose records all fit."""
    for width, fmt in ((12, "<III"), (10, "<IIH")):
        if len(vidx) % width:
            continue
        recs = list(struct.iter_unpack(fmt, vidx))
        if all(s == 0 or (b < len(blocks) and o + s <= len(blocks[b])) for b, o, s in recs):
            return recs
    return None


def read_sword(module_dir: Path) -> Iterator[str]:
    """Yield the raw OSIS markup of each entry (verse or comment) of a module, in canonical order."""
    module_dir = Path(module_dir)
    for testament in ("ot", "nt"):
        for idx_path in sorted(module_dir.glob(f"{testament}.?zs")):
            letter = idx_path.suffix[1]  # b/c/v: book/chapter/verse-sized blocks
            data_path = idx_path.with_suffix(f".{letter}zz")
            idx, data = idx_path.read_bytes(), data_path.read_bytes()
            if not idx:
                continue
            blocks = sword_blocks(idx, data)
            vpath = idx_path.with_suffix(f".{letter}zv")
            recs = _verse_records(vpath.read_bytes(), blocks) if vpath.exists() else None
            if recs is None:  # no usable verse index: whole blocks (entries may touch)
                yield from (b.decode("utf-8", "replace") for b in blocks)
                continue
            seen: set[tuple[int, int, int]] = set()
            for rec in recs:
                if rec[2] == 0 or rec in seen:  # empty, or a linked entry (same text for many verses)
                    continue
                seen.add(rec)
                b, o, s = rec
                yield blocks[b][o: o + s].decode("utf-8", "replace")


_BR = "\n"
# Elements whose content is not running prose: notes, headings, outline tables, speaker labels.
_DROP_ELEMS = re.compile(
    r"<(note|title|table|speaker|catchWord|rdg)\b[^>]*(?<!/)>.*?</\1\s*>", re.S)
# Verse labels at the head of commentary paragraphs ("Verses 1-2", "Verse 2.").
_VERSE_LABEL = re.compile(r"<hi type=\"bold\">\s*(?:Verses?|Ver\.)\s*[\d\s,;:.\-\u2013and]*</hi>")
_BREAK_TAGS = re.compile(r"</?(?:p|div|lg|lb|list|item|chapter|br|verse|title)\b[^>]*>")
_SPACE_TAGS = re.compile(r"</?(?:l|cell|row)\b[^>]*>")  # poetry lines join into their stanza
_ANY_TAG = re.compile(r"<[^>]*>")


# The same labels typed as plain text at a paragraph's start.
_LEAD_LABEL = re.compile(
    r"^(?:(?:Verses?|Ver\.)\s+\d+(?:\s*(?:[-\u2013,;]|and|to)\s*\d+)*\s*[.:]?\s*)?"
    r"(?:\((?:first|second|third|fourth|middle|last|whole)\b[^)]{0,20}\)\.?\s*|Whole Psalm\.\s*)?")


def osis_to_paragraphs(markup: str) -> list[str]:
    """OSIS markup -> clean paragraphs (a stanza of poetry is one paragraph)."""
    t = markup.replace("\u00b6", " ")  # KJV's pilcrow paragraph marks
    t = _DROP_ELEMS.sub(_BR, t)
    t = _VERSE_LABEL.sub(" ", t)
    t = _BREAK_TAGS.sub(_BR, t)
    t = _SPACE_TAGS.sub(" ", t)
    t = _ANY_TAG.sub("", t)
    t = html.unescape(t)
    return [p for p in (_LEAD_LABEL.sub("", _clean(x)) for x in t.split(_BR)) if p]


def sword_paragraphs(module_dir: Path) -> Iterator[str]:
    # Verses are joined with a space into one stream, so a paragraph that spans verses stays whole
    # and no verse ends glued to the next one's first word.
    text = " ".join(read_sword(module_dir))
    yield from (p for p in osis_to_paragraphs(text) if _is_prose(p, min_words=3))


# --------------------------------------------------------------------------- fortunes

def parse_fortunes(text: str) -> list[str]:
    """Entries of a fortune file (separated by lines holding only %), each whitespace-collapsed."""
    entries = re.split(r"^%[ \t]*$", text.replace("\r\n", "\n"), flags=re.M)
    return [e for e in (_clean(x) for x in entries) if e]


def _looks_like_text(entry: str) -> bool:
    # ASCII art and code are mostly symbols; IRC logs ("<joeyh> ...") read like markup.
    nonspace = [c for c in entry if not c.isspace()]
    if not nonspace:
        return False
    letters = sum(c.isalpha() for c in nonspace)
    return letters / len(nonspace) >= 0.7 and not re.search(r"<\s?[\w@|+.^-]+>", entry)


def fortune_files(fortune_dir: Path) -> list[Path]:
    """Fortune data files: no .dat indexes, no .u8 symlinks, no ascii-art."""
    return [p for p in sorted(Path(fortune_dir).iterdir())
            if p.is_file() and not p.is_symlink() and p.suffix != ".dat" and p.name != "ascii-art"]


def fortune_entries(path: Path) -> list[str]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return [e for e in parse_fortunes(text) if _looks_like_text(e) and _is_english(e)]


# --------------------------------------------------------------------------- dictd

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64_number(s: str) -> int:
    """dictd index number: base-64 digits A-Z a-z 0-9 + /, most significant first."""
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def parse_dict_index(index_text: str) -> list[tuple[str, int, int]]:
    out = []
    for line in index_text.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith(("00-database", "00database")):
            continue  # metadata entries (licence header, url, ...) are not dictionary text
        out.append((parts[0], b64_number(parts[1]), b64_number(parts[2])))
    return out


def read_dictd(base: Path) -> Iterator[tuple[str, str]]:
    """(headword, raw entry text) for base.index + base.dict.dz (dictzip is plain gzip to read)."""
    base = Path(base)
    body = gzip.decompress(base.with_name(base.name + ".dict.dz").read_bytes())
    index = base.with_name(base.name + ".index").read_text("utf-8", "replace")
    seen: set[tuple[int, int]] = set()
    for word, off, length in parse_dict_index(index):
        if (off, length) in seen:  # several headwords can share one definition
            continue
        seen.add((off, length))
        yield word, body[off: off + length].decode("utf-8", "replace")


def _unwrap(text: str) -> str:
    # Undo line wrapping inside words: "cannon-\nshot" -> "cannon-shot", "{\n  kremvax}" -> "{kremvax}".
    text = re.sub(r"(\w)-\n\s*(?=[a-z])", r"\1-", text)
    text = re.sub(r"\{\s+", "{", text)
    return re.sub(r"\s+\}", "}", text)


def devil_entries(base: Path) -> Iterator[str]:
    """One Devil's Dictionary entry per line ("ABNORMAL, adj. Not conforming to standard. ...")."""
    for _, entry in read_dictd(base):
        t = _unwrap(entry).replace("_", "")  # _underscores_ mark italics
        t = _clean(t)
        if _is_prose(t, min_words=3):
            yield t


def jargon_paragraphs(base: Path) -> Iterator[str]:
    """Body paragraphs of the Jargon File (the headword and pronunciation lines are dropped)."""
    for _, entry in read_dictd(base):
        lines = entry.split("\n")
        # Entry = headword line, a " /pron/, n." line, then body paragraphs indented 4 spaces.
        body = [ln for ln in lines[1:] if ln.startswith("    ") or not ln.strip()]
        text = _unwrap("\n".join(body))
        text = re.sub(r"\{([^{}]*)\}", r"\1", text)  # {cross-references} -> plain words
        for para in re.split(r"\n\s*\n", text):
            # Sense numbers and [usage/etymology] tags head paragraphs like verse numbers; drop them.
            p = re.sub(r"^(?:\d+\.\s+)?(?:\[[^\]]*\]\s*)?", "", _clean(para))
            if _is_prose(p, min_words=4):
                yield p


# --------------------------------------------------------------------------- POD

_POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&",
                "apos": "'", "nbsp": " "}


def _pod_escape(name: str) -> str:
    if name in _POD_ESCAPES:
        return _POD_ESCAPES[name]
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", name):
        return chr(int(name, 16))
    if name.isdigit():
        return chr(int(name))
    return html.unescape(f"&{name};")


def _pod_link(body: str) -> str:
    if "|" in body:  # L<text|target>
        return body.split("|", 1)[0]
    if "/" in body and not re.match(r"\w+://", body):  # L<page/"section"> -> "section in page"
        page, sec = body.split("/", 1)
        sec = sec.strip('"')
        return f"{sec} in {page}" if page else sec
    return body


def _pod_code(letter: str, body: str) -> str:
    if letter == "E":
        return _pod_escape(body.strip())
    if letter in "XZ":  # index entries, null
        return ""
    if letter == "L":
        return _pod_link(body)
    return body  # B I C F S


def pod_inline(text: str) -> str:
    """Strip POD formatting codes: B<..> I<..> C<..> F<..> S<..> L<..> E<..> X<..> Z<> and C<< .. >>."""
    # Multi-angle forms first: their content may hold single < and >.
    for n in (4, 3, 2):
        text = re.sub(rf"([A-Z]){'<' * n}\s+(.*?)\s+{'>' * n}",
                      lambda m: _pod_code(m.group(1), m.group(2)), text, flags=re.S)
    prev = None
    while prev != text:  # innermost first, so nested B<C<x>> works
        prev = text
        text = re.sub(r"([A-Z])<([^<>]*)>", lambda m: _pod_code(m.group(1), m.group(2)), text)
    return text


def pod_paragraphs(text: str) -> list[str]:
    """Prose paragraphs of a POD document: no verbatim code, no =commands/headings, no =begin blocks."""
    out: list[str] = []
    in_pod = True
    skip_until: str | None = None  # inside =begin X ... =end X
    item_code = False  # the list is of code items (=item C<...>): its text is a reference table
    skip_next = False  # the paragraph under "=head1 NAME" is "perlfoo - title", not prose
    for para in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        if not para.strip():
            continue
        first = para.lstrip("\n")
        if first.startswith("="):
            cmd = first.split(None, 1)[0]
            arg = first[len(cmd):].strip()
            if cmd == "=cut":
                in_pod = False
            elif cmd == "=begin":
                skip_until = arg.split()[0] if arg else ""
            elif cmd == "=end" and skip_until is not None:
                skip_until = None
            elif cmd == "=item":
                item_code = bool(re.match(r"[*\d.\s]*[CB]?<*\s*[$@%&\-{(]|[*\d.\s]*C<", arg))
            elif cmd in ("=back", "=head1", "=head2", "=head3", "=head4"):
                item_code = False
            skip_next = cmd == "=head1" and arg.upper() == "NAME"
            if cmd != "=cut":
                in_pod = True
            continue  # commands and headings are not prose
        if not in_pod or skip_until is not None:
            continue
        if skip_next:
            skip_next = False
            continue
        if first[:1] in (" ", "\t"):  # verbatim paragraph: code
            continue
        p = _clean(pod_inline(first))
        if item_code and len(p.split()) < 12:
            continue
        if _is_prose(p, min_words=6) and not _codeish(p):
            out.append(p)
    return out


def _codeish(p: str) -> bool:
    sym = sum(c in "{}$@%;=<>\\[]" for c in p)
    return sym / max(1, len(p)) > 0.04


def perldoc_paragraphs(pod_dir: Path) -> Iterator[str]:
    for path in sorted(Path(pod_dir).glob("*.pod")):
        for p in pod_paragraphs(path.read_text("utf-8", "replace")):
            if _is_english(p):  # perlcn/perljp/perlko/perltw are not English
                yield p


# --------------------------------------------------------------------------- shared filters

def _is_english(text: str) -> bool:
    non_ascii = sum(ord(c) > 0x2FF for c in text)  # Latin accents are fine, CJK is not
    return non_ascii <= 0.05 * len(text)


def _is_prose(p: str, min_words: int) -> bool:
    words = p.split()
    return len(words) >= min_words and any(c.islower() for c in p) and _is_english(p)


# --------------------------------------------------------------------------- driver

def source_lines(sid: str, root: Path) -> Iterator[str]:
    """Clean lines of one source, read from the extraction root of download()."""
    src = SOURCES[sid]
    if src.fmt == "sword":
        yield from sword_paragraphs(root / src.packages[0] / src.paths[0])
    elif src.fmt == "fortune":
        for pkg in src.packages:
            for f in fortune_files(root / pkg / src.paths[0]):
                yield from fortune_entries(f)
    elif src.fmt == "dictd":
        base = root / src.packages[0] / src.paths[0]
        yield from (devil_entries(base) if sid == "devil" else jargon_paragraphs(base))
    elif src.fmt == "pod":
        yield from perldoc_paragraphs(root / src.packages[0] / src.paths[0])
    else:
        raise ValueError(src.fmt)


def prepare(out_dir: Path, sources: Sequence[str] = tuple(SOURCES),
            debs_dir: Path | None = None) -> dict[str, tuple[int, int]]:
    """Write out_dir/<id>.txt for each source; returns {id: (bytes, words)}.

    debs_dir defaults to out_dir/../debs (outside out_dir, so the folder holds only the texts)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = download(Path(debs_dir) if debs_dir else out_dir.parent / "debs", sources)
    sizes: dict[str, tuple[int, int]] = {}
    for sid in sources:
        lines = list(dict.fromkeys(source_lines(sid, root)))  # drop exact repeats, keep order
        data = ("\n".join(lines) + "\n").encode("utf-8")
        tmp = out_dir / f".{sid}.txt.tmp"
        tmp.write_bytes(data)
        tmp.replace(out_dir / f"{sid}.txt")
        sizes[sid] = (len(data), sum(len(ln.split()) for ln in lines))
    return sizes


# Fortune files left out of the shipped sample: mostly quotations from copyrighted works
# (novels, TV, comic strips, song lyrics), or jokes about ethnic groups.
SAMPLE_SKIP = ("pratchett", "startrek", "zippy", "songs-poems", "ethnic")


def write_sample(path: Path, root: Path, max_bytes: int = 1_400_000, seed: int = 0) -> tuple[int, int]:
    """The public-domain sample shipped in the repository: all of devil, then fortunes entries
    (from the `fortunes` package only) in a fixed-seed shuffle until max_bytes. Returns (bytes, lines)."""
    lines = list(dict.fromkeys(source_lines("devil", Path(root))))
    fdir = Path(root) / "fortunes" / SOURCES["fortunes"].paths[0]
    pool = [e for f in fortune_files(fdir) if f.name not in SAMPLE_SKIP for e in fortune_entries(f)]
    pool = list(dict.fromkeys(pool))
    random.Random(seed).shuffle(pool)
    size = sum(len(ln.encode()) + 1 for ln in lines)
    for e in pool:
        n = len(e.encode()) + 1
        if size + n > max_bytes:
            break
        lines.append(e)
        size += n
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return size, len(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--debs", type=Path, default=None, help="where .debs go (default OUT_DIR/../debs)")
    ap.add_argument("--sources", default=",".join(SOURCES), help="comma-separated source ids")
    ap.add_argument("--sample", type=Path, default=None, help="also write the shipped sample here")
    a = ap.parse_args(argv)
    sources = [s for s in a.sources.split(",") if s]
    sizes = prepare(a.out_dir, sources, a.debs)
    print(f"{'source':10} {'split':8} {'MB':>7} {'words':>11}")
    for sid, (nbytes, words) in sizes.items():
        split = "train" if sid in TRAIN else "heldout"
        print(f"{sid:10} {split:8} {nbytes / 1e6:7.2f} {words:11,}")
    print(f"{'total':19} {sum(b for b, _ in sizes.values()) / 1e6:7.2f} "
          f"{sum(w for _, w in sizes.values()):11,}")
    if a.sample:
        debs = a.debs or a.out_dir.parent / "debs"
        nbytes, nlines = write_sample(a.sample, debs / "x")
        print(f"sample {a.sample}: {nbytes / 1e6:.2f} MB, {nlines} lines", file=sys.stderr)


if __name__ == "__main__":
    main()
