"""Privacy detectors and masking, without Spark: every entity type found in its real format,
typed placeholders numbered within a row, no value kept anywhere, offline, fails closed."""

from __future__ import annotations

import json
import socket

import pytest

from selectllm.privacy.detect import ENTITIES, Detector, entropy, load_rules, merge, Span
from selectllm.privacy.redact import DetectTimeout, Redactor, findings_json, redactor

from helpers import PLANTED, planted_text


@pytest.fixture(scope="module")
def red():
    return redactor(ENTITIES, ("US", "GB", "DE", "FR", "IN"), 5.0)


def test_every_planted_value_is_found_with_its_type(red):
    for kind, values in PLANTED.items():
        for value in values:
            text = f"Please look at this: {value} and tell me what you think."
            spans = red.detector.find(text)
            assert [(text[s.start:s.end], s.type) for s in spans if value in text[s.start:s.end]], (kind, value, spans)
            assert {s.type for s in spans if value in text[s.start:s.end]} == {kind}, (kind, value, spans)


def test_row_masked_with_numbered_placeholders_shared_across_fields(red):
    fields = {"instruction": "Write to ann@example.org and bob@example.net, cc ann@example.org.",
              "input": "Ann's card is 4111 1111 1111 1111; reply to bob@example.net",
              "team": "owner: carol@example.com"}
    masked, found = red.mask_row(fields)
    assert masked["instruction"] == "Write to <EMAIL_1> and <EMAIL_2>, cc <EMAIL_1>."
    assert masked["input"] == "Ann's card is <CREDIT_CARD_1>; reply to <EMAIL_2>"
    assert masked["team"] == "owner: <EMAIL_3>"
    assert dict(found) == {"EMAIL": 3, "CREDIT_CARD": 1}
    assert findings_json(found) == '{"CREDIT_CARD":1,"EMAIL":3}'
    assert findings_json(red.mask_row({"instruction": "What is 2+2?"})[1]) is None


def test_all_planted_values_leave_no_trace(red):
    text = planted_text()
    masked, found = red.mask_row({"instruction": text})
    for values in PLANTED.values():
        for v in values:
            assert v not in masked["instruction"]
    assert set(found) == set(PLANTED)


def test_checksums_decide_cards_and_ibans(red):
    assert not red.detector.find("order number 4111 1111 1111 1112 shipped")  # Luhn fails
    assert not red.detector.find("reference GB82 WEST 1234 5698 7654 33 x")  # mod-97 fails
    assert [s.type for s in red.detector.find("pay to GB82 WEST 1234 5698 7654 32 today")] == ["IBAN"]


def test_plain_instructions_have_no_findings(red):
    for text in ["Give three tips for staying healthy.", "What is the capital of France?",
                 "Rewrite the sentence in the passive voice: The cat chased the mouse.",
                 "def add(a, b):\n    return a + b", "Compute 12 * 7 + 3 and explain the steps.",
                 "password = input('Enter your password: ')", "Set api_key to your own key before running."]:
        assert red.detector.find(text) == [], text


def test_entities_choose_what_is_masked():
    only_email = Redactor(["EMAIL"])
    masked, found = only_email.mask_row({"instruction": "mail a@example.com from 10.0.0.1"})
    assert masked["instruction"] == "mail <EMAIL_1> from 10.0.0.1"
    with pytest.raises(ValueError):
        Detector(["NAME"])


def test_a_password_in_a_url_is_a_secret_and_the_url_goes_with_it(red):
    text = "connect with postgres://admin:Xk3r9!pq@db.internal.example.com:5432/prod please"
    masked, found = red.mask_row({"instruction": text})
    assert masked["instruction"] == "connect with <SECRET_1> please"
    assert dict(found) == {"SECRET": 1}


def test_merge_keeps_the_highest_ranked_type():
    spans = merge([Span(0, 30, "URL"), Span(5, 12, "SECRET"), Span(40, 45, "IP")])
    assert spans == [Span(0, 30, "SECRET"), Span(40, 45, "IP")]


def test_secret_rules_load_and_carry_their_source():
    rules = load_rules()
    assert len(rules) >= 15 and all(r.keywords for r in rules)
    assert entropy("aaaa") == 0.0 and entropy("abcd") == 2.0


def test_a_detector_past_its_timeout_fails_closed():
    slow = Redactor(timeout_s=1e-6)
    text = ("x" * 5000 + " key=" + "a1" * 50 + " ") * 4 + "mail a@example.com " * 200
    with pytest.raises(DetectTimeout):
        slow.mask_row({"instruction": text})


