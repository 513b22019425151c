//! Unit tests of resource names, references, claims and the owners registry.

use super::*;
use crate::route::classify;

fn access_of(method: &str, path: &str) -> Access {
    access(method, path, &classify(method, path).unwrap())
}

fn one(r: &str) -> Access {
    Access::One(r.to_owned())
}

#[test]
fn paths_that_name_a_resource_are_checked_by_collection_and_id() {
    assert_eq!(
        access_of("GET", "/v1beta/files/abc-123"),
        one("files/abc-123")
    );
    assert_eq!(access_of("DELETE", "/v1beta/files/abc"), one("files/abc"));
    assert_eq!(
        access_of("GET", "/v1beta/files/abc:download"),
        one("files/abc")
    );
    assert_eq!(
        access_of("PATCH", "/v1beta/cachedContents/c1"),
        one("cachedContents/c1")
    );
    assert_eq!(
        access_of("POST", "/v1beta/batches/b1:cancel"),
        one("batches/b1")
    );
    // Veo polling: the operation, whatever model prefix it has.
    assert_eq!(
        access_of(
            "GET",
            "/v1beta/models/veo-3.1-generate-preview/operations/op1"
        ),
        one("operations/op1")
    );
    assert_eq!(
        access_of("GET", "/v1/operations/op2"),
        one("operations/op2")
    );
    // Vertex.
    assert_eq!(
        access_of(
            "GET",
            "/v1/projects/p/locations/us-central1/cachedContents/c9"
        ),
        one("cachedContents/c9")
    );
    assert_eq!(
        access_of(
            "GET",
            "/v1/projects/p/locations/l/publishers/google/models/veo-3.0-generate-001/operations/o7"
        ),
        one("operations/o7")
    );
    assert_eq!(
        access_of("GET", "/v1/projects/p/locations/l/batchPredictionJobs/j1"),
        one("batchPredictionJobs/j1")
    );
    // A store's documents and operations belong to the store's owner.
    assert_eq!(
        access_of("GET", "/v1beta/fileSearchStores/s1/operations/o1"),
        one("fileSearchStores/s1")
    );
    // A tuned model is used by name: only its owner may.
    assert_eq!(
        access_of("POST", "/v1beta/tunedModels/mine-1:generateContent"),
        one("tunedModels/mine-1")
    );
    // Not an id Google issues: owned by nobody, so refused.
    assert_eq!(access_of("GET", "/v1beta/files/a%2Fb"), one("files/a%2Fb"));
    // A method creating something on an owned resource is checked against it first.
    assert_eq!(
        access_of("POST", "/v1beta/tunedModels/theirs:predictLongRunning"),
        one("tunedModels/theirs")
    );
}

#[test]
fn listings_creations_and_free_requests() {
    assert_eq!(access_of("GET", "/v1beta/files"), Access::List);
    assert_eq!(access_of("GET", "/v1beta/cachedContents"), Access::List);
    assert_eq!(access_of("GET", "/v1beta/batches"), Access::List);
    assert_eq!(
        access_of("GET", "/v1beta/models/veo-3.1-generate-preview/operations"),
        Access::List
    );
    assert_eq!(access_of("POST", "/v1beta/cachedContents"), Access::Create);
    assert_eq!(access_of("POST", "/upload/v1beta/files"), Access::Create);
    assert_eq!(access_of("POST", "/v1beta/files:register"), Access::Create);
    assert_eq!(
        access_of(
            "POST",
            "/v1beta/models/veo-3.1-generate-preview:predictLongRunning"
        ),
        Access::Create
    );
    assert_eq!(
        access_of(
            "POST",
            "/v1beta/models/gemini-2.5-flash:batchGenerateContent"
        ),
        Access::Create
    );
    assert_eq!(
        access_of(
            "POST",
            "/v1/projects/p/locations/l/publishers/google/models/veo-3.0-generate-001:fetchPredictOperation"
        ),
        Access::Poll
    );
    for free in [
        ("POST", "/v1beta/models/gemini-2.5-flash:generateContent"),
        (
            "POST",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        ),
        ("GET", "/v1beta/models"),
        ("GET", "/v1beta/models/gemini-2.5-flash"),
        (
            "POST",
            "/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-flash:generateContent",
        ),
    ] {
        assert_eq!(access_of(free.0, free.1), Access::Free, "{free:?}");
    }
}

