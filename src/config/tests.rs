//! Unit tests of the configuration contract.

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_with_no_file() {
    let c = Config::from_toml_str("", &env(&[])).unwrap();
    let s = c.validate(&env(&[])).unwrap();
    assert_eq!(c.database.url, "sqlite://data/tollgate.db");
    assert_eq!(s.gateway_listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.admin_listen.to_string(), "127.0.0.1:8081");
    assert_eq!(s.metrics_listen.to_string(), "127.0.0.1:9464");
    assert_eq!(
        s.gemini.base_url.as_str(),
        "https://generativelanguage.googleapis.com/"
    );
    assert!(
        s.gemini.credential.is_none(),
        "no key in the environment, none invented"
    );
    assert_eq!(s.features_on.len(), 11);
}

#[test]
fn the_shipped_file_holds_the_defaults() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tollgate.toml"))
            .unwrap();
    let from_file = Config::from_toml_str(&text, &env(&[])).unwrap();
    let defaults = Config::default();
    assert_eq!(
        toml::to_string(&from_file).unwrap(),
        toml::to_string(&defaults).unwrap(),
        "config/tollgate.toml must document every default as it is"
    );
}

#[test]
fn file_values_are_used() {
    let c = Config::from_toml_str(
        "[gateway]\nlisten = \"0.0.0.0:9999\"\nthreads = 2\n[providers.vertex]\nbase_url = \"http://127.0.0.1:9001\"\n",
        &env(&[]),
    )
    .unwrap();
    let s = c.validate(&env(&[])).unwrap();
    assert_eq!(s.gateway_listen.to_string(), "0.0.0.0:9999");
    assert_eq!(c.gateway.threads, 2);
    assert_eq!(s.vertex.base_url.as_str(), "http://127.0.0.1:9001/");
    assert_eq!(
        c.admin.listen, "127.0.0.1:8081",
        "unset keys keep their defaults"
    );
}

#[test]
fn environment_overrides_win() {
    let e = env(&[
        (
            "TOLLGATE_DATABASE__URL",
            "postgres://postgres@127.0.0.1/test",
        ),
        (
            "TOLLGATE_PROVIDERS__GEMINI__BASE_URL",
            "http://127.0.0.1:9000",
        ),
        ("TOLLGATE_GATEWAY__THREADS", "2"),
        (
            "TOLLGATE_FEATURES__DEFAULT_OFF",
            "video_generation, pro_models",
        ),
        ("TOLLGATE_TEST_POSTGRES", "not a setting"),
        ("GEMINI_API_KEY", "AIza-from-env"),
    ]);
    let c = Config::from_toml_str("[gateway]\nthreads = 1\n", &e).unwrap();
    assert_eq!(c.database.url, "postgres://postgres@127.0.0.1/test");
    assert_eq!(c.gateway.threads, 2, "the environment beats the file");
    let s = c.validate(&e).unwrap();
    assert_eq!(s.gemini.base_url.as_str(), "http://127.0.0.1:9000/");
    assert!(matches!(&s.gemini.credential, Some(Credential::ApiKey(k)) if k == "AIza-from-env"));
    assert_eq!(s.features_on.len(), 9);
    assert!(!s.features_on.contains(&store::Feature::VideoGeneration));
}

#[test]
fn a_bearer_token_source_replaces_the_api_key() {
    let e = env(&[
        ("TOLLGATE_PROVIDERS__VERTEX__BEARER_TOKEN_ENV", "VTX_TOKEN"),
        ("VTX_TOKEN", "ya29.token"),
        ("VERTEX_API_KEY", "k"),
    ]);
    let s = Config::from_toml_str("", &e).unwrap().validate(&e).unwrap();
    assert!(matches!(&s.vertex.credential, Some(Credential::Bearer(t)) if t == "ya29.token"));
}

fn err(toml_text: &str, pairs: &[(&str, &str)]) -> String {
    let e = env(pairs);
    match Config::from_toml_str(toml_text, &e) {
        Err(err) => err.to_string(),
        Ok(c) => c
            .validate(&e)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    }
}

#[test]
fn invalid_values_name_the_key_the_value_and_what_is_expected() {
    let m = err("[gateway]\nlisten = \"nowhere\"\n", &[]);
    assert_eq!(m, "invalid setting gateway.listen = \"nowhere\": expected an IP address and port like 127.0.0.1:8080");
    let m = err("", &[("TOLLGATE_GATEWAY__THREADS", "many")]);
    assert!(
        m.contains("gateway.threads") && m.contains("many") && m.contains("integer"),
        "{m}"
    );
    let m = err("[database]\nurl = \"mysql://x\"\n", &[]);
    assert!(
        m.contains("database.url") && m.contains("mysql://x") && m.contains("sqlite://"),
        "{m}"
    );
    let m = err("[gateway]\nthreads = \"two\"\n", &[]);
    assert!(m.contains("gateway.threads") && m.contains("two"), "{m}");
    let m = err("[gateway]\nlisten_port = 1\n", &[]);
    assert!(m.contains("listen_port"), "unknown keys are refused: {m}");
    let m = err("[providers.gemini]\nbase_url = \"ftp://x\"\n", &[]);
    assert!(m.contains("providers.gemini.base_url"), "{m}");
    let m = err("[features]\ndefault_off = [\"teleport\"]\n", &[]);
    assert!(
        m.contains("features.default_off") && m.contains("teleport"),
        "{m}"
    );
    assert!(!m.contains('\n'), "one line");
}

#[test]
fn an_upstream_ca_file_must_hold_certificates_only() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: Option<&str>| {
        let path = dir.path().join(name);
        if let Some(t) = text {
            std::fs::write(&path, t).unwrap();
        }
        err(
            &format!("[gateway]\nupstream_ca_file = \"{}\"\n", path.display()),
            &[],
        )
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap().pem();

    assert_eq!(
        check("ca.pem", Some(&ca)),
        "",
        "a CA certificate is accepted"
    );
    for (name, text, why) in [
        ("missing.pem", None, "Failed to load file"),
        (
            "empty.pem",
            Some("not a certificate\n".to_owned()),
            "holds no certificate",
        ),
        // pingora refuses anything but certificates in a CA file (it would panic at start).
        (
            "with-key.pem",
            Some(format!("{ca}{}", key.serialize_pem())),
            "un-loadable",
        ),
        (
            "junk.pem",
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned()),
            "root store",
        ),
    ] {
        let m = check(name, text.as_deref());
        assert!(
            m.starts_with("invalid setting gateway.upstream_ca_file")
                && m.contains(name)
                && m.contains("PEM file of CA certificates")
                && m.contains(why)
                && !m.contains('\n'),
            "{name}: {m}"
        );
    }
}

#[test]
fn debug_output_hides_passwords_and_keys() {
    let e = env(&[
        ("TOLLGATE_DATABASE__URL", "postgres://u:hunter2@db/x"),
        ("GEMINI_API_KEY", "AIzaSECRET"),
    ]);
    let c = Config::from_toml_str("", &e).unwrap();
    let s = c.validate(&e).unwrap();
    let dbg = format!("{c:?} {:?}", s.gemini);
    assert!(
        !dbg.contains("hunter2") && !dbg.contains("AIzaSECRET"),
        "{dbg}"
    );
}
