//! More tests of the configuration: limits, URLs, secrets, files, the
//! shipped example, names.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::delivery::signing::SigningKey;
use crate::event::template::Mode;

/// Every duration ends up in timer or clock arithmetic (`Instant +`,
/// `DateTime +`): values that would overflow it are refused at check,
/// whatever the key.
#[test]
fn durations_beyond_a_year_are_refused_for_every_key() {
    let f = DEFAULT_PATH;
    for value in [
        "999999999999999h",
        "18446744073709551615",
        "99999999999999999999s",
        "8761h",
    ] {
        let text = format!(
            "webhook:\n  url: https://x.example\n  timeout: {value}\n  retry: {{ delays: [{value}], max_event_age: {value} }}\n\
             monitor:\n  interval: {value}\n  connect_threshold: {value}\n  uapi_timeout: {value}\n  \
             ping_interval: {value}\ndelivery:\n  shutdown_timeout: {value}\n"
        );
        let errors = error_lines(&text);
        let keys = [
            (3, "webhook.timeout"),
            (4, "webhook.retry.delays[0]"),
            (4, "webhook.retry.max_event_age"),
            (6, "monitor.interval"),
            (7, "monitor.connect_threshold"),
            (8, "monitor.uapi_timeout"),
            (9, "monitor.ping_interval"),
            (11, "delivery.shutdown_timeout"),
        ];
        assert_eq!(errors.len(), keys.len(), "{value}: {errors:#?}");
        for (line, key) in keys {
            let too_long =
                format!("{f}:{line}: {key}: duration \"{value}\" is too long (at most 8760h)");
            let invalid = format!("{f}:{line}: {key}: invalid duration \"{value}\"");
            assert!(
                errors
                    .iter()
                    .any(|e| *e == too_long || e.starts_with(&invalid)),
                "{value}: no error for {key} in {errors:#?}"
            );
        }
    }
}

/// Regression (issue 11): a URL with user info and a secret or auth sent
/// two Authorization headers.
#[test]
fn url_user_info_with_secret_or_auth_is_refused() {
    let f = DEFAULT_PATH;
    let both = |key: &str, line: usize| {
        format!(
            "the URL has a user name or password, sent as Basic authorization, and {key} \
             (line {line}) sets the Authorization header too; keep one (remove the user info \
             from the URL, or remove {key})"
        )
    };
    let text = "webhooks:\n\
        \x20 - name: a\n    url: https://u-s3cr3t:p-s3cr3t@x.example/hook\n    secret: \"Bearer t\"\n\
        \x20 - name: b\n    url: https://u-s3cr3t@x.example/hook\n    auth: { bearer: t }\n\
        \x20 - name: c\n    url: \"https://u-s3cr3t:p@x.example/{{ event }}\"\n    authentication: t\n\
        \x20 - name: d\n    url: https://x.example/hook\n    auth: { oauth2: { token_url: \"https://id-s3cr3t:pw@idp.example/token\", client_id: i, client_secret: s } }\n";
    assert_eq!(
        error_lines(text),
        [
            format!("{f}:3: webhooks[0].url: {}", both("secret", 4)),
            format!("{f}:6: webhooks[1].url: {}", both("auth", 7)),
            format!("{f}:9: webhooks[2].url: {}", both("authentication", 10)),
            format!(
                "{f}:13: webhooks[3].auth.oauth2.token_url: the token URL has a user name or \
                 password, and client_auth basic sends the client credentials as the \
                 Authorization header; remove the user info from the URL (or set client_auth: body)"
            ),
        ]
    );
    // Alone, the user info is the one Authorization header; an empty
    // secret sends none; client_auth body sends no Basic header.
    ok("webhook:\n  url: https://u:p@x.example/hook\n  secret: \"\"\n");
    ok("webhook:\n  url: https://x.example/hook\n  auth: { oauth2: { token_url: \"https://i:p@idp.example/t\", client_id: i, client_secret: s, client_auth: body } }\n");
}

#[test]
fn three_errors_are_all_reported_with_their_lines() {
    let text = "webhook:\n  url: not a url\n  secret: s3cr3t-value\nmonitor:\n  interval: 5x\n  colour: blue\n";
    let errors = parse(text).unwrap_err();
    let found: Vec<(Option<usize>, &str)> =
        errors.0.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (Some(2), "webhook.url"),
            (Some(5), "monitor.interval"),
            (Some(6), "monitor.colour")
        ]
    );
    assert!(errors.0.iter().all(|e| e.file == Path::new(DEFAULT_PATH)));
    // Display: one error per line.
    assert_eq!(errors.to_string().lines().count(), 3);
    assert!(errors
        .to_string()
        .starts_with("/etc/wghook/wghook.yaml:2: webhook.url: invalid URL"));
}

