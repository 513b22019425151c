//! Prices: `config/pricing.toml` loaded once into integer micro-dollars, matched to models by
//! longest known prefix, and the cost of a metered request. Floats exist only while parsing the
//! file; every cost is integer arithmetic. An unknown model is never free: it gets its family's
//! most expensive price and the result says it was not priced.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::usage::Tokens;
use crate::route::Provider;

/// The price file shipped with Tollgate, used when the configured file does not exist.
pub const DEFAULT_PRICING: &str = include_str!("../../../config/pricing.toml");
/// Prompts above this many tokens use the `_above_200k` rates.
const TIER_THRESHOLD: i64 = 200_000;

/// Why a price file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    /// Not readable.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Not valid TOML or not the expected shape.
    #[error("invalid price file: {0}")]
    Parse(String),
    /// A negative or non-finite price.
    #[error("invalid price {model}.{field} = {value}: expected a price of 0 or more")]
    Value {
        /// The row.
        model: String,
        /// The field.
        field: &'static str,
        /// The value.
        value: f64,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input_per_mtok: Option<f64>,
    input_per_mtok_above_200k: Option<f64>,
    output_per_mtok: Option<f64>,
    output_per_mtok_above_200k: Option<f64>,
    cached_input_per_mtok: Option<f64>,
    cached_input_per_mtok_above_200k: Option<f64>,
    audio_input_per_mtok: Option<f64>,
    image_output_per_mtok: Option<f64>,
    per_image: Option<f64>,
    per_video_second: Option<f64>,
    per_video_second_1080p: Option<f64>,
    per_video_second_4k: Option<f64>,
    per_video_second_no_audio: Option<f64>,
    #[allow(dead_code)]
    source: Option<String>,
    #[allow(dead_code)]
    as_of: Option<String>,
    #[allow(dead_code)]
    uncertain: Option<Vec<String>>,
    #[allow(dead_code)]
    notes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    fallback: RawPrice,
    #[serde(default)]
    models: HashMap<String, RawPrice>,
}

/// One model's prices in micro-dollars (per million tokens, per image, per video second).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Price {
    /// The row's name (`gemini-2.5-flash`, `vertex/veo-3.1-generate-001`).
    pub name: std::sync::Arc<str>,
    input: i64,
    input_above: Option<i64>,
    output: i64,
    output_above: Option<i64>,
    cached: Option<i64>,
    cached_above: Option<i64>,
    audio_input: Option<i64>,
    image_output: Option<i64>,
    per_image: i64,
    per_second: i64,
    per_second_1080p: Option<i64>,
    per_second_4k: Option<i64>,
    per_second_no_audio: Option<i64>,
}

fn micros(model: &str, field: &'static str, v: Option<f64>) -> Result<Option<i64>, PricingError> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && x >= 0.0 => Ok(Some((x * 1_000_000.0).round() as i64)),
        Some(value) => Err(PricingError::Value {
            model: model.to_owned(),
            field,
            value,
        }),
    }
}

impl Price {
    fn from_raw(name: &str, r: &RawPrice) -> Result<Price, PricingError> {
        let m = |f, v| micros(name, f, v);
        Ok(Price {
            name: name.into(),
            input: m("input_per_mtok", r.input_per_mtok)?.unwrap_or(0),
            input_above: m("input_per_mtok_above_200k", r.input_per_mtok_above_200k)?,
            output: m("output_per_mtok", r.output_per_mtok)?.unwrap_or(0),
            output_above: m("output_per_mtok_above_200k", r.output_per_mtok_above_200k)?,
            cached: m("cached_input_per_mtok", r.cached_input_per_mtok)?,
            cached_above: m(
                "cached_input_per_mtok_above_200k",
                r.cached_input_per_mtok_above_200k,
            )?,
            audio_input: m("audio_input_per_mtok", r.audio_input_per_mtok)?,
            image_output: m("image_output_per_mtok", r.image_output_per_mtok)?,
            per_image: m("per_image", r.per_image)?.unwrap_or(0),
            per_second: m("per_video_second", r.per_video_second)?.unwrap_or(0),
            per_second_1080p: m("per_video_second_1080p", r.per_video_second_1080p)?,
            per_second_4k: m("per_video_second_4k", r.per_video_second_4k)?,
            per_second_no_audio: m("per_video_second_no_audio", r.per_video_second_no_audio)?,
        })
    }

