"""Profiles: the versions of the source documents, their defects as wire effects, version ordering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_sim.profiles import (
    DEFECTS,
    LATEST,
    PROFILES,
    Profile,
    compare_versions,
    get_profile,
    is_older,
    parse_version,
    shipped_versions,
)
from protocol.message import Message


def test_shipped_versions_and_their_defects():
    assert shipped_versions() == ["2.1.5", "2.3.6", "3.0.2", "3.0.8"]
    assert LATEST == "3.0.8" and LATEST in PROFILES
    assert get_profile("2.1.5").defects == ("settlement-funds-pending",)
    assert get_profile("2.3.6").defects == ("below-minimum",)
    assert get_profile("3.0.2").good and get_profile("3.0.8").good
    for profile in PROFILES.values():
        assert profile.known and set(profile.defects) <= set(DEFECTS)


def test_unknown_version_gets_a_good_profile_flagged_unknown():
    profile = get_profile("4.1.0")
    assert profile.known is False and profile.good and profile.version == "4.1.0"
    with pytest.raises(ValueError, match=r"must look like 3\.0\.8"):
        get_profile("v3")


@pytest.mark.parametrize("bad", ["3.0", "3.0.8.1", "a.b.c", "", "3..8", "-1.0.0"])
def test_malformed_versions_are_refused(bad):
    with pytest.raises(ValueError):
        parse_version(bad)


def test_version_ordering_is_numeric_not_lexical():
    assert parse_version("3.0.8") == (3, 0, 8)
    assert is_older("2.3.6", "3.0.2") and is_older("3.0.2", "3.0.8") and is_older("3.0.9", "3.0.10")
    assert compare_versions("3.0.8", "3.0.8") == 0
    assert compare_versions("3.0.10", "3.0.9") == 1 and compare_versions("2.1.5", "2.3.6") == -1


@given(st.tuples(*[st.integers(0, 999)] * 3), st.tuples(*[st.integers(0, 999)] * 3))
def test_compare_matches_tuple_order(a, b):
    va, vb = ".".join(map(str, a)), ".".join(map(str, b))
    assert compare_versions(va, vb) == (a > b) - (a < b)
    assert compare_versions(va, vb) == -compare_versions(vb, va)


def _settlement() -> Message:
    return Message("0500", {11: "000007", 41: "10000001", 42: "898100012340001", 48: "0" * 62, 49: "156",
                            60: "00000001201"})


def test_2_1_5_settlement_request_omits_the_currency():
    original = _settlement()
    sent = get_profile("2.1.5").settlement_request(original)
    assert 49 not in sent and 48 in sent and sent.mti == "0500"
    assert 49 in original  # the hook returns a copy


@pytest.mark.parametrize("version", ["2.3.6", "3.0.2", "3.0.8", "7.7.7"])
def test_other_versions_send_the_settlement_unchanged(version):
    assert get_profile(version).settlement_request(_settlement()) == _settlement()


def test_a_profile_with_an_unknown_defect_is_refused():
    with pytest.raises(ValueError, match="unknown defect"):
        Profile("1.0.0", "2000-01-01", ("gremlins",))
