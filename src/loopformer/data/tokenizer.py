"""Tokenizers (HF `tokenizers`): a byte-level BPE trained on the corpus, or a tokenizer.json.

Byte-level BPE encodes any text without unknown tokens and decodes it back exactly. Documents
are separated by END_OF_TEXT, a special token every tokenizer used here must have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
    if vocab_size < 257:  # the 256 byte symbols and END_OF_TEXT
        raise ValueError(f"--tokenizer.vocab-size must be >= 257, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--tokenizer {path}: no such file (expected a tokenizer.json)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # the library's own message says what is wrong
        raise ValueError(f"--tokenizer {path} is not a tokenizers file: {error}") from None
    end_of_text_id(tokenizer, path)
    return tokenizer


def end_of_text_id(tokenizer: Tokenizer, source: str | Path = "the tokenizer") -> int:
    token_id = tokenizer.token_to_id(END_OF_TEXT)
    if token_id is None:
        raise ValueError(f"{source} has no {END_OF_TEXT} token to separate documents; add it "
                         "as a special token")
    return token_id


def check_fits(tokenizer: Tokenizer, vocab_size: int) -> None:
    """The model's embedding must have a row for every token id."""
    needed = tokenizer.get_vocab_size(with_added_tokens=True)
    if needed > vocab_size:
        raise ValueError(f"the tokenizer has {needed} tokens but the model's vocabulary is "
                         f"{vocab_size}: set --model.vocab-size {needed} or larger")