/// Regression (audit): an unparseable URL was quoted whole, after
/// `${VAR}` substitution, credentials and secret paths included.
#[test]
fn unparseable_urls_quote_only_scheme_and_host() {
    let lookup = |name: &str| match name {
        "HOOK" => Ok("https://admin:s3cr3t@[bad/x".to_string()),
        _ => Err(VarError::NotPresent),
    };
    let errors = |text: &str| -> Vec<String> {
        match compile_text(text, Path::new("f.yaml"), &lookup, false) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    };
    let hint = "(use e.g. https://example.com/hook)";
    for (url, want) in [
        (
            "${HOOK}".to_string(),
            format!("f.yaml:2: webhook.url: invalid URL: invalid IPv6 address {hint}"),
        ),
        (
            "https://hooks.slack.com:99999/services/T0/B0/s3cr3t?token=s3cr3t".into(),
            format!(
                "f.yaml:2: webhook.url: invalid URL \"https://hooks.slack.com\": \
                 invalid port number {hint}"
            ),
        ),
        (
            "HTTPS://u:s3cr3t@Hooks.example.com:1x/s3cr3t".into(),
            format!(
                "f.yaml:2: webhook.url: invalid URL \"https://Hooks.example.com\": \
                 invalid port number {hint}"
            ),
        ),
        (
            "https://[fd00::1]:70000/s3cr3t".into(),
            format!(
                "f.yaml:2: webhook.url: invalid URL \"https://[fd00::1]\": invalid port number {hint}"
            ),
        ),
        (
            "s3cr3t token".into(),
            format!("f.yaml:2: webhook.url: invalid URL: relative URL without a base {hint}"),
        ),
        (
            "https://s3cr3t host/x".into(),
            format!("f.yaml:2: webhook.url: invalid URL: invalid international domain name {hint}"),
        ),
    ] {
        let text = format!("webhook:\n  url: \"{url}\"\n");
        assert_eq!(errors(&text), [want], "for {url}");
    }
    // The token URL of oauth2 goes through the same check.
    let text = "webhook:\n  url: https://x.example\n  auth:\n    oauth2:\n      \
                token_url: \"https://id:s3cr3t@idp.example.com:0x/t?k=s3cr3t\"\n      \
                client_id: a\n      client_secret: b\n";
    assert_eq!(
        errors(text),
        [format!(
            "f.yaml:5: webhook.auth.oauth2.token_url: invalid URL \"https://idp.example.com\": \
             invalid port number {hint}"
        )]
    );
}

