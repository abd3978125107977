"""Find personal data and secrets in a text, offline: Presidio's pattern recognizers and the
secret formats of ``secrets.toml``.

* **Personal data**: Presidio's ``EmailRecognizer`` (its domain check with ``tldextract``'s
  bundled public-suffix snapshot: nothing is fetched), ``PhoneRecognizer`` (``phonenumbers``,
  the regions of ``privacy.phone_regions``), ``CreditCardRecognizer`` (Luhn), ``IbanRecognizer``
  (mod-97), ``IpRecognizer``, ``UrlRecognizer``, in an ``AnalyzerEngine`` built with an explicit
  ``RecognizerRegistry`` and :class:`NoModelNlpEngine`: no spaCy model is loaded or downloaded.
* **Secrets**: ``secrets.toml`` (gitleaks' formats): a rule's regex runs only when one of its
  keywords is in the lower-cased text; a match counts when its secret part reaches the rule's
  entropy.

Fails closed: a regex that runs past ``timeout_s`` (Presidio skips such a pattern and logs a
warning, ours raise) makes :meth:`Detector.find` raise :class:`DetectTimeout`, so the caller
quarantines the row instead of passing it on unchecked.

Overlapping findings merge into one span with the type that ranks first in :data:`ENTITIES`
(a password inside a URL is a SECRET; the URL around it goes too).
"""

from __future__ import annotations

import functools
import logging
import math
import re
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from importlib import resources

# entity types, in the order that wins when two findings overlap; lower-case in the config
ENTITIES = ("SECRET", "IBAN", "CREDIT_CARD", "EMAIL", "IP", "PHONE", "URL")
_PRESIDIO_TYPES = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD",
                   "IBAN_CODE": "IBAN", "IP_ADDRESS": "IP", "URL": "URL"}
DEFAULT_REGIONS = ("US", "GB", "DE", "FR", "IN")
MIN_PHONE_DIGITS = 7

# A Presidio recognizer runs on a text only when the text can hold what it looks for: a check that
# every match of its patterns implies (never the other way round, so it never skips a finding;
# ``tests/test_privacy.py`` compares both ways on crafted and real texts).  Phone numbers are most
# of the cost (``phonenumbers`` parses every run of digits once per region).
# phonenumbers' matcher (Python ``re``, IGNORECASE): digit blocks joined by punctuation and spaces,
# an optional extension whose labels use only these letters ("ext", "extensión", "anexo", "int",
# "x", "доб" and full-width forms; 'ー' is a dash).  A letter outside them cannot be in a match, so a number
# with MIN_PHONE_DIGITS digits lies in one run of non-letters, digits and label letters holding
# that many digits (shorter ones are dropped in ``Detector.find`` anyway).
_LABEL_LETTERS = "aeinostx\u00f3\u30fc\uff45\uff58\uff54\uff4e\uff49\u0434\u043e\u0431"  # + the dash-like 'ー' (Lm)
_BREAK = re.compile(f"(?:(?![{_LABEL_LETTERS}])[^\\W\\d_])+", re.IGNORECASE)  # letters that cannot be in a match
_NOT_DIGIT_OR_BREAK = re.compile(r"[^\d\x00]+")
_DIGIT = re.compile(r"\d")
_DIGITS_IN_ONE_RUN = re.compile(r"\d{%d}" % MIN_PHONE_DIGITS)


def _may_hold_phone(text: str) -> bool:
    """MIN_PHONE_DIGITS digits with no letter between them but label letters (linear time: the
    breaking letters become NUL, everything else but digits goes, then one run of digits); then
    a candidate of phonenumbers' own matcher pattern holding that many (:func:`_phone_candidate`)."""
    if len(_DIGIT.findall(text)) < MIN_PHONE_DIGITS:
        return False
    compact = _NOT_DIGIT_OR_BREAK.sub("", _BREAK.sub("\x00", text.replace("\x00", "")))
    return _DIGITS_IN_ONE_RUN.search(compact) is not None and _phone_candidate(text)


