//! Metering: what a request used, read from the request and response bodies as they stream past.
//! [`RequestMeter`] and [`ResponseMeter`] keep a small fixed state per request (bounded captures,
//! never the body); [`settle`] turns them into counts, images, video seconds and a price.
//!
//! No I/O here: the meters are fed from pingora's body filters (the response one is synchronous).

pub mod pricing;
pub mod scan;
pub mod tokens;
pub mod usage;

use std::borrow::Cow;

use pricing::{Metered, PriceTable};
use scan::{Found, Key, Scanner, Watch};
use usage::Tokens;

use crate::route::{is_image_model, Operation, Route};

/// Request text kept for token counting (beyond it, counts are extrapolated and estimated).
const REQUEST_TEXT_BOUND: usize = 32 * 1024;
/// Separate prompt texts tracked (a request with more parts counts the rest as one).
const MAX_TEXT_SEGMENTS: usize = 4096;
/// Response text kept for estimates of streams that end without usage.
const RESPONSE_TEXT_BOUND: usize = 8 * 1024;

static REQUEST_KEYS: &[Key] = &[
    Key {
        name: b"text",
        watch: Watch::Text,
    },
    Key {
        name: b"maxOutputTokens",
        watch: Watch::Value,
    },
    Key {
        name: b"sampleCount",
        watch: Watch::Value,
    },
    Key {
        name: b"durationSeconds",
        watch: Watch::Value,
    },
    Key {
        name: b"generateAudio",
        watch: Watch::Value,
    },
    Key {
        name: b"resolution",
        watch: Watch::Value,
    },
    Key {
        name: b"cachedContent",
        watch: Watch::Value,
    },
    // The proto field name, which Google's JSON parser accepts too.
    Key {
        name: b"cached_content",
        watch: Watch::Value,
    },
    // References to other owned resources (see `resources`), in both spellings.
    Key {
        name: b"fileUri",
        watch: Watch::Value,
    },
    Key {
        name: b"file_uri",
        watch: Watch::Value,
    },
    Key {
        name: b"fileName",
        watch: Watch::Value,
    },
    Key {
        name: b"file_name",
        watch: Watch::Value,
    },
    Key {
        name: b"operationName",
        watch: Watch::Value,
    },
    Key {
        name: b"operation_name",
        watch: Watch::Value,
    },
    Key {
        name: b"fileSearchStoreNames",
        watch: Watch::Value,
    },
    Key {
        name: b"file_search_store_names",
        watch: Watch::Value,
    },
    // A tuned model named in a body (an inline batch request's `model`).
    Key {
        name: b"model",
        watch: Watch::Value,
    },
];
const RQ_TEXT: usize = 0;
const RQ_MAX_OUTPUT: usize = 1;
const RQ_SAMPLES: usize = 2;
const RQ_DURATION: usize = 3;
const RQ_AUDIO: usize = 4;
const RQ_RESOLUTION: usize = 5;
const RQ_CACHED_CONTENT: usize = 6;
const RQ_CACHED_CONTENT_PROTO: usize = 7;
/// Keys from here on reference owned resources.
const RQ_FIRST_REFERENCE: usize = 8;

static RESPONSE_KEYS: &[Key] = &[
    Key {
        name: b"usageMetadata",
        watch: Watch::Value,
    },
    Key {
        name: b"bytesBase64Encoded",
        watch: Watch::Count,
    },
    Key {
        name: b"gcsUri",
        watch: Watch::Count,
    },
    Key {
        name: b"inlineData",
        watch: Watch::Count,
    },
    Key {
        name: b"text",
        watch: Watch::Text,
    },
    Key {
        name: b"token_count",
        watch: Watch::Value,
    },
];
/// The response keys as needles: answers come from Google, so the scanner searches for the keys
/// instead of walking every string (built once).
static RESPONSE_NEEDLES: std::sync::LazyLock<Option<scan::Needles>> =
    std::sync::LazyLock::new(|| scan::Needles::new(RESPONSE_KEYS));
const RS_USAGE: usize = 0;
const RS_B64: usize = 1;
const RS_GCS: usize = 2;
const RS_INLINE: usize = 3;
const RS_TEXT: usize = 4;
const RS_TOKEN_COUNT: usize = 5;

fn number(bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?.trim_matches('"');
    s.parse::<i64>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
}

