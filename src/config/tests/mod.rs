//! Tests of the configuration as a whole: the forms users rely on, every
//! message `wghook check` prints, secrets kept out of messages.

use std::env::VarError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::backend::BackendKind;
use crate::delivery::settings::*;
use crate::monitor::{DEFAULT_INTERVAL, DEFAULT_PING_INTERVAL};
use crate::settings::{format_duration, parse_duration};
use crate::tracker::Announce;
use chrono::TimeDelta;

mod more;

/// The compiler with the real files and the given environment.
fn compile_text(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Result<String, VarError>,
    check_files: bool,
) -> Result<Config, ConfigErrors> {
    compile(text, path, env, &Disk, check_files)
}

pub(super) const ALICE: &str = "Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=";
/// Never set by anything: `${...}` of it must fail.
pub(super) const UNSET_VAR: &str = "WGHOOK_TEST_UNSET_6B1D0E";

pub(super) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_str(text, Path::new(DEFAULT_PATH))
}

pub(super) fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(errors) => panic!("unexpected errors:\n{errors}"),
    }
}

pub(super) fn error_lines(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_wg_portal_seed_minimal_form_is_accepted_as_is() {
    let config = ok(
        "webhook:\n  url: https://your-service.example.com/webhook\n  \
                     secret: \"Basic dXNlcm5hbWU6cGFzc3dvcmQ=\"\n",
    );
    assert_eq!(config.webhooks.len(), 1);
    let hook = &config.webhooks[0];
    assert_eq!(hook.name, "default");
    assert_eq!(
        hook.url.as_str(),
        "https://your-service.example.com/webhook"
    );
    assert_eq!(
        hook.secret.as_ref().map(Secret::expose),
        Some("Basic dXNlcm5hbWU6cGFzc3dvcmQ=")
    );
    assert_eq!(hook.timeout, Duration::from_secs(10));
    assert_eq!(config.monitor, Monitor::default());
    assert_eq!(config.path, Path::new(DEFAULT_PATH));
}

#[test]
fn authentication_is_an_alias_of_secret() {
    let config = ok("webhook:\n  url: http://127.0.0.1:8080/hook\n  authentication: \"Bearer abc\"\n  timeout: 10\n");
    let hook = &config.webhooks[0];
    assert_eq!(hook.secret.as_ref().map(Secret::expose), Some("Bearer abc"));
    assert_eq!(
        hook.timeout,
        Duration::from_secs(10),
        "a bare integer is seconds"
    );
}

#[test]
fn an_empty_secret_sends_no_authorization_as_in_wg_portal() {
    let config = ok("webhook:\n  url: https://h.example/x\n  authentication: \"\"\n");
    assert_eq!(config.webhooks[0].secret, None);
}

#[test]
fn rekey_timeout_interval_is_an_alias_of_connect_threshold() {
    let config = ok("monitor:\n  rekey_timeout_interval: 5m\n");
    assert_eq!(config.monitor.connect_threshold, Duration::from_secs(300));
    // Below REKEY_AFTER_TIME is only a logged note, not an error.
    let config = ok("monitor:\n  connect_threshold: 90s\n");
    assert_eq!(config.monitor.connect_threshold, Duration::from_secs(90));
}

#[test]
fn an_empty_file_or_empty_sections_give_the_defaults() {
    for text in [
        "",
        "# nothing\n",
        "monitor:\npeers:\nwebhooks:\n",
        "monitor: {}\nwebhooks: []\n",
    ] {
        let config = ok(text);
        assert!(config.webhooks.is_empty(), "{text:?}");
        assert!(config.peers.is_empty(), "{text:?}");
        let m = &config.monitor;
        assert_eq!(m.interval, Duration::from_secs(5));
        assert_eq!(m.connect_threshold, Duration::from_secs(180));
        assert!(m.interfaces.is_empty() && m.exclude.is_empty());
        assert_eq!(m.backend, BackendKind::Auto);
        assert_eq!(m.scenario, None);
        assert_eq!(m.announce_on_start, Announce::Connected);
        assert!(m.endpoint_updates);
        assert_eq!(
            m.uapi_dirs,
            [
                PathBuf::from("/var/run/wireguard"),
                PathBuf::from("/run/wireguard")
            ]
        );
        assert_eq!(m.uapi_timeout, Duration::from_secs(2));
        assert_eq!(m.host, None);
    }
}

#[test]
fn every_key_is_read() {
    let text = format!(
        "webhooks:\n\
         \x20 - name: ops\n    url: https://ops.example.com/wg\n    secret: \"Bearer abc\"\n    timeout: 1m30s\n    \
         events: [peer.connect, \"interface.*\"]\n    retry: {{ delays: [1s, 1m], max_event_age: 2h }}\n    \
         max_in_flight: 2\n\
         \x20 - name: audit_2\n    url: http://10.0.0.1:9000/\n    retry: {{ max_event_age: 30m }}\n\
         delivery:\n  max_pending_events: 1_000\n  shutdown_timeout: 3s\n  max_in_flight: 8\n  \
         retry:\n    delays: [0s, 7s]\n    max_event_age: 1h\n\
         monitor:\n  interval: 500ms\n  connect_threshold: 4m\n  interfaces: [wg0, \"wg*\"]\n  \
         exclude: [wg-test*]\n  backend: simulated\n  scenario: scenario.yaml\n  \
         announce_on_start: all\n  endpoint_updates: false\n  uapi_dirs: [/run/wg, rel]\n  \
         uapi_timeout: 250ms\n  host: myhost\n\
         peers:\n  \"{ALICE}\": {{ name: alice-laptop, user: alice }}\n"
    );
    let config =
        parse_str(&text, Path::new("/etc/wghook/conf.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = config.webhooks.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["ops", "audit_2"]);
    assert_eq!(config.webhooks[0].timeout, Duration::from_secs(90));
    assert_eq!(config.webhooks[1].secret, None);
    assert_eq!(config.webhooks[1].timeout, DEFAULT_WEBHOOK_TIMEOUT);
    let secs = Duration::from_secs;
    assert_eq!(
        config.delivery,
        DeliverySettings {
            max_pending_events: 1000,
            shutdown_timeout: secs(3),
            max_in_flight: 8,
            retry: RetrySettings {
                delays: vec![secs(0), secs(7)],
                max_event_age: secs(3600),
            },
        }
    );
    let [ops, audit] = &config.webhooks[..] else {
        panic!("two webhooks expected")
    };
    assert_eq!(ops.events, ["peer.connect", "interface.*"]);
    assert_eq!(
        (
            ops.retry.delays.as_slice(),
            ops.retry.max_event_age,
            ops.max_in_flight
        ),
        ([secs(1), secs(60)].as_slice(), secs(7200), 2)
    );
    // Keys a webhook leaves out come from the delivery section.
    assert!(audit.events.is_empty());
    assert_eq!(
        (
            audit.retry.delays.as_slice(),
            audit.retry.max_event_age,
            audit.max_in_flight
        ),
        ([secs(0), secs(7)].as_slice(), secs(1800), 8)
    );
    let m = &config.monitor;
    assert_eq!(m.interval, Duration::from_millis(500));
    assert_eq!(m.connect_threshold, Duration::from_secs(240));
    assert_eq!(m.interfaces, ["wg0", "wg*"]);
    assert_eq!(m.exclude, ["wg-test*"]);
    assert_eq!(m.backend, BackendKind::Simulated);
    // Relative paths are taken from the configuration file's directory.
    assert_eq!(
        m.scenario.as_deref(),
        Some(Path::new("/etc/wghook/scenario.yaml"))
    );
    assert_eq!(
        m.uapi_dirs,
        [PathBuf::from("/run/wg"), PathBuf::from("/etc/wghook/rel")]
    );
    assert_eq!(m.announce_on_start, Announce::All);
    assert!(!m.endpoint_updates);
    assert_eq!(m.uapi_timeout, Duration::from_millis(250));
    assert_eq!(m.host.as_deref(), Some("myhost"));
    let alice = PublicKey::from_base64(ALICE).unwrap();
    assert_eq!(
        config.peers.get(&alice),
        Some(&PeerLabel {
            name: "alice-laptop".into(),
            user: "alice".into(),
            ..PeerLabel::default()
        })
    );

    let settings = config.tracker_settings("h1".into());
    assert_eq!(settings.connect_threshold, TimeDelta::seconds(240));
    assert!(!settings.endpoint_updates);
    assert_eq!(settings.announce_on_start, Announce::All);
    assert_eq!(settings.host, "h1");
    let filter = config.filter();
    assert!(filter.allows("wg0") && filter.allows("wg7"));
    assert!(!filter.allows("wg-test1") && !filter.allows("eth0"));
}

#[test]
fn delivery_defaults_and_webhook_overrides() {
    let config = ok("webhooks:\n  - name: a\n    url: https://a.example\n  \
         - name: b\n    url: https://b.example\n    max_in_flight: 1\n    \
         retry: { delays: [10s] }\n");
    let d = &config.delivery;
    assert_eq!(d.max_pending_events, 100_000);
    assert_eq!(d.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(d.max_in_flight, 16);
    assert_eq!(d.retry.max_event_age, Duration::from_secs(72 * 3600));
    assert_eq!(d.retry.delays, DEFAULT_RETRY_DELAYS);
    assert_eq!(DEFAULT_RETRY_DELAYS[1], Duration::from_secs(5));
    assert_eq!(DEFAULT_RETRY_DELAYS[8], Duration::from_secs(4 * 3600));
    let [a, b] = &config.webhooks[..] else {
        panic!("two webhooks expected")
    };
    assert_eq!((a.max_in_flight, &a.retry), (16, &d.retry));
    assert_eq!(b.max_in_flight, 1);
    assert_eq!(b.retry.delays, [Duration::from_secs(10)]);
    assert_eq!(
        b.retry.max_event_age, d.retry.max_event_age,
        "a key left out of a webhook's retry keeps the delivery one"
    );
    // The webhook's own keys override a delivery section that is set.
    let config = ok(
        "delivery:\n  max_in_flight: 3\n  retry: { max_event_age: 1h }\n\
         webhook:\n  url: https://a.example\n  retry: { delays: [1s] }\n",
    );
    let hook = &config.webhooks[0];
    assert_eq!(hook.max_in_flight, 3);
    assert_eq!(
        hook.retry,
        RetrySettings {
            delays: vec![Duration::from_secs(1)],
            max_event_age: Duration::from_secs(3600),
        }
    );
}

#[test]
fn durations_are_go_style_or_bare_seconds() {
    let ms = Duration::from_millis;
    for (text, want) in [
        ("500ms", ms(500)),
        ("5s", ms(5_000)),
        ("3m", ms(180_000)),
        ("1h30m", ms(5_400_000)),
        ("2h", ms(7_200_000)),
        ("10", ms(10_000)),
        ("1.5s", ms(1_500)),
        ("0.5h", ms(1_800_000)),
        ("1m30s250ms", ms(90_250)),
        ("100us", Duration::from_micros(100)),
        (" 7s ", ms(7_000)),
    ] {
        assert_eq!(parse_duration(text), Some(want), "{text:?}");
    }
    for text in [
        "",
        "5x",
        "-5s",
        "1h30",
        "s",
        "5 s",
        "1..5s",
        ".s",
        "5S",
        "1e3s",
        "99999999999999999999h",
    ] {
        assert_eq!(parse_duration(text), None, "{text:?}");
    }
    assert_eq!(format_duration(Duration::from_millis(100)), "100ms");
    assert_eq!(format_duration(Duration::from_secs(150)), "2m30s");
}

#[test]
fn environment_variables_are_substituted_before_interpretation() {
    let var = "WGHOOK_TEST_CONFIG_SUBST_4F2A91";
    std::env::set_var(format!("{var}_SECRET"), "Bearer from-env");
    std::env::set_var(format!("{var}_HOST"), "hooks.example.com");
    std::env::set_var(format!("{var}_INTERVAL"), "250ms");
    let text = format!(
        "webhook:\n  url: https://${{{var}_HOST}}/wg\n  secret: \"${{{var}_SECRET}}\"\n\
         monitor:\n  interval: ${{{var}_INTERVAL}}\n  host: \"cost$$5-$${{{var}_HOST}}\"\n"
    );
    let config = ok(&text);
    let hook = &config.webhooks[0];
    assert_eq!(hook.url.as_str(), "https://hooks.example.com/wg");
    assert_eq!(
        hook.secret.as_ref().map(Secret::expose),
        Some("Bearer from-env")
    );
    assert_eq!(config.monitor.interval, Duration::from_millis(250));
    // `$${` is a literal `${`; a lone `$` stays as it is.
    assert_eq!(
        config.monitor.host,
        Some(format!("cost$$5-${{{var}_HOST}}"))
    );
}

#[test]
fn substitution_uses_the_given_lookup_and_reports_each_problem() {
    let lookup = |name: &str| match name {
        "A" => Ok("1".to_string()),
        _ => Err(VarError::NotPresent),
    };
    let text = "monitor:\n  host: \"${A}-${B}-${C}-${not ok}\"\n  interfaces: [\"wg${A}\"]\n";
    let errors = compile_text(text, Path::new("f.yaml"), &lookup, false).unwrap_err();
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "f.yaml:2: monitor.host: environment variable B is not set",
            "f.yaml:2: monitor.host: environment variable C is not set",
            "f.yaml:2: monitor.host: invalid environment variable name \"not ok\" in ${...} \
             (use letters, digits and _; write $${ for a literal ${)",
        ]
    );
    let config = compile_text(
        "monitor:\n  interfaces: [\"wg${A}\"]\n",
        Path::new("f.yaml"),
        &lookup,
        false,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.monitor.interfaces, ["wg1"]);
}

/// Each broken configuration and exactly the errors it must produce.
#[test]
fn broken_configurations_produce_exactly_these_errors() {
    let f = DEFAULT_PATH;
    let table: Vec<(String, Vec<String>)> = vec![
        (
            "colour: blue\n".into(),
            vec![format!("{f}:1: colour: unknown key (known keys: webhook, webhooks, monitor, peers, interfaces, delivery, metrics, log)")],
        ),
        (
            "webhok:\n  url: https://x.example\n".into(),
            vec![format!("{f}:1: webhok: unknown key (did you mean webhook?)")],
        ),
        (
            "monitor:\n  intervall: 5s\n".into(),
            vec![format!("{f}:2: monitor.intervall: unknown key (did you mean interval?)")],
        ),
        (
            "webhook:\n  url: https://x.example\n  retries: 3\n".into(),
            vec![format!(
                "{f}:3: webhook.retries: unknown key (known keys: name, url, secret, authentication, timeout, \
                 events, retry, max_in_flight, description, format, extended, body, method, headers, auth, \
                 signing_secret, secret_file, authentication_file, signing_secret_file)"
            )],
        ),
        (
            "webhook:\n  url: https://x.example\n  body: \"{{ peer.name \"\n".into(),
            vec![format!(
                "{f}:3: webhook.body: invalid template: syntax error: unexpected end of input, \
                 expected end of variable block (template line 1)"
            )],
        ),
        (
            "webhook:\n  url: https://x.example\n  body: '{\"text\": \"{{ peer.nmae }}\"}'\n".into(),
            vec![format!(
                "{f}:3: webhook.body: invalid template: unknown field \"peer.nmae\" (peer has: name, user, \
                 public_key, endpoint, allowed_ips, persistent_keepalive, has_preshared_key, last_handshake, \
                 rx_bytes, tx_bytes, pingable, last_ping, created_at, updated_at, labels)"
            )],
        ),
        (
            "webhook:\n  url: https://x.example\n  body: '{\"text\": {{ peer.name }}}'\n".into(),
            vec![format!(
                "{f}:3: webhook.body: invalid template: the body is not valid JSON (expected value at line 1 \
                 column 10); quote text fields (\"{{{{ peer.name }}}}\"), use |tojson for lists, or set a \
                 Content-Type header that is not JSON, for a sample peer.create event"
            )],
        ),
        (
            "webhook:\n  url: \"{{ host }}/hook\"\n  format: slack\n  method: PATCH\n  extended: maybe\n".into(),
            vec![
                format!(
                    "{f}:2: webhook.url: invalid template: not a valid URL (relative URL without a base), \
                     for a sample peer.create event"
                ),
                format!("{f}:3: webhook.format: invalid value \"slack\" (use wg-portal, wg-portal-v2 or standard)"),
                format!("{f}:4: webhook.method: invalid value \"PATCH\" (use POST, GET or PUT)"),
                format!("{f}:5: webhook.extended: expected true or false, found \"maybe\""),
            ],
        ),
        (
            "webhook:\n  url: https://x.example\n  format: standard\n  extended: true\n  body: x\n".into(),
            vec![
                format!("{f}:3: webhook.format: both format and body (line 5) are set; body replaces the format, keep one"),
                format!("{f}:4: webhook.extended: only used with format wg-portal or wg-portal-v2 (remove it)"),
                format!(
                    "{f}:5: webhook.body: invalid template: the body is not valid JSON (expected value at line 1 \
                     column 1); quote text fields (\"{{{{ peer.name }}}}\"), use |tojson for lists, or set a \
                     Content-Type header that is not JSON, for a sample peer.create event"
                ),
            ],
        ),
        (
            "webhooks:\n  - name: a\n    url: https://x.example\n    secret: \"Bearer s3cr3t\"\n    auth: { bearer: s3cr3t }\n  \
             - name: b\n    url: https://x.example\n    auth: { bearer: s3cr3t, basic: { username: u, password: p } }\n  \
             - name: c\n    url: https://x.example\n    auth: { bearer: \"Bearer s3cr3t\" }\n  \
             - name: d\n    url: https://x.example\n    auth: { basic: { username: \"a:b\" } }\n  \
             - name: e\n    url: https://x.example\n    auth: { oauth2: { client_id: x, client_secret: s3cr3t, client_auth: jwt } }\n  \
             - name: f\n    url: https://x.example\n    auth: {}\n"
                .into(),
            vec![
                format!("{f}:5: webhooks[0].auth: both secret (line 4) and auth are set; keep one"),
                format!("{f}:8: webhooks[1].auth.basic: both bearer (line 8) and basic are set; give one"),
                format!("{f}:11: webhooks[2].auth.bearer: give the token alone: wghook adds \"Bearer \""),
                format!(
                    "{f}:14: webhooks[3].auth.basic.username: must not contain : \
                     (HTTP Basic separates user and password with it)"
                ),
                format!("{f}:17: webhooks[4].auth.oauth2.token_url: required (the token endpoint's URL)"),
                format!("{f}:17: webhooks[4].auth.oauth2.client_auth: invalid value \"jwt\" (use basic or body)"),
                format!("{f}:20: webhooks[5].auth: give one of bearer (or bearer_file), basic or oauth2"),
            ],
        ),
        (
            "webhook:\n  url: https://x.example\n  signing_secret: [whsec_AAAA, s3cr3t, \"whsec_s3cr3t!\"]\n  \
             secret_file: /nonexistent/wghook-secret\n  headers:\n    Authorization: x\n    \"bad name\": x\n    \
             webhook-id: x\n    X-Ok: \"{{ nope }}\"\n    x-ok: y\n".into(),
            vec![
                format!(
                    "{f}:3: webhook.signing_secret[0]: the key is 3 bytes long; use 24 to 64 random bytes \
                     (e.g. whsec_$(head -c 32 /dev/urandom | base64))"
                ),
                format!(
                    "{f}:3: webhook.signing_secret[1]: must start with whsec_ (a Standard Webhooks secret: \
                     whsec_ and base64 of 24 to 64 random bytes)"
                ),
                format!("{f}:3: webhook.signing_secret[2]: the part after whsec_ is not valid base64"),
                format!(
                    "{f}:4: webhook.secret_file: cannot read secret file /nonexistent/wghook-secret: \
                     No such file or directory (os error 2)"
                ),
                format!(
                    "{f}:6: webhook.headers.\"Authorization\": set by wghook: use secret or auth for the \
                     Authorization header"
                ),
                format!(
                    "{f}:7: webhook.headers.\"bad name\": invalid header name (letters, digits and -, e.g. X-Event)"
                ),
                format!("{f}:8: webhook.headers.\"webhook-id\": set by wghook; it cannot be replaced"),
                format!(
                    "{f}:9: webhook.headers.\"X-Ok\": invalid template: unknown field \"nope\" (known fields: \
                     id, event, entity, kind, type, host, time, timestamp, sequence, identifier, changed, \
                     interface, peer, session)"
                ),
                format!(
                    "{f}:10: webhook.headers.\"x-ok\": the same header as \"X-Ok\" (header names ignore case)"
                ),
            ],
        ),
        (
            "webhook:\n  url: https://x.example\n  events: [peer.connect, peer.conect, interface.*]\n  max_in_flight: 0\n".into(),
            vec![
                format!("{f}:3: webhook.events[1]: unknown event \"peer.conect\" (use peer.create, peer.update, peer.delete, peer.connect, peer.disconnect, interface.create, interface.update, interface.delete, or * as a part, e.g. peer.*)"),
                format!("{f}:4: webhook.max_in_flight: expected a whole number from 1 to 1024, found \"0\""),
            ],
        ),
        (
            "delivery:\n  max_pending_events: lots\n  retry:\n    delays: []\n    max_event_age: 0s\n".into(),
            vec![
                format!("{f}:2: delivery.max_pending_events: expected a whole number from 1 to 100000000, found \"lots\""),
                format!("{f}:4: delivery.retry.delays: must list at least one delay (e.g. [0s, 5s, 30s])"),
                format!("{f}:5: delivery.retry.max_event_age: must be at least 1s (got 0s)"),
            ],
        ),
        (
            "metrics:\n  listen: localhost\nlog:\n  level: \"wghook=loud\"\n  format: xml\n".into(),
            vec![
                format!("{f}:2: metrics.listen: invalid address \"localhost\" (use IP:PORT, e.g. 127.0.0.1:9586 or [::1]:9586)"),
                format!("{f}:4: log.level: invalid log filter \"wghook=loud\": error parsing level filter: expected one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\", or a number 0-5 (use e.g. info or wghook=debug,warn)"),
                format!("{f}:5: log.format: invalid value \"xml\" (use auto, human, journald or json)"),
            ],
        ),
        (
            "monitor: [wg0]\n".into(),
            vec![format!("{f}:1: monitor: expected a mapping, found a list")],
        ),
        (
            "monitor:\n  interfaces: wg0\n  endpoint_updates: yes\n".into(),
            vec![
                format!("{f}:2: monitor.interfaces: expected a list, found a single value"),
                format!("{f}:3: monitor.endpoint_updates: expected true or false, found \"yes\""),
            ],
        ),
        (
            "webhook:\n  url: [https://x.example]\n".into(),
            vec![format!("{f}:2: webhook.url: expected a string, found a list")],
        ),
        (
            "- webhook\n".into(),
            vec![format!(
                "{f}:1: the file must be a mapping of webhook, webhooks, monitor, peers, interfaces, delivery, metrics, log, found a list"
            )],
        ),
        (
            "monitor:\n  interval: 5x\n".into(),
            vec![format!("{f}:2: monitor.interval: invalid duration \"5x\" (use e.g. 5s, 1m, 1h30m)")],
        ),
        (
            "monitor:\n  interval: 20ms\n  connect_threshold: 0s\n  uapi_timeout: 9000h\n".into(),
            vec![
                format!("{f}:2: monitor.interval: must be at least 100ms (got 20ms)"),
                format!("{f}:3: monitor.connect_threshold: must be greater than 0"),
                format!("{f}:4: monitor.uapi_timeout: duration \"9000h\" is too long (at most 8760h)"),
            ],
        ),
        (
            "webhook:\n  url: not a url\n".into(),
            vec![format!(
                "{f}:2: webhook.url: invalid URL: relative URL without a base \
                 (use e.g. https://example.com/hook)"
            )],
        ),
        (
            "webhook:\n  url: ftp://files.example.com/drop\n".into(),
            vec![format!("{f}:2: webhook.url: unsupported URL scheme \"ftp\" (use http or https)")],
        ),
        (
            "webhook:\n  secret: x\n".into(),
            vec![format!("{f}:1: webhook.url: required (an http or https URL)")],
        ),
        (
            "webhook:\n  url: https://x.example\n  secret: \"Bearer a\"\n  authentication: \"Bearer b\"\n".into(),
            vec![format!(
                "{f}:4: webhook.authentication: both secret (line 3) and its alias authentication are set; keep one"
            )],
        ),
        (
            "webhook:\n  url: https://a.example\nwebhooks:\n  - name: b\n    url: https://b.example\n".into(),
            vec![format!(
                "{f}:3: webhooks: both webhook (line 1) and webhooks are set; use webhook for one \
                 receiver or a webhooks list for several"
            )],
        ),
        (
            "webhooks:\n  - name: ops\n    url: https://a.example\n  - name: ops\n    url: https://b.example\n  \
             - url: https://c.example\n  - name: \"two words\"\n    url: https://d.example\n"
                .into(),
            vec![
                format!("{f}:4: webhooks[1].name: duplicate webhook name \"ops\" (first at line 2)"),
                format!("{f}:6: webhooks[2].name: required in a webhooks list (letters, digits, _ and -)"),
                format!("{f}:7: webhooks[3].name: invalid name \"two words\" (use letters, digits, _ and -)"),
            ],
        ),
        (
            format!("webhook:\n  url: https://x.example\n  secret: \"Bearer ${{{UNSET_VAR}}}\"\n"),
            vec![format!("{f}:3: webhook.secret: environment variable {UNSET_VAR} is not set")],
        ),
        (
            "monitor:\n  host: \"${HOME\"\n".into(),
            vec![format!(
                "{f}:2: monitor.host: unterminated ${{ (close it with }}, or write $${{ for a literal ${{)"
            )],
        ),
        (
            format!("peers:\n  not-a-key: {{ name: x }}\n  \"AAAA\": {{ name: y }}\n  \"{ALICE}\": {{ nme: z }}\n"),
            vec![
                format!(
                    "{f}:2: peers.\"not-a-key\": invalid public key (key is not valid base64); \
                     use the 44-character base64 form `wg show` prints"
                ),
                format!(
                    "{f}:3: peers.\"AAAA\": invalid public key (key is 3 bytes long, expected 32); \
                     use the 44-character base64 form `wg show` prints"
                ),
                format!("{f}:4: peers.\"{ALICE}\".nme: unknown key (did you mean name?)"),
            ],
        ),
        (
            format!(
                "peers:\n  \"{ALICE}\":\n    ping_address: 10.0.0.300\n    labels:\n      \"two words\": x\n      \
                 team: [a]\n      site: berlin\n"
            ),
            vec![
                format!(
                    "{f}:3: peers.\"{ALICE}\".ping_address: invalid IP address \"10.0.0.300\" \
                     (use e.g. 10.8.0.2 or fd00::2)"
                ),
                format!(
                    "{f}:5: peers.\"{ALICE}\".labels.\"two words\": invalid label name (use letters, digits, _, - and .)"
                ),
                format!("{f}:6: peers.\"{ALICE}\".labels.\"team\": expected a string, found a list"),
            ],
        ),
        (
            "monitor:\n  ping_checks: maybe\n  ping_interval: 500ms\n  names_from: [\"/etc/wireguard/[wg*.conf\", \"\"]\n"
                .into(),
            vec![
                format!("{f}:2: monitor.ping_checks: expected true or false, found \"maybe\""),
                format!("{f}:3: monitor.ping_interval: must be at least 1s (got 500ms)"),
                format!(
                    "{f}:4: monitor.names_from[0]: invalid pattern \"/etc/wireguard/[wg*.conf\": \
                     invalid range pattern at position 15 (use e.g. /etc/wireguard/*.conf)"
                ),
                format!("{f}:4: monitor.names_from[1]: must not be empty"),
            ],
        ),
        (
            "monitor:\n  backend: simulated\n".into(),
            vec![format!(
                "{f}:2: monitor.scenario: required when monitor.backend is simulated (a scenario file)"
            )],
        ),
        (
            "monitor:\n  backend: kernel\n  scenario: /tmp/s.yaml\n".into(),
            vec![format!(
                "{f}:3: monitor.scenario: only used when monitor.backend is simulated \
                 (remove it, or set backend: simulated)"
            )],
        ),
        (
            "monitor:\n  backend: netlink\n  announce_on_start: yes\n".into(),
            vec![
                format!("{f}:2: monitor.backend: invalid value \"netlink\" (use auto, userspace, kernel or simulated)"),
                format!("{f}:3: monitor.announce_on_start: invalid value \"yes\" (use connected, all or none)"),
            ],
        ),
        (
            "monitor:\n  interval: 1s\n  interval: 2s\n".into(),
            vec![format!("{f}:3: monitor.interval: duplicate key (first at line 2)")],
        ),
        (
            "monitor:\n  interfaces: [\"\", \"a very long interface\", averylonginterfacename]\n  uapi_dirs: []\n".into(),
            vec![
                format!("{f}:2: monitor.interfaces[0]: invalid interface name \"\" (must not be empty)"),
                format!(
                    "{f}:2: monitor.interfaces[1]: invalid interface name \"a very long interface\" \
                     (interface names contain no spaces or /)"
                ),
                format!(
                    "{f}:2: monitor.interfaces[2]: invalid interface name \"averylonginterfacename\" \
                     (interface names are at most 15 characters)"
                ),
                format!(
                    "{f}:3: monitor.uapi_dirs: must name at least one directory (remove the key for the defaults)"
                ),
            ],
        ),
        (
            "webhook:\n  url: https://x.example\n bad: 1\n".into(),
            vec![format!(
                "{f}:3: invalid YAML: while parsing a block mapping, did not find expected key (column 2)"
            )],
        ),
        (
            "monitor: [wg0\nwebhook: 1\n".into(),
            vec![format!("{f}:2: invalid YAML: illegal placement of ':' indicator (column 8)")],
        ),
        (
            "monitor: {}\n---\nmonitor: {}\n".into(),
            vec![format!("{f}:2: only one YAML document is allowed per file")],
        ),
    ];
    for (text, want) in &table {
        assert_eq!(&error_lines(text), want, "for:\n{text}");
    }
}
