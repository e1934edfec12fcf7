"""Caption normalisation, tokenisation and the word lists that the concept rules use.

Everything downstream (concepts, BM25, masked captions, labels) sees captions through
`words(caption) = tokenize(normalize(caption))`, so the local and the Beam runner agree by
construction.
"""

from __future__ import annotations

import re
import unicodedata

# Words kept inside tokens: "she's", "t-shirt" splits into "t", "shirt" on purpose so that
# "left-handed" shares the token "left" (the proposal's false-friend example).
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

# Function words: an n-gram made only of these is never a concept ("of the", "in a").
STOP_WORDS = frozenset(
    """a an the this that these those some any each every another other
    and or but nor so yet of in on at by for with without from to into onto over under
    up down out off about above below near inside outside through across along around
    behind beside between against among during while as than then there here where when
    is are was were be been being am has have had do does did will would can could may might
    it its it's he she they them their his her him we us our you your i me my mine
    who whom which what whose very too also just not no only all both few more most
    s it's there's he's she's they're what's""".split()
)

# Words that never start or end a concept: "a red", "red and" carry no more than "red".
EDGE_WORDS = frozenset(
    """a an the this that these those some any each every another and or but nor so yet
    is are was were be been being am has have had do does did will would can could may might
    it its he she they them their his her him we us our you your i me my who which what
    very too also just not no""".split()
)

# Attribute words by class, for the attribute-contradiction label rule ("red car" is surely
# absent from a caption that says "blue car"). Classes are mutually exclusive values.
ATTRIBUTE_CLASSES: dict[str, frozenset[str]] = {
    "colour": frozenset(
        """red orange yellow green blue purple pink brown black white grey gray silver gold
        beige tan cyan magenta violet maroon navy teal""".split()
    ),
    "size": frozenset("small large big tiny huge little giant medium".split()),
}
ATTRIBUTE_OF: dict[str, str] = {w: c for c, ws in ATTRIBUTE_CLASSES.items() for w in ws}

# Attribute adjectives for the `attribute_noun` concept kind (`config.concept_kinds`): every
# word of `ATTRIBUTE_CLASSES` plus a small closed list of common size, shape, material and
# pattern adjectives. Only the kind filter uses it; the label rule keeps `ATTRIBUTE_CLASSES`
# (its classes are mutually exclusive values, these are not). Words that are mostly nouns in
# captions ("square", "glass", "stone") are left out, so "square left" is not an attribute-noun.
ATTRIBUTE_WORDS = frozenset(ATTRIBUTE_OF) | frozenset(
    """tall short long wide narrow thick thin
    round circular oval rectangular triangular curved flat
    wooden metal metallic plastic leather woolen woollen cotton silk denim ceramic marble
    rubber golden furry fluffy shiny
    striped spotted dotted checkered plaid floral""".split()
)

MASK = "<M>"


def normalize(caption: str) -> str:
    """Case-folds and NFKC-normalises a caption and collapses whitespace.

    Args:
      caption: raw caption text.

    Returns:
      The normalised caption (what tokenisation and the tokenizer corpus see).
    """
    if not caption.isascii():  # NFKC is the identity on ASCII; skip its cost there
        caption = unicodedata.normalize("NFKC", caption).replace("\u2019", "'")
    return " ".join(caption.lower().split())


def tokenize(text: str) -> list[str]:
    """Splits normalised text into word tokens (letters/digits, with an inner apostrophe).

    Args:
      text: output of `normalize`.

    Returns:
      The tokens, in order; punctuation is dropped.
    """
    return _TOKEN_RE.findall(text)


def words(caption: str) -> list[str]:
    """The word tokens of a raw caption, `tokenize(normalize(caption))` (what both runners'
    concepts, BM25, masked captions and labels see)."""
    return tokenize(normalize(caption))


def is_content_word(token: str) -> bool:
    """True for tokens that carry meaning on their own (not a stop word, not the mask)."""
    return token != MASK and token not in STOP_WORDS


def clean_caption(caption: str) -> str:
    """The caption as stored in the shards: original casing, whitespace collapsed."""
    return " ".join(caption.split())


def has_token(caption: str) -> bool:
    """True when the caption has at least one word token (cheaper than `tokenize`)."""
    return (
        _TOKEN_RE.search(caption.lower() if caption.isascii() else normalize(caption)) is not None
    )
