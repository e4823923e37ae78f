"""Dictionary pages read alone: the same values as decoding the column, or no answer."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etlkit.storage import dictionary_pages
from etlkit.storage.dictionary_pages import dictionary_values
from etlkit.storage.parquet import parquet_statistics

FLAGS = ["A", "N", "R", None]


def write(path: Path, groups: list[list[str | None]], **options: object) -> Path:
    schema = pa.schema([("flag", pa.string()), ("n", pa.int64())])
    with pq.ParquetWriter(path, schema, **options) as writer:  # type: ignore[arg-type]
        for group in groups:
            writer.write_table(pa.table({"flag": group, "n": range(len(group))}, schema=schema))
    return path


def decoded(path: Path, column: str) -> set[str | None]:
    """The union of the column's dictionaries as pyarrow decodes them."""
    table = pq.read_table(path, columns=[column], read_dictionary=[column])
    return {v for chunk in table.column(column).chunks for v in chunk.dictionary.to_pylist()}


@pytest.mark.parametrize("compression", ["none", "snappy", "gzip", "zstd", "brotli"])
@pytest.mark.parametrize("version", ["1.0", "2.0"])
@pytest.mark.parametrize("whole", [True, False], ids=["whole-chunk", "header-by-header"])
def test_every_codec_and_page_version_gives_the_decoded_dictionaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str, version: str, whole: bool
) -> None:
    if not whole:  # as a chunk too big to read in one piece is
        monkeypatch.setattr(dictionary_pages, "_WHOLE_CHUNK", 0)
    groups = [FLAGS * 5000, ["X" * 1000, "Y" * 1000] * 100, ["é", "日本"] * 3]  # long: headers grow
    path = write(
        tmp_path / "f.parquet",
        groups,
        compression=compression,
        data_page_version=version,
        data_page_size=1024,  # several data pages per chunk
    )
    footer = pq.read_metadata(path)

    found = dictionary_values(str(path), footer, "flag", limit=100)

    assert found == decoded(path, "flag") == {"A", "N", "R", "X" * 1000, "Y" * 1000, "é", "日本"}


def test_an_lz4_chunk_is_decoded_instead(tmp_path: Path) -> None:
    # pyarrow names Parquet's LZ4_RAW and the Hadoop-framed LZ4 alike: neither is read alone
    path = write(tmp_path / "f.parquet", [FLAGS * 10, ["Q"]], compression="lz4")

    assert dictionary_values(str(path), pq.read_metadata(path), "flag", limit=100) is None
    stats = parquet_statistics([str(path)], ["flag"], values_of=["flag"])
    assert stats["flag"].values == {"A", "N", "R", "Q"}


def test_a_chunk_that_fell_back_to_plain_encoding_is_decoded_instead(tmp_path: Path) -> None:
    values = [f"v{i:05}" for i in range(20_000)]
    path = write(tmp_path / "f.parquet", [values], dictionary_pagesize_limit=1024)
    footer = pq.read_metadata(path)
    assert footer.row_group(0).column(0).has_dictionary_page  # then plain pages: the fallback

    assert dictionary_values(str(path), footer, "flag", limit=100_000) is None
    # the statistics decode it: every value is there, not only the first dictionary's
    stats = parquet_statistics([str(path)], ["flag"], values_of=["flag"])
    assert stats["flag"].values is None  # more than 4096 values: not worth collecting
    few = write(tmp_path / "g.parquet", [values[:3000]], dictionary_pagesize_limit=256)
    assert dictionary_values(str(few), pq.read_metadata(few), "flag", limit=100_000) is None
    assert parquet_statistics([str(few)], ["flag"], values_of=["flag"])["flag"].values == set(
        values[:3000]
    )


def test_data_pages_are_not_decoded(tmp_path: Path) -> None:
    path = write(tmp_path / "f.parquet", [FLAGS * 1000, ["Q"] * 10], compression="snappy")
    chunk = pq.read_metadata(path).row_group(0).column(0)
    end = chunk.dictionary_page_offset + chunk.total_compressed_size
    data = bytearray(path.read_bytes())
    data[end - 16 : end] = b"\xff" * 16  # the end of the last data page's compressed body
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match=r"(?i)snappy|decompress"):  # decoding the column fails
        decoded(path, "flag")

    stats = parquet_statistics([str(path)], ["flag"], values_of=["flag"])

    assert stats["flag"].values == {"A", "N", "R", "Q"}