def test_no_network_is_used(red, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("privacy opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    fresh = Redactor()  # a new engine too: its email check reads the bundled public-suffix list
    masked, _ = fresh.mask_row({"instruction": "write to someone@mail.example.co.uk and x@y.museum"})
    assert "@" not in masked["instruction"]


def test_findings_never_hold_values(red):
    masked, found = red.mask_row({"instruction": planted_text()})
    blob = json.dumps(dict(found))
    for values in PLANTED.values():
        for v in values:
            assert v not in blob


def test_the_reading_task_fails_closed_and_drop_quarantines_secrets():
    from selectllm.dedup.stage import _redact

    long = ("x" * 5000 + " key=" + "a1" * 50 + " ") * 4 + "mail a@example.com " * 200
    slow = _redact(("mask", ENTITIES, ("US",), 1e-6), ["owner"])
    row, raw, instr, inp, reason, more, found = slow(3, None, long, "", None, {"owner": "a@example.com"})
    assert (raw, instr, inp, reason, more, found) == (None, None, None, "privacy_timeout", {}, None)
    # a quarantined record whose raw text cannot be checked in time keeps none
    assert slow(4, long, None, None, "malformed", None)[1:5] == (None, None, None, "malformed")

    drop = _redact(("drop", ENTITIES, ("US",), 5.0), ["owner"])
    secret = PLANTED["SECRET"][0]
    row, raw, instr, inp, reason, more, found = drop(5, None, f"deploy with {secret}", "", None, {"owner": "me"})
    assert reason == "secret" and instr is None and secret not in raw
    assert json.loads(raw) == {"instruction": "deploy with <SECRET_1>", "input": "", "owner": "me"}
    assert json.loads(found) == {"SECRET": 1}
    row, raw, instr, inp, reason, more, found = drop(6, None, "write to a@example.com", "", None, {"owner": "me"})
    assert reason is None and instr == "write to <EMAIL_1>" and json.loads(found) == {"EMAIL": 1}


def _dedup_row(red, path, row: int, rec: dict, keep=(), user_turn=None) -> dict:
    from selectllm.text.normalize import clean_text, content_id

    masked, _ = red.mask_row({"instruction": rec["instruction"], "input": rec.get("input", ""),
                              **{k: rec.get(k) for k in keep}})
    out = {"source": str(path), "source_row": row, **masked,
           "id": content_id(clean_text(masked["instruction"]), clean_text(masked["input"]))}
    if user_turn is not None:
        out["user_turn"] = user_turn
    return out


def test_original_output_reads_the_source_text_back_and_refuses_a_changed_file(tmp_path, red):
    from selectllm.config import load_config
    from selectllm.errors import UserError
    from selectllm.privacy.original import original_rows

    recs = [{"instruction": "Write to maria.lopez@example.com today", "input": "  keep\tthe spacing ", "team": "a@b.example.org"},
            {"instruction": "What is 2+2?", "input": "", "team": "x"},
            {"instruction": f"Why is {PLANTED['SECRET'][1]} rejected?", "input": "", "team": "y"}]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = load_config(None, [f"input.paths=[{path}]", "input.keep=[team]", "privacy.output=original"])
    rows = {r["id"]: r for r in (_dedup_row(red, path, i, rec, ["team"]) for i, rec in enumerate(recs) if i != 1)}
    got = original_rows(cfg, rows, ["team"])
    assert sorted(got.values(), key=lambda v: v["instruction"]) == sorted(
        ({k: recs[i][k] for k in ("instruction", "input", "team")} for i in (0, 2)), key=lambda v: v["instruction"])
    # the file changed since dedup: one line, never a wrong row
    recs[0]["instruction"] = "Write to someone.else@example.com today, please"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(UserError, match="the input changed"):
        original_rows(cfg, rows, ["team"])


def test_original_output_of_chat_rows_finds_each_user_turn(tmp_path, red):
    from selectllm.config import load_config
    from selectllm.privacy.original import original_rows
    from selectllm.text.chat import chat_rows

    rec = {"messages": [{"role": "system", "content": "Bot of ann@example.org"},
                        {"role": "user", "content": "Call +1 415-555-0132 please"},
                        {"role": "assistant", "content": "ok"},
                        {"role": "user", "content": "And email bob@example.net"}]}
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    cfg = load_config(None, [f"input.paths=[{path}]", "input.preset=openai", "input.turn=each"])
    turns = chat_rows(rec, "openai", "each")
    rows = {}
    for t in turns:
        r = _dedup_row(red, path, 0, {"instruction": t.instruction, "input": t.context}, user_turn=t.user_turn)
        rows[r["id"]] = r
    got = original_rows(cfg, rows, [])
    assert sorted(v["instruction"] for v in got.values()) == ["And email bob@example.net", "Call +1 415-555-0132 please"]


# texts where the cheap checks before each Presidio recognizer are closest to the edge
EDGE_TEXTS = [
    "call 202-555-0143 ext. 12", "tel:+1-202-555-0143;ext=1234", "(+44) 20 7946 0958",
    "+49 (30) 1234-5678 x 9", "phone: 202 555 0143    extension    77", "0301234567 anexo 12",
    "ｔｅｌ ２０２－５５５－０１４３", "٠٣٠١٢٣٤٥٦٧", "03ー1234ー5678", "555 12 int 34 doб 56",
    "Call 555-0143 or 202-555-0143 today", "1963 to 1986 in 2001", "years 1963 and 1986, 2019",
    "born 14.02.1990 in room 12", "4111-1111-1111-1111", "5555 5555 5555 4444", "378282246310005",
    "4111 1111 1111 1111 111", "iban DE89 3704 0044 0532 0130 00", "de89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432", "server 192.168.0.1:8080", "fe80::1ff:fe23:4567:890a", "::1", "::",
    "::ffff:192.0.2.1", "v1.2.3 of the lib", "mail ann.lee@example.org now", "a@b", "time 10:30",
    "see example.com", "go to WWW.EXAMPLE.ORG/path", "https://x.io", "e.g. this", "end.Next", "a .com b",
    # digits the run check lets through but phonenumbers' candidate pattern splits (or nearly)
    "3 + 4 = 7, 12 * 5 = 60, so 100 - 25 = 75", "2 * 3 * 4 * 5 * 6 * 7 * 8 = 40320", "+1 202 555 0143 = 7",
    "1/2/3/4/5/6/7", "12,345,678 people", "$1,234.56 + $7,890.12", "1 2 3 4 5 6 7", "(1) (2) (3) (4) (5) (6) (7)",
    " ".join(str(i % 10) for i in range(60)), "-".join("12" for _ in range(30)) + " call 202-555-0143",
    "0.5 0.25 0.125 0.0625", "tel 202.555.0143", "20 25 55 50 14 3",
]


def _other_texts(n: int) -> list[str]:
    """Real rows: the bundled sample and, when present, the shared datasets' number-heavy ones."""
    from helpers import SAMPLE

    texts = []
    paths = [SAMPLE] + [SAMPLE.parents[2] / "shared" / "data" / f for f in ("gsm8k_train.jsonl", "dolly_subsets.jsonl")]
    for path in paths:
        if not path.exists():
            continue
        with path.open("rb") as f:
            for _, raw in zip(range(n), f):
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    texts.append(" ".join(str(v) for v in rec.values() if isinstance(v, str)))
    return texts


def test_the_cheap_checks_never_skip_a_finding():
    """Each Presidio recognizer runs only on texts that pass a cheap check (``_may_hold``); on
    crafted edge cases, planted values, random digit soup and real rows the findings are the same
    as with every recognizer run on every text."""
    import random

    checked = Detector(ENTITIES, ("US", "GB", "DE", "FR", "IN"), 5.0)
    unchecked = Detector(ENTITIES, ("US", "GB", "DE", "FR", "IN"), 5.0)
    unchecked._checks = {}
    rng = random.Random(3)
    alphabet = "0123456789 -().+/xXeEtT:;=#~ーabcdhrz@١٢,*%$"
    soup = ["".join(rng.choice(alphabet) for _ in range(rng.randint(8, 40))) for _ in range(1500)]
    planted = [f"see {v} here" for values in PLANTED.values() for v in values] + [planted_text()]
    texts = EDGE_TEXTS + planted + soup + _other_texts(300)
    skipped = 0
    for text in texts:
        assert checked.find(text) == unchecked.find(text), text
        skipped += sum(not check(text) for check in checked._checks.values())
    assert skipped > len(texts)  # the checks do skip work


def test_the_phone_check_asks_phonenumbers_own_candidate_pattern():
    """Digits joined by what phonenumbers' candidate pattern never allows between blocks (math:
    '=', '*', '+' inside) pass the run-of-non-letters check but make no candidate of 7 digits, so
    the phone recognizer is not run on them; a real number still is."""
    from selectllm.privacy.detect import _DIGITS_IN_ONE_RUN, _may_hold_phone, _phone_candidate

    math = "3 + 4 = 7, 12 * 5 = 60, so 100 - 25 = 75"
    assert _DIGITS_IN_ONE_RUN.search("".join(c for c in math if c.isdigit()))  # the run check passes
    assert not _may_hold_phone(math) and not _phone_candidate(math)
    assert _may_hold_phone("call 202-555-0143 now") and _may_hold_phone("x 3 = +1 (202) 555-0143")


def test_the_phone_check_knows_every_letter_a_phone_match_can_hold():
    """The letters of phonenumbers' matcher pattern (its extension labels, 'x', 'ー') are the
    letters the phone check lets through; a new label in a later phonenumbers fails here."""
    import re
    import unicodedata

    from phonenumbers import phonenumbermatcher
    from selectllm.privacy.detect import _LABEL_LETTERS

    pattern = re.sub(r"\\[A-Za-z]", "", phonenumbermatcher._PATTERN.pattern)  # \d, \s: not letters
    letters = {c.lower() for c in pattern if unicodedata.category(c).startswith("L")}
    assert letters and letters <= set(_LABEL_LETTERS)


def test_the_url_check_knows_how_presidio_urls_begin_their_top_level_domain():
    """The URL check asks for a host character, a dot and a letter: every URL pattern holds the
    base pattern, whose top-level domains all begin with a letter."""
    import re

    from presidio_analyzer.predefined_recognizers import UrlRecognizer

    base = UrlRecognizer.BASE_URL_REGEX
    assert all(base in p.regex for p in UrlRecognizer.PATTERNS)
    assert "[a-z0-9.\\-]{1,253}[.](?:" in base
    tlds = re.findall(r"\(\?:([^()]*)\)", base[base.index("[.](?:") + 6:])
    assert len(tlds) > 100 and all(t[:1].isascii() and t[:1].isalpha() for t in tlds)
