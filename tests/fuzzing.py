"""Hypothesis strategies for the fuzz harness, shared by its unit part (the parsers alone,
`tests/unit/test_fuzz_parsers.py`) and its integration part (real jobs and reviews,
`tests/integration/test_fuzz.py`). `make fuzz` sets LABELFABRIC_FUZZ_EXAMPLES for longer runs.
"""

from __future__ import annotations

import json
import os

from hypothesis import strategies as st

SCALE = int(os.environ.get("LABELFABRIC_FUZZ_EXAMPLES", "0") or 0)


def examples(default: int) -> int:
    return SCALE or default


# Any code point, surrogates and NUL included: what a hostile file or caller can carry.
ANY_CHAR = st.characters(codec=None, categories=None, min_codepoint=0, max_codepoint=0x10FFFF)
NASTY_TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.sampled_from(["\x00", "\ud800", "a\u0000b", "\ufeff", "\r\n", '"', "\\", " "]),
)


def _json_line(text: str, extra: object) -> bytes:
    # ensure_ascii keeps lone surrogates as \ud800 escapes: valid JSON, invalid Unicode.
    return json.dumps({"text": text, "x": extra}).encode()


LINES = st.lists(
    st.one_of(
        st.builds(
            _json_line,
            NASTY_TEXT,
            st.recursive(
                st.none() | st.integers() | st.floats() | NASTY_TEXT,
                lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NASTY_TEXT, inner),
                max_leaves=6,
            ),
        ),
        st.binary(max_size=60).map(lambda b: b.replace(b"\n", b" ")),
        st.sampled_from([b"", b"{", b"[" * 5000, b'{"text": 1e999}', b'{"text": "\\u0000"}']),
    ),
    min_size=1,
    max_size=30,
)
