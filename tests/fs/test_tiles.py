"""The tile layout read from a TIFF's header: right on files GDAL writes, bounded on hostile ones."""

from __future__ import annotations

import struct

import pytest

from eotdlfs.fs.tiles import MAX_IFDS, MAX_SPAN_BYTES, Layout, Layouts, parse_layout

rasterio = pytest.importorskip("rasterio")
from rasterio.shutil import copy  # noqa: E402

from tests.fs.test_mount_geotiff import write_tiled_geotiff  # noqa: E402


def reader_of(data: bytes, reads: list | None = None):
    def read(offset: int, length: int) -> bytes:
        if reads is not None:
            reads.append((offset, length))
        return data[offset:offset + length]
    return read


TILED = dict(driver="GTiff", tiled=True, blockxsize=256, blockysize=256)


@pytest.mark.parametrize("options", [TILED, dict(driver="COG", BLOCKSIZE=256), dict(TILED, BIGTIFF="YES")])
def test_spans_are_the_tiles_gdal_reads(tmp_path, options):
    plain = tmp_path / "plain.tif"
    write_tiled_geotiff(plain, tile=256)
    path = tmp_path / "out.tif"
    with rasterio.open(plain) as src:
        copy(src, path, **options)
    data = path.read_bytes()
    layout = parse_layout(reader_of(data), len(data))
    with rasterio.open(path) as src:
        rows, cols = src.height // 256, src.width // 256
        for row in range(rows):
            for col in range(cols):
                start = int(src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
                size = int(src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
                assert layout.span_at(start) == layout.span_at(start + size - 1) == (start, start + size)
    assert layout.span_at(0) is None  # the header is no tile
    assert len(layout) >= rows * cols


def _classic(entries_at: dict[int, list[tuple[int, int, int, int]]], first: int, size: int,
             next_of: dict[int, int] | None = None, order: str = "<") -> bytes:
    """A classic TIFF of SIZE bytes with IFDs at the given offsets (little-endian unless ORDER)."""
    data = bytearray(size)
    data[:8] = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, first)
    for at, entries in entries_at.items():
        body = struct.pack(order + "H", len(entries)) + b"".join(struct.pack(order + "HHII", *e) for e in entries)
        body += struct.pack(order + "I", (next_of or {}).get(at, 0))
        data[at:at + len(body)] = body
    return bytes(data)


def test_a_strip_too_long_to_fetch_whole_is_left_out():
    # A whole image in one strip: a reader wanting a few rows must not be fetched all of it.
    size = MAX_SPAN_BYTES + 2000
    data = _classic({8: [(273, 4, 1, 1000), (279, 4, 1, MAX_SPAN_BYTES + 1)]}, 8, size)
    assert parse_layout(reader_of(data), size).span_at(1000) is None


@pytest.mark.parametrize("order", ["<", ">"])
def test_inline_strip_and_a_span_past_the_end(order):
    # One strip of 100 bytes at 1000 (values inline), and a second IFD whose strip runs past the end.
    data = _classic({8: [(273, 4, 1, 1000), (279, 4, 1, 100)], 100: [(273, 4, 1, 1900), (279, 4, 1, 500)]},
                    8, 2000, next_of={8: 100}, order=order)
    layout = parse_layout(reader_of(data), len(data))
    assert layout.span_at(1050) == (1000, 1100)
    assert layout.span_at(1950) is None


def test_a_loop_in_the_ifd_chain_ends_the_walk():
    reads: list = []
    data = _classic({8: [(273, 4, 1, 1000), (279, 4, 1, 100)], 100: []}, 8, 2000, next_of={8: 100, 100: 8})
    assert parse_layout(reader_of(data, reads), len(data)).span_at(1000) == (1000, 1100)
    assert len(reads) < 10


def test_a_long_chain_is_walked_only_so_far():
    ifd_size = 2 + 4
    count = MAX_IFDS + 50
    entries = {8 + i * ifd_size: [] for i in range(count)}
    links = {8 + i * ifd_size: 8 + (i + 1) * ifd_size for i in range(count - 1)}
    reads: list = []
    data = _classic(entries, 8, 8 + count * ifd_size + 8, next_of=links)
    assert len(parse_layout(reader_of(data, reads), len(data))) == 0
    assert len(reads) <= 2 * MAX_IFDS + 1


@pytest.mark.parametrize("data", [b"", b"GIF89a..", b"II*\x00", b"II\x2b\x00\x08\x00\x00\x00",
                                  b"II*\x00\xff\xff\xff\x00",  # first IFD past the end
                                  b"II*\x00\x08\x00\x00\x00\xff\xff"])  # 65535 entries claimed
def test_what_is_no_tiff_is_a_value_error(data):
    with pytest.raises(ValueError):
        parse_layout(reader_of(data), len(data))


def test_counts_that_do_not_match_or_claim_too_much_end_the_walk():
    huge = _classic({8: [(324, 4, 10 ** 9, 100), (325, 4, 10 ** 9, 200)]}, 8, 400)
    with pytest.raises(ValueError):
        parse_layout(reader_of(huge), len(huge))
    odd = _classic({8: [(324, 4, 2, 100), (325, 4, 3, 200)]}, 8, 400)
    with pytest.raises(ValueError):
        parse_layout(reader_of(odd), len(odd))


def test_layouts_parse_a_tiff_once_and_skip_other_files():
    data = _classic({8: [(273, 4, 1, 1000), (279, 4, 1, 100)]}, 8, 2000)
    reads: list = []
    layouts = Layouts()
    for _ in range(3):
        assert layouts.span_at("a/b.TIF", "sum", len(data), reader_of(data, reads), 1010) == (1000, 1100)
    parsed = len(reads)
    assert layouts.span_at("a/b.bin", "other", len(data), reader_of(data, reads), 1010) is None
    assert layouts.span_at("a/c.tiff", "bad", 4, reader_of(b"GIF8", reads), 0) is None
    assert len(reads) == parsed + 1 and parsed > 0


def test_overlapping_spans_keep_the_first():
    layout = Layout([(100, 200), (150, 250), (300, 400), (100, 200)])
    assert [layout.span_at(o) for o in (99, 100, 199, 220, 300)] == [None, (100, 200), (100, 200), None, (300, 400)]
    assert [layout.span_from(o) for o in (0, 100, 101, 300, 301)] == [(100, 200), (100, 200), (300, 400), (300, 400), None]