/// What the request asked for.
#[derive(Debug, Clone)]
pub struct RequestMeter {
    scanner: Scanner,
    /// Texts of the prompt (escaped JSON), up to the bound, one after another.
    text: Vec<u8>,
    /// Where each text ends in `text` (bounded; later texts join the last one).
    ends: Vec<usize>,
    /// Full length of the prompt text in bytes.
    pub text_len: usize,
    /// `generationConfig.maxOutputTokens`.
    pub max_output_tokens: Option<i64>,
    /// `parameters.sampleCount` (Imagen images, Veo videos).
    pub sample_count: Option<i64>,
    /// `parameters.durationSeconds` (Veo).
    pub duration_seconds: Option<i64>,
    /// `parameters.generateAudio` (Veo on Vertex).
    pub generate_audio: Option<bool>,
    /// `parameters.resolution` (Veo), in lines (720, 1080, 2160).
    pub resolution_lines: Option<u32>,
    /// The body names a cached content (`"cachedContent": "…cachedContents/…"`, at the top of a
    /// generateContent request or inside countTokens' `generateContentRequest`).
    pub names_cached_content: bool,
    /// Owned resources the body references (`cachedContent`, `fileUri`, a batch's `fileName`,
    /// Vertex's `operationName`, `fileSearchStoreNames`), as `collection/id`, in order.
    pub references: Vec<String>,
    /// A reference value that could not be read (longer than the capture bound, or invalid).
    pub unreadable_reference: bool,
}

impl Default for RequestMeter {
    fn default() -> Self {
        RequestMeter {
            scanner: Scanner::new(REQUEST_KEYS, REQUEST_TEXT_BOUND),
            text: Vec::new(),
            ends: Vec::new(),
            text_len: 0,
            max_output_tokens: None,
            sample_count: None,
            duration_seconds: None,
            generate_audio: None,
            resolution_lines: None,
            names_cached_content: false,
            references: Vec::new(),
            unreadable_reference: false,
        }
    }
}

impl RequestMeter {
    /// Feeds a chunk of the request body.
    pub fn feed(&mut self, chunk: &[u8]) {
        let Self {
            scanner,
            text,
            ends,
            text_len,
            max_output_tokens,
            sample_count,
            duration_seconds,
            generate_audio,
            resolution_lines,
            names_cached_content,
            references,
            unreadable_reference,
        } = self;
        scanner.feed(chunk, &mut |f| match f {
            Found::Text {
                key: RQ_TEXT,
                head,
                len,
            } => {
                *text_len += len;
                let room = REQUEST_TEXT_BOUND
                    .saturating_sub(text.len())
                    .min(head.len());
                text.extend_from_slice(&head[..room]);
                if ends.len() >= MAX_TEXT_SEGMENTS {
                    ends.pop();
                }
                ends.push(text.len());
            }
            Found::Value {
                key,
                bytes,
                truncated,
            } => match key {
                RQ_MAX_OUTPUT => *max_output_tokens = number(bytes),
                RQ_SAMPLES => *sample_count = number(bytes),
                RQ_DURATION => *duration_seconds = number(bytes),
                RQ_AUDIO => *generate_audio = Some(bytes == b"true"),
                // A cache's resource name, a string (captured without its quotes): a response
                // schema's property that happens to be called `cachedContent` (an object) is
                // not a reference.
                RQ_CACHED_CONTENT | RQ_CACHED_CONTENT_PROTO => {
                    *names_cached_content |= !matches!(bytes.first(), Some(b'{' | b'['))
                        && unescape(bytes).contains("cachedContents/");
                    *unreadable_reference |=
                        crate::resources::references(bytes, truncated, references).is_err();
                }
                k if k >= RQ_FIRST_REFERENCE => {
                    *unreadable_reference |=
                        crate::resources::references(bytes, truncated, references).is_err();
                }
                RQ_RESOLUTION => {
                    let r = String::from_utf8_lossy(bytes).to_ascii_lowercase();
                    *resolution_lines = Some(if r.contains("4k") || r.contains("2160") {
                        2160
                    } else if r.contains("1080") {
                        1080
                    } else {
                        720
                    });
                }
                _ => {}
            },
            _ => {}
        });
    }

    /// Each prompt text seen (unescaped where possible; borrowed when there is nothing to
    /// unescape, the usual case).
    pub fn texts(&self) -> impl Iterator<Item = Cow<'_, str>> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let t = unescape(&self.text[start..end]);
            start = end;
            t
        })
    }

    /// Drops the prompt texts kept (the reader's state and what it found stay).
    pub fn forget_text(&mut self) {
        self.text = Vec::new();
        self.ends = Vec::new();
    }

    /// Tokens of the prompt texts, counted one by one, extrapolated past the bound.
    pub fn count_tokens(&self, count: impl Fn(&str) -> i64) -> i64 {
        let kept: i64 = self.texts().map(|t| count(&t)).sum();
        tokens::extrapolate(kept, self.text.len(), self.text_len)
    }
}