#[test]
fn references_name_google_held_resources_only() {
    let k = |s: &str| key_of_reference(s).unwrap();
    assert_eq!(k("files/abc"), Some("files/abc".into()));
    assert_eq!(
        k("https://generativelanguage.googleapis.com/v1beta/files/abc"),
        Some("files/abc".into())
    );
    assert_eq!(
        k("https://generativelanguage.googleapis.com/v1beta/files/abc:download?alt=media"),
        Some("files/abc".into())
    );
    assert_eq!(
        k("HTTPS://Generativelanguage.GOOGLEAPIS.com:443/v1beta/files/x"),
        Some("files/x".into())
    );
    assert_eq!(k("cachedContents/c1"), Some("cachedContents/c1".into()));
    assert_eq!(
        k("projects/p/locations/l/cachedContents/c1"),
        Some("cachedContents/c1".into())
    );
    assert_eq!(
        k("projects/p/locations/l/publishers/google/models/veo/operations/o1"),
        Some("operations/o1".into())
    );
    // Customers' own storage and the public web are not this project's resources.
    assert_eq!(k("gs://bucket/files/report.pdf"), None);
    assert_eq!(k("https://www.youtube.com/watch?v=files"), None);
    assert_eq!(k("https://example.com/files/abc"), None);
    // Cloud Storage over https is the customer's own storage too.
    assert_eq!(
        k("https://storage.googleapis.com/acme/files/report.pdf"),
        None
    );
    assert_eq!(
        k("https://storage.googleapis.com/acme/files/my%20report.pdf"),
        None
    );
    assert_eq!(
        k("https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/cachedContents/c1"),
        Some("cachedContents/c1".into())
    );
    assert_eq!(k("report.pdf"), None);
    // Forms Google might still resolve to a resource: plain http, a trailing dot, a fragment.
    assert_eq!(
        k("http://generativelanguage.googleapis.com./v1beta/files/abc#frag"),
        Some("files/abc".into())
    );
    // A collection followed by something that is not a clean id cannot be checked.
    for odd in [
        "files/abc%20",
        "https://generativelanguage.googleapis.com/v1beta/files/a%62c",
        "files/abc#x",
        "https://generativelanguage.googleapis.com/v1beta/%66iles/abc",
        "%66iles/abc",
    ] {
        assert!(key_of_reference(odd).is_err(), "{odd}");
    }
}

