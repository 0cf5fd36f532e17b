"""Text corpora, streamed one document at a time.

A corpus is a list of paths: `.txt` / `.md` files, `.jsonl` files with a "text" field per line,
or directories holding them (searched recursively, in sorted order). A `.jsonl` line is one
document. A text file is cut into documents of about SECTION_CHARS characters at blank lines,
so that a single book still has documents to hold out for validation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

SUFFIXES = (".txt", ".md", ".jsonl")
SECTION_CHARS = 4_000  # about 1,000 tokens


def corpus_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files a corpus reads, checked to exist and to be of a known kind."""
    files = []
    for path in map(Path, paths):
        if not path.exists():
            raise ValueError(f"--data {path}: no such file or directory")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
            if not found:
                raise ValueError(f"--data {path}: the directory holds no .txt, .md or .jsonl "
                                 "file")
            files += found
        elif path.suffix in SUFFIXES:
            files.append(path)
        else:
            raise ValueError(f"--data {path}: expected a .txt, .md or .jsonl file, or a "
                             "directory of them")
    if not files:
        raise ValueError("no corpus given: pass --data PATH")
    return files


def documents(files: Iterable[Path]) -> Iterator[str]:
    for path in files:
        text = read_text(path)
        if path.suffix == ".jsonl":
            yield from _jsonl_documents(path, text)
        else:
            yield from sections(text, SECTION_CHARS)


def read_text(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise ValueError(f"{path} looks binary (it holds NUL bytes); the corpus takes UTF-8 "
                         "text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (invalid byte at offset {error.start}); "
                         "convert it or leave it out") from None
    if not text.strip():
        raise ValueError(f"{path} is empty; leave it out of --data")
    return text


def _jsonl_documents(path: Path, text: str) -> Iterator[str]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not JSON: {error}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f'{path} line {number} has no "text" string field')
        if record["text"].strip():
            yield record["text"]


def sections(text: str, size: int) -> Iterator[str]:
    """`text` in consecutive pieces of about `size` characters, each ending at a blank line,
    else at a line end, where one is near (every character is kept, so joining them gives
    `text` back)."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            for mark in ("\n\n", "\n"):
                cut = text.rfind(mark, start + size // 2, end)
                if cut != -1:
                    end = cut + len(mark)
                    break
        yield text[start:end]
        start = end
