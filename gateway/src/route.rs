//! Classification: from a request's method and path to the provider, model and operation, and
//! the feature flags the request needs. Pure functions over borrowed strings; no I/O, no
//! allocation beyond the model name.

use store::Feature;

/// Which Google surface a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// The Gemini Developer API (`generativelanguage.googleapis.com`).
    Gemini,
    /// Vertex AI (`aiplatform.googleapis.com`).
    Vertex,
}

impl Provider {
    /// The label used in events, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Gemini => "gemini",
            Provider::Vertex => "vertex",
        }
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `:generateContent`
    GenerateContent,
    /// `:streamGenerateContent` (SSE with `alt=sse`, else a JSON array)
    StreamGenerateContent,
    /// `:countTokens`
    CountTokens,
    /// `:computeTokens` (Vertex)
    ComputeTokens,
    /// `:embedContent`
    EmbedContent,
    /// `:batchEmbedContents`
    BatchEmbedContents,
    /// `:predict` (Imagen, or Vertex embeddings)
    Predict,
    /// `:predictLongRunning` (Veo)
    PredictLongRunning,
    /// `:fetchPredictOperation` (Vertex Veo polling)
    FetchPredictOperation,
    /// `GET …/operations/…` (Developer API polling)
    GetOperation,
    /// `GET models`, `GET models/{m}`
    Models,
    /// `cachedContents…`
    CachedContents,
    /// `files…` (metadata, listing, download)
    Files,
    /// `/upload/…` (resumable upload start and chunks)
    Upload,
    /// `:batchGenerateContent`, `batches…`, `batchPredictionJobs…`, `:asyncBatchEmbedContent`
    Batch,
    /// Anything else under a known surface, forwarded as is.
    Other,
}

impl Operation {
    /// The label used in events, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::GenerateContent => "generateContent",
            Operation::StreamGenerateContent => "streamGenerateContent",
            Operation::CountTokens => "countTokens",
            Operation::ComputeTokens => "computeTokens",
            Operation::EmbedContent => "embedContent",
            Operation::BatchEmbedContents => "batchEmbedContents",
            Operation::Predict => "predict",
            Operation::PredictLongRunning => "predictLongRunning",
            Operation::FetchPredictOperation => "fetchPredictOperation",
            Operation::GetOperation => "getOperation",
            Operation::Models => "models",
            Operation::CachedContents => "cachedContents",
            Operation::Files => "files",
            Operation::Upload => "upload",
            Operation::Batch => "batch",
            Operation::Other => "other",
        }
    }

    fn from_method(method: &str) -> Operation {
        match method {
            "generateContent" => Operation::GenerateContent,
            "streamGenerateContent" => Operation::StreamGenerateContent,
            "countTokens" => Operation::CountTokens,
            "computeTokens" => Operation::ComputeTokens,
            "embedContent" => Operation::EmbedContent,
            "batchEmbedContents" => Operation::BatchEmbedContents,
            "predict" => Operation::Predict,
            "predictLongRunning" => Operation::PredictLongRunning,
            "fetchPredictOperation" => Operation::FetchPredictOperation,
            "batchGenerateContent" | "asyncBatchEmbedContent" => Operation::Batch,
            _ => Operation::Other,
        }
    }
}

/// A classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The surface, and so the upstream.
    pub provider: Provider,
    /// The model id (`gemini-2.5-flash`), when the path names one.
    pub model: Option<String>,
    /// What the request does.
    pub operation: Operation,
}

/// Why a path was not routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute;

const GEMINI_VERSIONS: &[&str] = &["v1beta", "v1", "v1alpha"];
const VERTEX_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// More path segments than any Google endpoint has (the longest, a Vertex operation, has 11).
const MAX_SEGMENTS: usize = 24;

/// Classifies a request by its path (without the query string).
pub fn classify(method: &str, path: &str) -> Result<Route, NoRoute> {
    let path = path.strip_prefix('/').ok_or(NoRoute)?;
    // Google's paths have at most a dozen segments: split into a fixed array, no allocation
    // (a longer path, which no Google endpoint has, is split into a Vec and classified the same).
    let mut buf = [""; MAX_SEGMENTS];
    let mut n = 0;
    for seg in path.split('/') {
        if n == MAX_SEGMENTS {
            return classify_segments(method, &path.split('/').collect::<Vec<_>>());
        }
        buf[n] = seg;
        n += 1;
    }
    classify_segments(method, &buf[..n])
}

fn classify_segments(method: &str, segs: &[&str]) -> Result<Route, NoRoute> {
    match segs {
        // Resumable uploads: /upload/{version}/files…
        ["upload", v, "files", ..] if GEMINI_VERSIONS.contains(v) => {
            Ok(gemini(None, Operation::Upload))
        }
        // Vertex, project scope: /{v}/projects/{p}/locations/{l}/…
        [v, "projects", _, "locations", _, rest @ ..] if VERTEX_VERSIONS.contains(v) => {
            Ok(vertex(rest, method))
        }
        // Vertex, express mode: /{v}/publishers/{pub}/models/{m}:…
        [v, "publishers", rest @ ..] if VERTEX_VERSIONS.contains(v) => {
            Ok(vertex(&[&["publishers"], rest].concat(), method))
        }
        // Vertex, collection scope (no version): /publishers/{pub}/models/{m}:…
        ["publishers", ..] => Ok(vertex(segs, method)),
        // Everything else under v1beta1 is Vertex.
        ["v1beta1", rest @ ..] => Ok(vertex(rest, method)),
        // The Developer API.
        [v, rest @ ..] if GEMINI_VERSIONS.contains(v) && !rest.is_empty() => {
            gemini_route(rest, method)
        }
        _ => Err(NoRoute),
    }
}

