"""The posting file and the framed files: round trips, page-exact packing, CRC detection of
torn and corrupt blocks, magic and version checks, and the two readers agreeing."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from vecdb.errors import FormatError
from vecdb.index.params import BITS_WIDTH
from vecdb.index.spann import framing, open_spann, persist
from vecdb.index.spann.postings import (
    PAGE,
    VERSION,
    DirectReader,
    MmapReader,
    PostingFile,
    block_layout,
    decode_block,
    encode_block,
    pack_offsets,
    to_half,
)
from vecdb.kernels.posting import MAX_SLOTS, block_extent


def block(posting: int, n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    return encode_block(posting, np.arange(n) * 3, np.full(n, 7, np.uint8), vecs)


@pytest.mark.parametrize("width", [4, 2])
@pytest.mark.parametrize(("n", "dim"), [(0, 3), (1, 1), (9, 7), (130, 50)])
def test_block_round_trip(n: int, dim: int, width: int) -> None:
    """Encode then decode gives the same slots, versions and vectors (odd sizes, d=1);
    float16 blocks give the float16-rounded vectors."""
    rng = np.random.default_rng(n)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    buf = encode_block(5, np.arange(n, dtype=np.int64), np.ones(n, np.uint8), vecs, width)
    assert len(buf) % 64 == 0 and len(buf) >= block_layout(n, dim, width)[2]
    posting, slots, versions, out = decode_block(buf, "mem")
    assert posting == 5 and list(slots) == list(range(n)) and (versions == 1).all()
    expect = vecs if width == 4 else to_half(vecs).astype(np.float32)
    np.testing.assert_array_equal(out, expect)


def test_int8_blocks_decode_within_half_a_step() -> None:
    """int8 codes decode to within half a quantizer step; out-of-range values clip."""
    from vecdb.index.spann.postings import Quantizer

    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(40, 6)).astype(np.float32)
    quant = Quantizer.fit(vecs)
    buf = encode_block(1, np.arange(40), np.ones(40, np.uint8), vecs, 1, quant)
    _, _, _, out = decode_block(buf, "mem", quant)
    assert np.all(np.abs(out - vecs) <= quant.scale / 2 + 1e-6)
    with pytest.raises(FormatError, match="quantizer"):
        decode_block(buf, "mem")
    # Values ten times outside the fitted range are clipped to it, not wrapped or scaled.
    far = quant.decode(quant.encode(vecs * 10))
    slack = np.abs(quant.scale) + 1e-6
    assert np.all(far.max(0) <= vecs.max(0) + slack) and np.all(far.min(0) >= vecs.min(0) - slack)
    assert np.allclose(far.max(0), vecs.max(0), atol=slack.max())


def test_float16_scan_matches_numpy_on_half_rounded_vectors() -> None:
    """The kernel's float16 widening equals numpy's on what the writer stores (subnormals
    are flushed to zero by `to_half`)."""
    from vecdb.kernels.postscan import half_to_float

    h = to_half(np.array([[0.0, -0.0, 1.0, -2.5, 65504.0, 6.1e-5, -3.3e-3, 0.1]], np.float32))[0]
    assert h[5] == 0
    np.testing.assert_array_equal(half_to_float(h.view(np.uint16)), h.astype(np.float32))


def test_packed_blocks_span_the_minimum_pages() -> None:
    """Best-fit packing never makes a block straddle an extra page, and blocks never overlap."""
    sizes = np.random.default_rng(0).integers(1, 200, 500) * 64
    offs = pack_offsets(sizes.astype(np.int64), PAGE)
    spans = -(-(offs + sizes) // PAGE) - offs // PAGE
    assert (spans == -(-sizes // PAGE)).all()
    order = np.argsort(offs)
    assert (offs[order][1:] >= (offs + sizes)[order][:-1]).all()
    assert (offs + sizes).max() < 1.05 * sizes.sum() + 2 * PAGE  # little padding


def test_appends_read_back_and_tail_is_truncated_on_reopen(tmp_path: Path) -> None:
    """Appended blocks read back verified; data past the durable length is dropped."""
    f = PostingFile(tmp_path / "p.bin", 4)
    offs = f.append([block(1, 10, 4), block(2, 100, 4, 1)])
    assert all(o % 64 == 0 for o in offs)
    f.sync()
    durable = f.length
    f.append([block(3, 5, 4)])
    f.close()
    g = PostingFile(tmp_path / "p.bin", 4, durable)
    assert g.read_block(int(offs[1]))[0] == 2
    with pytest.raises(FormatError):
        g.read_block(durable)
    g.close()


def test_corrupt_and_torn_blocks_are_detected_by_crc(tmp_path: Path) -> None:
    """A flipped byte fails the CRC; a truncated block is reported as torn."""
    f = PostingFile(tmp_path / "p.bin", 8)
    off = int(f.append([block(1, 40, 8)])[0])
    f.sync()
    with open(tmp_path / "p.bin", "r+b") as raw:
        raw.seek(off + 500)
        byte = raw.read(1)
        raw.seek(off + 500)
        raw.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(FormatError, match="CRC"):
        f.read_block(off)
    short = PostingFile(tmp_path / "p.bin", 8, off + 256)
    with pytest.raises(FormatError, match="torn"):
        short.read_block(off)


def test_corrupt_posting_is_detected_when_the_index_rewrites_it(tmp_path: Path) -> None:
    """Compaction and verify() read every posting and refuse a corrupt one, naming the file."""
    idx, _ = open_spann(8, "l2", {"threads": 1}, tmp_path)
    x = np.random.default_rng(0).normal(size=(2000, 8)).astype(np.float32)
    idx.build(np.arange(2000), x)
    assert idx.verify()["entries"] >= 2000
    off, _ = idx.state.table.chain(3)[0]
    with open(idx.state.file.path, "r+b") as raw:
        raw.seek(off + 200)
        raw.write(b"\x00\x01\x02\x03")
    with pytest.raises(FormatError, match="postings"):
        idx.compact()
    with pytest.raises(FormatError, match="CRC"):
        idx.verify()


def test_unknown_versions_name_file_found_and_supported(tmp_path: Path) -> None:
    """Posting files and framed files check magic and version with a clear message."""
    PostingFile(tmp_path / "p.bin", 4).close()
    with open(tmp_path / "p.bin", "r+b") as raw:
        raw.seek(8)
        raw.write(struct.pack("<I", 99))
    with pytest.raises(FormatError, match=rf"p\.bin.*version 99.*supports 5 or {VERSION}\b"):
        PostingFile(tmp_path / "p.bin", 4)
    framing.write_sections(tmp_path / "m", b"VDBSPMAN", 7, [b"{}"])
    with pytest.raises(FormatError, match=r"m: unsupported format version 7"):
        framing.read_sections(tmp_path / "m", b"VDBSPMAN", 1)
    with pytest.raises(FormatError, match="bad magic"):
        framing.read_sections(tmp_path / "m", b"VDBHEADS", 7)


def _set_version(path: Path, version: int) -> None:
    with open(path, "r+b") as raw:
        raw.seek(8)
        raw.write(struct.pack("<I", version))


def test_earlier_formats_are_refused_whatever_the_width(tmp_path: Path) -> None:
    """Format 5 narrowed every block's slots to uint32: a file of format 3 or 4 (8-byte slots)
    of any component width is refused on open, naming the file and the versions (the engine
    then rebuilds the index from the stored vectors), never read with the wrong layout.
    Format 6 changed only "bits" lane groups (bfloat16 factors): a format-5 file of another
    width opens, a format-5 "bits" file is refused naming what to do. A block keeps slots up
    to 2^32 - 2 exactly."""
    for width, dim in ((2, 4), (1, 4), (4, 4), (BITS_WIDTH, 384)):
        path = tmp_path / f"w{width}.bin"
        PostingFile(path, dim, width=width).close()
        for old in (3, 4):
            _set_version(path, old)
            want = rf"w{width}\.bin.*version {old}.*supports 5 or {VERSION}"
            with pytest.raises(FormatError, match=want):
                PostingFile(path, dim, width=width)
        _set_version(path, 5)
        if width == BITS_WIDTH:
            with pytest.raises(FormatError, match=r"w8\.bin: 1-bit entries of format 5.*rebuild"):
                PostingFile(path, dim, width=width)
        else:
            PostingFile(path, dim, width=width).close()
    f = PostingFile(tmp_path / "h.bin", 4, width=2)
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    slots = np.array([0, 2**31 + 5, MAX_SLOTS - 1], np.int64)
    off = int(f.append([f.encode(2, slots, np.ones(3, np.uint8), vecs)])[0])
    _, got, _, back = f.read_block(off)
    np.testing.assert_array_equal(got, slots)
    np.testing.assert_array_equal(back, vecs)
    f.close()


def test_newer_manifest_is_refused_on_open(tmp_path: Path) -> None:
    """Opening an index whose manifest has an unknown version fails, naming the manifest."""
    idx, _ = open_spann(4, "l2", {}, tmp_path)
    idx.add(np.arange(50), np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
    idx.checkpoint(3)
    idx.close()
    framing.write_sections(tmp_path / persist.MANIFEST, persist.MANIFEST_MAGIC, 2, [b"{}"])
    with pytest.raises(FormatError, match=r"MANIFEST: unsupported format version 2"):
        open_spann(4, "l2", {}, tmp_path)


def test_open_deletes_only_its_own_leftovers(tmp_path: Path) -> None:
    """Reopening removes tmp and unreferenced index files but never foreign files."""
    idx, _ = open_spann(4, "l2", {}, tmp_path)
    idx.add(np.arange(50), np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
    idx.checkpoint(1)
    idx.close()
    for name in ("state.99.bin", "postings.7.bin.tmp", "MANIFEST.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    open_spann(4, "l2", {}, tmp_path)[0].close()
    names = {p.name for p in tmp_path.iterdir()}
    assert "notes.txt" in names and not names & {"state.99.bin", "postings.7.bin.tmp"}
    assert "MANIFEST.tmp" not in names


def test_corrupt_state_section_is_detected(tmp_path: Path) -> None:
    """A framed file with a damaged section fails its CRC."""
    framing.write_sections(tmp_path / "s", b"VDBSTATE", 1, [b"abcdef" * 100])
    data = bytearray((tmp_path / "s").read_bytes())
    data[-10] ^= 1
    (tmp_path / "s").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="CRC"):
        framing.read_sections(tmp_path / "s", b"VDBSTATE", 1)


def test_direct_and_mmap_readers_see_the_same_bytes(tmp_path: Path) -> None:
    """The cold reader returns each block's bytes at the offsets it reports."""
    f = PostingFile(tmp_path / "p.bin", 16)
    blocks = [block(i, 20 + 37 * i, 16, i) for i in range(6)]
    offs = f.append(blocks)
    f.sync()
    warm = MmapReader(f)
    cold = DirectReader(f, threads=4)
    sizes = np.array([block_layout(20 + 37 * i, 16)[2] for i in range(6)], dtype=np.int64)
    buf, at, nread = cold.read(offs, sizes)
    assert nread % cold.unit == 0 and nread >= sizes.sum()  # whole device units
    u8 = warm.views()[0]
    for o, a, s in zip(offs, at, sizes, strict=True):
        np.testing.assert_array_equal(buf[a : a + s], u8[o : o + s])
    cold.close()


