//! Unit tests of identity.

use super::*;
use http::HeaderValue;

const APP: &str = "tg_appAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const SVC: &str = "tg_svcSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS";
const OLD: &str = "tg_oldOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOOO";

fn snap() -> Snapshot {
    Snapshot::for_tests(
        &[(1, "acme"), (2, "globex")],
        &[
            (10, 1, KeyKind::App, APP, false),
            (11, 1, KeyKind::Service, SVC, false),
            (12, 2, KeyKind::App, OLD, true),
        ],
    )
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn a_key_is_found_wherever_the_sdks_put_it() {
    let s = snap();
    let by_header = identify(&s, &headers(&[("x-goog-api-key", APP)]), None).unwrap();
    assert_eq!((by_header.org_id, by_header.key_id), (1, 10));
    let q = format!("alt=sse&key={APP}");
    assert_eq!(
        identify(&s, &HeaderMap::new(), Some(&q)).unwrap().key_id,
        10
    );
    let bearer = format!("Bearer {APP}");
    assert_eq!(
        identify(&s, &headers(&[("authorization", &bearer)]), None)
            .unwrap()
            .key_id,
        10
    );
}

#[test]
fn missing_unknown_and_revoked_keys_are_refused() {
    let s = snap();
    assert_eq!(
        identify(&s, &HeaderMap::new(), Some("alt=sse")),
        Err(GatewayError::MissingKey)
    );
    assert_eq!(
        identify(&s, &headers(&[("x-goog-api-key", "AIzaSyGoogleKey")]), None),
        Err(GatewayError::UnknownKey)
    );
    assert_eq!(
        identify(&s, &headers(&[("x-goog-api-key", "tg_nope")]), None),
        Err(GatewayError::UnknownKey)
    );
    assert_eq!(
        identify(&s, &headers(&[("x-goog-api-key", OLD)]), None),
        Err(GatewayError::RevokedKey)
    );
}

#[test]
fn only_service_keys_may_name_the_org() {
    let mut s = snap();
    s.set_acts_for(SVC, store::ActsFor::Any);
    let svc = identify(
        &s,
        &headers(&[("x-goog-api-key", SVC), ("x-tollgate-org", "globex")]),
        None,
    )
    .unwrap();
    assert_eq!((svc.org_id, &*svc.org_name), (2, "globex"));
    let by_id = identify(
        &s,
        &headers(&[("x-goog-api-key", SVC), ("x-tollgate-org", "2")]),
        None,
    )
    .unwrap();
    assert_eq!(by_id.org_id, 2);
    let own = identify(&s, &headers(&[("x-goog-api-key", SVC)]), None).unwrap();
    assert_eq!(
        own.org_id, 1,
        "without the header a service key bills its own org"
    );
    assert_eq!(
        identify(
            &s,
            &headers(&[("x-goog-api-key", APP), ("x-tollgate-org", "globex")]),
            None
        ),
        Err(GatewayError::OrgHeaderNotAllowed)
    );
    assert_eq!(
        identify(
            &s,
            &headers(&[("x-goog-api-key", SVC), ("x-tollgate-org", "initech")]),
            None
        ),
        Err(GatewayError::UnknownOrg("initech".into()))
    );
}

#[test]
fn a_service_key_names_only_the_orgs_it_was_allowed() {
    let mut s = Snapshot::for_tests(
        &[(1, "acme"), (2, "globex"), (3, "initech")],
        &[(11, 1, KeyKind::Service, SVC, false)],
    );
    let named = |s: &Snapshot, org: &str| {
        identify(
            s,
            &headers(&[("x-goog-api-key", SVC), ("x-tollgate-org", org)]),
            None,
        )
        .map(|i| i.org_id)
    };
    // By default: its own org only, and no hint whether another exists.
    assert_eq!(named(&s, "acme"), Ok(1));
    assert_eq!(
        named(&s, "globex"),
        Err(GatewayError::OrgNotAllowed("globex".into()))
    );
    assert_eq!(
        named(&s, "nowhere"),
        Err(GatewayError::OrgNotAllowed("nowhere".into()))
    );
    s.set_acts_for(SVC, store::ActsFor::Orgs(vec![2]));
    assert_eq!(named(&s, "globex"), Ok(2));
    assert_eq!(named(&s, "3"), Err(GatewayError::OrgNotAllowed("3".into())));
    s.set_acts_for(SVC, store::ActsFor::Any);
    assert_eq!(named(&s, "initech"), Ok(3));
    assert_eq!(
        named(&s, "nowhere"),
        Err(GatewayError::UnknownOrg("nowhere".into()))
    );
    assert_eq!(
        store::ActsFor::from_db("2,3"),
        store::ActsFor::Orgs(vec![2, 3])
    );
    assert_eq!(
        store::ActsFor::from_db("2,x"),
        store::ActsFor::Own,
        "unreadable: narrowest"
    );
    assert_eq!(store::ActsFor::Orgs(vec![2, 3]).to_db(), "2,3");
}

#[test]
fn attribution_headers_are_kept_and_bounded() {
    let s = snap();
    let long = "u".repeat(500);
    let id = identify(
        &s,
        &headers(&[
            ("x-goog-api-key", APP),
            ("x-tollgate-user", &long),
            ("x-tollgate-tool", "search"),
        ]),
        None,
    )
    .unwrap();
    assert_eq!(id.user.unwrap().len(), 128);
    assert_eq!(id.tool.as_deref(), Some("search"));
}

#[test]
fn remembered_digests_are_each_keys_own() {
    use sha2::{Digest, Sha256};
    let mut memo = super::DigestMemo::new();
    // Three times more keys than slots, seen twice in different orders: slots are shared and
    // retaken, and every answer is still the digest of the key asked for.
    let keys: Vec<String> = (0..3 * 1024).map(|i| format!("tg_{i:040}")).collect();
    for round in 0..2 {
        for (i, k) in keys.iter().enumerate() {
            let k = if round == 0 {
                k
            } else {
                &keys[keys.len() - 1 - i]
            };
            let want: [u8; 32] = Sha256::digest(k.as_bytes()).into();
            assert_eq!(memo.digest(k), want, "{k}");
            assert_eq!(memo.digest(k), want, "{k} again, from its slot");
        }
    }
    assert_eq!(hash("tg_a"), <[u8; 32]>::from(Sha256::digest(b"tg_a")));
}

#[test]
fn a_key_parameter_is_found_however_its_name_is_encoded() {
    let s = snap();
    for name in [
        "key",
        "KEY",
        "Key",
        "%6Bey",
        "%6bey",
        "k%65y",
        "ke%79",
        "%6B%65%79",
        "%4B%45%59",
    ] {
        let q = format!("alt=sse&{name}={APP}");
        assert_eq!(
            identify(&s, &HeaderMap::new(), Some(&q)).map(|i| i.key_id),
            Ok(10),
            "{name}"
        );
        assert!(is_key_param(&format!("{name}={APP}")), "{name}");
        assert_eq!(
            crate::upstream::strip_key_param(&q),
            "alt=sse",
            "{name} is stripped"
        );
    }
    // An encoded value too.
    let q = format!("key={}", APP.replace('_', "%5F"));
    assert_eq!(
        identify(&s, &HeaderMap::new(), Some(&q)).map(|i| i.key_id),
        Ok(10)
    );
    for other in [
        "monkey=1",
        "keys=1",
        "%6Beys=1",
        "k%2565y=1",
        "key%=1",
        "ke=1",
    ] {
        assert!(!is_key_param(other), "{other}");
    }
}

#[test]
fn keys_that_disagree_are_refused_never_guessed() {
    let s = snap();
    let bearer_old = format!("Bearer {OLD}");
    let q_old = format!("key={OLD}");
    let mut two = HeaderMap::new();
    two.append("x-goog-api-key", HeaderValue::from_static(APP));
    two.append("x-goog-api-key", HeaderValue::from_static(OLD));
    for (h, q) in [
        (two, None),
        (headers(&[("x-goog-api-key", APP)]), Some(q_old.as_str())),
        (
            headers(&[("x-goog-api-key", APP), ("authorization", &bearer_old)]),
            None,
        ),
        (HeaderMap::new(), Some(&*format!("key={APP}&%6Bey={OLD}"))),
    ] {
        assert_eq!(
            identify(&s, &h, q),
            Err(GatewayError::ConflictingKeys),
            "{h:?} {q:?}"
        );
    }
    // The same key in two places is one key.
    let bearer = format!("Bearer {APP}");
    let q = format!("key={APP}");
    let h = headers(&[("x-goog-api-key", APP), ("authorization", &bearer)]);
    assert_eq!(identify(&s, &h, Some(&q)).map(|i| i.key_id), Ok(10));
}
