import base64

from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.sessions import SessionTokens, derive_key

KEY_A = derive_key("a" * 32)
KEY_B = derive_key("b" * 32)


def test_issued_token_verifies_with_its_claims() -> None:
    tokens = SessionTokens([KEY_A])
    token = tokens.issue("2025-11-25", now=1_700_000_000)
    claims = tokens.verify(token)
    assert claims is not None
    assert claims.protocol_version == "2025-11-25"
    assert claims.issued_at == 1_700_000_000
    assert len(claims.session_id) == 32


def test_two_tokens_never_share_a_session_id() -> None:
    tokens = SessionTokens([KEY_A])
    ids = {tokens.verify(tokens.issue("2025-11-25")).session_id for _ in range(200)}  # type: ignore[union-attr]
    assert len(ids) == 200


def test_rotation_old_key_still_verifies_new_key_signs() -> None:
    old = SessionTokens([KEY_A])
    rotated = SessionTokens([KEY_B, KEY_A])
    assert rotated.verify(old.issue("2025-06-18")) is not None
    assert old.verify(rotated.issue("2025-06-18")) is None


def test_a_flipped_bit_is_rejected() -> None:
    tokens = SessionTokens([KEY_A])
    raw = bytearray(base64.urlsafe_b64decode(tokens.issue("2025-11-25") + "=="))
    raw[-1] ^= 1
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert tokens.verify(forged) is None


@given(st.text(max_size=400))
def test_arbitrary_strings_never_verify_or_raise(candidate: str) -> None:
    assert SessionTokens([KEY_A]).verify(candidate) is None


def test_derived_keys_agree_across_replicas_and_differ_by_purpose_and_secret() -> None:
    one, other = SessionTokens([derive_key("s" * 16)]), SessionTokens([derive_key("s" * 16)])
    assert one.derived_key(b"marks") == other.derived_key(b"marks")  # two replicas, one config
    assert one.derived_key(b"marks") != one.derived_key(b"other purpose")
    assert SessionTokens([derive_key("t" * 16)]).derived_key(b"marks") != one.derived_key(b"marks")
    assert derive_key("s" * 16) not in one.derived_key(b"marks")
