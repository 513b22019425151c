//! Unit tests of the streaming key scanner.

use super::*;

static KEYS: &[Key] = &[
    Key {
        name: b"usageMetadata",
        watch: Watch::Value,
    },
    Key {
        name: b"bytesBase64Encoded",
        watch: Watch::Count,
    },
    Key {
        name: b"text",
        watch: Watch::Text,
    },
    Key {
        name: b"sampleCount",
        watch: Watch::Value,
    },
];

#[derive(Debug, Default, PartialEq)]
struct Seen {
    values: Vec<(usize, String)>,
    truncated: Vec<bool>,
    counts: Vec<usize>,
    texts: Vec<(String, usize)>,
}

static NEEDLES: std::sync::LazyLock<Needles> =
    std::sync::LazyLock::new(|| Needles::new(KEYS).unwrap());
/// The searcher used where the CPU has no Teddy.
static AUTOMATON: std::sync::LazyLock<Needles> =
    std::sync::LazyLock::new(|| Needles::automaton(KEYS).unwrap());

/// What the modes find (walking, and searching with each searcher), which must agree (on
/// valid JSON).
fn scan_chunks(chunks: &[&[u8]]) -> Seen {
    let walked = scan_with(Scanner::new(KEYS, 8), chunks);
    let searched = scan_with(Scanner::searching(&NEEDLES, 8), chunks);
    assert_eq!(walked, searched, "walking and searching disagree");
    let automaton = scan_with(Scanner::searching(&AUTOMATON, 8), chunks);
    assert_eq!(
        walked, automaton,
        "walking and the automaton's search disagree"
    );
    walked
}

fn scan_with(mut s: Scanner, chunks: &[&[u8]]) -> Seen {
    let mut seen = Seen::default();
    for c in chunks {
        s.feed(c, &mut |f| match f {
            Found::Value {
                key,
                bytes,
                truncated,
            } => {
                seen.values
                    .push((key, String::from_utf8_lossy(bytes).into_owned()));
                seen.truncated.push(truncated);
            }
            Found::Counted(k) => seen.counts.push(k),
            Found::Text { head, len, .. } => seen
                .texts
                .push((String::from_utf8_lossy(head).into_owned(), len)),
        });
    }
    seen
}

const SSE: &[u8] = b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hello \\\"world\\\"\"}]}}],\"usageMetadata\": {\"promptTokenCount\": 4,\"totalTokenCount\": 10}}\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"more\"}]}}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokensDetails\": [{\"modality\": \"TEXT\", \"tokenCount\": 2}], \"totalTokenCount\": 12}}\r\n\r\n";

#[test]
fn finds_values_in_sse_events() {
    let seen = scan_chunks(&[SSE]);
    assert_eq!(seen.values.len(), 2);
    assert_eq!(
        seen.values[0].1,
        "{\"promptTokenCount\": 4,\"totalTokenCount\": 10}"
    );
    assert!(seen.values[1].1.ends_with("\"totalTokenCount\": 12}"));
    assert_eq!(
        seen.texts,
        vec![("Hello \\\"".to_owned(), 15), ("more".to_owned(), 4)],
        "text is bounded but its length is whole"
    );
}

#[test]
fn every_split_point_gives_the_same_answer() {
    let whole = scan_chunks(&[SSE]);
    for cut in 0..SSE.len() {
        let (a, b) = SSE.split_at(cut);
        assert_eq!(scan_chunks(&[a, b]), whole, "split at {cut}");
    }
    let bytes: Vec<&[u8]> = SSE.chunks(1).collect();
    assert_eq!(scan_chunks(&bytes), whole, "one byte at a time");
}

#[test]
fn counts_images_and_skips_their_payload() {
    let big = "A".repeat(100_000);
    let body = format!("{{\"predictions\": [{{\"bytesBase64Encoded\": \"{big}\", \"mimeType\": \"image/png\"}}, {{\"bytesBase64Encoded\": \"{big}\"}}], \"text\": \"x\"}}");
    let seen = scan_chunks(&[body.as_bytes()]);
    assert_eq!(seen.counts, vec![1, 1]);
    assert_eq!(seen.texts.len(), 1);
}

#[test]
fn keys_inside_string_values_are_not_keys() {
    let body = br#"{"text": "\"usageMetadata\": {\"x\": 1}", "note": "usageMetadata"}"#;
    let seen = scan_chunks(&[body]);
    assert!(seen.values.is_empty(), "{seen:?}");
}