    /// A rough "how expensive" rank within a family, for choosing the fallback.
    fn rank(&self) -> i64 {
        self.output.max(self.input)
            + self.image_output.unwrap_or(0)
            + self.per_image
            + self.per_second * 100
    }
}

/// What a request used, to be priced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metered {
    /// Token counts.
    pub tokens: Tokens,
    /// Images returned (Imagen; image-model outputs are priced by their tokens).
    pub images: i64,
    /// Seconds of video (all videos together).
    pub video_seconds: i64,
    /// Video resolution: 720 (default), 1080 or 2160.
    pub video_lines: u32,
    /// Whether the video has audio.
    pub video_audio: bool,
    /// Whether the image count, rather than image tokens, is what is billed (Imagen).
    pub bill_images: bool,
}

/// Model families, for the fallback price of an unknown model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Text,
    ImageOutput,
    Embedding,
    Imagen,
    Veo,
}

fn family(model: &str) -> Option<Family> {
    let m = model.strip_prefix("vertex/").unwrap_or(model);
    if m.starts_with("imagen") {
        Some(Family::Imagen)
    } else if m.starts_with("veo") {
        Some(Family::Veo)
    } else if m.contains("embedding") {
        Some(Family::Embedding)
    } else if m.starts_with("gemini") && m.contains("-image") {
        Some(Family::ImageOutput)
    } else if m.starts_with("gemini") || m.starts_with("gemma") || m.starts_with("learnlm") {
        Some(Family::Text)
    } else {
        None
    }
}

/// The whole table, immutable once loaded (swapped as a whole on reload).
#[derive(Debug, Default)]
pub struct PriceTable {
    /// Rows sorted by name length, longest first (for longest-prefix matching).
    rows: Vec<Price>,
    /// Rows by their exact name, the answer of the longest-prefix search for a model named
    /// exactly as a row (most requests), without the scan: plain rows, and Vertex rows by their
    /// name after `vertex/`.
    exact: [HashMap<Box<str>, usize>; 2],
    fallback_by_family: HashMap<Family, Price>,
    fallback: Price,
}

/// A price and whether it is the model's own.
#[derive(Debug, Clone, Copy)]
pub struct Quote<'a> {
    /// The price used.
    pub price: &'a Price,
    /// False when a fallback was used (unknown model).
    pub priced: bool,
}

