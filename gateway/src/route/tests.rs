//! Unit tests of classification and the feature table.

use super::*;

fn c(method: &str, path: &str) -> (Provider, Option<&'static str>, Operation) {
    let r = classify(method, path).unwrap_or_else(|_| panic!("{path} should route"));
    (
        r.provider,
        r.model.map(|m| &*Box::leak(m.into_boxed_str())),
        r.operation,
    )
}

#[test]
fn developer_api_paths_in_every_version() {
    for v in ["v1beta", "v1", "v1alpha"] {
        assert_eq!(
            c(
                "POST",
                &format!("/{v}/models/gemini-2.5-flash:generateContent")
            ),
            (
                Provider::Gemini,
                Some("gemini-2.5-flash"),
                Operation::GenerateContent
            )
        );
    }
    let cases = [
        (
            "POST",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            Operation::StreamGenerateContent,
        ),
        (
            "POST",
            "/v1beta/models/gemini-2.5-flash:countTokens",
            Operation::CountTokens,
        ),
        (
            "POST",
            "/v1beta/models/text-embedding-004:embedContent",
            Operation::EmbedContent,
        ),
        (
            "POST",
            "/v1beta/models/gemini-embedding-001:batchEmbedContents",
            Operation::BatchEmbedContents,
        ),
        (
            "POST",
            "/v1beta/models/imagen-4.0-generate-001:predict",
            Operation::Predict,
        ),
        (
            "POST",
            "/v1beta/models/veo-3.1-generate-preview:predictLongRunning",
            Operation::PredictLongRunning,
        ),
        (
            "GET",
            "/v1beta/models/veo-3.1-generate-preview/operations/op123",
            Operation::GetOperation,
        ),
        ("GET", "/v1beta/models/gemini-2.5-flash", Operation::Models),
        (
            "POST",
            "/v1beta/models/gemini-2.5-flash:batchGenerateContent",
            Operation::Batch,
        ),
    ];
    for (m, p, op) in cases {
        assert_eq!(c(m, p).2, op, "{p}");
        assert_eq!(c(m, p).0, Provider::Gemini, "{p}");
    }
    assert_eq!(
        c("GET", "/v1beta/models"),
        (Provider::Gemini, None, Operation::Models)
    );
    assert_eq!(
        c("GET", "/v1beta/operations/abc").2,
        Operation::GetOperation
    );
    assert_eq!(
        c("POST", "/v1beta/cachedContents").2,
        Operation::CachedContents
    );
    assert_eq!(c("GET", "/v1beta/files/abc").2, Operation::Files);
    assert_eq!(c("GET", "/v1beta/batches/abc").2, Operation::Batch);
    assert_eq!(c("POST", "/upload/v1beta/files").2, Operation::Upload);
    assert_eq!(c("POST", "/upload/v1/files").2, Operation::Upload);
}

#[test]
fn vertex_paths() {
    let p = "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent";
    assert_eq!(
        c("POST", p),
        (
            Provider::Vertex,
            Some("gemini-2.5-pro"),
            Operation::GenerateContent
        )
    );
    let p = "/v1beta1/projects/p/locations/global/publishers/google/models/veo-3.1-generate-001:fetchPredictOperation";
    assert_eq!(c("POST", p).2, Operation::FetchPredictOperation);
    assert_eq!(
        c(
            "POST",
            "/v1beta1/publishers/google/models/imagen-4.0-generate-001:predict"
        ),
        (
            Provider::Vertex,
            Some("imagen-4.0-generate-001"),
            Operation::Predict
        )
    );
    assert_eq!(
        c(
            "POST",
            "/v1/publishers/google/models/gemini-2.5-flash:streamGenerateContent"
        )
        .2,
        Operation::StreamGenerateContent
    );
    assert_eq!(
        c(
            "POST",
            "/publishers/google/models/gemini-2.5-flash:generateContent"
        )
        .0,
        Provider::Vertex
    );
    assert_eq!(
        c("GET", "/v1beta1/projects/p/locations/l/batchPredictionJobs").2,
        Operation::Batch
    );
}