def _phone_candidate(text: str) -> bool:
    """Whether a match of phonenumbers' candidate pattern (``phonenumbermatcher._PATTERN``),
    starting at ANY position, holds MIN_PHONE_DIGITS digits.  Its matcher only ever looks at the
    match of that pattern at some position (``_PATTERN.search(text, index)``, each ``index`` an
    earlier candidate's start plus its trimmed length) and returns a part of it, so a number of
    that many digits implies such a match.  Digits joined by what the pattern does not allow
    between blocks ("3 + 4 = 7, 12 * 5 = 60": '+' only leads, '=' and '*' never) make no
    candidate, where the run check above lets them through."""
    pattern = _phone_pattern()
    if pattern is None:  # a phonenumbers without the private pattern: run the recognizer
        return True
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        if sum(c.isdigit() for c in m.group()) >= MIN_PHONE_DIGITS:
            return True
        pos = m.start() + 1  # every start: the matcher may begin inside an earlier candidate
    return False


@functools.cache
def _phone_pattern():
    """phonenumbers' candidate pattern, imported on first use (None where it has none)."""
    try:
        from phonenumbers.phonenumbermatcher import _PATTERN
    except ImportError:
        return None
    return _PATTERN


def _may_hold() -> dict:
    """Presidio entity type -> ``check(text)``, true whenever the recognizer could match."""
    import regex  # Presidio's pattern engine: the same \d and classes as its patterns

    card = regex.compile(r"\d(?:[- ]?\d){11}")  # every card pattern: 12+ digits, one space or dash between
    iban = regex.compile(r"[A-Z]{2}[0-9]{2}", regex.IGNORECASE)  # its pattern starts so (case-sensitive)
    dotted = regex.compile(r"[0-9]\.[0-9]")  # IPv4 octets; every IPv6 pattern has a ':'
    # every URL pattern holds "[a-z0-9.\-]{1,253}[.](?:com|...)": a host character, a dot, a TLD
    # (each begins with a letter), case-insensitive
    url = regex.compile(r"(?i)[a-z0-9.\-][.][a-z]")
    return {"EMAIL_ADDRESS": lambda t: "@" in t,  # the pattern's literal [@]
            "URL": lambda t: url.search(t) is not None,
            "CREDIT_CARD": lambda t: card.search(t) is not None,
            "IBAN_CODE": lambda t: iban.search(t) is not None,
            "IP_ADDRESS": lambda t: ":" in t or dotted.search(t) is not None,
            "PHONE_NUMBER": _may_hold_phone}


class DetectTimeout(Exception):
    """A detector did not finish on a text within ``timeout_s``: the text is not known to be clean."""


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    type: str  # one of ENTITIES


@dataclass(frozen=True)
class SecretRule:
    id: str
    regex: object  # compiled ``regex`` pattern
    keywords: tuple[str, ...]
    group: int = 0
    entropy: float = 0.0


def entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def load_rules() -> list[SecretRule]:
    import regex

    data = tomllib.loads(resources.files("selectllm.privacy").joinpath("secrets.toml").read_text("utf-8"))
    return [SecretRule(r["id"], regex.compile(r["regex"]), tuple(k.lower() for k in r["keywords"]),
                       int(r.get("group", 0)), float(r.get("entropy", 0.0))) for r in data["rules"]]