/// Regression (audit): `Debug` of a webhook printed its URL whole.
#[test]
fn debug_shows_urls_without_userinfo_path_or_query() {
    let config = ok(
        "webhooks:\n  - name: slack\n    url: \"https://u:pw-s3cr3t@hooks.slack.com/services/T0/B0/s3cr3t?k=s3cr3t#s3cr3t\"\n  \
         - name: plain\n    url: http://[fd00::1]:8080/\n    \
         auth: { oauth2: { token_url: \"https://idp.example.com/t/s3cr3t\", client_id: a, client_secret: b } }\n",
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    assert!(
        debug.contains("url: \"https://hooks.slack.com/…\""),
        "{debug}"
    );
    assert!(debug.contains("url: \"http://[fd00::1]:8080/\""), "{debug}");
    assert!(
        debug.contains("token_url: \"https://idp.example.com/…\""),
        "{debug}"
    );
    assert_eq!(
        redacted_url(&reqwest::Url::parse("https://h.example:8443").unwrap()),
        "https://h.example:8443/"
    );
}

#[test]
fn secrets_are_redacted_and_never_quoted_in_errors() {
    let secret = Secret::new("s3cr3t-value".into());
    assert_eq!(format!("{secret:?}"), "<redacted>");
    assert_eq!(format!("{secret}"), "<redacted>");
    let config = ok("webhook:\n  url: https://x.example\n  secret: s3cr3t-value\n");
    assert!(!format!("{config:?}").contains("s3cr3t"), "{config:?}");

    for text in [
        "webhook:\n  url: https://x.example\n  secret: \"s3cr3t-value\\nX-Evil: 1\"\n",
        "webhook:\n  url: https://x.example\n  secret: [s3cr3t-value]\n",
        "webhook:\n  url: https://x.example\n  secret: s3cr3t-value\n  authentication: s3cr3t-value\n",
        "webhook:\n  url: https://x.example\n  secret: \"s3cr3t-value ${WGHOOK_TEST_UNSET_6B1D0E}\"\n",
        "webhook:\n  url: https://x.example\n  secret: \"s3cr3t-value ${\"\n",
        "webhook:\n  url: https://x.example\n  authentication: { s3cr3t-value: 1 }\n",
        "webhook: s3cr3t-value\n",
        "webhooks: s3cr3t-value\n",
        "webhooks:\n  - s3cr3t-value\n",
        "monitor: s3cr3t-value\n",
        "s3cr3t-value\n",
    ] {
        let errors = error_lines(text);
        assert!(!errors.is_empty());
        for e in &errors {
            assert!(!e.contains("s3cr3t"), "secret in {e:?}");
        }
    }
    assert_eq!(
        error_lines("webhook:\n  url: https://x.example\n  secret: \"s3cr3t-value\\nX-Evil: 1\"\n"),
        [format!(
            "{DEFAULT_PATH}:3: webhook.secret: contains characters not allowed in an HTTP header \
             (line breaks or other control characters)"
        )]
    );
}

#[test]
fn anchors_and_aliases_are_followed() {
    let config = ok(
        "webhooks:\n  - name: a\n    url: https://a.example\n    secret: &s \"Bearer x\"\n  \
                     - name: b\n    url: https://b.example\n    secret: *s\n",
    );
    assert_eq!(
        config.webhooks[1].secret.as_ref().map(Secret::expose),
        Some("Bearer x")
    );
}

#[test]
fn load_names_an_unreadable_file() {
    let errors = load(Path::new("/nonexistent/wghook.yaml")).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].line, None);
    assert_eq!(
        errors.to_string(),
        "/nonexistent/wghook.yaml: cannot read the configuration file: No such file or directory (os error 2)"
    );
}

#[test]
fn load_checks_that_the_scenario_exists_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("wghook.yaml");
    std::fs::write(
        &config_path,
        "monitor:\n  backend: simulated\n  scenario: s.yaml\n",
    )
    .unwrap();

    let errors = load(&config_path).unwrap_err();
    let scenario = dir.path().join("s.yaml");
    assert_eq!(
        errors.to_string(),
        format!(
            "{}:3: monitor.scenario: cannot read {}: No such file or directory (os error 2)",
            config_path.display(),
            scenario.display()
        )
    );
    // parse_str does not look at the file system.
    let text = std::fs::read_to_string(&config_path).unwrap();
    assert!(parse_str(&text, &config_path).is_ok());

    // Regression (issue 11): a step out of range passed `check`, then
    // `run` panicked (exit 101) loading the scenario.
    std::fs::write(
        &scenario,
        "steps:\n  - at: 999999999999999h\n    add_interface: { name: wg0 }\n",
    )
    .unwrap();
    assert_eq!(
        load(&config_path).unwrap_err().to_string(),
        format!(
            "{}:3: monitor.scenario: scenario {}: offset \"999999999999999h\" is too late \
             (at most 8760h, a year) at line 2, column 9",
            config_path.display(),
            scenario.display()
        )
    );

    std::fs::write(&scenario, "steps: []\n").unwrap();
    let config = load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.monitor.scenario, Some(scenario));
    assert_eq!(config.path, config_path);
}

