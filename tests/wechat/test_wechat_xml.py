"""Push XML: WeChat's own format, hostile documents, and build → parse round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msgcube.errors import IngestError
from msgcube.wechat import XmlError, build_push_xml, cdata, parse_envelope, parse_push_xml

# Decrypted content of WeChat's official WXBizMsgCrypt sample push, byte for byte.
SAMPLE_PUSH = (
    b"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>\n"
    b"<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>\n"
    b"<CreateTime>1409735668</CreateTime>\n"
    b"<MsgType><![CDATA[text]]></MsgType>\n"
    b"<Content><![CDATA[abcdteT]]></Content>\n"
    b"<MsgId>6054768590064713728</MsgId>\n"
    b"</xml>"
)
SAMPLE_FIELDS = {
    "ToUserName": "gh_10f6c3c3ac5a",
    "FromUserName": "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
    "CreateTime": "1409735668",
    "MsgType": "text",
    "Content": "abcdteT",
    "MsgId": "6054768590064713728",
}

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE xml [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<xml><ToUserName>gh_x</ToUserName><Content>&lol9;</Content></xml>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><MsgType>text</MsgType><Content>&xxe;</Content></xml>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE xml SYSTEM "http://127.0.0.1:1/evil.dtd">
<xml><MsgType>text</MsgType></xml>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY % remote SYSTEM "http://127.0.0.1:1/x.dtd"> %remote;]>
<xml><MsgType>text</MsgType></xml>"""


def xml_char(c: str) -> bool:
    return (
        c in "\t\n\r" or "\x20" <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c >= "\U00010000"
    )


xml_text = st.text(st.characters(codec="utf-8").filter(xml_char), max_size=60)


def reason_of(body: bytes) -> str:
    with pytest.raises(XmlError) as info:
        parse_push_xml(body)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, IngestError)
    return info.value.reason


# --- parsing WeChat's pushes --------------------------------------------------------------


def test_official_sample_push() -> None:
    assert parse_push_xml(SAMPLE_PUSH) == SAMPLE_FIELDS
    assert list(parse_push_xml(SAMPLE_PUSH)) == list(SAMPLE_FIELDS)


def test_documented_location_push() -> None:
    body = (
        b"<xml><ToUserName><![CDATA[toUser]]></ToUserName>"
        b"<FromUserName><![CDATA[fromUser]]></FromUserName>"
        b"<CreateTime>1351776360</CreateTime><MsgType><![CDATA[location]]></MsgType>"
        b"<Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y>"
        b"<Scale>20</Scale><Label><![CDATA[\xe4\xbd\x8d\xe7\xbd\xae]]></Label>"
        b"<MsgId>1234567890123456</MsgId></xml>"
    )
    fields = parse_push_xml(body)
    assert fields["Location_X"] == "23.134521"
    assert fields["Location_Y"] == "113.358803"
    assert fields["Scale"] == "20"
    assert fields["Label"] == "位置"


@pytest.mark.parametrize(
    "event_key", [b"<EventKey></EventKey>", b"<EventKey/>", b"<EventKey><![CDATA[]]></EventKey>"]
)
def test_empty_fields_are_kept_as_empty_strings(event_key: bytes) -> None:
    body = b"<xml><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event>"
    fields = parse_push_xml(body + event_key + b"</xml>")
    assert fields == {"MsgType": "event", "Event": "subscribe", "EventKey": ""}


def test_whitespace_only_becomes_empty_but_content_is_verbatim() -> None:
    body = (
        b"<xml>\n  <EventKey>\n    </EventKey>\n  <Ticket><![CDATA[ \t ]]></Ticket>\n"
        b"  <Content><![CDATA[  two  spaces \n]]></Content>\n"
        b"  <Label>\xe3\x80\x80</Label>\n</xml>"  # U+3000 is content, not XML whitespace
    )
    assert parse_push_xml(body) == {
        "EventKey": "",
        "Ticket": "",
        "Content": "  two  spaces \n",
        "Label": "\u3000",
    }


