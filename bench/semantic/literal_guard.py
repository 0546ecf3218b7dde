"""Literal guard, reference implementation: may a semantic-cache candidate answer this request?

Two texts whose embeddings are close can still ask different things ("90 bpm" / "120 bpm").
`guard_allows(a, b)` is True only when both texts carry the same literals. The rule is specified
in bench/semantic/README.md ("Literal guard"); this module is its executable form, and
guard_cases.jsonl holds the golden cases a Rust implementation must reproduce. Stdlib only.

Extraction runs in a fixed order on a normalised copy of the text; each step blanks out (masks)
what it took, so later steps never see it again:

1. code spans  (```fenced``` then `inline`)  exact
2. URLs        (scheme:// or www.)           exact, trailing punctuation dropped
3. quoted      ("…", '…')                    exact content
4. path-like tokens (with / \\ _ @ or a dot before a letter)   exact
5. numbers with their unit (digits, or number words)           normalised
6. musical keys, notes and chords                              normalised
7. words that mix letters and digits (mp3, TR-808)             case-folded
8. negations   (not, no, never, n't, without, …)               counted

The literals of 1–8 must be equal as multisets. Separately, every name (a word with a capital
letter that does not start a sentence: Ableton, WAV, Spanish) of one text must occur,
case-folded, among the words of the other.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

Literal = tuple[str, str]  # (class, normalised value)

# Canonical unit for each spelling (compared case-folded). One-letter spellings count only when
# attached to the number ("5s", "10k", "2x"): spaced, they are too often ordinary words.
_UNIT_GROUPS: dict[str, tuple[str, ...]] = {
    "bpm": ("bpm",),
    "hz": ("hz", "hertz"),
    "khz": ("khz", "kilohertz"),
    "mhz": ("mhz", "megahertz"),
    "ghz": ("ghz", "gigahertz"),
    "db": ("db", "decibel", "decibels"),
    "dbfs": ("dbfs",),
    "dbtp": ("dbtp",),
    "dbu": ("dbu",),
    "lufs": ("lufs",),
    "lu": ("lu",),
    "ms": ("ms", "msec", "millisecond", "milliseconds"),
    "s": ("s", "sec", "secs", "second", "seconds"),
    "min": ("min", "mins", "minute", "minutes"),
    "h": ("h", "hr", "hrs", "hour", "hours"),
    "day": ("day", "days"),
    "week": ("week", "weeks"),
    "month": ("month", "months"),
    "year": ("year", "years"),
    "bit": ("bit", "bits"),
    "kbps": ("kbps",),
    "mbps": ("mbps",),
    "byte": ("byte", "bytes"),
    "kb": ("kb", "kilobyte", "kilobytes"),
    "mb": ("mb", "megabyte", "megabytes"),
    "gb": ("gb", "gigabyte", "gigabytes"),
    "tb": ("tb", "terabyte", "terabytes"),
    "%": ("%", "percent", "pct"),
    "bar": ("bar", "bars"),
    "beat": ("beat", "beats"),
    "step": ("step", "steps"),
    "semitone": ("semitone", "semitones"),
    "cent": ("cent", "cents"),
    "octave": ("octave", "octaves"),
    "sample": ("sample", "samples"),
    "channel": ("channel", "channels"),
    "voice": ("voice", "voices"),
    "ppq": ("ppq",),
    "x": ("x", "×"),
    "k": ("k",),
    "mm": ("mm", "millimetre", "millimetres", "millimeter", "millimeters"),
    "cm": ("cm", "centimetre", "centimetres", "centimeter", "centimeters"),
    "m": ("m", "metre", "metres", "meter", "meters"),
    "km": ("km", "kilometre", "kilometres", "kilometer", "kilometers"),
    "mile": ("mile", "miles", "mi"),
    "inch": ("inch", "inches"),
    "ft": ("ft", "foot", "feet"),
    "g": ("g", "gram", "grams"),
    "kg": ("kg", "kilogram", "kilograms", "kilo", "kilos"),
    "lb": ("lb", "lbs", "pound", "pounds"),
    "oz": ("oz", "ounce", "ounces"),
    "°c": ("°c", "c", "celsius"),
    "°f": ("°f", "f", "fahrenheit"),
    "kelvin": ("kelvin",),
    "kcal": ("kcal", "calorie", "calories", "cal"),
    "v": ("v", "volt", "volts"),
    "w": ("w", "watt", "watts"),
    "ohm": ("ohm", "ohms", "ω"),
    "mah": ("mah",),
    "px": ("px", "pixel", "pixels"),
    "dpi": ("dpi",),
    "fps": ("fps",),
    "rpm": ("rpm",),
}
UNITS: dict[str, str] = {alias: canon for canon, aliases in _UNIT_GROUPS.items() for alias in aliases}
_SPACED_UNITS = sorted((u for u in UNITS if len(u) > 1), key=len, reverse=True)

# Cardinal number words. "one" is left out on purpose: "which one", "this one" are pronouns.
NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000, "million": 1000000,
}
_ONES = {"one": 1, **{w: n for w, n in NUMBER_WORDS.items() if 2 <= n <= 9}}
_TENS = {w: n for w, n in NUMBER_WORDS.items() if n in (20, 30, 40, 50, 60, 70, 80, 90)}

NEGATIONS = frozenset(
    "not no never none nothing nobody nowhere neither nor without cannot".split()
)
# Path-like tokens that are ordinary English.
PATHLIKE_STOPLIST = frozenset({"and/or", "w/", "w/o", "either/or", "e.g", "i.e", "a.k.a", "etc", "vs"})
# Words that start with a capital but are not names.
NOT_NAMES = frozenset({"I", "I'm", "I've", "I'd", "I'll"})

MODES = ("major", "minor", "maj", "min", "ionian", "dorian", "phrygian", "lydian", "mixolydian", "aeolian", "locrian")
# Longest first: the regex takes the first alternative that ends the word.
ATTACHED_QUALITIES = (
    "maj7", "maj9", "maj", "min7", "min", "m7b5", "mM7", "m7", "m9", "m6", "dim7", "dim", "aug",
    "sus2", "sus4", "add9", "11", "13", "7", "9", "6", "m", "M",
)
# A bare note letter ("in C") is a note only after one of these words.
NOTE_CONTEXT = frozenset({"in", "of", "to", "from", "key", "note", "notes", "chord", "chords", "root", "scale"})

_FENCED = re.compile(r"```(.*?)```", re.S)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_URL = re.compile(r"(?i)\b(?:[a-z][a-z0-9+.\-]*://|www\.)[^\s<>\"'`]+")
_URL_TRAIL = ".,;:!?)]}"
_DQUOTE = re.compile(r'"([^"\n]{1,200})"')
_SQUOTE = re.compile(r"(?<!\w)'([^'\n]{1,200}?)'(?!\w)")
_TOKEN = re.compile(r"\S+")
_TOKEN_STRIP = ".,;:!?()[]{}<>\"'"
_NUMERIC_SLASHES = re.compile(r"^[-+]?[\d.,]+(?:[/:][\d.,]+)+$")
_NUMBER = re.compile(
    r"(?<![\w.])(?<![A-Za-z]-)(?P<cur>[$€£¥])?(?P<sign>[-+])?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)*)"
    r"(?P<join>(?:[/:×x]\d+(?:\.\d+)?)*)(?P<suffix>[A-Za-z°%Ω]+)?(?![\w])"
)
_SPACED_UNIT = re.compile(
    r"(?:\s+|-)(?P<unit>" + "|".join(re.escape(u) for u in _SPACED_UNITS) + r")(?![\w])|(?P<pct>\s*%)",
    re.I,
)
_WORD_NUMBER = re.compile(
    r"(?i)(?<![\w-])(?:(?P<tens>" + "|".join(_TENS) + r")-(?P<ones>" + "|".join(_ONES) + r")|(?P<word>"
    + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r"))(?![\w-])"
)
_NOTE = re.compile(
    r"(?<![\w#♯♭°])(?P<letter>[A-G])(?P<acc>#|♯|b|♭)?(?:[\s-](?P<accword>(?i:sharp|flat))(?![\w]))?"
    r"(?:\s+(?P<mode>(?i:" + "|".join(MODES) + r"))(?![\w])|(?P<qual>" + "|".join(re.escape(q) for q in ATTACHED_QUALITIES) + r"))?"
    r"(?![\w#♯♭])",
)
_ALNUM_ID = re.compile(r"(?<![\w-])[A-Za-z][\w-]*\d[\w-]*")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*")
_SENTENCE_START = re.compile(r"(?:^\s*|[.!?:;\n]\s*|[\"'(\[]\s*)$")


def normalise(text: str) -> str:
    """NFKC, straight quotes, ASCII minus: spellings that should not make literals differ."""
    text = unicodedata.normalize("NFKC", text)
    return (
        text.replace("\u2018", "'").replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
        .replace("\u2212", "-")
    )


def _mask(text: str, span: tuple[int, int]) -> str:
    start, end = span
    return text[:start] + " " * (end - start) + text[end:]


def _take(pattern: re.Pattern, text: str, cls: str, value, whole: bool = True) -> tuple[list[Literal], str]:
    """Collects `value(match)` for each match of `pattern` (None skips it) and masks what it took:
    the whole match, or (whole=False) only the value's length from its start (a URL's trailing
    full stop stays, so the next word still starts a sentence)."""
    found: list[Literal] = []
    for m in list(pattern.finditer(text)):
        v = value(m)
        if v is None:
            continue
        found.append((cls, v))
        text = _mask(text, m.span() if whole else (m.start(), m.start() + len(v)))
    return found, text


def _number_value(m: re.Match, text: str) -> tuple[str, int] | None:
    """The normalised literal of a number match and where it ends (after a spaced unit)."""
    sign = "-" if m.group("sign") == "-" else ""
    value = (m.group("cur") or "") + sign + m.group("num").replace(",", "") + m.group("join")
    end = m.end()
    suffix = m.group("suffix")
    if suffix:
        low = suffix.lower()
        if low in UNITS and low != "s":
            return f"{value} {UNITS[low]}", end
        # Ordinals ("2nd") and anything else ("808s", "90s": plural, not seconds) are kept as
        # written, case-folded.
        return value + low, end
    unit = _SPACED_UNIT.match(text, end)
    if unit:
        canon = "%" if unit.group("pct") else UNITS[unit.group("unit").lower()]
        return f"{value} {canon}", unit.end()
    return value, end


def _numbers(text: str) -> tuple[list[Literal], str]:
    found: list[Literal] = []
    for m in list(_NUMBER.finditer(text)):
        value, end = _number_value(m, text)
        found.append(("number", value))
        text = _mask(text, (m.start(), end))
    for m in list(_WORD_NUMBER.finditer(text)):
        if m.group("word"):
            n = NUMBER_WORDS[m.group("word").lower()]
        else:
            n = _TENS[m.group("tens").lower()] + _ONES[m.group("ones").lower()]
        unit = _SPACED_UNIT.match(text, m.end())
        if unit:
            canon = "%" if unit.group("pct") else UNITS[unit.group("unit").lower()]
            found.append(("number", f"{n} {canon}"))
            text = _mask(text, (m.start(), unit.end()))
        else:
            found.append(("number", str(n)))
            text = _mask(text, m.span())
    return found, text


def _notes(text: str) -> tuple[list[Literal], str]:
    found: list[Literal] = []
    for m in list(_NOTE.finditer(text)):
        acc = m.group("acc") or ""
        accword = m.group("accword")
        mode, qual = m.group("mode"), m.group("qual")
        if not (acc or accword or mode or qual):
            before = re.findall(r"[A-Za-z]+", text[: m.start()][-20:])
            if not before or before[-1].lower() not in NOTE_CONTEXT:
                continue
        if qual == "m" and re.match(r"\s+I(?![\w])", text[m.end():]):
            continue  # "Am I clipping?" is a question, not A minor
        acc = {"♯": "#", "♭": "b"}.get(acc, acc) or {"sharp": "#", "flat": "b"}.get((accword or "").lower(), "")
        if mode:
            low = mode.lower()
            quality = {"maj": "major", "min": "minor"}.get(low, low)
        elif qual in (None, "M", "maj"):
            quality = "major"
        elif qual in ("m", "min"):
            quality = "minor"
        else:
            quality = qual
        found.append(("note", f"{m.group('letter')}{acc} {quality}"))
        text = _mask(text, m.span())
    return found, text


def _pathlike(text: str) -> tuple[list[Literal], str]:
    found: list[Literal] = []
    for m in list(_TOKEN.finditer(text)):
        raw = m.group()
        tok = raw.strip(_TOKEN_STRIP)
        if not tok or tok.lower() in PATHLIKE_STOPLIST or _NUMERIC_SLASHES.match(tok):
            continue
        if (
            re.search(r"\w@\w", tok)
            or "/" in tok
            or "\\" in tok
            or re.search(r"[A-Za-z0-9]_|_[A-Za-z0-9]", tok)
            or re.search(r"\w\.[A-Za-z]", tok)
        ):
            found.append(("path", tok))
            lead = len(raw) - len(raw.lstrip(_TOKEN_STRIP))
            text = _mask(text, (m.start() + lead, m.start() + lead + len(tok)))
    return found, text


def _negations(text: str) -> list[Literal]:
    words = re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower())
    return [("negation", "") for w in words if w in NEGATIONS or w.endswith("n't")]


def extract(text: str) -> tuple[Counter, str]:
    """The literal multiset of `text` and the text left after masking them (for names)."""
    t = normalise(text)
    lits: list[Literal] = []
    for cls, pattern in (("code", _FENCED), ("code", _INLINE_CODE)):
        got, t = _take(pattern, t, cls, lambda m: m.group(1).strip() or None)
        lits += got
    got, t = _take(_URL, t, "url", lambda m: m.group().rstrip(_URL_TRAIL), whole=False)
    lits += got
    for pattern in (_DQUOTE, _SQUOTE):
        got, t = _take(pattern, t, "quote", lambda m: m.group(1))
        lits += got
    got, t = _pathlike(t)
    lits += got
    got, t = _numbers(t)
    lits += got
    got, t = _notes(t)
    lits += got
    got, t = _take(_ALNUM_ID, t, "id", lambda m: m.group().strip("-").lower())
    lits += got
    lits += _negations(t)
    return Counter(lits), t


def names(text: str) -> set[str]:
    """Case-folded names in `text`: words with a capital letter that do not start a sentence.

    Runs on the masked text, so quoted strings, URLs and code are not names twice."""
    _, masked = extract(text)
    out = set()
    for m in _WORD.finditer(masked):
        w = re.sub(r"'s$", "", m.group().strip("'-"))
        if not w or w in NOT_NAMES or not any(c.isupper() for c in w):
            continue
        if _SENTENCE_START.search(masked[: m.start()]):
            continue
        out.add(w.lower())
    return out


def words(text: str) -> set[str]:
    """Every word of `text`, case-folded, possessive 's dropped (what names are looked up in)."""
    return {re.sub(r"'s$", "", w.strip("'-")).lower() for w in _WORD.findall(normalise(text))}


def literals(text: str) -> list[Literal]:
    """The literal multiset of `text` as a sorted list (for reports and golden cases)."""
    return sorted(extract(text)[0].elements())


def guard_allows(a: str, b: str) -> bool:
    """True when `a` and `b` carry the same literals, so one's cached answer may serve the other."""
    la, lb = extract(a)[0], extract(b)[0]
    if la != lb:
        return False
    return names(a) <= words(b) and names(b) <= words(a)


def guard_reason(a: str, b: str) -> str:
    """Why the guard refuses (empty when it allows): the first differing literals or names."""
    la, lb = extract(a)[0], extract(b)[0]
    if la != lb:
        only_a, only_b = sorted((la - lb).elements()), sorted((lb - la).elements())
        return f"literals differ: a has {only_a}, b has {only_b}"
    missing = sorted((names(a) - words(b)) | (names(b) - words(a)))
    return f"names not in the other text: {missing}" if missing else ""
