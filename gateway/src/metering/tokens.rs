//! Local token counting. Gemini 2.x/3.x count text with the Gemma-3 SentencePiece model, which
//! `gemini-tokenizer` embeds: exact, used where a count is recorded (Developer API embeddings
//! return no usage). tiktoken's o200k is a fast approximation, used only for estimates (aborted
//! streams without usage, reservations). Each is loaded when first needed, never at start-up:
//! o200k alone holds ~50 MiB resident, more than 100,000 keys do. Settling waits for a load on a
//! blocking thread (see `needs_exact_count`); admission never waits ([`estimator_ready`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static O200K: OnceLock<Option<tiktoken_rs::CoreBPE>> = OnceLock::new();
static O200K_STARTED: AtomicBool = AtomicBool::new(false);

fn o200k() -> Option<&'static tiktoken_rs::CoreBPE> {
    O200K
        .get_or_init(|| match tiktoken_rs::o200k_base() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot load tiktoken o200k; estimating at 3 bytes per token");
                None
            }
        })
        .as_ref()
}

static GEMINI: OnceLock<Option<gemini_tokenizer::LocalTokenizer>> = OnceLock::new();

fn gemini() -> Option<&'static gemini_tokenizer::LocalTokenizer> {
    GEMINI
        .get_or_init(|| match gemini_tokenizer::LocalTokenizer::new("gemini-2.5-flash") {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot load the Gemini tokenizer; falling back to estimates");
                None
            }
        })
        .as_ref()
}

/// Loads the estimating tokenizer now (blocking, a few hundred ms: keep it off the request path).
pub fn warm_up() {
    let _ = o200k();
}

/// Whether the estimating tokenizer is loaded (and nothing else).
pub fn estimator_loaded() -> bool {
    O200K.get().is_some()
}

/// Whether the estimating tokenizer is loaded. The first call that finds it missing starts
/// loading it on a thread of its own, so callers that must not wait use a cruder rule meanwhile.
pub fn estimator_ready() -> bool {
    if O200K.get().is_some() {
        return true;
    }
    if !O200K_STARTED.swap(true, Ordering::Relaxed) {
        let started = std::thread::Builder::new()
            .name("tollgate-tiktoken".into())
            .spawn(|| {
                // Spawned from a proxy worker, it would share its priority: loading takes a few
                // hundred ms of CPU that requests should not wait behind (Linux: this thread only).
                #[cfg(target_os = "linux")]
                let _ = rustix::process::setpriority_process(None, 10);
                warm_up();
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start loading tiktoken; it loads on first use");
        }
    }
    false
}

/// Whether the exact tokenizer is loaded (its first use loads it, which takes ~100 ms).
pub fn exact_loaded() -> bool {
    GEMINI.get().is_some()
}

/// Exact Gemini token count of a text, when the tokenizer loaded.
pub fn exact(text: &str) -> Option<i64> {
    gemini().map(|t| t.count_tokens(text, None).total_tokens as i64)
}

/// A fast estimate of the Gemini token count of a text (loads tiktoken on first use: call it
/// where blocking is fine, or check [`estimator_ready`] first).
pub fn estimate(text: &str) -> i64 {
    match o200k() {
        Some(t) => t.encode_ordinary(text).len() as i64,
        None => (text.len() as i64 + 2) / 3,
    }
}

/// Estimates tokens for `len` bytes of which only `head` was kept: counts the head, and
/// extrapolates the rest at the head's bytes-per-token (4 bytes per token when the head is empty).
pub fn estimate_extrapolated(head: &str, len: usize, count: impl Fn(&str) -> i64) -> i64 {
    let counted = if head.is_empty() { 0 } else { count(head) };
    extrapolate(counted, head.len(), len)
}

/// `counted` tokens were found in the first `seen` of `total` bytes: scales the count to the
/// whole (4 bytes per token when nothing was seen).
pub fn extrapolate(counted: i64, seen: usize, total: usize) -> i64 {
    if seen == 0 {
        return (total as i64 + 3) / 4;
    }
    if total <= seen {
        return counted;
    }
    counted + (total - seen) as i64 * counted.max(1) / seen as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_matches_googles_count_for_a_known_prompt() {
        // The tokenizer crate's own reference: "What is your name?" is 5 tokens.
        assert_eq!(exact("What is your name?"), Some(5));
    }

    #[test]
    fn estimates_are_close_on_prose() {
        let text = "The sky is blue because molecules in the air scatter blue light from the sun more than they scatter red light.";
        let e = estimate(text);
        let x = exact(text).unwrap();
        assert!(
            (e - x).abs() * 10 <= x,
            "estimate {e} vs exact {x}: within 10 % on prose"
        );
    }

    #[test]
    fn extrapolation_scales_the_unseen_part() {
        assert_eq!(estimate_extrapolated("", 400, |_| 0), 100);
        assert_eq!(estimate_extrapolated("abcd", 8, |_| 1), 2);
        assert_eq!(estimate_extrapolated("abcd", 4, |_| 1), 1);
    }
}

#[cfg(test)]
mod comparison {
    use super::*;

    /// The two tokenizers on our fixture texts (printed with `--nocapture`): prose within a few
    /// percent, code and markup further apart, as Google's and tiktoken's vocabularies differ.
    #[test]
    fn estimate_vs_exact_on_fixtures() {
        let fixtures = [
            ("prose", "Tollgate is a reverse proxy for Google's generative AI APIs. Applications change only their base URL and API key, and every request is tied to the organization behind it. It refuses requests an organization may not make, forwards everything else unchanged, and meters what was used."),
            ("code", "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n    for (i, x) in v.iter().enumerate() {\n        println!(\"{i}: {x}\");\n    }\n}\n"),
            ("json", r#"{"contents": [{"role": "user", "parts": [{"text": "why is the sky blue"}]}], "generationConfig": {"maxOutputTokens": 200}}"#),
        ];
        for (name, text) in fixtures {
            let (e, x) = (estimate(text), exact(text).unwrap());
            let diff = (e - x) as f64 * 100.0 / x as f64;
            println!("{name}: gemini {x}, tiktoken o200k {e} ({diff:+.1} %)");
            assert!(
                diff.abs() < 35.0,
                "{name}: the estimate is a usable approximation"
            );
        }
    }
}