def test_nested_elements_are_not_flattened() -> None:
    body = b"""<xml><ToUserName><![CDATA[gh_x]]></ToUserName>
<MsgType><![CDATA[event]]></MsgType>
<ArticleUrlResult><Count>1</Count><ResultList><item><ArticleIdx>1</ArticleIdx>
<ArticleUrl><![CDATA[http://example.invalid]]></ArticleUrl></item></ResultList></ArticleUrlResult>
<SendPicsInfo>odd text<Count>2</Count></SendPicsInfo>
</xml>"""
    assert parse_push_xml(body) == {
        "ToUserName": "gh_x",
        "MsgType": "event",
        "ArticleUrlResult": "",
        "SendPicsInfo": "odd text",
    }


def test_attributes_comments_and_declarations_are_harmless() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- a comment -->'
        b'<xml a="1"><MsgType b="2">text<!-- inner --></MsgType><?pi data?></xml>'
    )
    assert parse_push_xml(body) == {"MsgType": "text"}


def test_escaped_text_and_character_references() -> None:
    body = b"<xml><Content>a &lt;b&gt; &amp; &#20013;&#x6587;</Content></xml>"
    assert parse_push_xml(body) == {"Content": "a <b> & 中文"}


def test_utf8_bom_is_accepted() -> None:
    assert parse_push_xml(b"\xef\xbb\xbf<xml><A>1</A></xml>") == {"A": "1"}


def test_declared_encoding_is_ignored_the_body_must_be_utf8() -> None:
    body = '<?xml version="1.0" encoding="GBK"?><xml><Content>中文</Content></xml>'
    assert parse_push_xml(body.encode("utf-8")) == {"Content": "中文"}
    assert reason_of(body.encode("gbk")) == "not UTF-8"


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PARAMETER_ENTITY, b"<!DOCTYPE xml><xml/>"],
    ids=["billion-laughs", "external-entity", "external-dtd", "parameter-entity", "bare-doctype"],
)
def test_dtds_are_refused_before_anything_is_expanded(body: bytes) -> None:
    with pytest.raises(XmlError) as info:
        parse_push_xml(body)
    assert info.value.reason == "DTD not allowed"
    assert "lol" not in str(info.value)
    assert "root:" not in str(info.value)


def test_undeclared_entity_is_malformed() -> None:
    assert reason_of(b"<xml><Content>&xxe;</Content></xml>") == "malformed XML"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"<xml>",
        b"<xml><A>1</B></xml>",
        b"<xml></xml><xml></xml>",
        b"success",
        b'{"MsgType": "text"}',
        b"<xml><A>\x00</A></xml>",
    ],
)
def test_malformed(body: bytes) -> None:
    assert reason_of(body) == "malformed XML"


def test_malformed_says_where() -> None:
    with pytest.raises(XmlError, match=r"malformed XML: .*line 1, column \d+"):
        parse_push_xml(b"<xml><A>1</B></xml>")


@pytest.mark.parametrize("body", [b"<XML><A>1</A></XML>", b"<root><A>1</A></root>", b"<A>1</A>"])
def test_root_must_be_xml(body: bytes) -> None:
    with pytest.raises(XmlError, match="root is not <xml>: root element is <") as info:
        parse_push_xml(body)
    assert info.value.reason == "root is not <xml>"


@pytest.mark.parametrize(
    "body", [b"<xml><A>\xff</A></xml>", b"<xml><A>\xe4\xb8</A></xml>", "<xml/>".encode("utf-16")]
)
def test_not_utf8(body: bytes) -> None:
    assert reason_of(body) == "not UTF-8"


def test_duplicate_fields_are_refused() -> None:
    body = b"<xml><MsgId>1</MsgId><MsgType>text</MsgType><MsgId>2</MsgId></xml>"
    with pytest.raises(XmlError, match="<MsgId> appears more than once") as info:
        parse_push_xml(body)
    assert info.value.reason == "duplicate field"


# --- encrypted envelopes ------------------------------------------------------------------


