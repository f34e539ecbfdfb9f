"""The request signature scheme and record parsing, as plain functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.actions import MAX_RECORD_DEPTH, ActionKind, InvalidRecord, action_id, parse_record, storable
from domain.signatures import SignatureExpired, SignatureInvalid, SignatureMissing, digest, sign, verify

SECRET = "whsec_test"
BODY = b'{"records":[]}'


def test_a_signature_binds_time_method_path_and_body() -> None:
    header = sign(SECRET, 1_000, "POST", "/v1/partner/actions:batch", BODY)
    assert header == f"t=1000,v1={digest(SECRET, 1_000, 'POST', '/v1/partner/actions:batch', BODY)}"
    assert verify(header, SECRET, 1_000, "POST", "/v1/partner/actions:batch", BODY)
    for method, path, body in (
        ("GET", "/v1/partner/actions:batch", BODY),
        ("POST", "/other", BODY),
        ("POST", "/v1/partner/actions:batch", BODY + b" "),
    ):
        with pytest.raises(SignatureInvalid):
            verify(header, SECRET, 1_000, method, path, body)
    with pytest.raises(SignatureInvalid):
        verify(header, "whsec_other", 1_000, "POST", "/v1/partner/actions:batch", BODY)


def test_signature_window_and_malformed_headers() -> None:
    header = sign(SECRET, 1_000, "POST", "/p", BODY)
    assert verify(header, SECRET, 1_300, "POST", "/p", BODY)  # exactly 300 s later: still inside
    with pytest.raises(SignatureExpired):
        verify(header, SECRET, 1_301, "POST", "/p", BODY)
    with pytest.raises(SignatureExpired):
        verify(header, SECRET, 699, "POST", "/p", BODY)  # from the future, beyond the tolerance
    with pytest.raises(SignatureMissing):
        verify(None, SECRET, 1_000, "POST", "/p", BODY)
    # Digits that are not ASCII ("²", "١") once reached int() and failed the request with a 500.
    for bad in ("v1=abc", "t=1000", "t=abc,v1=00", "garbage", "t=100²,v1=00", "t=١٠٠٠,v1=00", f"t={'9' * 40},v1=00"):
        with pytest.raises(SignatureInvalid):
            verify(bad, SECRET, 1_000, "POST", "/p", BODY)
    # During a secret rotation the sender may send one value per secret: one match is enough.
    rotated = f"t=1000,v1={'0' * 64},v1={digest(SECRET, 1_000, 'POST', '/p', BODY)}"
    assert verify(rotated, SECRET, 1_000, "POST", "/p", BODY)


def test_records_parse_per_kind_and_name_the_bad_field() -> None:
    trip = parse_record(
        ActionKind.TRANSIT,
        {
            "external_id": "t1",
            "account_ref": "a",
            "mode": "metro",
            "started_at": "2026-11-20T08:00:00+08:00",
            "ended_at": "2026-11-20T08:30:00+08:00",
            "distance_m": 10_000,
        },
    )
    assert (trip.category, trip.quantity) == ("metro", 10_000)
    assert trip.occurred_at == datetime(2026, 11, 20, 0, 30, tzinfo=UTC)
    drop = parse_record(
        ActionKind.RECYCLING,
        {
            "external_id": "r1",
            "account_ref": "a",
            "station_id": "S1",
            "occurred_at": "2026-11-20T08:00:00Z",
            "material": "glass",
            "weight_g": 1_234,
        },
    )
    assert (drop.category, drop.quantity, drop.details) == ("glass", 1_234, {"station_id": "S1"})
    sale = parse_record(
        ActionKind.SECOND_HAND,
        {
            "external_id": "s1",
            "account_ref": "a",
            "occurred_at": "2026-11-20T08:00:00Z",
            "category": "books",
            "trade": "donated",
            "quantity": 3,
            "weight_g": 900,
        },
    )
    assert (sale.category, sale.quantity, sale.details) == ("books", 3, {"trade": "donated", "weight_g": 900})

    base = {
        "external_id": "t1",
        "account_ref": "a",
        "mode": "metro",
        "started_at": "2026-11-20T08:00:00+08:00",
        "ended_at": "2026-11-20T08:30:00+08:00",
        "distance_m": 10_000,
    }
    for field, value in (
        ("external_id", ""),
        ("external_id", "x" * 129),
        ("account_ref", 5),
        ("mode", "car"),
        ("started_at", "2026-11-20T08:00:00"),
        ("ended_at", "yesterday"),
        ("distance_m", -1),
        ("distance_m", 1.5),
        ("distance_m", True),
        ("kind", "recycling"),
    ):
        with pytest.raises(InvalidRecord) as error:
            parse_record(ActionKind.TRANSIT, {**base, field: value})
        assert error.value.extra["field"] == field
    with pytest.raises(InvalidRecord):
        parse_record(ActionKind.TRANSIT, ["not", "an", "object"])


def test_only_what_jsonb_can_hold_is_storable() -> None:
    def nested(depth: int) -> object:
        value: object = 1
        for _ in range(depth):
            value = {"next": value}
        return value

    assert storable({"a": ["text", 1, 1.5, None, True, {"b": "上海 ok"}], "n": 10**30})
    assert storable(nested(MAX_RECORD_DEPTH)) and not storable(nested(MAX_RECORD_DEPTH + 1))
    for bad in ("nul\x00", "\ud800", float("nan"), float("inf"), -float("inf")):
        assert not storable({"field": bad}) and not storable([bad]), repr(bad)
    assert not storable({"key\x00": 1})
    assert storable({"tab": "a\tb"})  # free text may hold controls other than NUL; ids and names may not


def test_an_action_id_depends_only_on_partner_and_external_id() -> None:
    import uuid

    partner = uuid.uuid4()
    assert action_id(partner, "x") == action_id(partner, "x")
    assert action_id(partner, "x") != action_id(partner, "y") != action_id(uuid.uuid4(), "x")
