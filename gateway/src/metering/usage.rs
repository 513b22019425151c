//! Token usage as Google reports it (`usageMetadata`), parsed from a captured JSON object, and
//! the totals a usage event records.

use std::fmt;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

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
struct Details {
    audio: i64,
    image: i64,
}

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Sums;
        impl<'de> Visitor<'de> for Sums {
            type Value = Details;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of modality token counts")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Details, A::Error> {
                let mut sums = Details::default();
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

/// `usageMetadata` of a GenerateContentResponse (or embedContent on Vertex).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
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
    prompt_tokens_details: Details,
    #[serde(default)]
    candidates_tokens_details: Details,
}

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

impl UsageMetadata {
    /// Parses a captured `usageMetadata` object; `None` when it is not one, or when it carries no
    /// `totalTokenCount` (Vertex's early stream chunks), which must not replace a complete one.
    pub fn parse(bytes: &[u8]) -> Option<Tokens> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_counts_are_read() {
        let t = UsageMetadata::parse(br#"{"promptTokenCount": 754, "candidatesTokenCount": 49, "thoughtsTokenCount": 5, "cachedContentTokenCount": 700, "toolUsePromptTokenCount": 3, "totalTokenCount": 811, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4}, {"modality": "AUDIO", "tokenCount": 750}], "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 40}]}"#).unwrap();
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
        let t = UsageMetadata::parse(br#"{"totalTokenCount": 1, "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 5}, {"modality": "\u0041UDIO", "tokenCount": 7}, {"tokenCount": 100}, {"modality": "VIDEO", "tokenCount": 9}], "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 2}, {"modality": "IMAGE", "tokenCount": 3}, {"modality": "TEXT", "tokenCount": 4}, {"modality": null, "tokenCount": 6}]}"#).unwrap();
        assert_eq!((t.input_audio, t.output_image), (12, 5));
        assert!(
            UsageMetadata::parse(br#"{"totalTokenCount": 1, "promptTokensDetails": 3}"#).is_none(),
            "a details value that is not a list is not usage"
        );
    }

    #[test]
    fn vertex_partial_blocks_are_not_usage() {
        assert!(UsageMetadata::parse(br#"{"trafficType": "ON_DEMAND"}"#).is_none());
        assert!(UsageMetadata::parse(b"not json").is_none());
        let t = UsageMetadata::parse(
            br#"{"promptTokenCount": 7, "thoughtsTokenCount": 19, "totalTokenCount": 26}"#,
        )
        .unwrap();
        assert_eq!(
            (t.input, t.output, t.thinking),
            (7, 0, 19),
            "no candidatesTokenCount when nothing visible"
        );
    }
}
