"""The AES envelope: official sample vectors, wechatpy interop both ways, and every failure."""

from __future__ import annotations

import base64
from unittest import mock

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import example, given
from hypothesis import strategies as st
from wechatpy.crypto import WeChatCrypto  # type: ignore[import-untyped]
from wechatpy.crypto.base import BasePrpCrypto  # type: ignore[import-untyped]

from msgcube.errors import IngestError
from msgcube.wechat import (
    AESKey,
    DecryptError,
    check_signature,
    decrypt,
    decrypt_with_rotation,
    encrypt,
    msg_signature,
    parse_envelope,
    parse_push_xml,
    reply_envelope,
)

# The key used by WeChat's official WXBizMsgCrypt samples.
SAMPLE_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OTHER_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
APPID = "wx2c2769f8efd9abc2"
TOKEN = "spamtest"
FIXED_RANDOM = b"aaaabbbbccccdddd"

# Official sample push (Python/PHP/Node WXBizMsgCrypt samples): token "spamtest",
# timestamp 1409735669, nonce 1320562132, msg_signature 5d197aaf….
SAMPLE_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8"
    "PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jis"
    "a+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X"
    "8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9Fy"
    "JvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
)
SAMPLE_MSG_SIGNATURE = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
SAMPLE_XML = (
    b"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n"
    b"<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n"
    b"<CreateTime>1409735668</CreateTime>\n"
    b"<MsgType><![CDATA[text]]></MsgType>\n"
    b"<Content><![CDATA[abcdteT]]></Content>\n"
    b"<MsgId>6054768590064713728</MsgId>\n"
    b"</xml>"
)


def xml_char(c: str) -> bool:
    return (
        c in "\t\n\r" or "\x20" <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c >= "\U00010000"
    )


xml_text = st.text(st.characters(codec="utf-8").filter(xml_char), max_size=300)


@pytest.fixture
def key() -> AESKey:
    return AESKey(SAMPLE_KEY)


def raw_cipher(key: AESKey) -> Cipher[modes.CBC]:
    """The bare cipher, for checking and forging plaintexts without going through encrypt()."""
    return Cipher(algorithms.AES(key.key), modes.CBC(key.key[:16]))


# --- AESKey -------------------------------------------------------------------------------


