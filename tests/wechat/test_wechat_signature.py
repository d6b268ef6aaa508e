"""Signatures: WeChat's worked examples, wechatpy's signer, and constant-time checking."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wechatpy.exceptions import InvalidSignatureException  # type: ignore[import-untyped]
from wechatpy.utils import WeChatSigner  # type: ignore[import-untyped]
from wechatpy.utils import check_signature as wechatpy_check_signature

from msgcube.wechat import check_signature, msg_signature, signature

# The handshake example on WeChat's push documentation (wechat-notes §4.1).
DOC_TOKEN, DOC_TIMESTAMP, DOC_NONCE = "AAAAA", "1714036504", "1514711492"
DOC_SIGNATURE = "f464b24fc39322e44b38aa78f5edd27bd1441696"

# The official WXBizMsgCrypt sample push (same vector as in test_wechat_crypto.py).
SAMPLE_TOKEN, SAMPLE_TIMESTAMP, SAMPLE_NONCE = "spamtest", "1409735669", "1320562132"
SAMPLE_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8"
    "PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jis"
    "a+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X"
    "8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9Fy"
    "JvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
)
SAMPLE_MSG_SIGNATURE = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"

parts = st.text(max_size=40)


def test_documented_handshake_example() -> None:
    assert signature(DOC_TOKEN, DOC_TIMESTAMP, DOC_NONCE) == DOC_SIGNATURE
    # Spelled out: the sorted parts are ["1514711492", "1714036504", "AAAAA"].
    joined = b"1514711492" + b"1714036504" + b"AAAAA"
    assert hashlib.sha1(joined).hexdigest() == DOC_SIGNATURE


def test_official_sample_msg_signature() -> None:
    got = msg_signature(SAMPLE_TOKEN, SAMPLE_TIMESTAMP, SAMPLE_NONCE, SAMPLE_ENCRYPT)
    assert got == SAMPLE_MSG_SIGNATURE


def test_signature_is_lowercase_hex_sha1() -> None:
    got = signature("t", "1", "n")
    assert len(got) == 40
    assert got == got.lower()
    int(got, 16)


@given(token=parts, timestamp=parts, nonce=parts)
def test_argument_order_does_not_matter(token: str, timestamp: str, nonce: str) -> None:
    # The parts are sorted before hashing, so any permutation signs the same.
    assert signature(token, timestamp, nonce) == signature(nonce, token, timestamp)
    assert msg_signature(token, timestamp, nonce, "E") == msg_signature(
        "E", nonce, timestamp, token
    )


@given(token=parts, timestamp=parts, nonce=parts)
def test_agrees_with_wechatpy_signer(token: str, timestamp: str, nonce: str) -> None:
    plain = WeChatSigner()
    plain.add_data(token, timestamp, nonce)
    assert signature(token, timestamp, nonce) == plain.signature
    with_encrypt = WeChatSigner()
    with_encrypt.add_data(token, timestamp, nonce, "ciphertext==")
    assert msg_signature(token, timestamp, nonce, "ciphertext==") == with_encrypt.signature


def test_wechatpy_accepts_our_handshake_signature() -> None:
    ours = signature(DOC_TOKEN, DOC_TIMESTAMP, DOC_NONCE)
    wechatpy_check_signature(DOC_TOKEN, ours, DOC_TIMESTAMP, DOC_NONCE)  # raises if wrong
    with pytest.raises(InvalidSignatureException):
        wechatpy_check_signature(DOC_TOKEN, ours, DOC_TIMESTAMP, "1514711493")


def test_check_signature_accepts_the_right_one() -> None:
    assert check_signature(DOC_SIGNATURE, DOC_TOKEN, DOC_TIMESTAMP, DOC_NONCE) is True
    assert (
        check_signature(
            SAMPLE_MSG_SIGNATURE, SAMPLE_TOKEN, SAMPLE_TIMESTAMP, SAMPLE_NONCE, SAMPLE_ENCRYPT
        )
        is True
    )


@pytest.mark.parametrize(
    "expected",
    [
        "",
        DOC_SIGNATURE[:-1],
        DOC_SIGNATURE[:-1] + "7",
        DOC_SIGNATURE.upper(),
        DOC_SIGNATURE + "0",
        "签名" * 20,  # non-ASCII must be refused, not crash compare_digest
    ],
)
def test_check_signature_refuses_anything_else(expected: str) -> None:
    assert check_signature(expected, DOC_TOKEN, DOC_TIMESTAMP, DOC_NONCE) is False


def test_check_signature_keeps_the_two_kinds_apart() -> None:
    # A plain signature is not a msg_signature and vice versa...
    assert not check_signature(DOC_SIGNATURE, DOC_TOKEN, DOC_TIMESTAMP, DOC_NONCE, encrypt="QQ==")
    # ...except for an empty Encrypt, which adds nothing to the hashed string (and can never
    # decrypt, so the callback refuses it anyway).
    assert check_signature(DOC_SIGNATURE, DOC_TOKEN, DOC_TIMESTAMP, DOC_NONCE, encrypt="")
    assert not check_signature(SAMPLE_MSG_SIGNATURE, SAMPLE_TOKEN, SAMPLE_TIMESTAMP, SAMPLE_NONCE)
    # ...and a msg_signature is bound to its ciphertext.
    assert not check_signature(
        SAMPLE_MSG_SIGNATURE, SAMPLE_TOKEN, SAMPLE_TIMESTAMP, SAMPLE_NONCE, SAMPLE_ENCRYPT + "x"
    )


@given(token=parts, timestamp=parts, nonce=parts, encrypt=parts)
def test_check_signature_round_trip(token: str, timestamp: str, nonce: str, encrypt: str) -> None:
    assert check_signature(signature(token, timestamp, nonce), token, timestamp, nonce)
    signed = msg_signature(token, timestamp, nonce, encrypt)
    assert check_signature(signed, token, timestamp, nonce, encrypt)