def _import_presidio():
    """presidio_analyzer without torch and transformers: its package imports them when they are
    installed (for NER engines not used here), 5-15 s per process.  They are hidden only while
    presidio is imported, and only when this process has not imported them already."""
    hidden = [m for m in ("torch", "transformers") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # import fails -> presidio skips them
    try:
        import presidio_analyzer
        from presidio_analyzer import predefined_recognizers
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
    return presidio_analyzer, predefined_recognizers


class _TimeoutWatch(logging.Handler):
    """Presidio logs a regex that timed out and goes on without it: count those warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "timed out" in record.getMessage():
            self.count += 1


def _presidio_engine(entities: set[str], regions: tuple[str, ...], timeout_s: float):
    presidio, P = _import_presidio()
    from presidio_analyzer import pattern_recognizer
    from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
    from presidio_analyzer.predefined_recognizers.generic import iban_recognizer

    # the regex timeout Presidio passes to every pattern (a module constant read at each call)
    pattern_recognizer.REGEX_TIMEOUT_SECONDS = timeout_s
    iban_recognizer.REGEX_TIMEOUT_SECONDS = timeout_s

    import tldextract

    offline_tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)  # the bundled snapshot

    class OfflineEmailRecognizer(P.EmailRecognizer):
        def validate_result(self, pattern_text: str):  # noqa: D102 - Presidio's hook
            return offline_tld(pattern_text.rsplit("@", 1)[-1]).fqdn != ""

    class NoModelNlpEngine(NlpEngine):
        """An NLP engine without a trained model: no tokens, no NER (the pattern recognizers need
        none; context words are not used)."""

        def load(self) -> None:
            pass

        def is_loaded(self) -> bool:
            return True

        def process_text(self, text: str, language: str) -> NlpArtifacts:
            return NlpArtifacts(entities=[], tokens=[], tokens_indices=[], lemmas=[], nlp_engine=self,
                                language=language)

        def process_batch(self, texts, language, batch_size=1, n_process=1, **kwargs):
            for t in texts:
                yield t, self.process_text(t, language)

        def is_stopword(self, word: str, language: str) -> bool:
            return False

        def is_punct(self, word: str, language: str) -> bool:
            return False

        def get_supported_entities(self) -> list[str]:
            return []

        def get_supported_languages(self) -> list[str]:
            return ["en"]

    # Presidio's card pattern predates Mastercard's 2221-2720 range, 15-digit JCB (2131, 1800) and
    # 19-digit Visa/Maestro, 12-digit Maestro: added, still checked by its Luhn validation
    cards = [*P.CreditCardRecognizer.PATTERNS, presidio.Pattern(
        "Mastercard 2-series, JCB 15", r"\b(?:(?:222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720)[- ]?\d{4}[- ]?\d{4}"
        r"[- ]?\d{4}|(?:2131|1800)[- ]?\d{4}[- ]?\d{4}[- ]?\d{3})\b", 0.3), presidio.Pattern(
        "19 and 12 digits", r"\b(?:(?:4\d{3}|5[0678]\d\d|6\d{3})(?:[- ]?\d{4}){3}[- ]?\d{3}|(?:5[0678]|6\d)\d{10})\b", 0.3)]
    makers = {"EMAIL": OfflineEmailRecognizer, "PHONE": lambda: P.PhoneRecognizer(supported_regions=regions),
              "CREDIT_CARD": lambda: P.CreditCardRecognizer(patterns=cards), "IBAN": P.IbanRecognizer, "IP": P.IpRecognizer,
              "URL": P.UrlRecognizer}
    recognizers = [make() for name, make in makers.items() if name in entities]
    if not recognizers:
        return None, []
    registry = presidio.RecognizerRegistry(recognizers=recognizers)
    engine = presidio.AnalyzerEngine(registry=registry, nlp_engine=NoModelNlpEngine(), supported_languages=["en"])
    wanted = [k for k, v in _PRESIDIO_TYPES.items() if v in entities]
    return engine, wanted


class Detector:
    """The detectors of some entity types (``ENTITIES``, any case).  Build one per process
    (:func:`selectllm.privacy.redact.redactor` keeps one per Python worker)."""

    def __init__(self, entities=ENTITIES, regions=DEFAULT_REGIONS, timeout_s: float = 5.0):
        self.entities = {e.upper() for e in entities}
        unknown = self.entities - set(ENTITIES)
        if unknown:
            raise ValueError(f"unknown privacy entities: {', '.join(sorted(unknown))}")
        self.timeout_s = float(timeout_s)
        self.rules = load_rules() if "SECRET" in self.entities else []
        self.presidio, self._presidio_types = _presidio_engine(self.entities, tuple(regions), self.timeout_s)
        self._checks = _may_hold()
        self._watch = _TimeoutWatch()
        logging.getLogger("presidio-analyzer").addHandler(self._watch)
        logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)

    def find(self, text: str) -> list[Span]:
        """Non-overlapping spans of ``text``, sorted; raises :class:`DetectTimeout`."""
        if not text:
            return []
        spans = self._secrets(text)
        wanted = [e for e in self._presidio_types if e not in self._checks or self._checks[e](text)] \
            if self.presidio is not None else []
        if wanted:  # (an empty list would mean "every entity" to Presidio)
            before = self._watch.count
            for r in self.presidio.analyze(text, language="en", entities=wanted):
                kind = _PRESIDIO_TYPES[r.entity_type]
                end = r.end
                if kind == "URL":
                    end = _url_end(text, r.end)
                    if not _is_address(text[r.start:end]):
                        continue
                elif kind == "IP" and not _is_ip(text[r.start:end]):
                    continue
                elif kind == "PHONE" and sum(c.isdigit() for c in text[r.start:end]) < MIN_PHONE_DIGITS:
                    continue  # a short code or a count ("followed 1694 zebrafish"), not a subscriber's number
                spans.append(Span(r.start, end, kind))
            if self._watch.count != before:
                raise DetectTimeout(f"a personal-data pattern ran past {self.timeout_s} s")
        return merge(spans)

    def _secrets(self, text: str) -> list[Span]:
        if not self.rules:
            return []
        low = text.lower()
        spans = []
        for rule in self.rules:
            if not any(k in low for k in rule.keywords):
                continue
            try:
                for m in rule.regex.finditer(text, timeout=self.timeout_s):
                    value = m.group(rule.group)
                    if value and entropy(value) >= rule.entropy:
                        spans.append(Span(m.start(rule.group), m.end(rule.group), "SECRET"))
            except TimeoutError:
                raise DetectTimeout(f"secret rule {rule.id} ran past {self.timeout_s} s") from None
        return spans


_URL_REST = re.compile(r"[^\s<>\"'`]*")


def _url_end(text: str, end: int) -> int:
    """Presidio's URL pattern can stop inside a word (its TLD list matches ``.bi`` of ``.biz``):
    a URL goes on to the next space or quote, less trailing punctuation."""
    rest = _URL_REST.match(text, end).group(0).rstrip(".,;:!?)]}")
    return end + len(rest)


def _is_ip(value: str) -> bool:
    """An address that parses, and for IPv6 one with two groups or more: Presidio's IPv6 pattern
    takes the ``::`` of Python slices and C++ scopes (``arg[::-1]``, ``Law : Justice ::``)."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    return ip.version == 4 or sum(1 for g in value.split(":") if g) >= 2


def _is_address(url: str) -> bool:
    """A URL with a scheme, a ``www.`` or a path: a bare ``name.tld`` is mostly code in
    instruction logs (``System.out``, ``numbers.size``, ``config.py``), rarely personal."""
    low = url.lower()
    return "://" in low or low.startswith("www.") or "/" in low


_RANK = {t: i for i, t in enumerate(ENTITIES)}


def merge(spans: list[Span]) -> list[Span]:
    """Overlapping spans become one covering them all, typed by the highest-ranked of them."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, -s.end)):
        if out and s.start < out[-1].end:
            last = out[-1]
            kind = min(last.type, s.type, key=_RANK.__getitem__)
            out[-1] = Span(last.start, max(last.end, s.end), kind)
        else:
            out.append(s)
    return out