impl PriceTable {
    /// Parses a price file.
    pub fn parse(text: &str) -> Result<PriceTable, PricingError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| PricingError::Parse(e.to_string()))?;
        let mut rows = Vec::with_capacity(raw.models.len());
        for (name, r) in &raw.models {
            rows.push(Price::from_raw(&name.to_ascii_lowercase(), r)?);
        }
        rows.sort_by(|a, b| {
            b.name
                .len()
                .cmp(&a.name.len())
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut fallback_by_family: HashMap<Family, Price> = HashMap::new();
        for p in &rows {
            let Some(f) = family(&p.name) else { continue };
            let best = fallback_by_family.entry(f).or_insert_with(|| p.clone());
            // Ties go to the shorter (plain) name, so the choice does not depend on order.
            if p.rank() > best.rank() || (p.rank() == best.rank() && p.name.len() < best.name.len())
            {
                *best = p.clone();
            }
        }
        let fallback = Price::from_raw("fallback", &raw.fallback)?;
        let mut exact: [HashMap<Box<str>, usize>; 2] = Default::default();
        for (i, p) in rows.iter().enumerate() {
            match p.name.strip_prefix("vertex/") {
                Some(name) => exact[1].insert(name.into(), i),
                None => exact[0].insert(Box::from(&*p.name), i),
            };
        }
        Ok(PriceTable {
            rows,
            exact,
            fallback_by_family,
            fallback,
        })
    }

    /// Reads a price file, or the built-in one when `path` does not exist.
    pub fn load(path: &Path) -> Result<PriceTable, PricingError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::parse(DEFAULT_PRICING),
            Err(e) => Err(PricingError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// The price of a model: the provider-specific row, else the plain row, by longest prefix;
    /// else the fallback of its family; else the configured fallback.
    pub fn quote(&self, provider: Provider, model: &str) -> Quote<'_> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        let lower;
        let model = if model.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = model.to_ascii_lowercase();
            lower.as_str()
        } else {
            model
        };
        // A model named exactly as a row: that row is the longest prefix. On Vertex only a
        // Vertex row answers so (a shorter Vertex row would come before a plain one).
        let exact = &self.exact[usize::from(provider == Provider::Vertex)];
        if let Some(&i) = exact.get(model) {
            return Quote {
                price: &self.rows[i],
                priced: true,
            };
        }
        let prefixed = |row: &str| -> bool {
            match (provider, row.strip_prefix("vertex/")) {
                (Provider::Vertex, Some(r)) => model.starts_with(r),
                (_, Some(_)) => false,
                (_, None) => model.starts_with(row),
            }
        };
        // Vertex rows first when on Vertex: sort puts them earlier only by length, so look twice.
        if provider == Provider::Vertex {
            if let Some(p) = self
                .rows
                .iter()
                .find(|p| p.name.starts_with("vertex/") && prefixed(&p.name))
            {
                return Quote {
                    price: p,
                    priced: true,
                };
            }
        }
        if let Some(p) = self
            .rows
            .iter()
            .find(|p| !p.name.starts_with("vertex/") && prefixed(&p.name))
        {
            return Quote {
                price: p,
                priced: true,
            };
        }
        let price = family(model)
            .and_then(|f| self.fallback_by_family.get(&f))
            .unwrap_or(&self.fallback);
        Quote {
            price,
            priced: false,
        }
    }

    /// Number of rows (for logs).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// micro-dollars per million × count, summed, then divided once (rounding half up).
fn per_million(parts: &[(i64, i64)]) -> i64 {
    let total: i128 = parts
        .iter()
        .map(|&(n, p)| i128::from(n.max(0)) * i128::from(p))
        .sum();
    ((total + 500_000) / 1_000_000) as i64
}

/// The cost of a metered request, in micro-dollars.
pub fn cost(price: &Price, m: &Metered) -> i64 {
    let t = &m.tokens;
    let above = t.input > TIER_THRESHOLD;
    let tier = |base: i64, high: Option<i64>| if above { high.unwrap_or(base) } else { base };
    let input = tier(price.input, price.input_above);
    let output = tier(price.output, price.output_above);
    let cached = if above {
        price.cached_above.or(price.cached)
    } else {
        price.cached
    }
    .unwrap_or(input);
    let audio = price.audio_input.unwrap_or(input);
    let cached_tokens = t.cached.min(t.input);
    let audio_tokens = t.input_audio.min(t.input - cached_tokens);
    let fresh = t.input - cached_tokens - audio_tokens;
    let image_tokens = t.output_image.min(t.output);
    let image_rate = price.image_output.unwrap_or(output);
    let tokens = per_million(&[
        (fresh + t.tool_prompt, input),
        (cached_tokens, cached),
        (audio_tokens, audio),
        (t.output - image_tokens + t.thinking, output),
        (image_tokens, image_rate),
    ]);
    let images = if m.bill_images {
        m.images * price.per_image
    } else {
        0
    };
    let per_second = match (m.video_lines, m.video_audio) {
        (l, _) if l >= 2160 => price.per_second_4k.unwrap_or(price.per_second),
        (l, _) if l >= 1080 => price.per_second_1080p.unwrap_or(price.per_second),
        (_, false) => price.per_second_no_audio.unwrap_or(price.per_second),
        _ => price.per_second,
    };
    tokens + images + m.video_seconds * per_second
}

#[cfg(test)]
mod tests;
