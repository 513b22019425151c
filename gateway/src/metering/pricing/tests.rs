//! Unit tests of pricing.

use super::*;

fn table() -> PriceTable {
    PriceTable::parse(DEFAULT_PRICING).unwrap()
}

fn tokens(input: i64, output: i64) -> Metered {
    Metered {
        tokens: Tokens {
            input,
            output,
            total: input + output,
            ..Tokens::default()
        },
        ..Metered::default()
    }
}

#[test]
fn the_shipped_table_parses_and_covers_the_current_models() {
    let t = table();
    for m in [
        "gemini-3-pro-preview",
        "gemini-3-flash-preview",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.0-flash",
        "gemini-2.0-flash-lite",
        "gemini-2.5-flash-image",
        "gemini-embedding-001",
        "imagen-3.0-generate-002",
        "imagen-4.0-fast-generate-001",
        "imagen-4.0-generate-001",
        "imagen-4.0-ultra-generate-001",
        "veo-2.0-generate-001",
        "veo-3.0-generate-001",
        "veo-3.0-fast-generate-001",
        "veo-3.1-generate-001",
    ] {
        let q = t.quote(Provider::Gemini, m);
        assert!(q.priced, "{m} must have a price");
    }
}

#[test]
fn longest_prefix_matches_versions_and_previews() {
    let t = table();
    assert_eq!(
        t.quote(Provider::Gemini, "gemini-2.5-flash-001")
            .price
            .name
            .as_ref(),
        "gemini-2.5-flash"
    );
    assert_eq!(
        t.quote(Provider::Gemini, "gemini-2.5-flash-lite-preview-09-2025")
            .price
            .name
            .as_ref(),
        "gemini-2.5-flash-lite"
    );
    assert_eq!(
        t.quote(Provider::Gemini, "models/gemini-2.5-pro")
            .price
            .name
            .as_ref(),
        "gemini-2.5-pro"
    );
    assert_eq!(
        t.quote(Provider::Vertex, "gemini-2.0-flash-001")
            .price
            .name
            .as_ref(),
        "vertex/gemini-2.0-flash",
        "Vertex rows win on Vertex"
    );
    assert_eq!(
        t.quote(Provider::Gemini, "gemini-2.0-flash-001")
            .price
            .name
            .as_ref(),
        "gemini-2.0-flash"
    );
    assert_eq!(
        t.quote(Provider::Vertex, "gemini-2.5-flash")
            .price
            .name
            .as_ref(),
        "vertex/gemini-2.5-flash"
    );
}

#[test]
fn unknown_models_are_never_free() {
    let t = table();
    let q = t.quote(Provider::Gemini, "gemini-9-ultra-experimental");
    assert!(!q.priced);
    assert_eq!(
        q.price.name.as_ref(),
        "gemini-3-pro-preview",
        "the most expensive text model: {q:?}"
    );
    assert!(cost(q.price, &tokens(1000, 1000)) > 0);
    let q = t.quote(Provider::Gemini, "imagen-9");
    assert!(!q.priced && q.price.per_image > 0);
    let q = t.quote(Provider::Gemini, "mystery-model");
    assert_eq!(q.price.name.as_ref(), "fallback");
    assert!(cost(q.price, &tokens(1_000_000, 0)) == 4_000_000);
}

#[test]
fn costs_by_hand() {
    let t = table();
    // gemini-2.5-flash: $0.30 in, $2.50 out (thinking as output), $0.03 cached, $1.00 audio.
    let p = t.quote(Provider::Gemini, "gemini-2.5-flash").price;
    let m = Metered {
        tokens: Tokens {
            input: 10_000,
            output: 2_000,
            thinking: 1_000,
            cached: 4_000,
            input_audio: 1_000,
            total: 13_000,
            ..Tokens::default()
        },
        ..Metered::default()
    };
    // fresh 5000 × 0.30 + cached 4000 × 0.03 + audio 1000 × 1.00 + (2000 + 1000) × 2.50, per million
    let expected =
        (5_000 * 300_000 + 4_000 * 30_000 + 1_000 * 1_000_000 + 3_000 * 2_500_000) / 1_000_000;
    assert_eq!(cost(p, &m), expected);
    assert_eq!(expected, 10_120);
}