def test_parse_envelope() -> None:
    body = (
        b"<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Encrypt><![CDATA[QUJD]]></Encrypt></xml>"
    )
    assert parse_envelope(body) == ("gh_x", "QUJD")


def test_parse_envelope_missing_fields() -> None:
    assert parse_envelope(b"<xml><Encrypt>QUJD</Encrypt></xml>") == (None, "QUJD")
    assert parse_envelope(b"<xml><ToUserName>gh_x</ToUserName></xml>") == ("gh_x", None)


def test_parse_envelope_refuses_what_parse_push_xml_refuses() -> None:
    with pytest.raises(XmlError):
        parse_envelope(BILLION_LAUGHS)


# --- building -----------------------------------------------------------------------------


def test_build_reproduces_wechats_bytes() -> None:
    fields: dict[str, str | int] = {
        "ToUserName": "gh_10f6c3c3ac5a",
        "FromUserName": "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
        "CreateTime": 1409735668,
        "MsgType": "text",
        "Content": "abcdteT",
        "MsgId": 6054768590064713728,
    }
    assert build_push_xml(fields) == SAMPLE_PUSH


def test_build_writes_numeric_fields_bare_even_as_text() -> None:
    built = build_push_xml(
        {"Location_X": "23.134521", "Scale": 20, "Idx": "1", "MsgDataId": 2247, "Label": "20"}
    )
    assert built == (
        b"<xml><Location_X>23.134521</Location_X>\n<Scale>20</Scale>\n<Idx>1</Idx>\n"
        b"<MsgDataId>2247</MsgDataId>\n<Label><![CDATA[20]]></Label>\n</xml>"
    )


def test_build_escapes_odd_bare_values() -> None:
    built = build_push_xml({"CreateTime": "1</CreateTime><MsgId>9"})
    assert b"<MsgId>" not in built
    assert parse_push_xml(built) == {"CreateTime": "1</CreateTime><MsgId>9"}


@pytest.mark.parametrize(
    "text", ["]]>", "a]]>b", "]]]]>>", "]]>]]>", "x]]", "]", "<![CDATA[", "a\rb", "\r\n.", "&amp;"]
)
def test_build_cdata_edge_cases_round_trip(text: str) -> None:
    built = build_push_xml({"Content": text, "MsgId": 1})
    assert parse_push_xml(built) == {"Content": text, "MsgId": "1"}


def test_cdata_splits_the_terminator() -> None:
    assert cdata("a]]>b") == "<![CDATA[a]]]]><![CDATA[>b]]>"
    assert cdata("") == "<![CDATA[]]>"
    assert cdata("a\rb") == "<![CDATA[a]]>&#13;<![CDATA[b]]>"


@pytest.mark.parametrize("text", ["\x00", "a\x01b", "\x1b[31m", "\ufffe", "\ud800"])
def test_build_refuses_characters_xml_cannot_carry(text: str) -> None:
    with pytest.raises(ValueError, match=r"cannot appear in XML 1\.0"):
        build_push_xml({"Content": text})


@pytest.mark.parametrize("name", ["", "1abc", "a b", "a>b", "a:b", "<x"])
def test_build_refuses_bad_element_names(name: str) -> None:
    with pytest.raises(ValueError, match="element name"):
        build_push_xml({name: "x"})


@pytest.mark.parametrize("value", [True, 1.5, None, b"bytes"])
def test_build_refuses_other_value_types(value: object) -> None:
    with pytest.raises(TypeError, match="expected str or int"):
        build_push_xml({"Content": value})  # type: ignore[dict-item]


field_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
field_values = st.one_of(xml_text, st.integers(min_value=-(2**63), max_value=2**64))


@given(fields=st.dictionaries(field_names, field_values, max_size=8))
def test_build_then_parse_round_trips(fields: dict[str, str | int]) -> None:
    expected = {
        name: "" if not str(value).strip(" \t\r\n") else str(value)
        for name, value in fields.items()
    }
    assert parse_push_xml(build_push_xml(fields)) == expected


# --- the expat reader against ElementTree ------------------------------------------------