#[test]
fn unknown_paths_do_not_route() {
    for p in [
        "/",
        "/healthz",
        "/v2/models/x:generateContent",
        "/v1beta",
        "no-slash",
        "/upload/files",
    ] {
        assert_eq!(classify("POST", p), Err(NoRoute), "{p}");
    }
}

fn features(method: &str, path: &str) -> Vec<Feature> {
    classify(method, path)
        .unwrap()
        .required_features()
        .into_iter()
        .collect()
}

#[test]
fn the_feature_table() {
    use Feature::*;
    assert_eq!(
        features("POST", "/v1beta/models/gemini-2.5-flash:generateContent"),
        vec![TextGeneration]
    );
    assert_eq!(
        features(
            "POST",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        ),
        vec![Streaming, TextGeneration]
    );
    assert_eq!(
        features(
            "POST",
            "/v1beta/models/gemini-2.5-flash-image:generateContent"
        ),
        vec![ImageGeneration]
    );
    assert_eq!(
        features("POST", "/v1beta/models/imagen-4.0-generate-001:predict"),
        vec![ImageGeneration]
    );
    assert_eq!(
        features(
            "POST",
            "/v1beta/models/veo-3.0-generate-001:predictLongRunning"
        ),
        vec![VideoGeneration]
    );
    assert_eq!(
        features("GET", "/v1beta/models/veo-3.0-generate-001/operations/x"),
        Vec::<Feature>::new(),
        "polling stays allowed"
    );
    assert_eq!(
        features(
            "POST",
            "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        ),
        vec![Embeddings]
    );
    assert_eq!(
        features(
            "POST",
            "/v1/publishers/google/models/text-embedding-005:predict"
        ),
        vec![VertexAi, Embeddings]
    );
    assert_eq!(
        features("POST", "/v1beta/models/gemini-2.5-flash:countTokens"),
        vec![TokenCounting]
    );
    assert_eq!(features("POST", "/upload/v1beta/files"), vec![FileUploads]);
    assert_eq!(
        features("POST", "/v1beta/cachedContents"),
        vec![ContextCaching]
    );
    assert_eq!(
        features(
            "POST",
            "/v1beta/models/gemini-2.5-flash:batchGenerateContent"
        ),
        vec![BatchJobs]
    );
    assert_eq!(
        features("POST", "/v1beta/models/gemini-2.5-pro:generateContent"),
        vec![TextGeneration, ProModels]
    );
    assert_eq!(
        features(
            "POST",
            "/v1beta/models/imagen-4.0-ultra-generate-001:predict"
        ),
        vec![ImageGeneration, ProModels]
    );
    assert_eq!(
        features("GET", "/v1beta/models/gemini-2.5-pro"),
        Vec::<Feature>::new(),
        "listing a pro model is free"
    );
    assert_eq!(
        features("POST", "/v1/projects/p/locations/l/publishers/google/models/veo-3.1-generate-001:fetchPredictOperation"),
        vec![VertexAi]
    );
}

#[test]
fn paths_longer_than_the_segment_buffer_are_classified_the_same_way() {
    // The old classification, which always split into a Vec.
    let by_vec = |method: &str, path: &str| {
        let segs: Vec<&str> = path.strip_prefix('/').unwrap().split('/').collect();
        classify_segments(method, &segs).map(|r| (r.provider, r.model, r.operation))
    };
    let tails = [
        "models/gemini-2.5-flash:generateContent",
        "models/gemini-2.5-flash/operations/x",
        "publishers/google/models/veo-3.0-generate-001:predictLongRunning",
    ];
    // 23, 24 (the buffer's size), 25 and 40 segments, under each surface.
    for n in [23usize, 24, 25, 40] {
        for head in [
            "/v1beta1",
            "/v1beta",
            "/v1/projects/p/locations/l",
            "/nowhere",
        ] {
            for tail in tails {
                let fill = head.matches('/').count() + tail.matches('/').count() + 1;
                let pad = "x/".repeat(n.saturating_sub(fill));
                let path = format!("{head}/{pad}{tail}");
                assert_eq!(path.matches('/').count(), n.max(fill), "{path}");
                assert_eq!(
                    classify("POST", &path).map(|r| (r.provider, r.model, r.operation)),
                    by_vec("POST", &path),
                    "{path}"
                );
            }
        }
    }
}