#[test]
fn the_200k_tier_applies_to_every_class() {
    let p = table()
        .quote(Provider::Gemini, "gemini-2.5-pro")
        .price
        .clone();
    assert_eq!(
        cost(&p, &tokens(200_000, 1_000)),
        (200_000 * 1_250_000 + 1_000 * 10_000_000) / 1_000_000
    );
    assert_eq!(
        cost(&p, &tokens(200_001, 1_000)),
        (200_001 * 2_500_000 + 1_000 * 15_000_000 + 500_000) / 1_000_000
    );
}

#[test]
fn images_and_videos() {
    let t = table();
    let imagen = t.quote(Provider::Gemini, "imagen-4.0-generate-001").price;
    assert_eq!(
        cost(
            imagen,
            &Metered {
                images: 3,
                bill_images: true,
                ..Metered::default()
            }
        ),
        120_000
    );
    let veo = t.quote(Provider::Vertex, "veo-3.1-generate-001").price;
    let v = |lines, audio| {
        cost(
            veo,
            &Metered {
                video_seconds: 16,
                video_lines: lines,
                video_audio: audio,
                ..Metered::default()
            },
        )
    };
    assert_eq!(v(720, true), 16 * 400_000);
    assert_eq!(v(720, false), 16 * 200_000);
    assert_eq!(v(2160, true), 16 * 600_000);
    let image_model = t.quote(Provider::Gemini, "gemini-2.5-flash-image").price;
    let m = Metered {
        tokens: Tokens {
            input: 15,
            output: 1318,
            output_image: 1290,
            total: 1333,
            ..Tokens::default()
        },
        ..Metered::default()
    };
    // 15 × 0.30 + 28 × 2.50 + 1290 × 30.00 per million = 38,774.5 → 38,775 micro-dollars
    assert_eq!(cost(image_model, &m), 38_775);
}

#[test]
fn bad_files_are_refused_with_the_row() {
    let e = PriceTable::parse("[fallback]\n[models.\"x\"]\ninput_per_mtok = -1\n").unwrap_err();
    assert!(e.to_string().contains("x.input_per_mtok"), "{e}");
    assert!(
        PriceTable::parse("[fallback]\n[models.\"x\"]\nprice = 1\n").is_err(),
        "unknown fields are refused"
    );
}

/// The longest-prefix search as it is defined (Vertex rows first on Vertex), row by row.
fn longest_prefix(t: &PriceTable, provider: Provider, model: &str) -> Option<std::sync::Arc<str>> {
    let model = model.to_ascii_lowercase();
    let vertex = (provider == Provider::Vertex)
        .then(|| {
            t.rows
                .iter()
                .filter_map(|p| Some((p, p.name.strip_prefix("vertex/")?)))
                .filter(|(_, r)| model.starts_with(r))
                .max_by_key(|(_, r)| r.len())
                .map(|(p, _)| p.name.clone())
        })
        .flatten();
    vertex.or_else(|| {
        t.rows
            .iter()
            .filter(|p| !p.name.starts_with("vertex/") && model.starts_with(&*p.name))
            .max_by_key(|p| p.name.len())
            .map(|p| p.name.clone())
    })
}

#[test]
fn a_model_named_as_a_row_gets_what_the_search_gives() {
    // A shorter Vertex row must beat a plain row named exactly as the model, on Vertex.
    let t = PriceTable::parse(
        "[fallback]\ninput_per_mtok = 1\noutput_per_mtok = 1\nper_image = 1\nper_video_second = 1\n\
         [models.\"vertex/gemini-x\"]\ninput_per_mtok = 2\noutput_per_mtok = 2\n\
         [models.\"gemini-x-pro\"]\ninput_per_mtok = 3\noutput_per_mtok = 3\n",
    )
    .unwrap();
    assert_eq!(
        &*t.quote(Provider::Vertex, "gemini-x-pro").price.name,
        "vertex/gemini-x"
    );
    assert_eq!(
        &*t.quote(Provider::Gemini, "gemini-x-pro").price.name,
        "gemini-x-pro"
    );
    let t = table();
    let mut models: Vec<String> = t
        .rows
        .iter()
        .map(|p| p.name.trim_start_matches("vertex/").to_owned())
        .collect();
    models.extend(models.clone().iter().map(|m| format!("{m}-001")));
    models.extend(models.clone().iter().map(|m| m.to_ascii_uppercase()));
    for provider in [Provider::Gemini, Provider::Vertex] {
        for m in &models {
            let q = t.quote(provider, m);
            assert_eq!(
                q.priced.then(|| q.price.name.clone()),
                longest_prefix(&t, provider, m),
                "{provider:?} {m}"
            );
        }
    }
}