fn gemini(model: Option<String>, operation: Operation) -> Route {
    Route {
        provider: Provider::Gemini,
        model,
        operation,
    }
}

fn gemini_route(rest: &[&str], method: &str) -> Result<Route, NoRoute> {
    let route = match rest {
        ["models" | "tunedModels", m] => {
            let (model, op) = model_and_method(m, method);
            gemini(Some(model), op)
        }
        ["models" | "tunedModels", m, "operations", ..] => {
            gemini(Some((*m).to_owned()), Operation::GetOperation)
        }
        ["models"] => gemini(None, Operation::Models),
        ["operations", ..] => gemini(None, Operation::GetOperation),
        ["cachedContents", ..] => gemini(None, Operation::CachedContents),
        ["files", ..] => gemini(None, Operation::Files),
        ["batches", ..] => gemini(None, Operation::Batch),
        _ => gemini(None, Operation::Other),
    };
    Ok(route)
}

/// `rest` starts after the project/location (or at `publishers`).
fn vertex(rest: &[&str], method: &str) -> Route {
    let (model, operation) = match rest {
        ["publishers", _, "models", m] => {
            let (model, op) = model_and_method(m, method);
            (Some(model), op)
        }
        ["publishers", _, "models", m, "operations", ..] => {
            (Some((*m).to_owned()), Operation::GetOperation)
        }
        ["publishers", _, "models"] => (None, Operation::Models),
        ["models", m] | ["endpoints", m] => {
            let (model, op) = model_and_method(m, method);
            (Some(model), op)
        }
        ["cachedContents", ..] => (None, Operation::CachedContents),
        ["batchPredictionJobs", ..] => (None, Operation::Batch),
        ["operations", ..] => (None, Operation::GetOperation),
        _ => (None, Operation::Other),
    };
    Route {
        provider: Provider::Vertex,
        model,
        operation,
    }
}

/// Splits `gemini-2.5-flash:generateContent` into the model and the operation.
fn model_and_method(seg: &str, http_method: &str) -> (String, Operation) {
    match seg.split_once(':') {
        Some((model, m)) => (model.to_owned(), Operation::from_method(m)),
        None if http_method == "GET" => (seg.to_owned(), Operation::Models),
        None => (seg.to_owned(), Operation::Other),
    }
}

/// True for models that generate images (Imagen, Gemini image-output models).
pub fn is_image_model(model: &str) -> bool {
    model.starts_with("imagen") || model.contains("-image")
}

/// True for embedding models.
pub fn is_embedding_model(model: &str) -> bool {
    model.contains("embedding")
}

/// True for the expensive tier (`*-pro*`, `*-ultra*`).
pub fn is_pro_model(model: &str) -> bool {
    model.contains("-pro") || model.contains("-ultra")
}

impl Route {
    /// `models/{m}:{method}` with a method not known here (or a POST to a model without one).
    pub fn is_unknown_method(&self) -> bool {
        self.operation == Operation::Other && self.model.is_some()
    }

    /// Whether this request counts toward usage and limits: generation, embeddings, images,
    /// videos and batches do; counting tokens, polling, listing, files and caches do not.
    pub fn is_metered(&self) -> bool {
        matches!(
            self.operation,
            Operation::GenerateContent
                | Operation::StreamGenerateContent
                | Operation::EmbedContent
                | Operation::BatchEmbedContents
                | Operation::Predict
                | Operation::PredictLongRunning
                | Operation::Batch
        )
    }

    /// The feature flags this request needs, all of which must be on. This is the one table
    /// from operations to flags (documented in the README).
    pub fn required_features(&self) -> Needs {
        let model = self.model.as_deref().unwrap_or("");
        let mut need = Needs::default();
        if self.provider == Provider::Vertex {
            need.push(Feature::VertexAi);
        }
        match self.operation {
            Operation::GenerateContent if is_image_model(model) => {
                need.push(Feature::ImageGeneration)
            }
            Operation::GenerateContent => need.push(Feature::TextGeneration),
            Operation::StreamGenerateContent => {
                need.push(Feature::Streaming);
                need.push(if is_image_model(model) {
                    Feature::ImageGeneration
                } else {
                    Feature::TextGeneration
                });
            }
            Operation::CountTokens | Operation::ComputeTokens => need.push(Feature::TokenCounting),
            Operation::EmbedContent | Operation::BatchEmbedContents => {
                need.push(Feature::Embeddings)
            }
            Operation::Predict if is_embedding_model(model) => need.push(Feature::Embeddings),
            Operation::Predict => need.push(Feature::ImageGeneration),
            Operation::PredictLongRunning => need.push(Feature::VideoGeneration),
            Operation::Files | Operation::Upload => need.push(Feature::FileUploads),
            Operation::CachedContents => need.push(Feature::ContextCaching),
            Operation::Batch => need.push(Feature::BatchJobs),
            Operation::FetchPredictOperation
            | Operation::GetOperation
            | Operation::Models
            | Operation::Other => {}
        }
        let generates = !matches!(
            self.operation,
            Operation::Models | Operation::GetOperation | Operation::FetchPredictOperation
        );
        if generates && is_pro_model(model) {
            need.push(Feature::ProModels);
        }
        need
    }
}

/// The flags one request needs: at most four (Vertex, streaming, the kind, pro), kept inline so
/// the check allocates nothing per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    flags: [Option<Feature>; 4],
}

impl Needs {
    fn push(&mut self, f: Feature) {
        if let Some(slot) = self.flags.iter_mut().find(|s| s.is_none()) {
            *slot = Some(f);
        }
    }
}

impl IntoIterator for Needs {
    type Item = Feature;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<Feature>, 4>>;

    fn into_iter(self) -> Self::IntoIter {
        self.flags.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests;