#[test]
fn every_webhook_key_of_formats_auth_and_templates_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
    std::fs::write(
        dir.path().join("whsec"),
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\r\n",
    )
    .unwrap();
    let lookup = |name: &str| match name {
        "CREDENTIALS_DIRECTORY" => Ok(dir.path().display().to_string()),
        _ => Err(VarError::NotPresent),
    };
    let text = "webhooks:\n\
         \x20 - name: defguard\n    url: https://idm.example.com/hook\n    method: get\n    \
         description: \" Defguard users \"\n    format: wg-portal-v2\n    extended: true\n    \
         headers:\n      X-Defguard-Event: \"{{ entity }}_{{ event }}\"\n    \
         auth: { bearer_file: \"${CREDENTIALS_DIRECTORY}/token\" }\n    \
         signing_secret_file: whsec\n    \
         signing_secret: [\"whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"]\n\
         \x20 - name: cymmetri\n    url: \"https://idm.example.com/webhook/{{ entity }}/{{ event }}\"\n    \
         format: standard\n    \
         auth: { oauth2: { token_url: https://idp.example.com/token, client_id: wg, client_secret: s, scope: \"a b\", client_auth: body } }\n\
         \x20 - name: ntfy\n    url: https://ntfy.sh/wg\n    headers: { Content-Type: text/plain }\n    \
         body: \"{{ peer.name }} {{ event }}\"\n    auth: { basic: { username: u, password: p } }\n";
    let config = compile_text(text, &dir.path().join("wghook.yaml"), &lookup, true)
        .unwrap_or_else(|e| panic!("{e}"));
    let [defguard, cymmetri, ntfy] = &config.webhooks[..] else {
        panic!("three webhooks expected")
    };
    assert_eq!(defguard.method, HttpMethod::Get);
    assert_eq!(defguard.description.as_deref(), Some("Defguard users"));
    assert_eq!(defguard.format, Format::WgPortalV2);
    assert!(defguard.extended);
    assert_eq!(defguard.headers.len(), 1);
    assert_eq!(defguard.headers[0].0, "X-Defguard-Event");
    assert_eq!(
        defguard.auth,
        Some(Auth::Bearer(Secret::new("t0ken".into()))),
        "the trailing newline of the file is not part of the secret"
    );
    assert_eq!(
        defguard.signing_secrets,
        [
            SigningKey::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap(),
            SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap(),
        ]
    );
    assert_eq!(defguard.url_template, None);

    assert!(cymmetri.url_template.is_some());
    assert_eq!(
        cymmetri.url.as_str(),
        "https://idm.example.com/webhook/peer/connect"
    );
    assert_eq!(cymmetri.format, Format::Standard);
    assert_eq!(cymmetri.method, HttpMethod::Post);
    let Some(Auth::OAuth2(o)) = &cymmetri.auth else {
        panic!("oauth2 expected")
    };
    assert_eq!(o.token_url.as_str(), "https://idp.example.com/token");
    assert_eq!(
        (o.client_id.as_str(), o.client_secret.expose()),
        ("wg", "s")
    );
    assert_eq!(o.scope.as_deref(), Some("a b"));
    assert_eq!(o.client_auth, ClientAuth::Body);

    assert!(ntfy.body.as_ref().is_some_and(|b| b.mode() == Mode::Text));
    assert_eq!(
        ntfy.auth,
        Some(Auth::Basic {
            username: "u".into(),
            password: Secret::new("p".into())
        })
    );
    // Defaults.
    let plain = ok("webhook:\n  url: https://x.example\n");
    let hook = &plain.webhooks[0];
    assert_eq!(
        (hook.format, hook.method, hook.extended),
        (Format::WgPortal, HttpMethod::Post, false)
    );
    assert!(hook.body.is_none() && hook.headers.is_empty() && hook.auth.is_none());
    assert!(hook.signing_secrets.is_empty() && hook.description.is_none());
}

#[test]
fn secret_files_are_checked_and_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wghook.yaml");
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    std::fs::write(dir.path().join("broken"), "s3cr3t\nX-Evil: 1\n").unwrap();
    std::fs::write(dir.path().join("ok"), "Bearer s3cr3t").unwrap();
    let errors = |text: &str| -> Vec<String> {
        match parse_str(text, &path) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    };
    let f = path.display();
    let d = dir.path().display();
    assert_eq!(
        errors("webhook:\n  url: https://x.example\n  secret_file: empty\n"),
        [format!(
            "{f}:3: webhook.secret_file: secret file {d}/empty is empty"
        )]
    );
    assert_eq!(
        errors("webhook:\n  url: https://x.example\n  authentication_file: broken\n"),
        [format!(
            "{f}:3: webhook.authentication_file: secret file {d}/broken contains characters not allowed \
             in an HTTP header (line breaks or other control characters)"
        )]
    );
    assert_eq!(
        errors("webhook:\n  url: https://x.example\n  secret: x\n  secret_file: ok\n"),
        [format!(
            "{f}:4: webhook.secret_file: both secret (line 3) and secret_file are set; keep one"
        )]
    );
    assert_eq!(
        errors("webhook:\n  url: https://x.example\n  auth: { basic: { username: u } }\n"),
        [format!(
            "{f}:3: webhook.auth.basic.password: required (or password_file)"
        )]
    );
    // A file that is fine: relative to the configuration's directory, read as is.
    let config = parse_str(
        "webhook:\n  url: https://x.example\n  secret_file: ok\n",
        &path,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.webhooks[0].secret.as_ref().map(Secret::expose),
        Some("Bearer s3cr3t")
    );
    assert!(!format!("{config:?}").contains("s3cr3t"));
}