#[test]
fn reference_values_strings_arrays_escapes_and_unreadable() {
    let mut out = Vec::new();
    references(b"files/a", false, &mut out).unwrap();
    references(
        br"https:\/\/generativelanguage.googleapis.com\/v1beta\/files\/b",
        false,
        &mut out,
    )
    .unwrap();
    references(br"\u0066iles/c", false, &mut out).unwrap();
    references(
        br#"["fileSearchStores/s1", "fileSearchStores/s2"]"#,
        false,
        &mut out,
    )
    .unwrap();
    // A schema property that happens to have the name: not a reference.
    references(br#"{"type": "STRING"}"#, false, &mut out).unwrap();
    assert_eq!(
        out,
        [
            "files/a",
            "files/b",
            "files/c",
            "fileSearchStores/s1",
            "fileSearchStores/s2"
        ]
    );
    assert!(references(b"files/a", true, &mut out).is_err());
    assert!(references(b"[\"files/a\"", false, &mut out).is_err());
}

#[test]
fn claims_are_read_where_google_puts_names_only() {
    let upload = br#"{"file": {"name": "files/x27lu0k9zc2k", "displayName": "files/not-this", "uri": "https://generativelanguage.googleapis.com/v1beta/files/x27lu0k9zc2k", "state": "ACTIVE"}}"#;
    let veo = br#"{"name": "models/veo-3.1-generate-preview/operations/op1", "done": true, "response": {"@type": "t", "generateVideoResponse": {"generatedSamples": [{"video": {"uri": "https://generativelanguage.googleapis.com/v1beta/files/vid1:download?alt=media"}}, {"video": {"uri": "https://generativelanguage.googleapis.com/v1beta/files/vid2:download?alt=media"}}]}}}"#;
    // A model's function call in the batch's output carries a `name` of the attacker's
    // choosing: not claimed.
    let batch = br#"{"name": "batches/b1", "metadata": {"state": "BATCH_STATE_SUCCEEDED", "output": {"responsesFile": "files/out1"}}, "response": {"inlinedResponses": [{"response": {"candidates": [{"content": {"parts": [{"functionCall": {"name": "files/victim"}}]}}]}}]}}"#;
    let register = br#"{"files": [{"name": "files/r1"}, {"name": "files/r2"}]}"#;
    let cases: [(&[u8], &[&str]); 5] = [
        (upload, &["files/x27lu0k9zc2k"]),
        (veo, &["operations/op1", "files/vid1", "files/vid2"]),
        (batch, &["batches/b1", "files/out1"]),
        (register, &["files/r1", "files/r2"]),
        (b"not json", &[]),
    ];
    for (body, want) in cases {
        assert_eq!(claimed_names(body), want);
    }
}

#[test]
fn the_first_claim_wins() {
    let owners = Owners::default();
    assert!(owners.claim("files/a", 1));
    assert!(!owners.claim("files/a", 2));
    assert!(owners.claim("files/a", 1));
    assert!(owners.owns(1, "files/a"));
    assert!(!owners.owns(2, "files/a"));
    assert!(!owners.owns(1, "files/b"));
    // Only the new claim waits for the store.
    assert_eq!(owners.pending(), 1);
    // Google made the name anew for 2 (after 1 deleted it): 2 owns it now.
    owners.take_over("files/a", 2);
    assert!(owners.owns(2, "files/a"));
    // Only the owner's deletion frees a name.
    owners.release("files/a", 1);
    assert!(owners.owns(2, "files/a"));
    owners.release("files/a", 2);
    assert_eq!(owners.owner("files/a"), None);
    assert_eq!(owners.pending(), 3);
}

#[test]
fn odd_paths_method_overrides_and_interactions_are_refused() {
    for p in [
        "/v1beta/%66iles/abc",
        "/v1beta/files/mine/../theirs",
        "/v1beta/files/./abc",
        "/v1beta//models/gemini-2.5-pro:generateContent",
        "/v1beta/files/abc;x=1",
        "/v1beta/interactions",
        "/v1beta/interactions/i1",
    ] {
        assert!(unsupported_path(p).is_some(), "{p}");
    }
    assert!(unsupported_path("/v1beta/models/gemini-2.5-flash:generateContent").is_none());
    assert!(unsupported_path("/upload/v1beta/files").is_none());
    assert!(
        unsupported_path("/v1beta/files/").is_none(),
        "a trailing slash"
    );
    assert!(unsupported_path("/v1beta/interactionsish").is_none());
    let mut h = http::HeaderMap::new();
    h.insert("x-goog-api-key", "k".parse().unwrap());
    assert!(!overrides_method(&h));
    h.insert("X-HTTP-Method-Override", "GET".parse().unwrap());
    assert!(overrides_method(&h));
}

#[test]
fn owners_past_their_collections_retention_are_forgotten() {
    let owners = Owners::default();
    owners.take_over("files/old", 1);
    owners.take_over("operations/op", 1);
    owners.take_over("cachedContents/c", 1);
    let now = chrono::Utc::now().timestamp();
    let day = 24 * 3600;
    owners.prune(now + 6 * day);
    assert!(owners.owns(1, "files/old"), "within a week");
    owners.prune(now + 8 * day);
    assert_eq!(
        owners.owner("files/old"),
        None,
        "files are gone at Google after 48 h"
    );
    assert!(owners.owns(1, "operations/op"));
    owners.prune(now + 31 * day);
    assert_eq!(owners.owner("operations/op"), None);
    owners.prune(now + 3650 * day);
    assert!(
        owners.owns(1, "cachedContents/c"),
        "caches last until deleted"
    );
}

#[test]
fn ownership_changes_survive_a_process_that_never_stored_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claims.jsonl");
    let owners = Owners::with_journal(path.clone()).unwrap();
    owners.take_over("cachedContents/a", 1);
    assert!(owners.claim("files/b", 1));
    owners.take_over("files/c", 2);
    owners.release("files/c", 2);
    // Sealed as a flush would before its write failed, then one more change.
    let sealed = owners.journal.as_ref().unwrap().seal();
    assert_eq!(sealed, Some(0));
    owners.take_over("batches/d", 3);
    drop(owners); // killed: nothing stored

    let again = Owners::with_journal(path.clone()).unwrap();
    assert!(again.owns(1, "cachedContents/a"));
    assert!(again.owns(1, "files/b"));
    assert_eq!(again.owner("files/c"), None, "released again");
    assert!(again.owns(3, "batches/d"));
    assert_eq!(
        again.pending(),
        5,
        "every change waits to be stored, in order"
    );
    let p = again.pending.lock().unwrap().clone();
    assert_eq!(p[0], ResourceChange::TakeOver("cachedContents/a".into(), 1));
    assert_eq!(p[4], ResourceChange::TakeOver("batches/d".into(), 3));
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["claims.jsonl"], "one file holds what is left");

    // Once stored, the journal is empty.
    let seq = again.journal.as_ref().unwrap().seal().unwrap();
    again.journal.as_ref().unwrap().stored(seq);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let third = Owners::with_journal(path).unwrap();
    assert_eq!(third.pending(), 0);
    assert!(third.is_empty());
}
