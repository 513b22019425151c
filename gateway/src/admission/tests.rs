//! Unit tests of the reservation estimate: which prompts tiktoken counts and which are counted
//! at 3 bytes per token.

use super::*;
use crate::route::classify;

fn amounts_for(text: &str, max_output: i64) -> Amounts {
    let body = format!(
        r#"{{"contents": [{{"parts": [{{"text": "{text}"}}]}}], "generationConfig": {{"maxOutputTokens": {max_output}}}}}"#
    );
    let mut meter = RequestMeter::default();
    meter.feed(body.as_bytes());
    let route = classify("POST", "/v1beta/models/gemini-2.5-flash:generateContent").unwrap();
    let prices = PriceTable::load(std::path::Path::new("/nonexistent/pricing.toml")).unwrap();
    estimate(&route, &meter, true, body.len(), 1024, &prices)
}

fn prose(bytes: usize) -> String {
    "The sky appears blue because air scatters short wavelengths of sunlight. "
        .repeat(bytes / 72 + 1)[..bytes]
        .to_owned()
}

#[test]
fn a_short_prompt_is_counted_at_three_bytes_per_token() {
    let text = prose(600);
    let a = amounts_for(&text, 20);
    assert_eq!(
        a.get(Kind::Tokens),
        200 + 20,
        "600 bytes / 3, plus maxOutputTokens"
    );
    assert!(
        tokens::estimate(&text) < 200,
        "3 bytes per token is above tiktoken's count for prose"
    );
}

#[test]
fn a_prompt_of_one_to_sixteen_kib_is_counted_with_tiktoken() {
    tokens::warm_up();
    let text = prose(4 * 1024);
    let a = amounts_for(&text, 20);
    assert_eq!(a.get(Kind::Tokens), tokens::estimate(&text) + 20);
    assert!(tokens::estimate(&text) < 4 * 1024 / 3);
}

#[test]
fn a_prompt_over_sixteen_kib_is_counted_at_three_bytes_per_token() {
    let text = prose(20 * 1024);
    let a = amounts_for(&text, 20);
    assert_eq!(a.get(Kind::Tokens), (20 * 1024 + 2) / 3 + 20);
}

#[test]
fn until_tiktoken_is_loaded_admission_counts_three_bytes_per_token_and_starts_loading_it() {
    // In a fresh process (nextest runs each test in one) nothing has loaded tiktoken yet:
    // admission must not wait for it, and must set it loading for the next requests.
    let text = prose(4 * 1024);
    let a = amounts_for(&text, 20);
    if a.get(Kind::Tokens) == (4 * 1024 + 2) / 3 + 20 {
        let start = std::time::Instant::now();
        while !tokens::estimator_ready() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "tiktoken never finished loading in the background"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    } else {
        assert!(
            tokens::estimator_ready(),
            "counted with tiktoken before it loaded?"
        );
    }
    assert_eq!(
        amounts_for(&text, 20).get(Kind::Tokens),
        tokens::estimate(&text) + 20,
        "once loaded, tiktoken counts"
    );
}