#[test]
fn new_webhook_errors_never_quote_secrets() {
    for text in [
        "webhook:\n  url: https://x.example\n  auth: { bearer: \"s3cr3t\\nX\" }\n",
        "webhook:\n  url: https://x.example\n  auth: { bearer: \"Bearer s3cr3t\" }\n",
        "webhook:\n  url: https://x.example\n  auth: { oauth2: { token_url: x, client_id: a, client_secret: s3cr3t } }\n",
        "webhook:\n  url: https://x.example\n  signing_secret: whsec_s3cr3t\n",
        "webhook:\n  url: https://x.example\n  signing_secret: s3cr3t\n",
        "webhook:\n  url: https://x.example\n  headers: { X-Key: \"s3cr3t {{ nope }}\" }\n",
        "webhook:\n  url: https://x.example\n  headers: { X-Key: \"s3cr3t {{ \" }\n",
        "webhook:\n  url: https://x.example\n  auth: { basic: { username: a, password: [s3cr3t] } }\n",
    ] {
        let errors = error_lines(text);
        assert!(!errors.is_empty());
        for e in &errors {
            assert!(!e.contains("s3cr3t"), "secret in {e:?}");
        }
    }
    let config = ok(
        "webhook:\n  url: https://x.example\n  headers: { X-Key: s3cr3t }\n  \
         auth: { oauth2: { token_url: https://i.example/t, client_id: a, client_secret: s3cr3t } }\n  \
         signing_secret: whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n",
    );
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("s3cr3t") && !debug.contains("C2FVsBQ"),
        "{debug}"
    );
}

#[test]
fn the_shipped_example_configuration_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wghook.yaml");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.webhooks.len(), 1);
    assert_eq!(config.monitor.interval, DEFAULT_INTERVAL);
}

