//! Token usage as Google reports it (`usageMetadata`), read from a captured JSON object, and the
//! totals a usage event records. The object's shape is known, so a small reader takes the counts
//! it needs and steps over the rest, once per answer; the tests keep serde's derive of the same
//! as the reference the reader must agree with.

use std::borrow::Cow;

use super::scan::{decode_json_string, find_quote_or_escape};

/// Metered token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt tokens, cached included.
    pub input: i64,
    /// Visible output tokens, image tokens included.
    pub output: i64,
    /// Thinking tokens.
    pub thinking: i64,
    /// Cached prompt tokens.
    pub cached: i64,
    /// Tool-use prompt tokens.
    pub tool_prompt: i64,
    /// Total as reported.
    pub total: i64,
    /// Audio prompt tokens.
    pub input_audio: i64,
    /// Image output tokens.
    pub output_image: i64,
}

/// The counts of a `usageMetadata` object; `None` when it is not one (not JSON, a count that is
/// not an integer, a field twice, a details value that is not a list), or when it carries no
/// `totalTokenCount` (Vertex's early stream chunks), which must not replace a complete one.
pub fn parse(bytes: &[u8]) -> Option<Tokens> {
    let mut r = Reader { b: bytes, i: 0 };
    let u = r.usage()?;
    r.ws();
    if r.i != bytes.len() {
        return None;
    }
    let total = u.total?;
    let mut output = u.candidates;
    // Some responses already count thoughts inside candidates (LiteLLM guards for it too).
    if u.thoughts > 0
        && u.prompt
            .saturating_add(output)
            .saturating_add(u.tool_prompt)
            == total
    {
        output = output.saturating_sub(u.thoughts);
    }
    Some(Tokens {
        input: u.prompt,
        output: output.max(0),
        thinking: u.thoughts,
        cached: u.cached,
        tool_prompt: u.tool_prompt,
        total,
        input_audio: u.prompt_details.audio,
        output_image: u.candidates_details.image,
    })
}

/// The fields read from `usageMetadata`.
#[derive(Default)]
struct Usage {
    prompt: i64,
    candidates: i64,
    thoughts: i64,
    cached: i64,
    tool_prompt: i64,
    total: Option<i64>,
    prompt_details: Details,
    candidates_details: Details,
}

/// A `*TokensDetails` list, summed by the modalities a usage event records apart.
#[derive(Debug, Default)]
struct Details {
    audio: i64,
    image: i64,
}

/// The fields of `usageMetadata` read, in the order `Reader::usage` numbers them.
const USAGE_FIELDS: &[&[u8]] = &[
    b"promptTokenCount",
    b"candidatesTokenCount",
    b"thoughtsTokenCount",
    b"cachedContentTokenCount",
    b"toolUsePromptTokenCount",
    b"totalTokenCount",
    b"promptTokensDetails",
    b"candidatesTokensDetails",
];

/// How deep a skipped value may nest (serde_json's own limit).
const MAX_DEPTH: u32 = 128;

