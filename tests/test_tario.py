"""The rewrite's byte mover: tarfile reads headers from it, member data passes whole."""
from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings, strategies as st

from dsfw.build.tario import TarSource, TarWriter


class Pieces:
    """A reader that hands out the given pieces (as a client's reads arrive), never more than asked."""

    def __init__(self, pieces):
        self.pieces = list(pieces)
        self.given = []

    def read(self, size):
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > size:
            piece, rest = piece[:size], piece[size:]
            self.pieces.insert(0, rest)
        self.given.append(piece)
        return piece


def test_member_data_is_handed_on_in_the_pieces_it_came_in():
    big = [bytes([i]) * 100_000 for i in range(5)]
    raw = Pieces([b"h" * 512 + b"a" * 1000] + big + [b"tail"])
    source = TarSource(raw)
    assert source.read(512) == b"h" * 512
    out = []
    assert source.copy(1000 + 500_000, out.append) == 1000 + 500_000
    assert out[0] == b"a" * 1000
    assert all(a is b for a, b in zip(out[1:], big))  # not copied, not joined
    assert source.tell() == 512 + 1000 + 500_000
    assert source.read(10) == b"tail"
    assert source.read(10) == b""


def test_a_short_copy_says_how_much_there_was():
    source = TarSource(Pieces([b"x" * 700]))
    out = []
    assert source.copy(1000, out.append) == 700
    assert b"".join(out) == b"x" * 700


def test_seek_goes_forward_only():
    source = TarSource(Pieces([b"0123456789"]))
    assert source.seek(4) == 4
    assert source.read(2) == b"45"
    with pytest.raises(tarfile.StreamError):
        source.seek(1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3000)), max_size=8),
       st.lists(st.integers(1, 4000), min_size=1, max_size=20))
def test_tarfile_reads_the_same_members_and_the_writer_writes_what_tarfile_writes(files, cuts):
    src = io.BytesIO()
    with tarfile.open(fileobj=src, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, (name, size) in enumerate(files):
            info = tarfile.TarInfo(f"{name}/{i}" + "x" * (size % 150))
            info.size = size
            tar.addfile(info, io.BytesIO(bytes([i % 256]) * size))
    data = src.getvalue()
    pieces, at = [], 0
    for cut in cuts * (len(data) // sum(cuts) + 1):
        if at >= len(data):
            break
        pieces.append(data[at:at + cut])
        at += cut

    ours, theirs = io.BytesIO(), io.BytesIO()
    writer = TarWriter(ours)
    source = TarSource(Pieces(pieces))
    reader = tarfile.TarFile(fileobj=source, mode="r")
    with tarfile.open(fileobj=theirs, mode="w", format=tarfile.PAX_FORMAT) as expected:
        while (member := reader.next()) is not None:
            info = tarfile.TarInfo(member.name)
            info.size = member.size
            writer.header(info)
            content = []
            assert source.copy(member.size, lambda p: (content.append(p), writer.data(p))) == member.size
            writer.pad()
            expected.addfile(info, io.BytesIO(b"".join(content)))
    writer.close()
    assert ours.getvalue() == theirs.getvalue()
