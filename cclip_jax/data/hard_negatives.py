"""NegCLIP hard negatives: a caption with two attributes or two objects swapped, by rule.

    swap_hard_negative("a red square left of a blue circle") == "a blue square left of a red circle"
    swap_hard_negative("a red square left of a red circle") == "a red circle left of a red square"
    swap_hard_negative("a dog on a sofa") is None            # no two adjective-noun pairs

The rule reads noun phrases of the form `[attribute run] noun`: an *attribute run* is one or
more consecutive words of the closed list `cclip_jax.curation.text.ATTRIBUTE_WORDS` (colours,
sizes, shapes, materials, patterns; separated by spaces or a comma, "a small, red ball"), and
its *noun* is the word right after the run when that is an alphabetic content word (not a stop
word, not itself an attribute). Predicates ("the car is red") are not pairs.

Of the caption's pairs, in order (`p` first, then the earliest `q` after it), the first two
`(p, q)` that qualify are swapped. Two runs *contradict* when some attribute slot is named in
both with different words; a slot is a class of `ATTRIBUTE_CLASSES` (colour, size) or "other"
(materials, patterns, shapes, ... of `ATTRIBUTE_WORDS`).

1. **Attribute swap** (binding): the runs contradict and the nouns differ. The whole runs change
   places, "a small red circle left of a large blue square" -> "a large blue circle left of a
   small red square": the same objects, attributes bound to the other one. Whole runs, not one
   word of each, so that the negative cannot be told apart by counting attribute words per
   object. Runs that name *different* slots ("a blue circle right of a large star") do not
   qualify: a caption that names only some attributes may well be true of the swap too (the
   circle may be large and the star blue); on the synthetic "natural" captions 14 of 526
   such swaps were true of their scene, none of the contradicting ones.
2. **Object swap** (order): (a) the runs contradict and the nouns are equal (swapping the runs
   then swaps the objects), or, failing any pair of 1 or 2a, (b) the runs are equal and the
   nouns differ (the nouns change places: "a red square left of a red circle" -> "a red circle
   left of a red square"). Either only changes *which object is where in the sentence*, so it
   is a negative only when the words between the two phrases order them ("left of", "on",
   "holding"); when they are all unordered joiners ("and", "or", "with", "next to":
   `_UNORDERED`) the swap is a paraphrase ("a red square and a blue square") and that pair
   does not qualify.

Otherwise the caption cannot be swapped (None); the pipeline then uses the caption itself and
flags it (`hard_ok = 0`), so the loss ignores that row and the run can count it.

The swap edits the caption's own text: casing, punctuation and spacing stay, the first letter
of a moved word takes the case of the place it moves to ("Red apples and a green pear" ->
"Green apples and a red pear"; all-caps words keep theirs), and an article right before a moved
run is re-chosen ("a"/"an" by the new first letter's vowel, as the synthetic grammar writes
them: "an orange star left of a red circle" -> "a red star left of an orange circle"), so that
a wrong article does not give the negative away.

The synthetic grammar (`cclip_jax.synthetic.grammar`: `a [size] [colour] shape`, joined by a
relation or "and") needs no rule of its own: its noun phrases are exactly the pairs read here.
With the "clean" preset (every attribute named) every caption of a two-object scene is swapped
and every swap is false of its scene (the oracle); one-object scenes cannot be swapped by any
route. With "natural" (attributes named at p = 0.5) most two-object captions name too few
attributes for a sure swap; see docs/arms.md, `negclip`, for the measured rates.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from cclip_jax.curation.text import ATTRIBUTE_OF, ATTRIBUTE_WORDS, STOP_WORDS

_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
_RUN_SEP_RE = re.compile(r"\s*,?\s+|\s*,\s*")  # between two attribute words of one run
_NOUN_SEP_RE = re.compile(r"\s+")  # between the run and its noun
# Words that join two noun phrases without ordering them: swapping the phrases around only
# these is a paraphrase, not a negative.
_UNORDERED = frozenset(
    """a an the and or nor with plus also both as well either neither together
    next to beside besides near by alongside among between""".split()
)
_ARTICLES = frozenset({"a", "an"})


class _Pair:
    """One `[attribute run] noun` phrase: word indices of the run `[start, stop)` and noun."""

    __slots__ = ("attrs", "noun", "start")

    def __init__(self, start: int, noun: int, attrs: frozenset[str]):
        self.start, self.noun, self.attrs = start, noun, attrs


def _pairs(words: list[re.Match], text: str) -> list[_Pair]:
    out = []
    k = 0
    n = len(words)
    while k < n:
        if words[k].group().lower() not in ATTRIBUTE_WORDS:
            k += 1
            continue
        start = k
        while (
            k + 1 < n
            and words[k + 1].group().lower() in ATTRIBUTE_WORDS
            and _RUN_SEP_RE.fullmatch(text[words[k].end() : words[k + 1].start()])
        ):
            k += 1
        noun = k + 1
        if noun < n and _NOUN_SEP_RE.fullmatch(text[words[k].end() : words[noun].start()]):
            w = words[noun].group().lower()
            if w.isalpha() and w not in STOP_WORDS and w not in ATTRIBUTE_WORDS:
                attrs = frozenset(words[j].group().lower() for j in range(start, noun))
                out.append(_Pair(start, noun, attrs))
                k = noun + 1
                continue
        k += 1
    return out


def _slots(attrs: frozenset[str]) -> dict[str, frozenset[str]]:
    """Attribute words by slot: their `ATTRIBUTE_OF` class (colour, size) or "other"."""
    out: dict[str, set[str]] = {}
    for w in attrs:
        out.setdefault(ATTRIBUTE_OF.get(w, "other"), set()).add(w)
    return {k: frozenset(v) for k, v in out.items()}


def _contradict(a: frozenset[str], b: frozenset[str]) -> bool:
    """True if some slot is named in both runs with different words ("red" / "blue"; not
    "blue" / "large", which a caption that names only some attributes may make true both
    ways)."""
    sa, sb = _slots(a), _slots(b)
    return any(sa[k] != sb[k] for k in sa.keys() & sb.keys())


def _ordered(words: list[re.Match], p: _Pair, q: _Pair) -> bool:
    """True if a word between phrases `p` and `q` orders them (not only `_UNORDERED`)."""
    return any(words[j].group().lower() not in _UNORDERED for j in range(p.noun + 1, q.start))


def _caps(word: str) -> bool:
    return len(word) > 1 and word[:2].isupper()


def _recase(new: str, old: str) -> str:
    """`new` with its first letter in the case of `old`'s first letter (all-caps words of
    more than one letter keep their case, and pass none on)."""
    if not new or not old or _caps(new) or _caps(old):
        return new
    return (new[0].upper() if old[0].isupper() else new[0].lower()) + new[1:]


def _article(old: str, next_word: str) -> str:
    want = "an" if next_word[:1].lower() in "aeiou" else "a"
    if _caps(old) or (old.isupper() and _caps(next_word)):
        return want.upper()
    return _recase(want, old)


def swap_hard_negative(caption: str) -> str | None:
    """The caption with two attribute runs or two nouns swapped, or None (module docstring).

    Args:
      caption: a caption, any casing and punctuation (NFKC-normalised first if not ASCII).

    Returns:
      The hard negative (differs from `caption`), or None when the caption has no two
      adjective-noun pairs that can be swapped into a different, non-paraphrase caption.
    """
    if not caption.isascii():
        caption = unicodedata.normalize("NFKC", caption)
    words = list(_WORD_RE.finditer(caption))
    pairs = _pairs(words, caption)
    choice = None
    for a in range(len(pairs)):  # 1 and 2a: the runs differ
        for b in range(a + 1, len(pairs)):
            p, q = pairs[a], pairs[b]
            if not _contradict(p.attrs, q.attrs):
                continue
            same_noun = words[p.noun].group().lower() == words[q.noun].group().lower()
            if not same_noun or _ordered(words, p, q):
                choice = ("attrs", p, q)
                break
        if choice:
            break
    if choice is None:  # 2b: equal runs, different nouns
        for a in range(len(pairs)):
            for b in range(a + 1, len(pairs)):
                p, q = pairs[a], pairs[b]
                if (
                    p.attrs == q.attrs
                    and _ordered(words, p, q)
                    and words[p.noun].group().lower() != words[q.noun].group().lower()
                ):
                    choice = ("nouns", p, q)
                    break
            if choice:
                break
    if choice is None:
        return None
    kind, p, q = choice
    if kind == "nouns":
        pn, qn = words[p.noun].group(), words[q.noun].group()
        spans = [(words[p.noun].span(), _recase(qn, pn)), (words[q.noun].span(), _recase(pn, qn))]
    else:
        run = lambda r: (words[r.start].start(), words[r.noun - 1].end())
        (ps, pe), (qs, qe) = run(p), run(q)
        p_text, q_text = caption[ps:pe], caption[qs:qe]
        spans = [((ps, pe), _recase(q_text, p_text)), ((qs, qe), _recase(p_text, q_text))]
        for r, new in ((p, q_text), (q, p_text)):
            if r.start > 0:
                art = words[r.start - 1]
                if art.group().lower() in _ARTICLES and _NOUN_SEP_RE.fullmatch(
                    caption[art.end() : words[r.start].start()]
                ):
                    spans.append((art.span(), _article(art.group(), new)))
    spans.sort()
    out, pos = [], 0
    for (s, e), new in spans:
        out.append(caption[pos:s])
        out.append(new)
        pos = e
    out.append(caption[pos:])
    swapped = "".join(out)
    return None if swapped == caption else swapped


def swap_counts(captions: Iterable[str]) -> tuple[int, int]:
    """(captions swapped, captions seen): the coverage of `swap_hard_negative`."""
    seen = swapped = 0
    for c in captions:
        seen += 1
        swapped += swap_hard_negative(c) is not None
    return swapped, seen
