"""WeChat's callback wire protocol, pure: signatures, the AES envelope and push XML.

Nothing here does I/O; ``web/callback`` feeds it request parts and acts on the answers,
and ``ingest`` receives the parsed fields. Failures are ``DecryptError`` / ``XmlError``
(both ``IngestError`` and ``ValueError``) carrying a short ``reason`` for the quarantine.
"""

from msgcube.wechat.crypto import (
    AESKey,
    DecryptError,
    DecryptReason,
    decrypt,
    decrypt_with_rotation,
    encrypt,
    reply_envelope,
)
from msgcube.wechat.signature import check_signature, msg_signature, signature
from msgcube.wechat.xml import (
    BARE_FIELDS,
    XmlError,
    build_push_xml,
    cdata,
    parse_envelope,
    parse_push_xml,
)

__all__ = [
    "BARE_FIELDS",
    "AESKey",
    "DecryptError",
    "DecryptReason",
    "XmlError",
    "build_push_xml",
    "cdata",
    "check_signature",
    "decrypt",
    "decrypt_with_rotation",
    "encrypt",
    "msg_signature",
    "parse_envelope",
    "parse_push_xml",
    "reply_envelope",
    "signature",
]