/// A cursor over JSON text that reads what `usageMetadata` holds.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// `null`, consumed if it is next.
    fn null(&mut self) -> Option<bool> {
        if self.peek()? != b'n' {
            return Some(false);
        }
        self.word(b"null")?;
        Some(true)
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        let end = self.i + w.len();
        (self.b.get(self.i..end)? == w).then(|| self.i = end)
    }

    /// A string's contents, decoded when it holds escapes (a name written `\u0041UDIO` is
    /// `AUDIO`). Its bytes are not validated (UTF-8, control characters): a string is only ever
    /// compared with ASCII names.
    fn string(&mut self) -> Option<Cow<'a, [u8]>> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i += find_quote_or_escape(self.b.get(self.i..)?)?;
            if self.b[self.i] == b'"' {
                break;
            }
            escaped = true;
            self.i += 2;
        }
        let raw = &self.b[start..self.i];
        self.i += 1;
        if escaped {
            return decode_json_string(raw).map(|s| Cow::Owned(s.into_bytes()));
        }
        Some(Cow::Borrowed(raw))
    }

    /// An integer that fits an `i64` (a fraction or an exponent is not one).
    fn int(&mut self) -> Option<i64> {
        self.ws();
        let start = self.i;
        self.digits()?;
        let text = &self.b[start..self.i];
        // `-0` is a float to serde_json, as are fractions and exponents.
        if text == b"-0" || matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        // Accumulated on the number's own side, so that i64::MIN fits and overflow is refused.
        let (negative, digits) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        let mut n: i64 = 0;
        for &d in digits {
            let d = i64::from(d - b'0');
            n = n.checked_mul(10)?;
            n = if negative {
                n.checked_sub(d)?
            } else {
                n.checked_add(d)?
            };
        }
        Some(n)
    }

    /// An optional minus and the integer part (no leading zero).
    fn digits(&mut self) -> Option<()> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let from = self.i;
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        let n = self.i - from;
        (n == 1 || (n > 1 && self.b[from] != b'0')).then_some(())
    }

    /// Any number.
    fn number(&mut self) -> Option<()> {
        self.digits()?;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.more_digits()?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            self.more_digits()?;
        }
        Some(())
    }

    fn more_digits(&mut self) -> Option<()> {
        let from = self.i;
        while let Some(b'0'..=b'9') = self.b.get(self.i) {
            self.i += 1;
        }
        (self.i > from).then_some(())
    }

    /// Steps over any value.
    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.items(b'}', |r| {
                r.string()?;
                r.eat(b':')?;
                r.skip(depth + 1)
            }),
            b'[' => self.items(b']', |r| r.skip(depth + 1)),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => self.number(),
        }
    }

    /// The items of an object or an array (its opening bracket next), each read by `item`, up to
    /// the closing `end`.
    fn items(&mut self, end: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.i += 1;
        if self.peek()? == end {
            self.i += 1;
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                c if c == end => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object's next key and its colon: the key's index in `names` (`Some(None)`, its value
    /// stepped over, when it is none of them; `None` when one comes twice, which serde refuses).
    fn field(&mut self, names: &[&[u8]], seen: &mut u16) -> Option<Option<usize>> {
        let key = self.string()?;
        self.eat(b':')?;
        let Some(at) = names.iter().position(|n| **n == *key) else {
            self.skip(1)?;
            return Some(None);
        };
        if *seen & (1 << at) != 0 {
            return None;
        }
        *seen |= 1 << at;
        Some(Some(at))
    }

    /// The `usageMetadata` object.
    fn usage(&mut self) -> Option<Usage> {
        let mut u = Usage::default();
        let mut seen = 0;
        if self.peek()? != b'{' {
            return None;
        }
        self.items(b'}', |r| {
            let Some(field) = r.field(USAGE_FIELDS, &mut seen)? else {
                return Some(());
            };
            match field {
                0 => u.prompt = r.int()?,
                1 => u.candidates = r.int()?,
                2 => u.thoughts = r.int()?,
                3 => u.cached = r.int()?,
                4 => u.tool_prompt = r.int()?,
                5 => u.total = if r.null()? { None } else { Some(r.int()?) },
                6 => u.prompt_details = r.details()?,
                _ => u.candidates_details = r.details()?,
            }
            Some(())
        })?;
        Some(u)
    }

    /// A `*TokensDetails` list, summed by modality.
    fn details(&mut self) -> Option<Details> {
        let mut d = Details::default();
        if self.peek()? != b'[' {
            return None;
        }
        self.items(b']', |r| {
            let (modality, count) = r.modality_count()?;
            match modality.as_deref() {
                Some(b"AUDIO") => d.audio = d.audio.saturating_add(count),
                Some(b"IMAGE") => d.image = d.image.saturating_add(count),
                _ => {}
            }
            Some(())
        })?;
        Some(d)
    }

    /// One entry of a details list: its modality (`None` when absent or null) and token count.
    fn modality_count(&mut self) -> Option<(Option<Cow<'a, [u8]>>, i64)> {
        let (mut modality, mut count, mut seen) = (None, 0, 0);
        if self.peek()? != b'{' {
            return None;
        }
        self.items(b'}', |r| {
            let Some(field) = r.field(&[b"modality", b"tokenCount"], &mut seen)? else {
                return Some(());
            };
            if field == 0 {
                modality = if r.null()? { None } else { Some(r.string()?) };
            } else {
                count = r.int()?;
            }
            Some(())
        })?;
        Some((modality, count))
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Deserialize;

    use super::*;

    /// The modalities a usage event records apart; the others are only read past.
    #[derive(Deserialize)]
    enum Modality {
        #[serde(rename = "AUDIO")]
        Audio,
        #[serde(rename = "IMAGE")]
        Image,
        #[serde(other)]
        Other,
    }

    /// One entry of a `*TokensDetails` list (matched without allocating, escaped names included).
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ModalityCount {
        #[serde(default)]
        modality: Option<Modality>,
        #[serde(default)]
        token_count: i64,
    }

    /// A `*TokensDetails` list, summed by the modalities we record while it is parsed (no list or
    /// string is allocated).
    #[derive(Debug, Default)]
    struct SerdeDetails {
        audio: i64,
        image: i64,
    }

    impl<'de> Deserialize<'de> for SerdeDetails {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Sums;
            impl<'de> Visitor<'de> for Sums {
                type Value = SerdeDetails;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a list of modality token counts")
                }
                fn visit_seq<A: SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<SerdeDetails, A::Error> {
                    let mut sums = SerdeDetails::default();
                    while let Some(m) = seq.next_element::<ModalityCount>()? {
                        match m.modality {
                            Some(Modality::Audio) => sums.audio += m.token_count,
                            Some(Modality::Image) => sums.image += m.token_count,
                            Some(Modality::Other) | None => {}
                        }
                    }
                    Ok(sums)
                }
            }
            d.deserialize_seq(Sums)
        }
    }

    /// `usageMetadata` as serde's derive reads it: the reference the reader must agree with.
    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct UsageMetadata {
        #[serde(default)]
        prompt_token_count: i64,
        #[serde(default)]
        candidates_token_count: i64,
        #[serde(default)]
        thoughts_token_count: i64,
        #[serde(default)]
        cached_content_token_count: i64,
        #[serde(default)]
        tool_use_prompt_token_count: i64,
        total_token_count: Option<i64>,
        #[serde(default)]
        prompt_tokens_details: SerdeDetails,
        #[serde(default)]
        candidates_tokens_details: SerdeDetails,
    }

    impl UsageMetadata {
        fn parse(bytes: &[u8]) -> Option<Tokens> {
            let u: UsageMetadata = serde_json::from_slice(bytes).ok()?;
            let total = u.total_token_count?;
            let mut output = u.candidates_token_count;
            // Some responses already count thoughts inside candidates (LiteLLM guards for it too).
            if u.thoughts_token_count > 0
                && u.prompt_token_count + output + u.tool_use_prompt_token_count == total
            {
                output -= u.thoughts_token_count;
            }
            Some(Tokens {
                input: u.prompt_token_count,
                output: output.max(0),
                thinking: u.thoughts_token_count,
                cached: u.cached_content_token_count,
                tool_prompt: u.tool_use_prompt_token_count,
                total,
                input_audio: u.prompt_tokens_details.audio,
                output_image: u.candidates_tokens_details.image,
            })
        }
    }

    #[test]
    fn all_counts_are_read() {
        let t = parse(br#"{"promptTokenCount": 754, "candidatesTokenCount": 49, "thoughtsTokenCount": 5, "cachedContentTokenCount": 700, "toolUsePromptTokenCount": 3, "totalTokenCount": 811, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4}, {"modality": "AUDIO", "tokenCount": 750}], "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 40}]}"#).unwrap();
        assert_eq!(
            t,
            Tokens {
                input: 754,
                output: 49,
                thinking: 5,
                cached: 700,
                tool_prompt: 3,
                total: 811,
                input_audio: 750,
                output_image: 40
            }
        );
    }

    #[test]
    fn details_are_summed_per_modality_whatever_their_spelling_in_json() {
        // Several entries of a modality add up; an escaped name is the same name; entries
        // without a modality or of other modalities are not audio or image.
        let t = parse(br#"{"totalTokenCount": 1, "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 5}, {"modality": "\u0041UDIO", "tokenCount": 7}, {"tokenCount": 100}, {"modality": "VIDEO", "tokenCount": 9}], "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 2}, {"modality": "IMAGE", "tokenCount": 3}, {"modality": "TEXT", "tokenCount": 4}, {"modality": null, "tokenCount": 6}]}"#).unwrap();
        assert_eq!((t.input_audio, t.output_image), (12, 5));
        assert!(
            parse(br#"{"totalTokenCount": 1, "promptTokensDetails": 3}"#).is_none(),
            "a details value that is not a list is not usage"
        );
    }

    #[test]
    fn vertex_partial_blocks_are_not_usage() {
        assert!(parse(br#"{"trafficType": "ON_DEMAND"}"#).is_none());
        assert!(parse(b"not json").is_none());
        let t =
            parse(br#"{"promptTokenCount": 7, "thoughtsTokenCount": 19, "totalTokenCount": 26}"#)
                .unwrap();
        assert_eq!(
            (t.input, t.output, t.thinking),
            (7, 0, 19),
            "no candidatesTokenCount when nothing visible"
        );
    }

    mod against_serde {
        use super::*;
        use proptest::prelude::*;

        /// A count as Google writes it, or as it must not be read (null, a fraction, a string).
        fn count() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => (0i64..100_000).prop_map(|n| n.to_string()),
                1 => Just("-3".to_owned()),
                1 => Just("null".to_owned()),
                1 => Just("1.5".to_owned()),
                1 => Just("1e2".to_owned()),
                1 => Just("\"7\"".to_owned()),
                1 => Just("007".to_owned()),
            ]
        }

        fn details() -> impl Strategy<Value = String> {
            let modality = prop_oneof![
                Just("\"AUDIO\""),
                Just("\"IMAGE\""),
                Just("\"TEXT\""),
                Just("\"\\u0041UDIO\""),
                Just("null"),
                Just("3"),
            ];
            let entry = (
                proptest::option::of(modality),
                proptest::option::of(count()),
                0usize..3,
            )
                .prop_map(|(m, c, extra)| {
                    let mut parts = Vec::new();
                    parts.extend(m.map(|m| format!("\"modality\": {m}")));
                    parts.extend(c.map(|c| format!("\"tokenCount\": {c}")));
                    match extra {
                        1 => parts.push(r#""x": {"y": [1, 2.5e3, "z\"", true, null]}"#.to_owned()),
                        2 => parts.push(r#""tokenCount": 1"#.to_owned()),
                        _ => {}
                    }
                    format!("{{{}}}", parts.join(", "))
                });
            prop_oneof![
                6 => proptest::collection::vec(entry, 0..4).prop_map(|v| format!("[{}]", v.join(","))),
                1 => Just("3".to_owned()),
                1 => Just("null".to_owned()),
            ]
        }

        /// Usage's fields, one of them also written with an escape, and fields it does not read.
        const NAMES: [&str; 11] = [
            "promptTokenCount",
            "candidatesTokenCount",
            "thoughtsTokenCount",
            "cachedContentTokenCount",
            "toolUsePromptTokenCount",
            "totalTokenCount",
            "total\\u0054okenCount",
            "trafficType",
            "promptTokensDetails",
            "candidatesTokensDetails",
            "cacheTokensDetails",
        ];

        fn field(name: &str, count: &str, details: &str) -> String {
            let value = if name.ends_with("Details") {
                details
            } else if name == "trafficType" {
                "\"ON_DEMAND\""
            } else {
                count
            };
            format!("\"{name}\": {value}")
        }

        /// Some of the fields in any order, sometimes one twice.
        fn usage_object() -> impl Strategy<Value = String> {
            (
                proptest::sample::subsequence(NAMES.to_vec(), 0..=NAMES.len()).prop_shuffle(),
                proptest::collection::vec((count(), details()), NAMES.len()),
                proptest::option::weighted(0.1, 0..NAMES.len()),
                prop_oneof![Just(""), Just(" "), Just("\n  ")],
            )
                .prop_map(|(mut names, values, repeat, ws)| {
                    names.extend(repeat.map(|r| NAMES[r]));
                    let fields: Vec<String> = names
                        .iter()
                        .zip(values.iter().cycle())
                        .map(|(n, (c, d))| field(n, c, d))
                        .collect();
                    format!("{{{ws}{}{ws}}}", fields.join(&format!(",{ws}")))
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// Whole, cut short or followed by more, any object of usage's fields (repeated,
            /// escaped, of the wrong type, with unknown ones) reads the same as with serde.
            #[test]
            fn the_reader_agrees_with_serde(
                obj in usage_object(),
                cut in any::<proptest::sample::Index>(),
                more in any::<bool>(),
            ) {
                let b = obj.as_bytes();
                prop_assert_eq!(parse(b), UsageMetadata::parse(b), "{}", obj);
                let prefix = &b[..cut.index(b.len() + 1)];
                prop_assert_eq!(parse(prefix), UsageMetadata::parse(prefix));
                if more {
                    let longer = format!("{obj} x");
                    prop_assert_eq!(parse(longer.as_bytes()), UsageMetadata::parse(longer.as_bytes()));
                }
            }
        }

        #[test]
        fn counts_at_the_edges_of_an_i64() {
            for (text, want) in [
                ("9223372036854775807", Some(i64::MAX)),
                ("-9223372036854775808", Some(i64::MIN)),
                ("9223372036854775808", None),
                ("-0", None),
                ("-", None),
                ("1.0", None),
            ] {
                let body = format!("{{\"totalTokenCount\": {text}}}");
                assert_eq!(parse(body.as_bytes()).map(|t| t.total), want, "{text}");
                assert_eq!(
                    UsageMetadata::parse(body.as_bytes()).map(|t| t.total),
                    want,
                    "serde, {text}"
                );
            }
        }
    }
}