#[test]
fn scalars_and_strings_as_values() {
    let body = br#"{"parameters": {"sampleCount": 3, "other": 1}} {"sampleCount":"4"}"#;
    let seen = scan_chunks(&[body]);
    assert_eq!(seen.values, vec![(3, "3".to_owned()), (3, "4".to_owned())]);
}

#[test]
fn nested_braces_in_strings_do_not_end_a_capture() {
    let body = br#"{"usageMetadata": {"a": "}{", "b": [1, {"c": 2}]}, "tail": 1}"#;
    let seen = scan_chunks(&[body]);
    assert_eq!(seen.values[0].1, r#"{"a": "}{", "b": [1, {"c": 2}]}"#);
}

#[test]
fn oversized_values_are_truncated_not_grown() {
    let inner = "9,".repeat(MAX_CAPTURE);
    let body = format!("{{\"usageMetadata\": [{inner}1]}}");
    let mut s = Scanner::new(KEYS, 8);
    let mut got = None;
    s.feed(body.as_bytes(), &mut |f| {
        if let Found::Value {
            bytes, truncated, ..
        } = f
        {
            got = Some((bytes.len(), truncated));
        }
    });
    assert_eq!(got, Some((MAX_CAPTURE, true)));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// JSON values holding the watched keys, look-alikes and awkward strings.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let key = prop_oneof![
            Just("usageMetadata"),
            Just("text"),
            Just("sampleCount"),
            Just("bytesBase64Encoded"),
            Just("a\"sampleCount"),
            Just("c\\"),
            Just("\\"),
            Just("x"),
        ]
        .prop_map(str::to_owned);
        let leaf = prop_oneof![
            any::<i32>().prop_map(serde_json::Value::from),
            "[a-zA-Z\"\\\\{}\\[\\]:, ]{0,12}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from("\"sampleCount\": 1")),
            Just(serde_json::Value::Null),
        ];
        leaf.prop_recursive(4, 48, 5, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..5)
                    .prop_map(|kv| { serde_json::Value::Object(kv.into_iter().collect()) }),
            ]
        })
    }

    fn scan_all(chunks: &[Vec<u8>]) -> Seen {
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        scan_chunks(&refs)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes in arbitrary chunks never panic and never grow state past the bounds.
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 0..16)) {
            for mut s in [Scanner::new(KEYS, 8), Scanner::searching(&NEEDLES, 8)] {
                for c in &chunks {
                    s.feed(c, &mut |_| {});
                }
                prop_assert!(s.buf.capacity() <= 2 * MAX_CAPTURE + 64);
            }
        }

        /// JSON-ish noise built from the tokens that matter (quotes, escapes, braces, keys).
        #[test]
        fn structural_noise_never_panics(parts in proptest::collection::vec(prop_oneof![
            Just("\"".to_owned()), Just("\\".to_owned()), Just("{".to_owned()), Just("}".to_owned()),
            Just("[".to_owned()), Just("]".to_owned()), Just(":".to_owned()), Just(",".to_owned()),
            Just("\"usageMetadata\"".to_owned()), Just("\"text\"".to_owned()), Just("\"sampleCount\"".to_owned()),
            Just("\"bytesBase64Encoded\"".to_owned()), "[a-z0-9 ]{0,8}",
        ], 0..64), cut in 0usize..512) {
            let body = parts.concat().into_bytes();
            let cut = cut.min(body.len());
            let (a, b) = body.split_at(cut);
            // Not JSON: the modes may disagree, but neither panics, in two chunks or tiny ones.
            scan_with(Scanner::new(KEYS, 8), &[a, b]);
            scan_with(Scanner::searching(&NEEDLES, 8), &[a, b]);
            for size in 1..4 {
                let tiny: Vec<&[u8]> = body.chunks(size).collect();
                scan_with(Scanner::new(KEYS, 8), &tiny);
                scan_with(Scanner::searching(&NEEDLES, 8), &tiny);
            }
        }

        /// On any JSON (watched keys and look-alikes at any depth, strings full of quotes,
        /// backslashes and brackets), cut into any chunks (empty ones included), searching finds
        /// what walking finds (`scan_chunks` compares them), and so does the body whole.
        #[test]
        fn the_modes_agree_on_any_json_in_any_chunks(
            v in json_value(),
            pretty in any::<bool>(),
            sizes in proptest::collection::vec(0usize..40, 1..64),
        ) {
            let body = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) };
            let body = body.unwrap();
            let all_empty = sizes.iter().all(|&n| n == 0);
            let (mut chunks, mut at, mut k) = (Vec::new(), 0, 0);
            while at < body.len() {
                let n = if all_empty { body.len() } else { sizes[k % sizes.len()] };
                let end = (at + n).min(body.len());
                chunks.push(&body[at..end]);
                at = end;
                k += 1;
            }
            prop_assert_eq!(scan_chunks(&chunks), scan_chunks(&[body.as_slice()]));
        }

        /// Any split of a real SSE body, truncated anywhere, finds a prefix of the full answer.
        #[test]
        fn truncated_streams_report_a_prefix(cut in 0usize..SSE.len(), end in 0usize..SSE.len()) {
            let end = end.max(cut);
            let seen = scan_all(&[SSE[..cut].to_vec(), SSE[cut..end].to_vec()]);
            let whole = scan_chunks(&[SSE]);
            prop_assert!(seen.values.len() <= whole.values.len());
            prop_assert_eq!(&seen.values[..], &whole.values[..seen.values.len()]);
        }
    }
}