def element_tree_fields(body: bytes) -> dict[str, str] | str:
    """What the reader must return, worked out with ``xml.etree`` over documents without a
    DTD (the reader's refusals of DTDs are tested above): the fields, or the refusal."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(body.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except ET.ParseError:
        return "malformed XML"
    if root.tag != "xml":
        return "root is not <xml>"
    fields: dict[str, str] = {}
    for child in root:
        if child.tag in fields:
            return "duplicate field"
        text = child.text or ""
        fields[child.tag] = "" if not text.strip(" \t\r\n") else text
    return fields


def reader_fields(body: bytes) -> dict[str, str] | str:
    try:
        return parse_push_xml(body)
    except XmlError as exc:
        return exc.reason


PIECES = st.sampled_from(
    [
        "<xml>",
        "</xml>",
        "<A>",
        "</A>",
        "<B x='1'>",
        "</B>",
        "<C/>",
        "<n:D xmlns:n='urn:x'>",
        "</n:D>",
        "<xml xmlns='urn:y'>",
        "<e:E>",
        "</e:E>",
        "text",
        " \n\t",
        "<![CDATA[c]]>",
        "<![CDATA[<&]]>",
        "&amp;&lt;&#13;&#x4e2d;",
        "&bad;",
        "<!-- note -->",
        "<?pi data?>",
        "中文",
        "<",
        "&",
        "\x00",
        "]]>",
    ]
)
DOCUMENTS = st.one_of(
    st.lists(PIECES, max_size=14).map("".join),
    st.lists(PIECES, max_size=10).map(lambda p: "<xml>" + "".join(p) + "</xml>"),
    st.lists(
        st.sampled_from(["<A>", "</A>", "<B>x", "</B>", "t", "<![CDATA[ ]]>"]), max_size=8
    ).map(lambda p: "<xml><A>" + "".join(p) + "</A><F>1</F></xml>"),
)


@given(DOCUMENTS)
def test_the_reader_reads_what_element_tree_reads(document: str) -> None:
    body = document.encode("utf-8")
    assert reader_fields(body) == element_tree_fields(body)


def test_nested_children_keep_only_their_own_leading_text() -> None:
    body = b"<xml><A>lead<B>inner</B>tail</A><C><![CDATA[x]]></C></xml>"
    assert parse_push_xml(body) == {"A": "lead", "C": "x"}


def test_namespaced_names_are_spelled_like_element_tree() -> None:
    assert reason_of(b"<xml xmlns='urn:y'><A>1</A></xml>") == "root is not <xml>"
    assert parse_push_xml(b"<xml><n:D xmlns:n='urn:x'>1</n:D></xml>") == {"{urn:x}D": "1"}


def test_an_entity_declaration_is_refused_even_before_it_is_used() -> None:
    body = b'<!DOCTYPE xml [<!ENTITY a "b">]><xml><A>1</A></xml>'
    assert reason_of(body) == "DTD not allowed"


def test_an_internal_subset_with_only_an_external_reference_is_refused() -> None:
    body = b'<!DOCTYPE xml PUBLIC "-//x//EN" "http://127.0.0.1:1/x.dtd"><xml><A>1</A></xml>'
    assert reason_of(body) == "DTD not allowed"


def test_documents_above_the_cap_are_not_parsed() -> None:
    from msgcube.wechat.xml import MAX_XML_BYTES

    body = b"<xml><A>" + b"a" * MAX_XML_BYTES + b"</A></xml>"
    with pytest.raises(XmlError, match="too large") as info:
        parse_push_xml(body)
    assert info.value.reason == "too large"
    padding = MAX_XML_BYTES - len(b"<xml><A></A></xml>")
    assert parse_push_xml(b"<xml><A>" + b"a" * padding + b"</A></xml>") == {"A": "a" * padding}


def test_deep_nesting_is_read_without_recursion() -> None:
    body = b"<xml><A>t" + b"<B>" * 50_000 + b"</B>" * 50_000 + b"</A></xml>"
    assert parse_push_xml(body) == {"A": "t"}
