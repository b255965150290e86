"""The websocket frame reader (app.realtime.frames): what RFC 6455 lets a client send is read whole,
however the bytes are cut; everything else is a ProtocolError with its close code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.realtime.frames import (
    CLOSE_OP,
    PING_OP,
    PONG_OP,
    FrameReader,
    ProtocolError,
    close_frame,
    control_frame,
)

CONT, TEXT, BINARY = 0x0, 0x1, 0x2


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
    key: bytes = b"\x37\xfa\x21\x3d",
) -> bytes:
    """A frame as a client writes it (masked with `key`)."""
    n = len(payload)
    head = bytes((0x80 * fin | rsv << 4 | opcode,))
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes((mask_bit | n,))
    elif n < 1 << 16:
        head += bytes((mask_bit | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((mask_bit | 127,)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_all(data: bytes, cuts: list[int], max_message: int = 1 << 20) -> list[tuple[int, str | bytes]]:
    reader, out, at = FrameReader(max_message), [], 0
    for cut in [*sorted(cuts), len(data)]:
        reader.feed(data[at:cut])
        at = max(at, cut)
        while (item := reader.next()) is not None:
            out.append(item)
    return out


messages = st.lists(
    st.one_of(
        st.tuples(st.just(TEXT), st.text(max_size=300)),
        st.tuples(st.just(BINARY), st.binary(max_size=70_000)),
    ),
    min_size=1,
    max_size=4,
)


@given(messages=messages, data=st.data())
def test_messages_come_out_whole_however_fragmented_and_cut(messages, data) -> None:
    wire, expected = b"", []
    for opcode, content in messages:
        raw = content.encode() if opcode == TEXT else content
        pieces = data.draw(st.integers(1, 3))
        bounds = sorted(
            data.draw(st.lists(st.integers(0, len(raw)), min_size=pieces - 1, max_size=pieces - 1))
        )
        chunks = [raw[a:b] for a, b in zip([0, *bounds], [*bounds, len(raw)], strict=True)]
        for i, chunk in enumerate(chunks):
            key = data.draw(st.binary(min_size=4, max_size=4))
            wire += client_frame(opcode if i == 0 else CONT, chunk, fin=i == len(chunks) - 1, key=key)
            if i == 0 and len(chunks) > 1:
                wire += client_frame(PING_OP, b"mid")  # a control frame between fragments is allowed
                expected.append((PING_OP, b"mid"))
        expected.append((opcode, content))
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=6))
    assert read_all(wire, cuts) == expected


def test_control_frames_and_the_three_lengths() -> None:
    wire = (
        client_frame(PING_OP, b"x")
        + client_frame(PONG_OP, b"")
        + client_frame(TEXT, b"a" * 125)
        + client_frame(TEXT, b"b" * 126)
        + client_frame(BINARY, b"c" * 65_536)
        + client_frame(CLOSE_OP, close_frame(1000, "bye")[2:])
    )
    assert read_all(wire, []) == [
        (PING_OP, b"x"),
        (PONG_OP, b""),
        (TEXT, "a" * 125),
        (TEXT, "b" * 126),
        (BINARY, b"c" * 65_536),
        (CLOSE_OP, b"\x03\xe8bye"),
    ]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (client_frame(TEXT, b"{}", masked=False), 1002),
        (client_frame(TEXT, b"{}", rsv=4), 1002),  # RSV1: permessage-deflate, which is not negotiated
        (client_frame(0x3, b""), 1002),  # a reserved data opcode
        (client_frame(0xB, b""), 1002),  # a reserved control opcode
        (client_frame(PING_OP, b"x", fin=False), 1002),
        (client_frame(PING_OP, b"x" * 126), 1002),
        (client_frame(CONT, b"x"), 1002),  # nothing to continue
        (client_frame(TEXT, b"a", fin=False) + client_frame(TEXT, b"b"), 1002),  # a message inside one
        (client_frame(TEXT, b"\xff\xfe"), 1007),
        (client_frame(TEXT, "é".encode()[:1]), 1007),
        (client_frame(BINARY, b"x" * 101), 1009),
        (client_frame(TEXT, b"x" * 60, fin=False) + client_frame(CONT, b"x" * 60), 1009),
    ],
    ids=[
        "unmasked",
        "rsv1",
        "data-opcode-3",
        "control-opcode-11",
        "fragmented-ping",
        "long-ping",
        "lone-continuation",
        "message-in-message",
        "bad-utf8",
        "cut-utf8",
        "too-big",
        "too-big-in-fragments",
    ],
)
def test_what_a_client_must_not_send_is_a_protocol_error_with_its_code(wire: bytes, code: int) -> None:
    with pytest.raises(ProtocolError) as err:
        read_all(wire, [], max_message=100)
    assert err.value.code == code


def test_an_oversized_frame_is_refused_from_its_header_before_its_payload_arrives() -> None:
    reader = FrameReader(100)
    reader.feed(client_frame(BINARY, b"x" * 1000)[:8])  # the header and the mask only
    with pytest.raises(ProtocolError) as err:
        reader.next()
    assert err.value.code == 1009


def test_server_control_frames() -> None:
    assert control_frame(PONG_OP, b"hi") == b"\x8a\x02hi"
    assert close_frame(1008, "ping timeout") == b"\x88\x0e\x03\xf0ping timeout"
    cut = close_frame(1000, "é" * 100)  # 200 bytes of reason: cut to fit, between two characters
    assert len(cut) == 2 + 2 + 122 and cut[4:].decode() == "é" * 61