def test_columns_it_does_not_read_have_no_answer(tmp_path: Path) -> None:
    path = write(tmp_path / "f.parquet", [FLAGS])
    footer = pq.read_metadata(path)

    assert dictionary_values(str(path), footer, "n", limit=10) is None  # not text
    assert dictionary_values(str(path), footer, "missing", limit=10) is None
    assert dictionary_values(str(tmp_path / "gone.parquet"), footer, "flag", limit=10) is None
    elsewhere = pq.read_metadata(path)
    elsewhere.set_file_path("part-0.parquet")  # as a `_metadata` file lists its parts' chunks
    assert dictionary_values(str(path), elsewhere, "flag", limit=10) is None
    plain = write(tmp_path / "p.parquet", [FLAGS], use_dictionary=False)
    assert dictionary_values(str(plain), pq.read_metadata(plain), "flag", limit=10) is None


def test_a_damaged_page_header_has_no_answer(tmp_path: Path) -> None:
    path = write(tmp_path / "f.parquet", [FLAGS * 100], compression="none")
    chunk = pq.read_metadata(path).row_group(0).column(0)
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset : chunk.data_page_offset + 8] = b"\x00" * 8
    path.write_bytes(bytes(data))

    assert dictionary_values(str(path), pq.read_metadata(path), "flag", limit=10) is None


def test_it_stops_past_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path / "f.parquet", [["a", "b"], ["c", "d"], ["e", "f"]])

    found = dictionary_values(str(path), pq.read_metadata(path), "flag", limit=3)

    assert found == {"a", "b", "c", "d"}  # the third row group is not read


def test_a_damaged_dictionary_page_has_no_answer(tmp_path: Path) -> None:
    path = write(tmp_path / "f.parquet", [FLAGS * 100], compression="snappy")
    chunk = pq.read_metadata(path).row_group(0).column(0)
    data = bytearray(path.read_bytes())
    body = chunk.data_page_offset - 4  # the end of the dictionary page's compressed values
    data[body : chunk.data_page_offset] = b"\xff" * 4
    path.write_bytes(bytes(data))

    assert dictionary_values(str(path), pq.read_metadata(path), "flag", limit=10) is None


@pytest.mark.parametrize("seed", range(24))
def test_files_written_every_way_give_the_decoded_dictionaries_or_no_answer(
    tmp_path: Path, seed: int
) -> None:
    # a sound answer or none, never a part of the values: dictionaries of every size (some
    # fall back to plain pages), nulls, page sizes, versions and codecs, chosen by the seed
    rng = random.Random(seed)
    words = [f"{rng.choice('abcé日')}{i}" * rng.randint(1, 40) for i in range(rng.randint(1, 3000))]
    groups = [
        [rng.choice([*words, None]) for _ in range(rng.randint(1, 4000))]
        for _ in range(rng.randint(1, 4))
    ]
    codec = rng.choice(["none", "snappy", "gzip", "zstd", "brotli", "lz4"])
    limit = rng.choice([128, 4096, 1 << 20])
    path = write(
        tmp_path / "f.parquet",
        groups,
        compression=codec,
        data_page_version=rng.choice(["1.0", "2.0"]),
        data_page_size=rng.choice([64, 1024, 1 << 20]),
        dictionary_pagesize_limit=limit,
        write_statistics=rng.choice([True, False]),
    )

    found = dictionary_values(str(path), pq.read_metadata(path), "flag", limit=10_000)

    if found is not None:
        assert found == decoded(path, "flag")
    # every chunk's dictionary fits its page (no fallback to plain pages): an answer is due
    fits = all(sum(len(w.encode()) + 4 for w in set(g) if w) < limit // 2 for g in groups)
    if fits and codec != "lz4" and all(any(g) for g in groups):
        assert found is not None