/// Finds `"totalTokenCount"` (built once: building a finder costs more than searching a
/// `usageMetadata` object).
static TOTAL_TOKEN_COUNT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"totalTokenCount\""));

/// What the response reported.
#[derive(Debug)]
pub struct ResponseMeter {
    scanner: Scanner,
    /// The last `usageMetadata` that carries `totalTokenCount`, raw (parsed once, at the end).
    last_usage: Vec<u8>,
    /// `last_usage` parsed, once asked for (reset when a newer one arrives).
    usage: std::sync::OnceLock<Option<Tokens>>,
    /// Images returned by Imagen (`bytesBase64Encoded` / `gcsUri` entries).
    pub imagen_images: i64,
    /// `inlineData` parts (images of image-output models).
    pub inline_parts: i64,
    /// Vertex embedding `statistics.token_count`, summed.
    pub embedding_tokens: i64,
    text: Vec<u8>,
    /// Full length of the response text in bytes.
    pub text_len: usize,
    /// Bytes seen.
    pub bytes: u64,
}

impl Default for ResponseMeter {
    fn default() -> Self {
        ResponseMeter {
            scanner: match &*RESPONSE_NEEDLES {
                Some(needles) => Scanner::searching(needles, RESPONSE_TEXT_BOUND),
                None => Scanner::new(RESPONSE_KEYS, RESPONSE_TEXT_BOUND),
            },
            last_usage: Vec::new(),
            usage: std::sync::OnceLock::new(),
            imagen_images: 0,
            inline_parts: 0,
            embedding_tokens: 0,
            text: Vec::new(),
            text_len: 0,
            bytes: 0,
        }
    }
}

impl ResponseMeter {
    /// Feeds a chunk of the response body.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        let Self {
            scanner,
            last_usage,
            usage,
            imagen_images,
            inline_parts,
            embedding_tokens,
            text,
            text_len,
            ..
        } = self;
        scanner.feed(chunk, &mut |f| match f {
            // Vertex's early chunks carry a usageMetadata without counts: it must not replace one.
            Found::Value {
                key: RS_USAGE,
                bytes,
                truncated: false,
            } if TOTAL_TOKEN_COUNT.find(bytes).is_some() => {
                last_usage.clear();
                last_usage.extend_from_slice(bytes);
                *usage = std::sync::OnceLock::new();
                // The text is kept only to estimate a response that ends without usage: not
                // needed any more (every Developer API stream event carries usage), and its
                // memory is given back for the rest of a long stream.
                *text = Vec::new();
            }
            Found::Value {
                key: RS_TOKEN_COUNT,
                bytes,
                ..
            } => *embedding_tokens += number(bytes).unwrap_or(0),
            Found::Counted(RS_B64 | RS_GCS) => *imagen_images += 1,
            Found::Counted(RS_INLINE) => *inline_parts += 1,
            Found::Text {
                key: RS_TEXT,
                head,
                len,
            } => {
                *text_len += len;
                if last_usage.is_empty() {
                    let room = RESPONSE_TEXT_BOUND
                        .saturating_sub(text.len())
                        .min(head.len());
                    text.extend_from_slice(&head[..room]);
                }
            }
            _ => {}
        });
    }

    /// The response text seen (unescaped where possible).
    pub fn text(&self) -> Cow<'_, str> {
        unescape(&self.text)
    }

    /// The usage of the last complete `usageMetadata`, if any arrived.
    pub fn usage(&self) -> Option<Tokens> {
        *self.usage.get_or_init(|| usage::parse(&self.last_usage))
    }
}

/// The text of a JSON string's contents: borrowed when it has no escape, else decoded (or, if it
/// is not valid JSON, taken as it is).
fn unescape(raw: &[u8]) -> Cow<'_, str> {
    if memchr::memchr(b'\\', raw).is_none() {
        return String::from_utf8_lossy(raw);
    }
    match scan::decode_json_string(raw) {
        Some(s) => Cow::Owned(s),
        None => String::from_utf8_lossy(raw),
    }
}

/// The metered result of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Counts to price.
    pub metered: Metered,
    /// Videos generated.
    pub videos: i64,
    /// Images generated (Imagen images or image parts).
    pub images: i64,
    /// Price in micro-dollars.
    pub cost_micros: i64,
    /// True when counts were estimated rather than reported.
    pub estimated: bool,
    /// False when the model had no price and a fallback was used.
    pub priced: bool,
    /// The model's price-table name, a bounded metrics label (`None` for unknown models).
    pub model_label: Option<std::sync::Arc<str>>,
    /// An operation not billed by kind reported usage, and is billed by it.
    pub usage_reported: bool,
}