def test_key_decodes_to_32_bytes(key: AESKey) -> None:
    assert key.key == base64.b64decode(SAMPLE_KEY + "=")
    assert len(key.key) == 32


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (SAMPLE_KEY[:-1], "43 characters long, got 42"),
        (SAMPLE_KEY + "H", "43 characters long, got 44"),
        ("", "43 characters long, got 0"),
        (SAMPLE_KEY[:-1] + "=", "A-Z, a-z and 0-9"),
        (SAMPLE_KEY[:-1] + "+", "A-Z, a-z and 0-9"),
        ("/" + SAMPLE_KEY[1:], "A-Z, a-z and 0-9"),
        (SAMPLE_KEY[:-1] + "é", "A-Z, a-z and 0-9"),
        (SAMPLE_KEY[:-1] + "٣", "A-Z, a-z and 0-9"),  # a Unicode digit is still not [0-9]
    ],
)
def test_key_validation(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        AESKey(value)
    if len(value) == 43:
        assert value not in str(info.value)


def test_key_repr_hides_the_key(key: AESKey) -> None:
    for shown in (repr(key), str(key), f"{key}", repr([key])):
        assert "redacted" in shown
        assert SAMPLE_KEY[:8] not in shown
        assert SAMPLE_KEY[-8:] not in shown
        assert repr(key.key) not in shown


def test_key_equality_is_by_decoded_key() -> None:
    # Base64 drops the low two bits of the 43rd character: G, E, F and H spell the same key.
    assert AESKey(SAMPLE_KEY[:-1] + "E") == AESKey(SAMPLE_KEY)
    assert AESKey(SAMPLE_KEY[:-1] + "I") != AESKey(SAMPLE_KEY)
    assert hash(AESKey(SAMPLE_KEY[:-1] + "E")) == hash(AESKey(SAMPLE_KEY))


def test_key_is_frozen(key: AESKey) -> None:
    with pytest.raises(AttributeError):
        key.key = b"x" * 32  # type: ignore[misc]


# --- known answers ------------------------------------------------------------------------


def test_official_java_sample_encryption_vector(key: AESKey) -> None:
    # WXBizMsgCryptTest.java: fixed random "aaaabbbbccccdddd", appid wxb11529c136998cb6.
    got = encrypt(key, "我是中文abcd123".encode(), "wxb11529c136998cb6", random16=FIXED_RANDOM)
    assert got == (
        "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
    )


def test_official_sample_push_decrypts(key: AESKey) -> None:
    assert decrypt(key, SAMPLE_ENCRYPT, APPID) == SAMPLE_XML


def test_plaintext_layout(key: AESKey) -> None:
    xml = b"<xml>hi</xml>"
    ciphertext = base64.b64decode(encrypt(key, xml, "wxAPP", random16=FIXED_RANDOM))
    plain = raw_cipher(key).decryptor().update(ciphertext)
    body = FIXED_RANDOM + len(xml).to_bytes(4, "big") + xml + b"wxAPP"
    pad = 32 - len(body) % 32
    assert plain == body + bytes([pad]) * pad


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("xml_len", range(70))
def test_ciphertext_is_padded_to_32_bytes(key: AESKey, xml_len: int) -> None:
    appid = "wx0123456789abcdef"  # 18 bytes
    xml = b"x" * xml_len
    encrypted = encrypt(key, xml, appid)
    plain_len = 16 + 4 + xml_len + len(appid)
    # PKCS#7 to 32: always at least one pad byte, a whole block when already aligned.
    assert len(base64.b64decode(encrypted)) == (plain_len // 32 + 1) * 32
    assert decrypt(key, encrypted, appid) == xml


@given(payload=st.binary(max_size=1100))
@example(payload=b"")
@example(payload=b"a" * 32)
@example(payload=b"a" * 64)
@example(payload=b"a" * (96 - 16 - 4 - len(APPID)))  # the whole plaintext is 3 blocks
@example(payload=b"a" * (1024 - 16 - 4 - len(APPID)))
def test_decrypt_inverts_encrypt(payload: bytes) -> None:
    key = AESKey(SAMPLE_KEY)
    assert decrypt(key, encrypt(key, payload, APPID), APPID) == payload


@given(text=xml_text)
def test_decrypt_inverts_encrypt_for_xml(text: str) -> None:
    key = AESKey(SAMPLE_KEY)
    xml = f"<xml><Content>{text}</Content></xml>".encode()
    assert decrypt(key, encrypt(key, xml, APPID), APPID) == xml


def test_fresh_randomness_each_time(key: AESKey) -> None:
    assert encrypt(key, b"<xml/>", APPID) != encrypt(key, b"<xml/>", APPID)


def test_random16_must_be_16_bytes(key: AESKey) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        encrypt(key, b"<xml/>", APPID, random16=b"short")


def test_whitespace_in_base64_is_tolerated(key: AESKey) -> None:
    wrapped = "\r\n".join(SAMPLE_ENCRYPT[i : i + 76] for i in range(0, len(SAMPLE_ENCRYPT), 76))
    assert decrypt(key, f"  {wrapped}\n", APPID) == SAMPLE_XML


# --- interop with wechatpy ----------------------------------------------------------------


def wechatpy_crypto() -> WeChatCrypto:
    return WeChatCrypto(TOKEN, SAMPLE_KEY, APPID)


@given(text=xml_text)
def test_we_open_what_wechatpy_seals(text: str) -> None:
    xml = f"<xml><Content><![CDATA[{text.replace(']]>', '')}]]></Content></xml>"
    envelope = wechatpy_crypto().encrypt_message(xml, "nonce42", "1700000000")
    # Strip wechatpy's newline-separated envelope through our own parser, as callback will.
    to_user, encrypted = parse_envelope(envelope.encode())
    assert to_user is None
    assert encrypted is not None
    signed = parse_push_xml(envelope.encode())["MsgSignature"]
    assert check_signature(signed, TOKEN, "1700000000", "nonce42", encrypted)
    assert decrypt(AESKey(SAMPLE_KEY), encrypted, APPID) == xml.encode()


@given(text=xml_text)
def test_wechatpy_opens_what_we_seal(text: str) -> None:
    xml = f"<xml><Content><![CDATA[{text.replace(']]>', '')}]]></Content></xml>"
    envelope = reply_envelope(AESKey(SAMPLE_KEY), TOKEN, xml.encode(), APPID, 1700000000, "n1")
    signed = parse_push_xml(envelope.encode())["MsgSignature"]
    assert wechatpy_crypto().decrypt_message(envelope, signed, "1700000000", "n1") == xml


@given(payload=xml_text)
def test_byte_for_byte_same_ciphertext_as_wechatpy(payload: str) -> None:
    fixed = FIXED_RANDOM.decode()
    with mock.patch.object(BasePrpCrypto, "get_random_string", return_value=fixed):
        envelope = wechatpy_crypto().encrypt_message(payload, "n", "1")
    _, theirs = parse_envelope(envelope.encode())
    ours = encrypt(AESKey(SAMPLE_KEY), payload.encode(), APPID, random16=FIXED_RANDOM)
    assert ours == theirs


# --- reply envelope -----------------------------------------------------------------------


def test_reply_envelope_fields(key: AESKey) -> None:
    envelope = reply_envelope(key, TOKEN, b"<xml>r</xml>", APPID, "1409735670", "a]]>b")
    assert envelope.startswith("<xml><Encrypt><![CDATA[")
    fields = parse_push_xml(envelope.encode())
    assert list(fields) == ["Encrypt", "MsgSignature", "TimeStamp", "Nonce"]
    assert fields["TimeStamp"] == "1409735670"
    assert fields["Nonce"] == "a]]>b"
    assert fields["MsgSignature"] == msg_signature(TOKEN, "1409735670", "a]]>b", fields["Encrypt"])
    assert decrypt(key, fields["Encrypt"], APPID) == b"<xml>r</xml>"
    assert "<TimeStamp>1409735670</TimeStamp>" in envelope


@pytest.mark.parametrize("timestamp", ["", "12a", "-1", "1<2", "١٢٣"])
def test_reply_envelope_refuses_odd_timestamps(key: AESKey, timestamp: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        reply_envelope(key, TOKEN, b"<xml/>", APPID, timestamp, "n")


# --- failures -----------------------------------------------------------------------------


def reason_of(key: AESKey, encrypted: str, appid: str = APPID) -> str:
    with pytest.raises(DecryptError) as info:
        decrypt(key, encrypted, appid)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, IngestError)
    assert str(info.value).startswith(info.value.reason + ": ")
    return info.value.reason


@pytest.mark.parametrize(
    "appid", ["wx2c2769f8efd9abc", "wx2c2769f8efd9abc2x", "", "WX2C2769F8EFD9ABC2"]
)
def test_wrong_appid(key: AESKey, appid: str) -> None:
    assert reason_of(key, SAMPLE_ENCRYPT, appid) == "appid mismatch"


def test_wrong_appid_error_names_both(key: AESKey) -> None:
    with pytest.raises(DecryptError, match=r"expected 'wxOTHER', found b'wx2c2769f8efd9abc2'"):
        decrypt(key, SAMPLE_ENCRYPT, "wxOTHER")


def test_wrong_key() -> None:
    assert reason_of(AESKey(OTHER_KEY), SAMPLE_ENCRYPT) in {"bad padding", "bad length"}


@given(payload=st.binary(max_size=200))
def test_wrong_key_never_yields_a_message(payload: bytes) -> None:
    encrypted = encrypt(AESKey(SAMPLE_KEY), payload, APPID)
    with pytest.raises(DecryptError):
        decrypt(AESKey(OTHER_KEY), encrypted, APPID)


def tamper(encrypted: str, index: int) -> str:
    raw = bytearray(base64.b64decode(encrypted))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_tampered_length_field(key: AESKey) -> None:
    # CBC: flipping ciphertext byte 0 flips plaintext byte 16, the top byte of the length.
    assert reason_of(key, tamper(SAMPLE_ENCRYPT, 0)) == "bad length"


def test_tampered_padding(key: AESKey) -> None:
    # Flipping the last byte of the next-to-last block flips the final pad byte.
    assert reason_of(key, tamper(SAMPLE_ENCRYPT, -17)) == "bad padding"


def test_tampered_last_block(key: AESKey) -> None:
    # The last plaintext block turns to noise; which check catches it depends on the noise
    # (here it happens to end in a valid 0x01 pad byte, so the appid check does).
    assert reason_of(key, tamper(SAMPLE_ENCRYPT, -1)) == "appid mismatch"


def test_ciphertext_is_malleable_so_msg_signature_must_be_checked(key: AESKey) -> None:
    # CBC has no integrity: flipping ciphertext byte 4 flips plaintext byte 20, the first
    # byte of the XML, and decryption still "succeeds". Only msg_signature (over the Token
    # and the Encrypt text) detects the change, so the callback must check it first.
    tampered = tamper(SAMPLE_ENCRYPT, 4)
    assert decrypt(key, tampered, APPID) == b"=" + SAMPLE_XML[1:]
    assert check_signature(SAMPLE_MSG_SIGNATURE, TOKEN, "1409735669", "1320562132", SAMPLE_ENCRYPT)
    assert not check_signature(SAMPLE_MSG_SIGNATURE, TOKEN, "1409735669", "1320562132", tampered)


@pytest.mark.parametrize(
    ("encrypted", "reason"),
    [
        ("not base64!", "bad base64"),
        ("abc", "bad base64"),  # missing padding
        ("YWJj\x00", "bad base64"),
        ("", "bad length"),
        (base64.b64encode(b"x" * 31).decode(), "bad length"),
        (base64.b64encode(base64.b64decode(SAMPLE_ENCRYPT)[:-16]).decode(), "bad padding"),
    ],
)
def test_malformed_payloads(key: AESKey, encrypted: str, reason: str) -> None:
    assert reason_of(key, encrypted) == reason


def test_too_short_for_the_header(key: AESKey) -> None:
    # 19 bytes of plaintext + 13 bytes of valid padding: padding fine, header impossible.
    data = b"\x00" * 19 + bytes([13]) * 13
    enc = raw_cipher(key).encryptor()
    forged = base64.b64encode(enc.update(data) + enc.finalize()).decode()
    assert reason_of(key, forged) == "bad length"


# --- key rotation -------------------------------------------------------------------------


def test_rotation_prefers_the_current_key() -> None:
    current, previous = AESKey(OTHER_KEY), AESKey(SAMPLE_KEY)
    encrypted = encrypt(current, b"<xml>new</xml>", APPID)
    assert decrypt_with_rotation([current, previous], encrypted, APPID) == (b"<xml>new</xml>", 0)


def test_rotation_falls_back_to_the_previous_key() -> None:
    current, previous = AESKey(OTHER_KEY), AESKey(SAMPLE_KEY)
    assert decrypt_with_rotation([current, previous], SAMPLE_ENCRYPT, APPID) == (SAMPLE_XML, 1)
    assert decrypt_with_rotation((previous,), SAMPLE_ENCRYPT, APPID) == (SAMPLE_XML, 0)


def test_rotation_fails_when_no_key_fits() -> None:
    third = AESKey("0123456789" * 4 + "abc")
    with pytest.raises(DecryptError) as info:
        decrypt_with_rotation([AESKey(OTHER_KEY), third], SAMPLE_ENCRYPT, APPID)
    assert info.value.reason in {"bad padding", "bad length"}


def test_rotation_reports_the_key_that_did_decrypt() -> None:
    # The current key fails on padding, the previous one decrypts but the appid is wrong:
    # the appid mismatch is the useful thing to report.
    with pytest.raises(DecryptError) as info:
        decrypt_with_rotation([AESKey(OTHER_KEY), AESKey(SAMPLE_KEY)], SAMPLE_ENCRYPT, "wxOTHER")
    assert info.value.reason == "appid mismatch"


def test_rotation_key_independent_errors() -> None:
    with pytest.raises(DecryptError) as info:
        decrypt_with_rotation([AESKey(OTHER_KEY), AESKey(SAMPLE_KEY)], "!!", APPID)
    assert info.value.reason == "bad base64"


def test_rotation_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        decrypt_with_rotation([], SAMPLE_ENCRYPT, APPID)