/// Regression (audit): the shipped example lacked `metrics:` and `log:`.
/// It is the reference the man page points at, so every key the
/// compiler accepts must appear in it (as `key:`, active or commented).
#[test]
fn the_shipped_example_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/wghook.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mentions = |key: &str| {
        text.match_indices(&format!("{key}:")).any(|(i, _)| {
            !text[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    let mut missing = Vec::new();
    // Every key of the schema, which comes from the settings types.
    for path in schema::key_paths() {
        let key = path.rsplit('.').next().unwrap_or(&path);
        if !key.starts_with('<') && !mentions(key) {
            missing.push(path.clone());
        }
    }
    assert!(missing.is_empty(), "config/wghook.yaml lacks {missing:?}");
    // Top-level keys start a line, active or commented out.
    let top: Vec<String> = schema::key_paths()
        .into_iter()
        .filter(|p| !p.contains('.'))
        .collect();
    assert_eq!(top.len(), 8, "{top:?}");
    for key in &top {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{key}:")) || l.starts_with(&format!("# {key}:"))),
            "config/wghook.yaml has no top-level {key}:"
        );
    }
}

#[test]
fn ping_checks_and_peer_labels_are_read() {
    let config = ok(&format!(
        "monitor:\n  ping_checks: true\n  ping_interval: 1m\n\
         peers:\n  \"{ALICE}\":\n    name: a\n    ping_address: \" fd00::2 \"\n    \
         labels: {{ team: ops, site.code: ber-1 }}\n"
    ));
    assert!(config.monitor.ping_checks);
    assert_eq!(config.monitor.ping_interval, Duration::from_secs(60));
    let alice = PublicKey::from_base64(ALICE).unwrap();
    let label = &config.peers[&alice];
    assert_eq!(label.name, "a");
    let labels: Vec<(&str, &str)> = label
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels, [("site.code", "ber-1"), ("team", "ops")]);
    assert_eq!(
        config.ping_addresses.get(&alice),
        Some(&"fd00::2".parse::<std::net::IpAddr>().unwrap())
    );
    // Off by default.
    let config = ok("");
    assert!(!config.monitor.ping_checks);
    assert_eq!(config.monitor.ping_interval, DEFAULT_PING_INTERVAL);
    assert!(config.ping_addresses.is_empty());
}

/// Regression (audit): `interface.display_name` was promised, but no key
/// set it.
#[test]
fn the_interfaces_map_names_interfaces() {
    let config = ok("interfaces:\n  wg0: { name: Office VPN }\n  wg1: {}\n  wg2: { name: \"\" }\n");
    assert_eq!(
        config.interface_names(),
        HashMap::from([("wg0".to_string(), "Office VPN".to_string())])
    );
    assert_eq!(config.interface_labels.len(), 3);
    assert!(ok("").interface_names().is_empty());
    assert_eq!(
        error_lines(
            "interfaces:\n  \"wg*\": { name: a }\n  averylonginterfacename: { name: b }\n  \
             wg0: { nme: c }\n  wg1: { name: [d] }\n  wg2: office\n  wg1: { name: e }\n"
        ),
        [
            format!(
                "{DEFAULT_PATH}:2: interfaces.\"wg*\": invalid interface name (an exact name, not a pattern)"
            ),
            format!(
                "{DEFAULT_PATH}:3: interfaces.\"averylonginterfacename\": invalid interface name \
                 (interface names are at most 15 characters)"
            ),
            format!("{DEFAULT_PATH}:4: interfaces.\"wg0\".nme: unknown key (did you mean name?)"),
            format!("{DEFAULT_PATH}:5: interfaces.\"wg1\".name: expected a string, found a list"),
            format!("{DEFAULT_PATH}:6: interfaces.\"wg2\": expected a mapping, found a single value"),
            format!("{DEFAULT_PATH}:7: interfaces.\"wg1\": duplicate key (first at line 5)"),
        ]
    );
}

#[test]
fn load_merges_names_from_wg_quick_files_and_the_peers_map_wins() {
    let dir = tempfile::tempdir().unwrap();
    let wg = dir.path().join("wireguard");
    std::fs::create_dir(&wg).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wg-quick/wg0.conf"),
        wg.join("wg0.conf"),
    )
    .unwrap();
    let bob = "amDFZkwcutgFado44vU29t75ZgBBND5UbSxmUB4qKlY=";
    let config_path = dir.path().join("wghook.yaml");
    std::fs::write(
        &config_path,
        format!(
            "monitor:\n  names_from: [\"wireguard/*.conf\"]\n\
             peers:\n  \"{ALICE}\": {{ name: from-yaml }}\n  \"{bob}\": {{ user: bob@example.com }}\n"
        ),
    )
    .unwrap();
    let config = load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.monitor.names_from,
        [dir.path().join("wireguard/*.conf")]
    );
    let alice = PublicKey::from_base64(ALICE).unwrap();
    let bob = PublicKey::from_base64(bob).unwrap();
    assert_eq!(config.peers[&alice].name, "from-yaml", "the peers map wins");
    assert_eq!(
        config.peers[&bob].name, "Bob's phone",
        "a file fills an empty name"
    );
    assert_eq!(config.peers[&bob].user, "bob@example.com");
    assert_eq!(config.peers.len(), 2, "carol has no name: no entry");
    // parse_str reads no file.
    let text = std::fs::read_to_string(&config_path).unwrap();
    let config = parse_str(&text, &config_path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.peers[&bob].name, "");
}

#[test]
fn load_reports_unreadable_and_malformed_names_files() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("wg1.conf");
    std::fs::write(
        &bad,
        "[Interface]\nListenPort = 1\n\n[Peer]\n# Name = x\nAllowedIPs = 10.0.0.2/32\n",
    )
    .unwrap();
    let config_path = dir.path().join("wghook.yaml");
    std::fs::write(
        &config_path,
        "monitor:\n  interval: 5x\n  names_from:\n    - wg1.conf\n    - missing.conf\n",
    )
    .unwrap();
    let errors = load(&config_path).unwrap_err();
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            format!(
                "{}:2: monitor.interval: invalid duration \"5x\" (use e.g. 5s, 1m, 1h30m)",
                config_path.display()
            ),
            format!(
                "{}:5: monitor.names_from[1]: cannot read {}: No such file or directory (os error 2)",
                config_path.display(),
                dir.path().join("missing.conf").display()
            ),
            format!(
                "{}:4: [Peer] section without PublicKey (in a wg-quick file of monitor.names_from)",
                bad.display()
            ),
        ]
    );
}

