"""Readers: every format into the canonical Arrow form, and error messages that say where the input is wrong."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylrec.data.readers import (
    INTERACTIONS_SCHEMA,
    ColumnMapping,
    ItemColumnMapping,
    dropped_rows,
    read_interactions,
    read_items,
    sibling_files,
)
from raylrec.errors import DataError


def write(directory: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = directory / name
    path.write_bytes(text.encode(encoding))
    return path


def rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def raises_data_error(*fragments: str, read, path: Path, **kwargs) -> str:
    """Call the reader, expect a DataError, and check its message names the file and every fragment."""
    with pytest.raises(DataError) as err:
        read(path, **kwargs)
    message = str(err.value)
    assert path.name in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- every format ------------------------------------------------------------------------------------------------


def test_recbole_interactions(tmp_path):
    path = write(
        tmp_path,
        "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n186\t302\t3.5\t8.9e8\n",
    )
    table = read_interactions(path)
    assert table.schema == INTERACTIONS_SCHEMA
    assert rows(table) == [
        {"user_id": "196", "item_id": "242", "rating": 3.0, "timestamp": 881250949, "row": 2},
        {"user_id": "186", "item_id": "302", "rating": 3.5, "timestamp": 890000000, "row": 3},
    ]


def test_recbole_interactions_without_rating_or_timestamp(tmp_path):
    path = write(tmp_path, "implicit.inter", "user_id:token\titem_id:token\nu1\ti1\nu2\ti1\n")
    assert rows(read_interactions(path)) == [
        {"user_id": "u1", "item_id": "i1", "rating": None, "timestamp": None, "row": 2},
        {"user_id": "u2", "item_id": "i1", "rating": None, "timestamp": None, "row": 3},
    ]


def test_recbole_items(tmp_path):
    path = write(
        tmp_path,
        "toy.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tCafé\t\tDrama\n",
    )
    assert rows(read_items(path)) == [
        {"item_id": "1", "title": "Toy Story", "year": "1995", "genres": "Animation, Children's, Comedy"},
        {"item_id": "2", "title": "Café", "year": None, "genres": "Drama"},
    ]


def test_movielens_100k(tmp_path):
    ratings = write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    assert rows(read_interactions(ratings)) == [
        {"user_id": "196", "item_id": "242", "rating": 3.0, "timestamp": 881250949, "row": 1},
        {"user_id": "186", "item_id": "302", "rating": 3.0, "timestamp": 891717742, "row": 2},
    ]
    items = write(
        tmp_path,
        "u.item",
        "1|Toy Story (1995)|01-Jan-1995||http://imdb/toy|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
        "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
        "1300|'Til There Was You (1997)|01-Jan-1997||http://imdb/til|0|0|0|0|0|0|0|0|1|0|0|0|0|0|1|0|0|0|0\n"
        "1405|Misérables, Les (1995)|01-Jan-1995||http://imdb/mis|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|1|0\n",
        encoding="latin-1",
    )
    table = read_items(items)
    assert table.column_names == [
        "item_id",
        "title",
        "genres",
        "year",
        "release_date",
        "video_release_date",
        "imdb_url",
    ]
    first, unknown, romance, les_mis = rows(table)
    assert first["genres"] == "Animation, Children's, Comedy" and first["year"] == "1995"
    assert first["release_date"] == "01-Jan-1995" and first["imdb_url"] == "http://imdb/toy"
    assert first["video_release_date"] is None
    assert unknown == {
        "item_id": "267",
        "title": "unknown",
        "genres": "unknown",
        "year": None,
        "release_date": None,
        "video_release_date": None,
        "imdb_url": None,
    }
    assert romance["genres"] == "Drama, Romance"
    assert les_mis["title"] == "Misérables, Les (1995)" and les_mis["genres"] == "Drama, War"


def test_movielens_100k_split_files_are_detected(tmp_path):
    path = write(tmp_path, "u1.base", "1\t1\t5\t874965758\n")
    assert read_interactions(path)["timestamp"].to_pylist() == [874965758]


def test_movielens_1m(tmp_path):
    ratings = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    assert rows(read_interactions(ratings))[1] == {
        "user_id": "1",
        "item_id": "661",
        "rating": 3.0,
        "timestamp": 978302109,
        "row": 2,
    }
    movies = write(
        tmp_path,
        "movies.dat",
        "1::Toy Story (1995)::Animation|Children's|Comedy\n73::Misérables, Les (1995)::Drama|Musical\n",
        encoding="latin-1",
    )
    assert rows(read_items(movies)) == [
        {"item_id": "1", "title": "Toy Story (1995)", "genres": "Animation, Children's, Comedy", "year": "1995"},
        {"item_id": "73", "title": "Misérables, Les (1995)", "genres": "Drama, Musical", "year": "1995"},
    ]


def test_csv_with_quotes_blank_lines_and_crlf(tmp_path):
    path = write(tmp_path, "ratings.csv", 'user_id,item_id,rating,timestamp\r\n\r\n7,"a,b",4.5,10\r\n8,c,1,11\r\n\r\n')
    assert rows(read_interactions(path)) == [
        {"user_id": "7", "item_id": "a,b", "rating": 4.5, "timestamp": 10, "row": 3},
        {"user_id": "8", "item_id": "c", "rating": 1.0, "timestamp": 11, "row": 4},
    ]


def test_csv_with_column_mapping_and_delimiter(tmp_path):
    path = write(tmp_path, "log.csv", "when;who;what;extra\n5;alice;x1;z\n3;bob;x2;z\n")
    mapping = ColumnMapping(user="who", item="what", rating=None, timestamp="when")
    assert rows(read_interactions(path, columns=mapping, delimiter=";")) == [
        {"user_id": "alice", "item_id": "x1", "rating": None, "timestamp": 5, "row": 2},
        {"user_id": "bob", "item_id": "x2", "rating": None, "timestamp": 3, "row": 3},
    ]


def test_csv_items_keep_other_columns_as_text(tmp_path):
    path = write(tmp_path, "movies.csv", 'movieId,name,genres,price\n1,"Heat, the movie",Crime|Drama,9.5\n2,Up,,\n')
    table = read_items(path, columns=ItemColumnMapping(item="movieId", title="name"))
    assert rows(table) == [
        {"item_id": "1", "title": "Heat, the movie", "genres": "Crime|Drama", "price": "9.5"},
        {"item_id": "2", "title": "Up", "genres": None, "price": None},
    ]


def test_csv_items_without_title_column(tmp_path):
    path = write(tmp_path, "items.csv", "item_id,brand\n1,acme\n")
    assert rows(read_items(path)) == [{"item_id": "1", "title": None, "brand": "acme"}]


def test_csv_quoted_value_spanning_lines_numbers_records(tmp_path):
    path = write(tmp_path, "items.csv", 'item_id,title\n1,"two\nlines"\n2,ok\n2,again\n')
    message = raises_data_error("record 4", "item id '2' already appeared on record 3", read=read_items, path=path)
    assert "line" not in message.split(": ", 1)[1]


def test_tsv_and_whitespace(tmp_path):
    tsv = write(tmp_path, "ratings.tsv", "user_id\titem_id\trating\n1\t2\t3\n")
    whitespace = write(tmp_path, "ratings.txt", "  user_id   item_id  rating\n\n1  2\t 3  \n")
    expected = [{"user_id": "1", "item_id": "2", "rating": 3.0, "timestamp": None}]
    assert rows(read_interactions(tsv).drop_columns("row")) == expected
    assert rows(read_interactions(whitespace).drop_columns("row")) == expected
    assert read_interactions(whitespace)["row"].to_pylist() == [3]


def test_parquet(tmp_path):
    path = tmp_path / "events.parquet"
    table = pa.table(
        {
            "user_id": pa.array([1, 2], pa.int64()),
            "item_id": ["a", "b"],
            "rating": pa.array([5, 4], pa.int32()),
            "timestamp": pa.array([1_000_000_000, 2_000_000_000], pa.timestamp("s")),
        }
    )
    pq.write_table(table, path)
    assert rows(read_interactions(path)) == [
        {"user_id": "1", "item_id": "a", "rating": 5.0, "timestamp": 1_000_000_000, "row": 1},
        {"user_id": "2", "item_id": "b", "rating": 4.0, "timestamp": 2_000_000_000, "row": 2},
    ]


def test_format_can_be_given_explicitly(tmp_path):
    path = write(tmp_path, "export.log", "user_id,item_id\n1,2\n")
    assert read_interactions(path, format="csv").num_rows == 1


# --- bad input: each message names the file, where (line or row) and the field --------------------------------------


def test_missing_columns_names_missing_and_present(tmp_path):
    path = write(tmp_path, "ratings.csv", "user,item_id,score\n1,2,3\n")
    raises_data_error(
        "line 1", "'user_id' (user)", "'user', 'item_id', 'score'", "columns=", read=read_interactions, path=path
    )
    raises_data_error(
        "line 1", "'rating' (rating)", read=read_interactions, path=path, columns=ColumnMapping(user="user")
    )


def test_missing_columns_in_parquet(tmp_path):
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"uid": [1], "item_id": ["a"]}), path)
    raises_data_error("'user_id' (user)", "'uid', 'item_id'", read=read_interactions, path=path)


def test_non_numeric_rating(tmp_path):
    path = write(tmp_path, "ratings.tsv", "user_id\titem_id\trating\n1\t2\t4\n1\t3\tfive\n")
    raises_data_error("line 3", "column 'rating'", "'five' is not a number", read=read_interactions, path=path)


def test_empty_rating_is_not_a_number(tmp_path):
    path = write(tmp_path, "ratings.csv", "user_id,item_id,rating\n1,2,\n")
    raises_data_error("line 2", "column 'rating'", "'' is not a number", read=read_interactions, path=path)


def test_non_numeric_timestamp_in_headerless_file(tmp_path):
    path = write(tmp_path, "u.data", "1\t2\t3\t881250949\n1\t3\t4\tyesterday\n")
    raises_data_error("line 2", "field 4 (timestamp)", "'yesterday'", read=read_interactions, path=path)


def test_fractional_timestamp(tmp_path):
    path = write(tmp_path, "x.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t10\n1\t3\t10.5\n")
    raises_data_error("line 3", "column 'timestamp'", "'10.5' is not a whole number", read=read_interactions, path=path)
    path = write(tmp_path, "big.csv", "user_id,item_id,timestamp\n1,2,99999999999999999999\n")
    raises_data_error("line 2", "column 'timestamp'", "64-bit range", read=read_interactions, path=path)


def test_missing_value_in_parquet(tmp_path):
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user_id": ["u", "v"], "item_id": ["a", "b"], "rating": [1.0, None]}), path)
    raises_data_error("row 2", "column 'rating'", "missing", read=read_interactions, path=path)


def test_empty_file(tmp_path):
    for name in ("ratings.csv", "ratings.tsv", "x.inter"):
        path = write(tmp_path, name, "\n")
        raises_data_error("line 1", "empty", "user_id", "item_id", read=read_interactions, path=path)
    path = write(tmp_path, "u.data", "")
    raises_data_error("line 1", "empty", "user_id, item_id, rating, timestamp", read=read_interactions, path=path)


def test_header_without_data_rows(tmp_path):
    for name in ("ratings.csv", "ratings.tsv"):
        path = write(tmp_path, name, "user_id,item_id\n" if name.endswith("csv") else "user_id\titem_id\n")
        raises_data_error("line 2", "no data rows", "header on line 1", read=read_interactions, path=path)
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"user_id": pa.array([], pa.string())}), path)
    raises_data_error("row 1", "no data rows", "user_id", read=read_interactions, path=path)


def test_empty_user_and_item_ids(tmp_path):
    path = write(tmp_path, "ratings.csv", "user_id,item_id\n1,2\n  ,3\n")
    raises_data_error("line 3", "column 'user_id'", "user id is empty", read=read_interactions, path=path)
    path = write(tmp_path, "u.data", "1\t\t3\t4\n")
    raises_data_error("line 1", "field 2 (item_id)", "item id is empty", read=read_interactions, path=path)


def test_malformed_lines(tmp_path):
    path = write(tmp_path, "u.data", "1\t2\t3\t4\n\n1\t2\t3\n")
    raises_data_error(
        "line 3",
        "expected 4 fields",
        "user_id, item_id, rating, timestamp",
        "found 3",
        "'1\\t2\\t3'",
        read=read_interactions,
        path=path,
    )
    path = write(tmp_path, "ratings.csv", "user_id,item_id,rating\n1,2,3\n\n1,2,3,4\n")
    raises_data_error(
        "line 4", "expected 3 fields", "user_id, item_id, rating", "found 4", read=read_interactions, path=path
    )
    path = write(tmp_path, "u.item", "1|Toy Story|01-Jan-1995\n")
    raises_data_error("line 1", "expected 24 fields separated by '|'", "item_id, title", read=read_items, path=path)


def test_bad_genre_flag(tmp_path):
    path = write(tmp_path, "u.item", "1|Toy Story (1995)|01-Jan-1995||url|0|0|0|yes|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n")
    raises_data_error("line 1", "field 9 (Animation)", "'yes'", "0 or 1", read=read_items, path=path)


def test_duplicate_item_id(tmp_path):
    path = write(tmp_path, "movies.dat", "1::A (1990)::Drama\n\n1::B (1991)::Comedy\n")
    raises_data_error("line 3", "field 1 (item_id)", "'1' already appeared on line 1", read=read_items, path=path)


def test_duplicate_header_column(tmp_path):
    path = write(tmp_path, "ratings.csv", "user_id,item_id,user_id\n1,2,3\n")
    raises_data_error("line 1", "'user_id' appears twice", read=read_interactions, path=path)


def test_invalid_utf8(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"user_id,item_id\n1,2\n\xff,3\n")
    raises_data_error("line 3", "not valid utf-8", read=read_interactions, path=path)


def test_unknown_or_undetectable_format(tmp_path):
    path = write(tmp_path, "ratings.xlsx", "x")
    raises_data_error("format=", "csv", "parquet", read=read_interactions, path=path)
    raises_data_error("'excel'", "movielens-100k", read=read_interactions, path=path, format="excel")


def test_missing_file(tmp_path):
    raises_data_error("no such file", read=read_interactions, path=tmp_path / "absent.csv")


# --- headerless files, sequence files, JSON item tables, Amazon dumps ------------------------------------------------


def test_headerless_whitespace_with_fields_and_the_sasrec_format(tmp_path):
    path = write(tmp_path, "Beauty.txt", "1 10\n1 11\n\n2 10\n")
    expected = [
        {"user_id": "1", "item_id": "10", "row": 1},
        {"user_id": "1", "item_id": "11", "row": 2},
        {"user_id": "2", "item_id": "10", "row": 4},
    ]
    by_fields = read_interactions(path, format="whitespace", fields=["user_id", "item_id"])
    assert rows(by_fields.select(["user_id", "item_id", "row"])) == expected
    assert rows(read_interactions(path, format="sasrec").select(["user_id", "item_id", "row"])) == expected
    mapped = read_interactions(
        path,
        format="whitespace",
        fields=["u", "i"],
        columns=ColumnMapping(user="u", item="i", rating=None, timestamp=None),
    )
    assert mapped["item_id"].to_pylist() == ["10", "11", "10"]
    # A headerless file read as if line 1 were a header: the error says how to read it.
    raises_data_error("line 1", "fields=", read=read_interactions, path=path, format="whitespace")
    raises_data_error(
        "line 3",
        "expected 2 fields",
        "found 3",
        read=read_interactions,
        path=write(tmp_path, "bad.txt", "1 10\n\n1 11 12\n"),
        format="sasrec",
    )


def test_headerless_csv_with_fields(tmp_path):
    path = write(tmp_path, "log.csv", '7,a,4.5,10\n8,"b,c",1,11\n')
    assert rows(read_interactions(path, fields=["user_id", "item_id", "rating", "timestamp"])) == [
        {"user_id": "7", "item_id": "a", "rating": 4.5, "timestamp": 10, "row": 1},
        {"user_id": "8", "item_id": "b,c", "rating": 1.0, "timestamp": 11, "row": 2},
    ]
    raises_data_error(
        "line 2",
        "field 3 (rating)",
        "'x' is not a number",
        read=read_interactions,
        path=write(tmp_path, "bad.csv", "7,a,4\n8,b,x\n"),
        fields=["user_id", "item_id", "rating"],
    )


def test_p5_user_sequences(tmp_path):
    path = write(tmp_path, "user_sequence.txt", "A1 B2 B1\n\nA2 B1 B3 B2\n")
    table = read_interactions(path)
    assert rows(table.select(["user_id", "item_id", "row"])) == [
        {"user_id": "A1", "item_id": "B2", "row": 1},
        {"user_id": "A1", "item_id": "B1", "row": 2},
        {"user_id": "A2", "item_id": "B1", "row": 3},
        {"user_id": "A2", "item_id": "B3", "row": 4},
        {"user_id": "A2", "item_id": "B2", "row": 5},
    ]
    assert table["timestamp"].null_count == 5 and table["rating"].null_count == 5
    raises_data_error(
        "line 2",
        "user 'A9' has no items",
        read=read_interactions,
        path=write(tmp_path, "user_sequence.txt", "A1 B1\nA9\n"),
    )


def test_item_table_with_an_id_map(tmp_path):
    """The shared Beauty copy: products_lookup.csv (pandas index, global_product_id, name) + item_id_to_int.json."""
    items = write(tmp_path, "products_lookup.csv", ",global_product_id,name\n0,5,Lipstick\n1,3,\n2,9,Unused\n")
    id_map = write(tmp_path, "item_id_to_int.json", '{"B2": 5, "B1": 3}')
    columns = ItemColumnMapping(item="global_product_id", title="name")
    table = read_items(items, columns=columns, id_map=id_map)
    assert rows(table) == [
        {"item_id": "B2", "title": "Lipstick", "unnamed_1": "0"},
        {"item_id": "B1", "title": None, "unnamed_1": "1"},
    ]
    assert dropped_rows(table) == {"item not named in item_id_to_int.json": 1}
    raises_data_error(
        "'B7'",
        "'4'",
        "does not list",
        read=read_items,
        path=items,
        columns=columns,
        id_map=write(tmp_path, "item_id_to_int.json", '{"B2": 5, "B7": 4}'),
    )
    bad = write(tmp_path, "item_id_to_int.json", '{"B2": 5, "B3": 5}')
    with pytest.raises(DataError, match="item_id_to_int.json: item table id '5' is the target of more than one"):
        read_items(items, columns=columns, id_map=bad)


def test_json_and_jsonl_item_tables(tmp_path):
    titles = write(tmp_path, "titles.json", '{"B1": "Soap", "B2": "Brush"}')
    assert rows(read_items(titles)) == [{"item_id": "B1", "title": "Soap"}, {"item_id": "B2", "title": "Brush"}]
    fields = write(tmp_path, "items.json", '{"B1": {"title": "Soap", "brand": "Acme", "tags": ["a", "b"]}}')
    assert rows(read_items(fields)) == [{"item_id": "B1", "title": "Soap", "brand": "Acme", "tags": '["a", "b"]'}]
    records = write(tmp_path, "list.json", '[{"asin": "B1", "name": "Soap"}]')
    assert rows(read_items(records, columns=ItemColumnMapping(item="asin", title="name"))) == [
        {"item_id": "B1", "title": "Soap"}
    ]
    lines = write(tmp_path, "items.jsonl", '{"item_id": "B1", "title": "Soap"}\n\n{"item_id": "B2"}\n')
    assert rows(read_items(lines)) == [{"item_id": "B1", "title": "Soap"}, {"item_id": "B2", "title": None}]
    raises_data_error(
        "line 2",
        "not valid JSON",
        read=read_items,
        path=write(tmp_path, "bad.jsonl", '{"item_id": "B1"}\n{"item_id": \n'),
    )
    raises_data_error(
        "line 2",
        "item id 'B1' already appeared on line 1",
        read=read_items,
        path=write(tmp_path, "twice.jsonl", '{"item_id": "B1"}\n{"item_id": "B1"}\n'),
    )
    raises_data_error("item tables", read=read_interactions, path=lines)


def write_splits(directory: Path, train: str, valid: str, test: str) -> Path:
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    for split, body in (("train", train), ("valid", valid), ("test", test)):
        write(directory, f"Toy.{split}.inter", header + body)
    return directory / "Toy.train.inter"


def test_recbole_split_files_rebuild_full_sequences(tmp_path):
    # User 0: 0 1 2 3 4 5 with histories truncated to 3 items (longest prefix first, as UniSRec's files);
    # user 1: 6 7 8, no training rows beyond the first transition.
    train = "0\t0 1 2\t3\n0\t0 1\t2\n0\t0\t1\n1\t6\t7\n"
    path = write_splits(tmp_path, train, valid="0\t1 2 3\t4\n1\t6 7\t8\n", test="0\t2 3 4\t5\n1\t6 7 8\t9\n")
    table = read_interactions(path)
    sequences = {}
    for row in rows(table):
        sequences.setdefault(row["user_id"], []).append(row["item_id"])
    assert sequences == {"0": ["0", "1", "2", "3", "4", "5"], "1": ["6", "7", "8", "9"]}
    assert table["row"].to_pylist() == list(range(1, 11))

    write(tmp_path, "Toy.item2index", "".join(f"B{k}\t{k}\n" for k in range(10)))
    write(tmp_path, "Toy.user2index", "Ann\t0\nBob\t1\n")
    mapped = read_interactions(tmp_path / "Toy.test.inter")
    assert mapped["user_id"].to_pylist()[:1] == ["Ann"] and mapped["item_id"].to_pylist()[-1] == "B9"
    assert sorted(p.name for p in sibling_files(path)) == [
        "Toy.item2index",
        "Toy.test.inter",
        "Toy.user2index",
        "Toy.valid.inter",
    ]


def test_recbole_split_files_that_do_not_chain_up(tmp_path):
    path = write_splits(tmp_path, "0\t0\t1\n", valid="0\t0 1\t2\n", test="0\t0 9\t3\n")
    with pytest.raises(DataError, match=r"Toy.test.inter: line 2: the history of user '0' does not continue"):
        read_interactions(path)
    (tmp_path / "Toy.valid.inter").unlink()
    with pytest.raises(DataError, match=r"Toy.valid.inter: no such file"):
        read_interactions(path)


def gzip_lines(directory: Path, name: str, lines: list[str]) -> Path:
    path = directory / name
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return path


def test_amazon_2014_reviews_and_python_literal_meta(tmp_path):
    reviews = gzip_lines(
        tmp_path,
        "reviews_Beauty_5.json.gz",
        [
            '{"reviewerID": "A1", "asin": "B1", "reviewerName": "x", "helpful": [0, 0], "overall": 5.0, '
            '"unixReviewTime": 1391212800, "reviewTime": "02 1, 2014"}',
            '{"reviewerID": "A1", "asin": "B2", "overall": 3.0, "unixReviewTime": 1391212801}',
        ],
    )
    assert rows(read_interactions(reviews)) == [
        {"user_id": "A1", "item_id": "B1", "rating": 5.0, "timestamp": 1391212800, "row": 1},
        {"user_id": "A1", "item_id": "B2", "rating": 3.0, "timestamp": 1391212801, "row": 2},
    ]
    meta = gzip_lines(
        tmp_path,
        "meta_Beauty.json.gz",
        [
            "{'asin': 'B1', 'title': 'Rose &amp; Oud', 'description': 'A scent.', "
            "'categories': [['Beauty', 'Fragrance'], ['Beauty', 'Women']], 'brand': 'Acme', 'price': 12.5}",
            "{'asin': 'B2', 'categories': [['Beauty']], 'related': {'also_bought': ['B1']}}",
        ],
    )
    assert rows(read_items(meta)) == [
        {
            "item_id": "B1",
            "title": "Rose & Oud",
            "description": "A scent.",
            "categories": "Beauty, Fragrance, Women",
            "brand": "Acme",
            "price": "12.5",
        },
        {"item_id": "B2", "title": None, "description": None, "categories": "Beauty", "brand": None, "price": None},
    ]
    # Literals only: an expression is a parse error naming the line, never evaluated.
    bad = gzip_lines(tmp_path, "meta_Bad.json.gz", ["{'asin': 'B1'}", "__import__('os').getcwd()"])
    raises_data_error("line 2", "neither JSON nor a Python literal", read=read_items, path=bad)
    missing = gzip_lines(
        tmp_path,
        "reviews_Gap_5.json.gz",
        [
            '{"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1}',
            '{"asin": "B2", "overall": 4.0, "unixReviewTime": 2}',
        ],
    )
    raises_data_error("record 2", "user id is empty", read=read_interactions, path=missing)


def test_amazon_2018_meta_repeats_are_counted(tmp_path):
    reviews = gzip_lines(
        tmp_path,
        "Industrial_and_Scientific_5.json.gz",
        [
            '{"overall": 4.0, "verified": true, "reviewerID": "U1", "asin": "P1", "style": {"Size:": " 1"}, '
            '"unixReviewTime": 1500000000, "vote": "2"}',
        ],
    )
    assert rows(read_interactions(reviews))[0] == {
        "user_id": "U1",
        "item_id": "P1",
        "rating": 4.0,
        "timestamp": 1500000000,
        "row": 1,
    }
    meta = gzip_lines(
        tmp_path,
        "meta_Industrial_and_Scientific.json.gz",
        [
            '{"asin": "P1", "title": "Gloves", "description": ["Nitrile.", "Box of 100."], "category": '
            '["Industrial & Scientific", "Lab"], "brand": "Acme"}',
            '{"asin": "P1", "title": "Gloves (again)"}',
        ],
    )
    table = read_items(meta)
    assert rows(table) == [
        {
            "item_id": "P1",
            "title": "Gloves",
            "description": "Nitrile. Box of 100.",
            "categories": "Industrial & Scientific, Lab",
            "brand": "Acme",
            "price": None,
        }
    ]
    assert dropped_rows(table) == {"item listed again, first kept": 1}


def test_amazon_2023_jsonl(tmp_path):
    reviews = gzip_lines(
        tmp_path,
        "All_Beauty.jsonl.gz",
        [
            '{"rating": 5.0, "title": "ok", "asin": "B01", "parent_asin": "P01", "user_id": "U1", '
            '"timestamp": 1588687728923, "helpful_vote": 0, "verified_purchase": true}',
        ],
    )
    assert rows(read_interactions(reviews)) == [
        {"user_id": "U1", "item_id": "P01", "rating": 5.0, "timestamp": 1588687728923, "row": 1}
    ]
    meta = gzip_lines(
        tmp_path,
        "meta_All_Beauty.jsonl.gz",
        [
            '{"main_category": "All Beauty", "title": "Brush", "description": [], "categories": [], '
            '"store": "Acme", "parent_asin": "P01", "price": null}',
        ],
    )
    assert rows(read_items(meta)) == [
        {"item_id": "P01", "title": "Brush", "description": None, "categories": None, "brand": "Acme", "price": None}
    ]
