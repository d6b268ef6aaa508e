"""Reading and writing the flat ``<xml>`` documents WeChat pushes.

A push is one ``<xml>`` root whose children are the fields (``ToUserName``, ``MsgType`` …),
strings in CDATA and numbers bare (wechat-notes §4.2). Parsing goes through ``defusedxml``
with DTDs, entity declarations and external references all forbidden, so a
billion-laughs or XXE body is refused before anything is expanded (contract: The callback). Every
refusal is an ``XmlError`` whose ``reason`` says which rule was broken, because the
caller quarantines the body and a person has to understand why later.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

# defusedxml ships no type information; types-defusedxml may or may not be installed.
import defusedxml  # type: ignore[import-untyped, unused-ignore]
import defusedxml.ElementTree as DET  # type: ignore[import-untyped, unused-ignore]

from msgcube.errors import IngestError

BARE_FIELDS: frozenset[str] = frozenset(
    {"CreateTime", "MsgId", "Idx", "MsgDataId", "Location_X", "Location_Y", "Scale"}
)
"""Fields WeChat writes as bare numbers rather than CDATA, even when given as text."""

_XML_WHITESPACE = " \t\r\n"
# Characters XML 1.0 cannot carry at all, not even in CDATA or as character references.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


class XmlError(IngestError, ValueError):
    """A push body that is not a well-formed, DTD-free, UTF-8 ``<xml>`` document.

    ``reason`` is a short, stable phrase (``"DTD not allowed"``, ``"malformed XML"`` …) fit
    for a quarantine listing; ``str(error)`` adds the detail.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def parse_push_xml(body: bytes) -> dict[str, str]:
    """The fields of a push: each child of ``<xml>`` mapped to its text.

    CDATA is unwrapped; a whitespace-only value becomes ``''`` (pretty-printed or empty
    elements such as ``<EventKey>`` must not differ by their indentation). A child with
    children of its own (``<ArticleUrlResult>``, ``<SendPicsInfo>`` …) keeps only its own
    text, normally ``''``: none of those nested structures matter for the statistics.
    A field appearing twice is refused, since first-wins and last-wins readers would
    disagree about, say, which ``MsgId`` a push has.
    """
    root = _parse(body)
    if root.tag != "xml":
        raise XmlError("root is not <xml>", f"root element is <{root.tag}>")
    fields: dict[str, str] = {}
    for child in root:
        if child.tag in fields:
            raise XmlError("duplicate field", f"<{child.tag}> appears more than once")
        text = child.text or ""
        fields[child.tag] = "" if not text.strip(_XML_WHITESPACE) else text
    return fields


def parse_envelope(body: bytes) -> tuple[str | None, str | None]:
    """``(ToUserName, Encrypt)`` of an encrypted push; ``None`` for a field that is absent.

    Compatible-mode pushes carry plaintext fields beside ``Encrypt``; they are ignored
    here because only the signed ciphertext can be trusted.
    """
    fields = parse_push_xml(body)
    return fields.get("ToUserName"), fields.get("Encrypt")


def build_push_xml(fields: Mapping[str, str | int]) -> bytes:
    """A push formatted the way WeChat sends it, as UTF-8 bytes.

    Strings go into CDATA, ints are written bare, and so are the numeric fields in
    ``BARE_FIELDS`` when given as text (``Location_X="23.134521"``) — escaped, so odd
    values can still be replayed without breaking the document. Fields keep the mapping's
    order. Used by the tests and by ``msgcube replay``; ``parse_push_xml`` reads every
    value back exactly, except that whitespace-only strings come back as ``''``.
    """
    elements = []
    for name, value in fields.items():
        if not _XML_NAME.fullmatch(name):
            raise ValueError(f"not a usable XML element name: {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError(f"{name}: expected str or int, got {type(value).__name__}")
        if isinstance(value, int):
            text = str(value)
        elif name in BARE_FIELDS:
            text = _escape_text(value)
        else:
            text = cdata(value)
        elements.append(f"<{name}>{text}</{name}>")
    return ("<xml>" + "\n".join(elements) + "\n</xml>").encode("utf-8")


def cdata(text: str) -> str:
    """``text`` as CDATA that parses back to exactly ``text``.

    ``]]>`` would end the section early, so it is split across two sections. A carriage
    return is written as ``&#13;`` between sections, because parsers normalise a literal
    CR inside CDATA to LF.
    """
    _check_chars(text)
    sections = (
        "<![CDATA[" + part.replace("]]>", "]]]]><![CDATA[>") + "]]>" for part in text.split("\r")
    )
    return "&#13;".join(sections)


def _escape_text(text: str) -> str:
    """``text`` as bare character data that parses back to exactly ``text``."""
    _check_chars(text)
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _check_chars(text: str) -> None:
    bad = _NOT_XML_CHAR.search(text)
    if bad:
        raise ValueError(f"character U+{ord(bad.group()):04X} cannot appear in XML 1.0")


def _parse(body: bytes) -> ET.Element:
    try:
        # Decoding first makes UTF-8 the only accepted encoding: an ``encoding="…"``
        # declaration is ignored when expat is handed text instead of bytes.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XmlError("not UTF-8", str(exc)) from None
    try:
        root: ET.Element = DET.fromstring(
            text, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DTDForbidden:
        raise XmlError("DTD not allowed") from None
    except defusedxml.EntitiesForbidden:
        raise XmlError("entity declarations not allowed") from None
    except defusedxml.ExternalReferenceForbidden:
        raise XmlError("external entities not allowed") from None
    except ET.ParseError as exc:
        raise XmlError("malformed XML", str(exc)) from None
    return root