#[test]
fn an_error_without_line_or_key_leaves_them_out() {
    let e = ConfigError {
        file: PathBuf::from("a.yaml"),
        line: None,
        key: "monitor".into(),
        message: "m".into(),
    };
    assert_eq!(e.to_string(), "a.yaml: monitor: m");
    let e = ConfigError {
        line: Some(3),
        key: String::new(),
        ..e
    };
    assert_eq!(e.to_string(), "a.yaml:3: m");
}

/// Regression (review): each value of the wrong kind costs a pass over the
/// file, so a file of thousands of them took thousands of passes. The
/// passes are bounded: the first problems are reported with a note.
#[test]
fn thousands_of_values_of_the_wrong_kind_are_reported_after_a_bounded_number_of_passes() {
    let items = "  - 1\n".repeat(5_000);
    let errors = error_lines(&format!("webhooks:\n{items}"));
    assert!(errors.len() <= 60, "{} errors", errors.len());
    assert!(
        errors[0].ends_with("more than 50 values of the wrong kind (a list or mapping where another belongs); fix these first"),
        "{errors:?}"
    );
    assert!(
        errors[1].ends_with("webhooks[0]: expected a mapping, found a single value"),
        "{errors:?}"
    );
}

/// The files a configuration names are read through `Sources`: a fake one
/// gives the secret, the names and the scenario's verdict, and nothing is
/// read from the disk.
#[test]
fn secrets_names_and_the_scenario_come_through_the_sources_seam() {
    struct Fake;
    impl Sources for Fake {
        fn secret(&self, path: &Path) -> Result<String, String> {
            match path.to_str() {
                Some("/nowhere/token") => Ok("t0ken\n".into()),
                _ => Err("no such fake file".into()),
            }
        }
        fn names(&self, patterns: &[std::path::PathBuf]) -> crate::names::Loaded {
            assert_eq!(patterns, [std::path::PathBuf::from("/nowhere/wg0.conf")]);
            let mut loaded = crate::names::Loaded::default();
            let key = crate::model::PublicKey::from_base64(ALICE).unwrap();
            loaded.names.insert(key, "alice-from-file".into());
            loaded
        }
        fn scenario(&self, _: &Path) -> Result<(), String> {
            Err("the fake scenario is refused".into())
        }
    }
    let env = |_: &str| Err(std::env::VarError::NotPresent);
    let text = "webhook:\n  url: https://x.example\n  secret_file: /nowhere/token\n\
                monitor:\n  names_from: [/nowhere/wg0.conf]\n";
    let config = compile(text, Path::new("/etc/wghook/f.yaml"), &env, &Fake, true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.webhooks[0].secret.as_ref().map(Secret::expose),
        Some("t0ken")
    );
    let key = crate::model::PublicKey::from_base64(ALICE).unwrap();
    assert_eq!(config.peers[&key].name, "alice-from-file");
    let text = "monitor:\n  backend: simulated\n  scenario: /nowhere/s.yaml\n";
    let errors = compile(text, Path::new("/etc/wghook/f.yaml"), &env, &Fake, true).unwrap_err();
    assert_eq!(
        errors.to_string(),
        "/etc/wghook/f.yaml:3: monitor.scenario: the fake scenario is refused"
    );
    // Without `check_files` (parse_str), the scenario is not read.
    assert!(compile(text, Path::new("/etc/wghook/f.yaml"), &env, &Fake, false).is_ok());
}

/// The raw settings are `Debug` (for tests and diagnostics) without ever
/// showing a value: any scalar may be a secret or a secret URL.
#[test]
fn raw_settings_show_keys_and_lines_but_never_values_in_debug() {
    let text =
        "webhook:\n  url: https://hooks.example.com/s3cr3t-path\n  secret: \"Bearer s3cr3t\"\n  \
                auth: { basic: { username: u, password: s3cr3t } }\n";
    let root = yaml::parse_tree(text).unwrap();
    let env = |_: &str| Err(std::env::VarError::NotPresent);
    let state = de::State::new(Path::new("f.yaml"), &env);
    let raw: RawConfig = de::deserialize(root.as_ref(), &state).unwrap();
    let shown = format!("{raw:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("Text(3:webhook.secret)"), "{shown}");
}