def test_search_gives_the_same_answers_warm_and_cold(tmp_path: Path) -> None:
    """io="direct" and io="mmap" return identical results and count bytes read."""
    x = np.random.default_rng(1).normal(size=(3000, 12)).astype(np.float32)
    idx, _ = open_spann(12, "l2", {"io": "mmap", "threads": 1}, tmp_path)
    idx.build(np.arange(3000), x)
    idx.checkpoint(1)
    q = x[:20] + 0.01
    warm = idx.search(q, 5)
    idx.close()
    cold_idx, _ = open_spann(12, "l2", {"io": "direct"}, tmp_path)
    assert cold_idx.stats()["io"] == "direct"
    cold = cold_idx.search(q, 5)
    np.testing.assert_array_equal(warm.slots, cold.slots)
    assert cold.stats.bytes_read > 0
    cold_idx.close()


def test_block_table_chains_survive_clear_and_round_trip() -> None:
    """Clearing one posting never touches another's chain, freed blocks are reused, and the
    stored arrays rebuild the same chains."""
    from vecdb.index.spann.table import BlockTable

    t = BlockTable(4)
    for p in range(5):
        for j in range(3):
            t.push(p, 1000 * p + 64 * j, j + 1)
    t.clear(2)
    t.clear(4)
    assert t.chain(2) == [] and len(t.free) == 6
    t.push(0, 9999, 7)
    assert t.chain(0)[0] == (9999, 7) and len(t.free) == 5
    again = BlockTable.from_arrays(4, t.to_arrays())
    for p in range(5):
        assert again.chain(p) == t.chain(p)
    again.clear(1)
    assert [len(again.chain(p)) for p in range(5)] == [4, 0, 0, 3, 0]
    assert again.ref_bytes == sum(block_extent(c, 4, 4) for p in (0, 3) for _, c in t.chain(p))


