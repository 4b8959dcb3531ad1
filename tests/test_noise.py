"""Format parsers of longqa.noise on tiny synthetic inputs (no network, no apt), and the shipped sample."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from longqa.lab.generate import noise

SAMPLE = Path(noise.__file__).parent / "data" / "noise-sample.txt"


def _b64(n: int) -> str:
    digits = ""
    while True:
        digits = noise._B64[n % 64] + digits
        n //= 64
        if n == 0:
            return digits


def _fake_sword(tmp: Path, entries: list[list[str]], verse_width: int = 10) -> Path:
    """A zText module: one block per list of entries, ot.bzs/.bzz plus a verse index ot.bzv."""
    mod = tmp / "mod"
    mod.mkdir()
    idx, data, vidx = b"", b"", b""
    vidx += struct.pack("<IIH" if verse_width == 10 else "<III", 0, 0, 0)  # unused slot
    for b, block in enumerate(entries):
        raw = b""
        for e in block:
            enc = e.encode()
            vidx += struct.pack("<IIH" if verse_width == 10 else "<III", b, len(raw), len(enc))
            raw += enc
        comp = zlib.compress(raw)
        idx += struct.pack("<III", len(data), len(comp), len(raw))
        data += comp
    (mod / "ot.bzs").write_bytes(idx)
    (mod / "ot.bzz").write_bytes(data)
    (mod / "ot.bzv").write_bytes(vidx)
    return mod


def test_sword_blocks_and_cleanup(tmp_path: Path) -> None:
    mod = _fake_sword(tmp_path, [
        ['<div type="book"/><title type="main">Genesis</title><chapter n="1"/>In the '
         '<w lemma="strong:H1">beginning</w> God created.',
         'And it was good.<note placement="foot">Heb. tov</note>'],
        ['<div type="x-p"/>\u00b6 Adam &amp; Eve<lb/>walked with God.', '<lg><l>A line,</l><l>another.</l></lg>'],
    ])
    blocks = noise.sword_blocks((mod / "ot.bzs").read_bytes(), (mod / "ot.bzz").read_bytes())
    assert len(blocks) == 2 and blocks[0].startswith(b'<div type="book"/>')
    entries = list(noise.read_sword(mod))
    assert len(entries) == 4
    paras = list(noise.sword_paragraphs(mod))
    # Verses joined by a space, notes/titles gone, entities unescaped, pilcrow dropped, stanza on one line.
    assert paras == ["In the beginning God created. And it was good.", "Adam & Eve", "walked with God.",
                     "A line, another."]
    assert all("<" not in p and "Heb." not in p and "Genesis" not in p for p in paras)


def test_sword_verse_index_width_and_links(tmp_path: Path) -> None:
    # zCom4-style 12-byte verse records; a linked entry (same record twice) is read once.
    mod = _fake_sword(tmp_path, [["Verses 1-2 First comment is here.", "Second comment is here."]],
                      verse_width=12)
    v = (mod / "ot.bzv").read_bytes()
    (mod / "ot.bzv").write_bytes(v + v[12:24])  # repeat the first real record
    assert list(noise.read_sword(mod)) == ["Verses 1-2 First comment is here.", "Second comment is here."]
    assert noise.osis_to_paragraphs('<hi type="bold">Verses 1-2</hi> Text of it.') == ["Text of it."]
    assert noise.osis_to_paragraphs("Verses 8-15. Plain label here.") == ["Plain label here."]


def test_fortunes(tmp_path: Path) -> None:
    text = "First fortune\n  spans two lines.\n\t\t-- Someone\n%\nSecond one.\n%\n  ___\n /o o\\ |_|\n%\n"
    assert noise.parse_fortunes(text)[:2] == ["First fortune spans two lines. -- Someone", "Second one."]
    d = tmp_path / "fortunes"
    d.mkdir()
    (d / "wisdom").write_text(text)
    (d / "wisdom.dat").write_bytes(b"\0\0\0\2")
    (d / "wisdom.u8").symlink_to("wisdom")
    (d / "ascii-art").write_text("<o>\n%\n")
    assert [p.name for p in noise.fortune_files(d)] == ["wisdom"]
    # The ASCII-art entry is mostly symbols and is dropped.
    assert noise.fortune_entries(d / "wisdom") == ["First fortune spans two lines. -- Someone", "Second one."]


def test_dictd(tmp_path: Path) -> None:
    assert noise.b64_number("A") == 0 and noise.b64_number("BA") == 64 and noise.b64_number("/") == 63
    assert noise.b64_number(_b64(123456)) == 123456
    header = "00-database-info\nThis is a header, not an entry.\n"
    e1 = "ABNORMAL, adj.  Not conforming to\nstandard.  A _cannon-\nshot_ too.\n\n"
    e2 = "ABRUPT, adj.  Sudden, without ceremony.\n\n"
    body = (header + e1 + e2).encode()
    off1, off2 = len(header.encode()), len((header + e1).encode())
    index = (f"00-database-info\tA\t{_b64(off1)}\n"
             f"abnormal\t{_b64(off1)}\t{_b64(len(e1.encode()))}\n"
             f"abrupt\t{_b64(off2)}\t{_b64(len(e2.encode()))}\n")
    (tmp_path / "devil.index").write_text(index)
    (tmp_path / "devil.dict.dz").write_bytes(gzip.compress(body))
    assert [w for w, _, _ in noise.parse_dict_index(index)] == ["abnormal", "abrupt"]
    assert list(noise.devil_entries(tmp_path / "devil")) == [
        "ABNORMAL, adj. Not conforming to standard. A cannon-shot too.",
        "ABRUPT, adj. Sudden, without ceremony."]


def test_pod() -> None:
    pod = """=head1 NAME

perlfoo - a made-up page

=head1 DESCRIPTION

The B<print> function writes C<< a > b >> to I<any> handle, so see L<perlfunc/"print">
and L<the docs|perldoc> for more detail and E<lt>escapesE<gt> too.X<print>

    my $x = 1;   # verbatim code is dropped
    print $x;

=over 4

=item C<-w>

=back

=begin html

<p>Hidden from text output entirely, this is html.</p>

=end html

This second prose paragraph has enough words to be kept here.

=cut

sub not_pod { 1 }
"""
    assert noise.pod_paragraphs(pod) == [
        'The print function writes a > b to any handle, so see print in perlfunc '
        'and the docs for more detail and <escapes> too.',
        "This second prose paragraph has enough words to be kept here.",
    ]
    assert noise.pod_inline("B<C<x>> and Z<>E<0x41>E<66>") == "x and AB"


def test_splits_cover_sources() -> None:
    assert set(noise.TRAIN) | set(noise.HELDOUT) == set(noise.SOURCES)
    assert not set(noise.TRAIN) & set(noise.HELDOUT)


def test_shipped_sample() -> None:
    data = SAMPLE.read_bytes()
    assert len(data) <= 2_000_000
    lines = data.decode("utf-8").splitlines()
    assert len(lines) > 1000
    assert all(line.strip() == line and line for line in lines)
    assert lines[0].startswith("ABASEMENT, n.")
