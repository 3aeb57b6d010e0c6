"""PII in item texts: found by presidio-analyzer's pattern recognizers, rewritten per consumer.

Role: `detect` finds personal data (emails, phone numbers, cards, IBANs, IPs, URLs, national
ids) with presidio-analyzer's predefined *pattern* recognizers, called directly: regexes plus
the recognizers' own checks (Luhn for cards, mod-97 for IBANs, each national id's checksum,
a public-suffix check for email domains). No AnalyzerEngine, no spaCy model, no network.
`apply` rewrites a text for one consumer in its mode; `PiiSpec` is a task's `pii:` section
(read by `agents/pii_section.py`).

Modes: `redact` (`<EMAIL_ADDRESS>`), `mask` (as many `*` as characters), `hash`
(`<EMAIL_ADDRESS:1a2b3c4d>`: the first 8 hex of HMAC-SHA256 keyed by the task name and its
`salt`, so the same value reads the same within a task; pseudonymous, not anonymous: a short
value such as a phone number can be found again by trying them all), `off` (the text as is).

Invariants:
- A span is (type, start, end, score) over the text's code points; what is stored
  (`redactions`) is {"type", "start", "end"}: never the value. Nothing here logs a value.
- Spans never overlap: overlapping spans of one type merge; across types the higher score
  wins, then the longer span.
- Bounded: a text over MAX_TEXT_CHARS, a recognizer that raises, a regex past its time limit
  (presidio logs it and goes on without that pattern: a silent miss) or a text past
  DETECT_BUDGET_S of CPU raise `PiiError`; `scan` turns that into one UNCHECKED span over the
  whole text: fail closed, every consumer but an `off` one sees none of it. Long texts are
  read in overlapping windows, so no single regex call sees more than WINDOW characters.
  Lone surrogates are read as U+FFFD (same offsets).
- presidio is imported at first use (~1.5 s: it imports spaCy), never when this module is.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.roster import CLEARANCE

MODES = ("redact", "mask", "hash", "off")
CONSUMERS = ("agents", "llm", "reviewers", "exports")
# When a task has `pii:` but leaves a consumer out. Without `pii:` nothing is detected.
DEFAULT_MODES = {"agents": "redact", "llm": "redact", "reviewers": "mask", "exports": "redact"}
# entity -> (presidio recognizer class, lowest score kept). A pattern's score is presidio's
# own; a recognizer whose check validates the match scores it 1.0 and drops it when the
# check fails. Recognizers whose patterns only score high with context words (which need
# the NLP engine) are left out: alone they would redact every long number.
RECOGNIZERS: dict[str, tuple[str, float]] = {
    "EMAIL_ADDRESS": ("EmailRecognizer", 0.5),
    "PHONE_NUMBER": ("PhoneRecognizer", 0.4),
    "CREDIT_CARD": ("CreditCardRecognizer", 0.5),
    "IBAN_CODE": ("IbanRecognizer", 0.5),
    "IP_ADDRESS": ("IpRecognizer", 0.5),
    "URL": ("UrlRecognizer", 0.5),
    "US_SSN": ("UsSsnRecognizer", 0.5),
    "US_ITIN": ("UsItinRecognizer", 0.5),
    "UK_NHS": ("NhsRecognizer", 0.5),
    "UK_NINO": ("UkNinoRecognizer", 0.5),
    "ES_NIF": ("EsNifRecognizer", 0.5),
    "ES_NIE": ("EsNieRecognizer", 0.5),
    "IT_FISCAL_CODE": ("ItFiscalCodeRecognizer", 0.5),
    "IN_AADHAAR": ("InAadhaarRecognizer", 0.5),
    "IN_PAN": ("InPanRecognizer", 0.5),
    "SG_NRIC_FIN": ("SgFinRecognizer", 0.5),
    "AU_TFN": ("AuTfnRecognizer", 0.5),
    "PL_PESEL": ("PlPeselRecognizer", 0.5),
    "FI_PERSONAL_IDENTITY_CODE": ("FiPersonalIdentityCodeRecognizer", 0.5),
    "SE_PERSONNUMMER": ("SePersonnummerRecognizer", 0.5),
    "KR_RRN": ("KrRrnRecognizer", 0.5),
}
ENTITIES = tuple(RECOGNIZERS)
DEFAULT_ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "URL",
    "US_SSN",
)
UNCHECKED = "UNCHECKED"  # a text detection could not finish: all of it is withheld
MAX_TEXT_CHARS = 200_000  # a task with `pii:` may not accept longer texts (`max_chars`)
WINDOW = 4_096  # characters one recognizer call reads at most
OVERLAP = 256  # windows overlap this much: an entity up to this long is seen whole
REGEX_TIMEOUT_S = 0.5  # per presidio regex call, wall clock (presidio's own default: 60 s)
DETECT_BUDGET_S = 2.0  # CPU seconds per text, all recognizers and windows together
# Built once: every pattern compiled, phone metadata and the suffix list loaded, so no first
# call is slow for reasons of its own.
_WARM_UP = "warm up: a@example.com (415) 555-2671 192.168.0.1 https://example.com 536-22-8726"
_SURROGATE = re.compile("[\ud800-\udfff]")
_BASE_LEVEL = "normal"

log = logging.getLogger(__name__)


class PiiError(ValueError):
    """Detection could not finish on a text; the message names why, never the text."""


@dataclass(frozen=True, slots=True)
class Span:
    type: str
    start: int
    end: int
    score: float = 1.0


@dataclass(frozen=True, kw_only=True)
class PiiSpec:
    """A task's `pii:` section."""

    entities: tuple[str, ...] = DEFAULT_ENTITIES
    modes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MODES))
    sensitivity: Mapping[str, str] = field(default_factory=dict)  # entity -> clearance level
    min_score: Mapping[str, float] = field(default_factory=dict)  # entity -> lowest kept
    task: str = ""
    salt: str = ""

    def mode(self, consumer: str) -> str:
        return self.modes.get(consumer, DEFAULT_MODES[consumer])

    @property
    def key(self) -> bytes:
        return f"labelfabric-pii\x00{self.task}\x00{self.salt}".encode()


