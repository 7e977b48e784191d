//! The SSE decoder reads complete lines, never raw chunks: however the body is cut, in the
//! middle of a UTF-8 character or between the `\r` and the `\n` of a line end, it gives the
//! same frames.

use otter_testkit::{SseDecoder, SseFrame};

/// Two events with `\r\n` line ends and characters of two, three and four bytes, a keep-alive
/// comment between them, and a second event with two data lines and `\n` line ends.
const BODY: &str = "id: 7\r\nevent: stdout\r\ndata: {\"text\":\"h\u{e9}llo \u{2014} \u{1f600}\"}\r\n\r\n\
                    : keep-alive\n\n\
                    id: 8\nevent: end\ndata: a \u{1f600}\ndata: b\n\n";

fn expected() -> Vec<SseFrame> {
    vec![
        SseFrame {
            id: Some("7".to_owned()),
            event: Some("stdout".to_owned()),
            data: "{\"text\":\"h\u{e9}llo \u{2014} \u{1f600}\"}".to_owned(),
        },
        SseFrame {
            id: Some("8".to_owned()),
            event: Some("end".to_owned()),
            data: "a \u{1f600}\nb".to_owned(),
        },
    ]
}

/// Feeds `chunks` one after the other and takes every frame.
fn decode(chunks: &[&[u8]]) -> Vec<SseFrame> {
    let mut decoder = SseDecoder::default();
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk);
        while let Some(frame) = decoder.next_frame() {
            frames.push(frame);
        }
    }
    frames
}

/// Where in [`BODY`] the byte `needle` first occurs, plus `offset`.
fn at(needle: &str, offset: usize) -> usize {
    BODY.find(needle).expect("the needle is in the body") + offset
}

#[test]
fn a_frame_cut_inside_a_character_or_a_line_end_decodes_whole() {
    let body = BODY.as_bytes();
    let cuts = [
        ("inside the two bytes of é", at("\u{e9}", 1)),
        ("inside the three bytes of —, after one", at("\u{2014}", 1)),
        ("inside the three bytes of —, after two", at("\u{2014}", 2)),
        ("inside the four bytes of 😀, after one", at("\u{1f600}", 1)),
        (
            "inside the four bytes of 😀, after three",
            at("\u{1f600}", 3),
        ),
        ("between the \\r and the \\n of a line end", at("\r\n", 1)),
        (
            "between the \\r\\n of the last field and the blank line",
            at("\r\n\r\n", 2),
        ),
        (
            "between the \\r and the \\n of the blank line",
            at("\r\n\r\n", 3),
        ),
        ("inside the field name `event`", at("event", 2)),
        (
            "just before the blank line that ends the second event",
            body.len() - 1,
        ),
    ];
    for (what, cut) in cuts {
        assert_eq!(
            decode(&[&body[..cut], &body[cut..]]),
            expected(),
            "the body cut {what} (at byte {cut})"
        );
    }
}

#[test]
fn any_cut_into_two_or_three_chunks_gives_the_same_frames() {
    let body = BODY.as_bytes();
    for first in 0..=body.len() {
        for second in first..=body.len() {
            assert_eq!(
                decode(&[&body[..first], &body[first..second], &body[second..]]),
                expected(),
                "the body cut at bytes {first} and {second}"
            );
        }
    }
}

#[test]
fn byte_by_byte_gives_the_same_frames() {
    let chunks: Vec<&[u8]> = BODY.as_bytes().chunks(1).collect();
    assert_eq!(
        decode(&chunks),
        expected(),
        "the body fed one byte at a time"
    );
}

#[test]
fn a_frame_is_not_given_before_its_blank_line() {
    let mut decoder = SseDecoder::default();
    decoder.feed(b"id: 1\r\ndata: x\r\n");
    assert_eq!(
        decoder.next_frame(),
        None,
        "a frame without its blank line yet is not complete"
    );
    decoder.feed(b"\r");
    assert_eq!(
        decoder.next_frame(),
        None,
        "a \\r without its \\n does not end the frame yet"
    );
    decoder.feed(b"\n");
    assert_eq!(
        decoder.next_frame(),
        Some(SseFrame {
            id: Some("1".to_owned()),
            event: None,
            data: "x".to_owned(),
        }),
        "the blank line's \\n completes the frame"
    );
}

#[test]
fn a_character_cut_at_the_end_of_a_chunk_is_not_replaced() {
    let mut decoder = SseDecoder::default();
    let smiley = "\u{1f600}".as_bytes();
    decoder.feed(b"data: ");
    decoder.feed(&smiley[..2]);
    decoder.feed(&smiley[2..]);
    decoder.feed(b"\n\n");
    let frame = decoder.next_frame().expect("a frame");
    assert!(
        !frame.data.contains('\u{fffd}'),
        "no replacement character where a chunk cut the character: {:?}",
        frame.data
    );
    assert_eq!(frame.data, "\u{1f600}", "the character arrives whole");
}