/// True when settling will run the exact tokenizer over more than a little text (Developer API
/// embeddings, which report no usage), or needs an estimate before tiktoken is loaded: the
/// caller should settle on a blocking thread.
pub fn needs_exact_count(route: &Route, req: &RequestMeter, resp: &ResponseMeter) -> bool {
    let generate = matches!(
        route.operation,
        Operation::GenerateContent | Operation::StreamGenerateContent
    );
    if generate && !tokens::estimator_loaded() && resp.usage().is_none() {
        return true;
    }
    let embedding = matches!(
        route.operation,
        Operation::EmbedContent | Operation::BatchEmbedContents
    ) || (route.operation == Operation::Predict
        && crate::route::is_embedding_model(route.model.as_deref().unwrap_or("")));
    embedding
        && resp.embedding_tokens == 0
        && resp.last_usage.is_empty()
        && (req.text_len > 1024 || !tokens::exact_loaded())
}

/// Default Veo clip length when the request names none (Google's default for Veo 3).
const DEFAULT_VIDEO_SECONDS: i64 = 8;

/// Turns what was seen into counts and a price. `success` is a 2xx from the upstream; anything
/// else is recorded unbilled.
pub fn settle(
    route: &Route,
    success: bool,
    req: &RequestMeter,
    resp: &ResponseMeter,
    prices: &PriceTable,
) -> Settled {
    let model = route.model.as_deref().unwrap_or("");
    let quote = prices.quote(route.provider, model);
    let mut s = Settled {
        priced: quote.priced || route.model.is_none(),
        model_label: quote.priced.then(|| quote.price.name.clone()),
        ..Settled::default()
    };
    if !success {
        s.priced = true;
        return s;
    }
    let m = &mut s.metered;
    match route.operation {
        Operation::GenerateContent | Operation::StreamGenerateContent => {
            match resp.usage() {
                Some(t) => m.tokens = t,
                None => {
                    // A stream cut before any usage arrived: estimate prompt and text received.
                    let input = req.count_tokens(tokens::estimate);
                    let output = tokens::estimate_extrapolated(
                        &resp.text(),
                        resp.text_len,
                        tokens::estimate,
                    );
                    m.tokens = Tokens {
                        input,
                        output,
                        total: input + output,
                        ..Tokens::default()
                    };
                    s.estimated = true;
                }
            }
            if is_image_model(model) {
                s.images = resp.inline_parts;
            }
        }
        Operation::EmbedContent | Operation::BatchEmbedContents | Operation::Predict
            if crate::route::is_embedding_model(model) =>
        {
            let input = match (resp.usage(), resp.embedding_tokens) {
                (Some(t), _) => t.input,
                (None, n) if n > 0 => n,
                // The Developer API reports nothing: count the input exactly.
                _ => {
                    let exact = |t: &str| tokens::exact(t).unwrap_or_else(|| tokens::estimate(t));
                    s.estimated = req.text_len > REQUEST_TEXT_BOUND || tokens::exact("").is_none();
                    req.count_tokens(exact)
                }
            };
            m.tokens = Tokens {
                input,
                total: input,
                ..Tokens::default()
            };
        }
        Operation::Predict => {
            s.images = resp.imagen_images;
            m.images = resp.imagen_images;
            m.bill_images = true;
        }
        Operation::PredictLongRunning => {
            // Charged when the operation is accepted: videos requested × seconds requested.
            s.videos = req.sample_count.unwrap_or(1).max(1);
            m.video_seconds =
                s.videos * req.duration_seconds.unwrap_or(DEFAULT_VIDEO_SECONDS).max(0);
            m.video_lines = req.resolution_lines.unwrap_or(720);
            // Veo 3 generates audio unless Vertex is told not to (the Developer API always does).
            m.video_audio = req.generate_audio.unwrap_or(true);
        }
        // An operation the gateway does not know (forwarded by the operator's choice): billed
        // by the usage Google reports, if any.
        Operation::Other => {
            if let Some(t) = resp.usage() {
                m.tokens = t;
                s.usage_reported = true;
            }
        }
        // countTokens, polling, listing, files, caches: recorded, never billed.
        _ => {}
    }
    s.cost_micros = pricing::cost(quote.price, m);
    s
}

#[cfg(test)]
mod tests;