# --- detection -----------------------------------------------------------------------------

_built: dict[str, Any] = {}
_build_lock = threading.Lock()
_seen = threading.local()  # .timed_out: a presidio regex timed out on this thread
_PRESIDIO_LOG = "presidio-analyzer"


class _Timeouts(logging.Filter):
    """Presidio logs each regex past its limit (with a traceback) and goes on without that
    pattern. This notes it for `detect`, on the thread that ran it, and drops the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "timed out" in str(record.msg):
            _seen.timed_out = True
            return False
        return True


def _timed_out(began: float) -> bool:
    """Whether a presidio regex timed out since `_seen` was reset: as logged, or, when its
    logger is switched off (so the note cannot be taken), whenever the call took as long."""
    logger = logging.getLogger(_PRESIDIO_LOG)
    watching = logger.isEnabledFor(logging.WARNING) and any(
        isinstance(f, _Timeouts) for f in logger.filters
    )
    took = time.monotonic() - began
    return bool(getattr(_seen, "timed_out", False)) or (not watching and took >= REGEX_TIMEOUT_S)


def _recognizer(entity: str) -> Any:
    """The presidio recognizer of `entity`, built once per process (presidio imported here)."""
    with _build_lock:
        if entity in _built:
            return _built[entity]
        from presidio_analyzer import pattern_recognizer, predefined_recognizers
        from tldextract import TLDExtract

        pattern_recognizer.REGEX_TIMEOUT_SECONDS = REGEX_TIMEOUT_S  # type: ignore[assignment]
        presidio_log = logging.getLogger(_PRESIDIO_LOG)
        if not any(isinstance(f, _Timeouts) for f in presidio_log.filters):
            presidio_log.addFilter(_Timeouts())
        cls = getattr(predefined_recognizers, RECOGNIZERS[entity][0])
        if entity == "EMAIL_ADDRESS":
            # presidio checks an email's domain with tldextract's module-level extractor,
            # which downloads the Public Suffix List at first use; this one reads the
            # snapshot bundled in the wheel and never touches the network.
            offline = TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

            class OfflineEmail(cls):  # type: ignore[misc, valid-type]
                def validate_result(self, pattern_text: str) -> bool:
                    return bool(offline(pattern_text).fqdn)

            cls = OfflineEmail
        recognizer = cls()
        recognizer.analyze(_WARM_UP, [entity], None)
        _built[entity] = recognizer
        return recognizer


def detect(
    text: str,
    entities: Sequence[str] = DEFAULT_ENTITIES,
    min_score: Mapping[str, float] | None = None,
) -> list[Span]:
    """The PII spans of `text` (sorted by start, none overlapping); `PiiError` when detection
    cannot finish (see the module's invariants)."""
    if len(text) > MAX_TEXT_CHARS:
        raise PiiError(f"text of {len(text)} characters, over {MAX_TEXT_CHARS} for detection")
    unknown = [e for e in entities if e not in RECOGNIZERS]
    if unknown:
        raise ValueError(f"unknown PII entities {unknown}; known: {', '.join(ENTITIES)}")
    readable = _SURROGATE.sub("\ufffd", text)
    floor = {e: RECOGNIZERS[e][1] for e in entities} | dict(min_score or {})
    started = time.thread_time()  # CPU: a busy worker is no reason to withhold a text
    found: list[Span] = []
    for entity in entities:
        recognizer = _recognizer(entity)
        for offset in _windows(len(readable)):
            window = readable[offset : offset + WINDOW]
            _seen.timed_out = False
            began = time.monotonic()
            try:
                results = recognizer.analyze(window, [entity], None)
            except Exception as err:  # foreign code on hostile text: fail closed, never crash
                raise PiiError(f"{entity} recognizer failed: {type(err).__name__}") from None
            if _timed_out(began):
                raise PiiError(f"a {entity} pattern timed out ({REGEX_TIMEOUT_S:g}s) on a window")
            if time.thread_time() - started > DETECT_BUDGET_S:
                raise PiiError(f"detection took over {DETECT_BUDGET_S:g}s of CPU")
            found += [
                Span(entity, offset + r.start, offset + r.end, float(r.score))
                for r in results
                if r.entity_type == entity and r.score >= floor[entity] and r.end > r.start
            ]
    return resolve(found)


def _windows(length: int) -> range:
    return range(0, max(length - OVERLAP, 1), WINDOW - OVERLAP)


def resolve(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans, sorted by start: overlapping spans of one type merge (the higher
    score); across types the higher score wins, then the longer span, then the earlier."""
    merged: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.type, s.start, s.end)):
        last = merged[-1] if merged else None
        if last is not None and last.type == s.type and s.start < last.end:
            end, score = max(last.end, s.end), max(last.score, s.score)
            merged[-1] = Span(s.type, last.start, end, score)
        else:
            merged.append(s)
    kept: list[Span] = []
    for s in sorted(merged, key=lambda s: (-s.score, s.start - s.end, s.start, s.type)):
        if all(s.end <= k.start or k.end <= s.start for k in kept):
            kept.append(s)
    return sorted(kept, key=lambda s: s.start)


def scan(text: str, spec: PiiSpec) -> list[Span]:
    """`detect` with the task's entities and scores, failing closed: when detection cannot
    finish, one UNCHECKED span covers the whole text."""
    try:
        return detect(text, spec.entities, spec.min_score)
    except PiiError as err:
        log.warning("PII detection failed closed on a text of %d characters: %s", len(text), err)
        return [Span(UNCHECKED, 0, len(text), 1.0)]


# --- rewriting -----------------------------------------------------------------------------


def apply(text: str, spans: Iterable[Span], mode: str, key: bytes = b"") -> str:
    """`text` with each span rewritten in `mode`; spans outside the text are ignored and
    overlapping ones are joined (the earlier's type)."""
    if mode not in MODES:
        raise ValueError(f"unknown PII mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "off":
        return text
    parts: list[str] = []
    pos = 0
    for s in _joined(spans, len(text)):
        parts.append(text[pos : s.start])
        value = text[s.start : s.end]
        if mode == "redact":
            parts.append(f"<{s.type}>")
        elif mode == "mask":
            parts.append("*" * len(value))
        else:
            digest = hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
            parts.append(f"<{s.type}:{digest.hexdigest()[:8]}>")
        pos = s.end
    parts.append(text[pos:])
    return "".join(parts)


def _joined(spans: Iterable[Span], length: int) -> list[Span]:
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, s.end)):
        start, end = max(s.start, 0), min(s.end, length)
        if start >= end:
            continue
        if out and start < out[-1].end:
            last = out[-1]
            out[-1] = Span(last.type, last.start, max(last.end, end), last.score)
        else:
            out.append(Span(s.type, start, end, s.score))
    return out


def view(text: str, spans: Sequence[Span], spec: PiiSpec | None, consumer: str) -> str:
    """What `consumer` reads of `text`: the text itself when the task has no `pii:`."""
    if spec is None:
        return text
    return apply(text, spans, spec.mode(consumer), spec.key)


def views(
    spec: PiiSpec | None, texts: Sequence[str], consumers: Iterable[str]
) -> tuple[list[list[Span]], dict[str, list[str]]]:
    """Each text's spans (detected once) and, per consumer, the texts it reads."""
    wanted = sorted(set(consumers))
    if spec is None:
        return [[] for _ in texts], {c: list(texts) for c in wanted}
    spans = [scan(t, spec) for t in texts]
    return spans, {
        c: [view(t, s, spec, c) for t, s in zip(texts, spans, strict=True)] for c in wanted
    }


def consumer_of(kind: str) -> str:
    """The consumer an agent of `kind` reads as: `llm` for LLM agents, else `agents`."""
    return "llm" if kind == "llm" else "agents"


# --- what is recorded ----------------------------------------------------------------------


def redactions(spans: Iterable[Span]) -> list[dict[str, Any]]:
    """The spans as stored in `item.redactions`: type and offsets, never the value."""
    return [{"type": s.type, "start": s.start, "end": s.end} for s in spans]


def spans_of(stored: object) -> list[Span]:
    """Spans back from `item.redactions` (entries that are not well formed are skipped)."""
    out: list[Span] = []
    for entry in stored if isinstance(stored, list) else []:
        if not isinstance(entry, dict):
            continue
        kind, start, end = entry.get("type"), entry.get("start"), entry.get("end")
        if isinstance(kind, str) and isinstance(start, int) and isinstance(end, int):
            out.append(Span(kind, start, end))
    return out


def counts(spans: Iterable[Span]) -> dict[str, int]:
    """Spans per type: the routing input `item.pii`."""
    out: dict[str, int] = {}
    for s in spans:
        out[s.type] = out.get(s.type, 0) + 1
    return dict(sorted(out.items()))


def sensitivity(spans: Iterable[Span], spec: PiiSpec | None, base: str = _BASE_LEVEL) -> str:
    """The item's sensitivity: the highest of `base` and the levels the task maps its
    detected types to; an UNCHECKED text gets the highest level the task maps anything to."""
    if spec is None or not spec.sensitivity:
        return base
    levels = [base]
    for s in spans:
        if s.type == UNCHECKED:
            levels += list(spec.sensitivity.values())
        elif s.type in spec.sensitivity:
            levels.append(spec.sensitivity[s.type])
    return max(levels, key=lambda lv: CLEARANCE.index(lv) if lv in CLEARANCE else -1)


def mark(text: str, spec: PiiSpec | None) -> tuple[list[dict[str, Any]], str]:
    """(redactions, sensitivity) an item is stored with: nothing and "normal" without `pii:`."""
    if spec is None:
        return [], _BASE_LEVEL
    spans = scan(text, spec)
    return redactions(spans), sensitivity(spans, spec)