def test_block_table_lists_extents_and_releases_what_it_drops() -> None:
    """`extents` gives every referenced block with its 64-byte-rounded size; a table with a
    space map releases each block of a cleared chain to it, and memory counts the epochs."""
    from vecdb.index.spann.space import SpaceMap
    from vecdb.index.spann.table import BlockTable

    space = SpaceMap(PAGE, PAGE)
    t = BlockTable(3, 2, space)
    sizes = {}
    for p, counts in enumerate([[1, 9], [], [17, 2, 40]]):
        for c in counts:
            size = -(-block_layout(c, 3, 2)[2] // 64) * 64
            off = space.alloc(size)
            t.push(p, off, c)
            sizes[off] = size
    ext = t.extents()
    assert sorted(ext.offset.tolist()) == sorted(sizes)
    assert all(sizes[o] == s for o, s in zip(ext.offset.tolist(), ext.size.tolist(), strict=True))
    assert sorted(zip(ext.posting.tolist(), ext.offset.tolist())) == sorted(
        (p, o) for p in range(3) for o, _ in t.chain(p)
    )
    live = space.live_bytes
    t.clear(2)
    assert space.live_bytes == live - sum(sizes[o] for o in ext.offset[ext.posting == 2].tolist())
    assert space.stats().pending_bytes == live - space.live_bytes
    assert t.memory_bytes() >= t.blk_epoch.nbytes + t.blk_off.nbytes


def test_readers_see_blocks_written_into_reused_space(tmp_path: Path) -> None:
    """A block written into space freed by a published checkpoint reads back the same through
    read_block, the mmap reader (remapped after the file shrank and grew) and O_DIRECT."""
    from vecdb.index.spann.table import BlockTable

    f = PostingFile(tmp_path / "p.bin", 16)
    table = f.attach(BlockTable(16))
    for p in range(8):
        table.push(p, int(f.append([block(p, 30, 16, p)])[0]), 30)
    warm = MmapReader(f)
    hole, end = table.chain(2)[0][0], f.length
    for p in (2, 7):
        table.clear(p)
    f.checkpointed(f.begin_checkpoint())  # posting 7 was last: the file shrinks
    assert f.length < end
    new, shrunk = block(9, 30, 16, 9), f.length
    off = int(f.append([new])[0])
    assert f.length == shrunk and abs(off - hole) < PAGE  # in posting 2's hole
    f.append([block(10, 200, 16, 10)])  # grows the file again
    warm.refresh()
    size = len(new)
    np.testing.assert_array_equal(warm.views()[0][off : off + size], new)
    assert f.read_block(off)[0] == 9
    cold = DirectReader(f, threads=2)
    buf, at, _ = cold.read(np.array([off]), np.array([size]))
    np.testing.assert_array_equal(buf[int(at[0]) : int(at[0]) + size], new)
    cold.close()
    f.close()


def test_attach_refuses_a_table_that_does_not_fit_the_file(tmp_path: Path) -> None:
    """A state file whose table points past the posting file's durable length (or at
    overlapping blocks) is reported as a format error naming the file."""
    from vecdb.index.spann.table import BlockTable

    f = PostingFile(tmp_path / "p.bin", 4)
    off = int(f.append([block(1, 10, 4)])[0])
    bad = BlockTable(4)
    bad.push(1, off + 100 * PAGE, 10)
    with pytest.raises(FormatError, match=r"p\.bin: .*outside the file"):
        f.attach(bad)
    twice = BlockTable(4)
    twice.push(1, off, 10)
    twice.push(2, off + 64, 10)
    with pytest.raises(FormatError, match="overlap"):
        f.attach(twice)
    f.close()


@pytest.mark.parametrize(
    ("dtype", "dims"),
    [
        ("bits", (256, 300, 384, 1024)),
        ("int8", (16, 50)),
        ("float16", (50, 384)),
        ("float32", (16,)),
    ],
)
def test_a_full_block_fits_its_pages(dtype: str, dims: tuple[int, ...]) -> None:
    """`block_entries` entries of any dtype fill at most `block_pages` pages, header, slot
    padding and (for "bits") the float32 tail outside the lane groups included, so every
    full block occupies the same page-aligned extent (checked over 1-64 pages)."""
    import dataclasses

    from vecdb.index.params import BuildParams

    for d in dims:
        p = BuildParams.parse({"vector_dtype": dtype}, d)
        for pages in range(1, 65):
            q = dataclasses.replace(p, block_pages=pages)
            cap = q.block_entries(d)
            assert block_layout(cap, q.block_dim(d), q.width)[2] <= pages * PAGE, (d, pages)