#[test]
fn escaped_and_long_look_alikes_are_not_keys_at_any_split() {
    // A key with an escaped quote, a watched name with a prefix or a suffix (split after the
    // prefix, the rest alone is a watched name), and a key longer than any watched one are not
    // watched keys; a watched name written with escapes is one (Google decodes it), wholly
    // escaped too.
    let body = br#"{"sample\u0043ount": 1, "\"sampleCount": 2, "sampleCountX": 3, "presampleCount": 6, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa": 4, "sampleCount": 5, "\u0073\u0061\u006d\u0070\u006c\u0065\u0043\u006f\u0075\u006e\u0074": 7}"#;
    let walk = |chunks: &[&[u8]]| scan_with(Scanner::new(KEYS, 8), chunks);
    let whole = walk(&[body]);
    assert_eq!(
        whole.values,
        vec![
            (3, "1".to_owned()),
            (3, "5".to_owned()),
            (3, "7".to_owned())
        ]
    );
    // Searching finds only the name as written: answers come from Google, which never escapes
    // key names.
    let search = |chunks: &[&[u8]]| scan_with(Scanner::searching(&NEEDLES, 8), chunks);
    let searched = search(&[body]);
    assert_eq!(searched.values, vec![(3, "5".to_owned())]);
    for cut in 0..body.len() {
        let (a, b) = body.split_at(cut);
        assert_eq!(walk(&[a, b]), whole, "split at {cut}");
        assert_eq!(search(&[a, b]), searched, "searching, split at {cut}");
    }
}

#[test]
fn searching_skips_escaped_look_alikes_at_any_split_and_any_chunking() {
    // Look-alikes whose opening quote is escaped, after runs of backslashes of every length
    // (always odd in JSON: a key quoted after an escaped backslash ends its string); a key
    // after a key ending in an escaped backslash; a value ending in one; every chunking.
    let body = br#"{"a\"sampleCount": 1, "b\\\"sampleCount": 2, "c\\": {"sampleCount": 3}, "\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\"sampleCount": 4, "usageMetadata": {"x": "\\"}, "sampleCount": 5,"text": "\\\"sampleCount\": 6"}"#;
    let whole = scan_chunks(&[body]);
    assert_eq!(
        whole.values,
        vec![
            (3, "3".to_owned()),
            (0, r#"{"x": "\\"}"#.to_owned()),
            (3, "5".to_owned())
        ]
    );
    for cut in 0..body.len() {
        let (a, b) = body.split_at(cut);
        assert_eq!(scan_chunks(&[a, b]), whole, "split at {cut}");
    }
    for size in 1..24 {
        let chunks: Vec<&[u8]> = body.chunks(size).collect();
        assert_eq!(scan_chunks(&chunks), whole, "chunks of {size}");
    }
}

#[test]
fn bounds_agree_however_the_value_is_split() {
    // A value just under, at and over the capture bound, and a text over its bound: the same
    // bytes, lengths and truncation whether the value lies in one chunk or is gathered.
    for n in [MAX_CAPTURE - 1, MAX_CAPTURE, MAX_CAPTURE + 1] {
        let body = format!(
            "{{\"usageMetadata\": [{}], \"text\": \"{}\"}}",
            "1".repeat(n - 2),
            "y".repeat(n + 8 - MAX_CAPTURE)
        );
        let body = body.as_bytes();
        let whole = scan_chunks(&[body]);
        assert_eq!(whole.truncated, vec![n > MAX_CAPTURE]);
        assert_eq!(whole.values[0].1.len(), n.min(MAX_CAPTURE));
        assert_eq!(whole.texts[0].1, n + 8 - MAX_CAPTURE);
        for cut in [
            1,
            18,
            19,
            20,
            1000,
            MAX_CAPTURE + 17,
            MAX_CAPTURE + 18,
            MAX_CAPTURE + 19,
            body.len() - 2,
            body.len() - 1,
        ] {
            let (a, b) = body.split_at(cut);
            assert_eq!(scan_chunks(&[a, b]), whole, "n {n}, cut {cut}");
        }
    }
}

static LONG: &[Key] = &[Key {
    name: b"abcdefghijklmnopqrstuvwxyz0123",
    watch: Watch::Value,
}];
static LONG_NEEDLES: std::sync::LazyLock<Needles> =
    std::sync::LazyLock::new(|| Needles::new(LONG).unwrap());
static TOO_LONG: &[Key] = &[Key {
    name: b"abcdefghijklmnopqrstuvwxyz01234",
    watch: Watch::Value,
}];

#[test]
fn the_longest_needle_is_found_split_anywhere() {
    // A needle as long as the window allows (32 bytes with its quotes), after a look-alike,
    // cut into three chunks at every pair of points; a longer one is refused.
    assert!(Needles::new(TOO_LONG).is_none());
    let body = br#"{"q": "x\"abcdefghijklmnopqrstuvwxyz0123\": 1", "abcdefghijklmnopqrstuvwxyz0123" : 7, "z": 0}"#;
    for a in 0..=body.len() {
        for b in a..=body.len() {
            let seen = scan_with(
                Scanner::searching(&LONG_NEEDLES, 8),
                &[&body[..a], &body[a..b], &body[b..]],
            );
            assert_eq!(seen.values, vec![(0, "7".to_owned())], "cuts {a} {b}");
        }
    }
}

#[test]
fn every_pair_of_cuts_and_empty_chunks_give_the_same_answer() {
    // Whitespace before a colon, escaped backslashes ending strings, a look-alike in a value.
    let body = b"{\"usageMetadata\" \n: {\"a\": \"}\\\\\", \"b\": [1]},\"sampleCount\"\t:12,\"text\" : \"a\\\"b\\\\\",\"bytesBase64Encoded\":\"QQ==\",\"x\":\"\\\"text\\\": 1\"}";
    let whole = scan_chunks(&[body]);
    assert_eq!(
        whole.values,
        vec![
            (0, "{\"a\": \"}\\\\\", \"b\": [1]}".to_owned()),
            (3, "12".to_owned())
        ]
    );
    assert_eq!(whole.counts, vec![1]);
    assert_eq!(whole.texts, vec![("a\\\"b\\\\".to_owned(), 6)]);
    for a in 0..=body.len() {
        for b in a..=body.len() {
            let chunks: [&[u8]; 4] = [&body[..a], b"", &body[a..b], &body[b..]];
            assert_eq!(scan_chunks(&chunks), whole, "cuts {a} {b}");
        }
    }
}

#[test]
fn the_short_search_finds_the_first_match_wherever_it_is() {
    // Every position in and past the word-at-a-time head, with look-alike bytes around
    // (0x21 and 0x23 sit next to the quote, 0xa2 shares its low bits).
    for len in 0..40 {
        for at in 0..=len {
            let mut hay = vec![b'a'; len];
            for (i, b) in hay.iter_mut().enumerate() {
                *b = [b'!', b'#', 0xa2, b'[', b']', b'a'][i % 6];
            }
            let want = (at < len).then_some(at);
            if at < len {
                hay[at] = b'"';
                if at + 1 < len {
                    hay[at + 1] = b'\\';
                }
            }
            assert_eq!(find_quote(&hay), want, "quote, len {len} at {at}");
            assert_eq!(
                find_quote_or_escape(&hay),
                want,
                "quote or escape, len {len} at {at}"
            );
            if at < len {
                hay[at] = b'\\';
                assert_eq!(
                    find_quote_or_escape(&hay),
                    want,
                    "escape, len {len} at {at}"
                );
            }
        }
    }
}
