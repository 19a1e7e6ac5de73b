//! Every receiver's language, over real HTTP on 127.0.0.1: the wire formats,
//! body/header/URL templates (the shipped Slack, Discord, ntfy, Defguard
//! and Cymmetri examples; the chat services' in `formats/chat.rs`), each authentication mode including a real OAuth
//! 2.0 token endpoint, Standard Webhooks signatures checked by the official
//! Python library, configuration errors, and `wghook test`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use uuid::Uuid;
use wghook::config::{self, Config};
use wghook::delivery::http::{AttemptResult, HttpSender, MAX_RESPONSE_BODY};
use wghook::delivery::settings::Webhook;
use wghook::event::{
    Entity, Event, EventKind, InterfaceInfo, PeerInfo, PeerLabel, RenderContext, Session, Zone,
};
use wghook::model::{DriverKind, Peer, PublicKey};

use crate::util::receiver::{Receiver, Recorded, Reply};

mod chat;

const PEER_KEY: &str = "Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=";
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Helpers: a fixed event (the wg-portal seed's connect), configurations,
// sending one event.
// ---------------------------------------------------------------------------

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ns: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
        + chrono::TimeDelta::nanoseconds(i64::from(ns))
}

/// The event of the wg_portal unit tests (and of their golden files).
fn event(kind: EventKind, entity: Entity) -> Event {
    let peer = (entity == Entity::Peer).then(|| PeerInfo {
        peer: Peer {
            public_key: PublicKey::from_base64(PEER_KEY).unwrap(),
            endpoint: Some("10.55.66.77:33874".parse().unwrap()),
            allowed_ips: vec![
                "10.55.66.77/32".parse().unwrap(),
                "fd00::77/128".parse().unwrap(),
            ]
            .into(),
            persistent_keepalive: 25,
            has_preshared_key: true,
            last_handshake: Some(utc(2025, 6, 26, 21, 4, 33, 325_216_659)),
            rx_bytes: 1860,
            tx_bytes: 10824,
        },
        created_at: utc(2025, 6, 20, 10, 0, 0, 0),
        updated_at: utc(2025, 6, 21, 11, 0, 0, 123_000_000),
        pingable: false,
        last_ping: None,
    });
    let session = match kind {
        EventKind::Connect => Some(Session {
            started_at: utc(2025, 6, 26, 20, 50, 40, 102_216_060),
            ended_at: None,
            rx_bytes: 0,
            tx_bytes: 0,
        }),
        EventKind::Disconnect => Some(Session {
            started_at: utc(2025, 6, 26, 20, 50, 40, 102_216_060),
            ended_at: Some(utc(2025, 6, 26, 22, 57, 45, 325_216_659)),
            rx_bytes: 1_860_000,
            tx_bytes: 10_824_000,
        }),
        _ => None,
    };
    Event {
        id: Uuid::now_v7(),
        kind,
        entity,
        time: match kind {
            EventKind::Connect => utc(2025, 6, 26, 21, 4, 33, 325_216_659),
            EventKind::Disconnect => utc(2025, 6, 26, 22, 57, 45, 325_216_659),
            _ => utc(2025, 6, 26, 21, 0, 0, 0),
        },
        host: "vpn-gw-1".into(),
        sequence: 1,
        interface: InterfaceInfo {
            name: "wg0".into(),
            public_key: Some(PublicKey([7; 32])),
            listen_port: 51820,
            fwmark: 0x51,
            driver: DriverKind::Kernel,
            addresses: vec![
                "10.55.66.1/24".parse().unwrap(),
                "fd00::1/64".parse().unwrap(),
            ],
            mtu: Some(1420),
            created_at: utc(2025, 6, 1, 8, 0, 0, 0),
            updated_at: utc(2025, 6, 2, 9, 30, 0, 500_000_000),
        },
        peer,
        changed: Vec::new(),
        session,
    }
}

fn connect() -> Event {
    event(EventKind::Connect, Entity::Peer)
}

/// Times at +02:00 (as the seed), no names.
fn plain_ctx() -> RenderContext {
    RenderContext {
        zone: Zone::Fixed(FixedOffset::east_opt(2 * 3600).unwrap()),
        ..RenderContext::default()
    }
}

/// As [`plain_ctx`], with the peer named alice-laptop, user alice.
fn named_ctx() -> RenderContext {
    let mut ctx = plain_ctx();
    // PeerLabel may grow fields: keep their defaults.
    #[allow(clippy::needless_update)]
    let label = PeerLabel {
        name: "alice-laptop".into(),
        user: "alice".into(),
        ..PeerLabel::default()
    };
    ctx.peer_labels
        .insert(PublicKey::from_base64(PEER_KEY).unwrap(), label);
    ctx
}

fn parse(text: &str, path: &Path) -> Config {
    config::parse_str(text, path).unwrap_or_else(|e| panic!("configuration refused:\n{e}\n{text}"))
}

/// The single webhook of `text` (a `webhook:` section).
fn hook(text: &str) -> Webhook {
    let mut cfg = parse(text, Path::new("/etc/wghook/test.yaml"));
    assert_eq!(cfg.webhooks.len(), 1);
    cfg.webhooks.remove(0)
}

/// Sends `event` through `hook` and returns what the receiver got for it.
async fn send_one(
    receiver: &Receiver,
    hook: &Webhook,
    ctx: RenderContext,
    event: &Event,
) -> Recorded {
    let sender = HttpSender::new(hook, ctx).unwrap();
    let attempt = sender.send(event, Utc::now()).await;
    assert!(attempt.delivered(), "not delivered: {attempt:?}");
    let id = event.id.to_string();
    let got = receiver
        .wait_until(WAIT, "the event", |r| r.iter().any(|r| r.id() == id))
        .await;
    got.into_iter().rfind(|r| r.id() == id).unwrap()
}

fn body_text(r: &Recorded) -> String {
    String::from_utf8(r.body.to_vec()).unwrap()
}

fn golden(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/wg_portal")
        .join(format!("{name}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Formats.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn each_format_arrives_byte_for_byte() {
    let receiver = Receiver::start().await;
    let url = &receiver.url;

    let got = send_one(
        &receiver,
        &hook(&format!("webhook:\n  url: {url}\n")),
        plain_ctx(),
        &connect(),
    )
    .await;
    assert_eq!(
        body_text(&got),
        golden("peer_connect"),
        "default format: wg-portal"
    );

    let v2 = hook(&format!("webhook:\n  url: {url}\n  format: wg-portal-v2\n"));
    let got = send_one(&receiver, &v2, plain_ctx(), &connect()).await;
    assert_eq!(body_text(&got), golden("v2_peer_connect"));

    let standard = hook(&format!("webhook:\n  url: {url}\n  format: standard\n"));
    let got = send_one(&receiver, &standard, named_ctx(), &connect()).await;
    assert_eq!(
        body_text(&got),
        format!(
            "{{\"type\":\"peer.connected\",\"timestamp\":\"2025-06-26T21:04:33.325216659Z\",\"data\":{{\
             \"host\":\"vpn-gw-1\",\"interface\":\"wg0\",\"public_key\":\"{PEER_KEY}\",\"name\":\"alice-laptop\",\
             \"user\":\"alice\",\"endpoint\":\"10.55.66.77:33874\",\"allowed_ips\":[\"10.55.66.77/32\",\"fd00::77/128\"],\
             \"persistent_keepalive\":25,\"last_handshake\":\"2025-06-26T21:04:33.325216659Z\",\"rx_bytes\":1860,\
             \"tx_bytes\":10824,\"session\":{{\"started_at\":\"2025-06-26T20:50:40.10221606Z\",\
             \"duration_seconds\":833,\"rx_bytes\":0,\"tx_bytes\":0}}}}}}"
        )
    );
    for r in receiver.requests() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), None);
        assert_eq!(
            r.header("webhook-signature"),
            None,
            "no signing_secret, no signature"
        );
    }
}

#[tokio::test]
async fn extended_adds_changed_fields_to_wg_portal_updates() {
    let receiver = Receiver::start().await;
    let mut update = event(EventKind::Update, Entity::Peer);
    update.changed = vec![
        wghook::event::ChangedField::Endpoint,
        wghook::event::ChangedField::AllowedIps,
    ];
    let plain = hook(&format!("webhook:\n  url: {}\n", receiver.url));
    let got = send_one(&receiver, &plain, plain_ctx(), &update).await;
    assert_eq!(body_text(&got), golden("peer_update"));
    let extended = hook(&format!(
        "webhook:\n  url: {}\n  extended: true\n",
        receiver.url
    ));
    let got = send_one(&receiver, &extended, plain_ctx(), &update).await;
    assert_eq!(body_text(&got), golden("peer_update_extended"));
    assert_eq!(
        got.json()["payload"]["ChangedFields"],
        serde_json::json!(["Endpoint", "AllowedIPsStr"])
    );
}

// ---------------------------------------------------------------------------
// Authentication.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn each_static_auth_mode_sends_its_authorization_header() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "file-t0ken\n").unwrap();
    std::fs::write(dir.path().join("password"), "pa:ss w0rd\r\n").unwrap();
    let url = &receiver.url;
    for (auth, want) in [
        ("", None),
        (
            "  secret: \"Basic dXNlcm5hbWU6cGFzc3dvcmQ=\"\n",
            Some("Basic dXNlcm5hbWU6cGFzc3dvcmQ="),
        ),
        ("  authentication: bare-token\n", Some("bare-token")),
        ("  auth: { bearer: t0ken }\n", Some("Bearer t0ken")),
        (
            "  auth: { bearer_file: token }\n",
            Some("Bearer file-t0ken"),
        ),
        (
            "  auth:\n    basic: { username: wg, password: \"s3cret\" }\n",
            // base64("wg:s3cret")
            Some("Basic d2c6czNjcmV0"),
        ),
        (
            "  auth:\n    basic: { username: wg, password_file: password }\n",
            // base64("wg:pa:ss w0rd"): only the trailing line break is dropped.
            Some("Basic d2c6cGE6c3MgdzByZA=="),
        ),
    ] {
        let text = format!("webhook:\n  url: {url}\n{auth}");
        let hook = parse(&text, &dir.path().join("wghook.yaml"))
            .webhooks
            .remove(0);
        let got = send_one(&receiver, &hook, plain_ctx(), &connect()).await;
        assert_eq!(got.header("authorization"), want, "for {auth:?}");
    }
}

/// A URL's user info is sent as Basic authorization, exactly once; with a
/// secret or auth as well it is refused (`config` tests), since both would
/// go out as two Authorization headers.
#[tokio::test]
async fn url_user_info_alone_sends_one_basic_authorization_header() {
    let receiver = Receiver::start().await;
    let url = receiver.url.replacen("http://", "http://wg:s3cret@", 1);
    assert_ne!(url, receiver.url);
    let hook = hook(&format!("webhook:\n  url: {url}\n"));
    let got = send_one(&receiver, &hook, plain_ctx(), &connect()).await;
    let values: Vec<_> = got.headers.get_all("authorization").iter().collect();
    // base64("wg:s3cret")
    assert_eq!(values, ["Basic d2c6czNjcmV0"]);
    assert!(!got.path.contains("s3cret"), "{}", got.path);
}

/// An OAuth 2.0 token endpoint: client-credentials grant for one client,
/// tokens `tok-1`, `tok-2`, ... valid `expires_in` seconds.
#[derive(Clone, Default)]
struct TokenServer {
    requests: Arc<AtomicUsize>,
    expires_in: Arc<AtomicU64>,
    /// When set: the status and body every token request gets instead.
    broken: Arc<Mutex<Option<(u16, String)>>>,
    /// Form fields of the last request.
    last_form: Arc<Mutex<Vec<(String, String)>>>,
}

fn form_decode(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn token(
    State(server): State<TokenServer>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let n = server.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let form = form_decode(std::str::from_utf8(&body).unwrap());
    *server.last_form.lock().unwrap() = form.clone();
    if let Some((status, body)) = server.broken.lock().unwrap().clone() {
        return (StatusCode::from_u16(status).unwrap(), body);
    }
    // base64("wg-client:s3cret")
    let client_ok = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some("Basic d2ctY2xpZW50OnMzY3JldA==");
    let grant_ok = form.contains(&("grant_type".into(), "client_credentials".into()));
    if !client_ok || !grant_ok {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client","error_description":"unknown client"}"#.into(),
        );
    }
    let expires_in = server.expires_in.load(Ordering::SeqCst);
    (
        StatusCode::OK,
        format!(r#"{{"access_token":"tok-{n}","token_type":"bearer","expires_in":{expires_in}}}"#),
    )
}

async fn start_token_server(expires_in: u64) -> (TokenServer, String) {
    let server = TokenServer::default();
    server.expires_in.store(expires_in, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/oauth/token", axum::routing::post(token))
        .with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (server, format!("http://{addr}/oauth/token"))
}

fn oauth_hook(receiver_url: &str, token_url: &str) -> Webhook {
    hook(&format!(
        "webhook:\n  url: {receiver_url}\n  auth:\n    oauth2:\n      token_url: {token_url}\n      \
         client_id: wg-client\n      client_secret: s3cret\n      scope: hooks.write\n"
    ))
}

/// The receiver accepts only the tokens in `valid`.
fn accept_only(receiver: &Receiver, valid: &[&str]) {
    let valid: Vec<String> = valid.iter().map(|t| format!("Bearer {t}")).collect();
    receiver.respond_by(move |r, _| {
        let ok = r
            .header("authorization")
            .is_some_and(|a| valid.iter().any(|v| v == a));
        Reply::status(if ok { 200 } else { 401 })
    });
}

#[tokio::test]
async fn oauth2_tokens_are_cached_and_fetched_again_after_a_401_once() {
    let receiver = Receiver::start().await;
    let (server, token_url) = start_token_server(3600).await;
    let sender = HttpSender::new(&oauth_hook(&receiver.url, &token_url), plain_ctx()).unwrap();
    accept_only(&receiver, &["tok-1"]);

    for _ in 0..3 {
        assert!(sender.send(&connect(), Utc::now()).await.delivered());
    }
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "one token for three deliveries"
    );
    let form = server.last_form.lock().unwrap().clone();
    assert!(
        form.contains(&("scope".into(), "hooks.write".into())),
        "{form:?}"
    );
    assert!(
        !form.iter().any(|(k, _)| k == "client_secret"),
        "client_auth basic: the secret goes in the header only"
    );
    let auths: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(auths, ["Bearer tok-1"; 3]);

    // The receiver revokes tok-1: one 401, a new token, the same event again.
    accept_only(&receiver, &["tok-2"]);
    let e = connect();
    let attempt = sender.send(&e, Utc::now()).await;
    assert!(attempt.delivered(), "{attempt:?}");
    let tries: Vec<String> = receiver
        .requests()
        .iter()
        .filter(|r| r.id() == e.id.to_string())
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(tries, ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);

    // A receiver that refuses every token: refreshed once, then the 401 stands.
    accept_only(&receiver, &[]);
    let e = connect();
    let attempt = sender.send(&e, Utc::now()).await;
    assert!(
        matches!(attempt.result, AttemptResult::Status { code: 401, .. }),
        "{attempt:?}"
    );
    let tries = receiver
        .requests()
        .iter()
        .filter(|r| r.id() == e.id.to_string())
        .count();
    assert_eq!(tries, 2, "exactly one retry with a fresh token");
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn oauth2_tokens_are_fetched_again_shortly_before_they_expire() {
    let receiver = Receiver::start().await;
    // Four-second tokens are refreshed after three seconds (a quarter of the
    // lifetime before expiry; `auth::refresh_at` pins the margins). The
    // second send has those three seconds to reuse the token, ample on a
    // busy machine; the third goes surely after the refresh point.
    let lifetime = Duration::from_secs(4);
    let refresh = lifetime * 3 / 4;
    let (server, token_url) = start_token_server(lifetime.as_secs()).await;
    let sender = HttpSender::new(&oauth_hook(&receiver.url, &token_url), plain_ctx()).unwrap();
    assert!(sender.send(&connect(), Utc::now()).await.delivered());
    // The token was obtained before this instant: it is due for refresh by
    // `refresh` after it.
    let first_done = tokio::time::Instant::now();
    assert!(sender.send(&connect(), Utc::now()).await.delivered());
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "still valid: reused"
    );
    tokio::time::sleep_until(first_done + refresh + Duration::from_millis(50)).await;
    assert!(sender.send(&connect(), Utc::now()).await.delivered());
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        2,
        "near expiry: fetched again"
    );
    let auths: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(auths, ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]);
}

/// Regression: a token endpoint answering `expires_in: 18446744073709551615`
/// overflowed the refresh time and panicked the delivery. The lifetime is
/// capped (at a day): the token is used and reused.
#[tokio::test]
async fn an_absurd_oauth2_expires_in_is_capped_not_a_panic() {
    let receiver = Receiver::start().await;
    let (server, token_url) = start_token_server(u64::MAX).await;
    let sender = HttpSender::new(&oauth_hook(&receiver.url, &token_url), plain_ctx()).unwrap();
    for _ in 0..2 {
        let attempt = sender.send(&connect(), Utc::now()).await;
        assert!(attempt.delivered(), "{attempt:?}");
    }
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "one token, reused"
    );
    let auths: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(auths, ["Bearer tok-1", "Bearer tok-1"]);
}

#[tokio::test]
async fn bad_oauth2_answers_fail_the_attempt_with_a_clear_reason() {
    let receiver = Receiver::start().await;
    let (server, token_url) = start_token_server(3600).await;
    let sender = HttpSender::new(&oauth_hook(&receiver.url, &token_url), plain_ctx()).unwrap();
    for (status, body, want) in [
        (
            401,
            r#"{"error":"invalid_client","error_description":"client secret expired"}"#,
            "HTTP 401: invalid_client (client secret expired) (check client_id, client_secret, scope and token_url)",
        ),
        (500, "<html>oops</html>", "HTTP 500 (check client_id"),
        (200, "<html>login</html>", "the answer is not a token (a JSON object with access_token)"),
        (200, r#"{"token_type":"bearer"}"#, "the answer is not a token"),
        (200, r#"{"access_token":"x","token_type":"mac"}"#, "token_type \"mac\" is not supported (only Bearer)"),
        (200, r#"{"access_token":"x","expires_in":"soon"}"#, "expires_in is not a number of seconds"),
        (200, r#"{"access_token":"a\nb"}"#, "the access_token contains characters not allowed in a header"),
    ] {
        *server.broken.lock().unwrap() = Some((status, body.to_string()));
        let attempt = sender.send(&connect(), Utc::now()).await;
        let AttemptResult::Failed(reason) = &attempt.result else {
            panic!("expected a failure for {body}: {attempt:?}");
        };
        // The token URL is shown without its path (it can be a credential).
        let shown = wghook::delivery::settings::redacted_url(&token_url.parse().unwrap());
        assert!(shown.ends_with("/…") && !reason.contains(&token_url), "{reason}");
        assert!(
            reason.starts_with(&format!("oauth2 token request to {shown} failed: ")),
            "{reason}"
        );
        assert!(reason.contains(want), "{reason:?} lacks {want:?}");
        assert!(!reason.contains("s3cret"), "{reason}");
    }
    // Unreachable token endpoint.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let sender = HttpSender::new(
        &oauth_hook(&receiver.url, &format!("http://{closed}/token")),
        plain_ctx(),
    )
    .unwrap();
    let attempt = sender.send(&connect(), Utc::now()).await;
    assert!(
        matches!(&attempt.result, AttemptResult::Failed(r) if r.contains("connection failed")),
        "{attempt:?}"
    );
    assert!(
        receiver.requests().is_empty(),
        "nothing is sent without a token"
    );
}

// ---------------------------------------------------------------------------
// Signatures, checked by the official Python library.
// ---------------------------------------------------------------------------

const VERIFY_PY: &str = r#"
import json, sys
try:
    from standardwebhooks.webhooks import Webhook
except ImportError as e:
    print("MISSING: " + str(e))
    sys.exit(3)
case = json.load(sys.stdin)
ok = []
for secret in case["secrets"]:
    try:
        Webhook(secret).verify(case["body"].encode(), case["headers"])
        ok.append(True)
    except Exception as e:
        ok.append(False)
print(json.dumps(ok))
"#;

/// For each secret: does `standardwebhooks` accept the request?
fn python_verify(secrets: &[&str], r: &Recorded, body: &str) -> Vec<bool> {
    use std::io::Write as _;
    let headers: serde_json::Map<String, serde_json::Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| {
                (
                    h.to_string(),
                    serde_json::Value::from(r.header(h).unwrap_or("")),
                )
            })
            .collect();
    let case = serde_json::json!({"secrets": secrets, "body": body, "headers": headers});
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(VERIFY_PY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed to check signatures with the standardwebhooks package");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(case.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() != Some(3),
        "the Python package standardwebhooks is missing ({}): install it with \
         `python3 -m pip install standardwebhooks`",
        stdout.trim()
    );
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[tokio::test]
async fn signatures_verify_with_the_standardwebhooks_python_library() {
    let receiver = Receiver::start().await;
    let old = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let hook = hook(&format!(
        "webhook:\n  url: {}\n  format: standard\n  signing_secret: [\"{old}\", \"{new}\"]\n",
        receiver.url
    ));
    let got = send_one(&receiver, &hook, named_ctx(), &connect()).await;
    let signature = got.header("webhook-signature").unwrap();
    assert_eq!(
        signature.split(' ').count(),
        2,
        "one signature per secret: {signature}"
    );
    assert!(signature.split(' ').all(|s| s.starts_with("v1,")));
    let body = body_text(&got);
    assert_eq!(
        python_verify(&[old, new, other], &got, &body),
        [true, true, false],
        "both rotated secrets verify, an unrelated one does not"
    );
    let tampered = body.replace("alice", "mallory");
    assert_eq!(python_verify(&[old], &got, &tampered), [false]);
}

// ---------------------------------------------------------------------------
// The shipped examples.
// ---------------------------------------------------------------------------

/// `config/examples/<name>.yaml`, loaded as wghook loads it with `vars` as
/// the environment (`${VAR}` replaced by the loader), after checking that
/// its URL names `origin` (scheme, host, port) and pointing that origin at
/// the receiver (the path and query stay the example's).
fn example(name: &str, origin: &str, receiver: &Receiver, vars: &[(&str, &str)]) -> Webhook {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("config/examples/{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let substitute = |mut s: String| {
        for (var, value) in vars {
            s = s.replace(&format!("${{{var}}}"), value);
        }
        s
    };
    // Splits `scheme://host[:port]/path?query` after the origin.
    let split = |url: &str| -> (String, String) {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let cut = rest.find('/').unwrap_or(rest.len());
        (
            format!("{scheme}://{}", &rest[..cut]),
            rest[cut..].to_string(),
        )
    };
    let base = receiver.url.trim_end_matches("/hook");
    let mut found = false;
    let text: String = text
        .lines()
        .map(|line| match line.strip_prefix("  url: ") {
            Some(url) => {
                found = true;
                let raw = url.trim_matches('"');
                let (named, _) = split(&substitute(raw.to_string()));
                assert_eq!(named, origin, "the URL of {name}");
                // The path keeps its `${VAR}`s for the loader, unless the
                // whole URL is one variable (Teams).
                let rest = if raw.contains("://") {
                    split(raw).1
                } else {
                    split(&substitute(raw.to_string())).1
                };
                format!("  url: \"{base}{rest}\"\n")
            }
            None => format!("{line}\n"),
        })
        .collect();
    assert!(found, "no url in {name}");
    let env = |var: &str| {
        vars.iter()
            .find(|(v, _)| *v == var)
            .map(|(_, value)| value.to_string())
            .ok_or(std::env::VarError::NotPresent)
    };
    let mut cfg = config::compile(&text, &path, &env, &config::Disk, true)
        .unwrap_or_else(|e| panic!("{name} refused:\n{e}"));
    cfg.webhooks.remove(0)
}

fn disconnect() -> Event {
    event(EventKind::Disconnect, Entity::Peer)
}

#[tokio::test]
async fn the_slack_example_posts_these_messages() {
    let receiver = Receiver::start().await;
    let hook = example(
        "slack",
        "https://hooks.slack.com",
        &receiver,
        &[("SLACK_WEBHOOK_PATH", "T000/B000/XXXX")],
    );
    let got = send_one(&receiver, &hook, named_ctx(), &connect()).await;
    assert_eq!(got.path, "/services/T000/B000/XXXX");
    assert_eq!(
        body_text(&got),
        r#"{"text": ":large_green_circle: *alice-laptop (alice)* connected to wg0 on vpn-gw-1 from 10.55.66.77:33874"}"#
    );
    let got = send_one(&receiver, &hook, named_ctx(), &disconnect()).await;
    assert_eq!(
        body_text(&got),
        r#"{"text": ":red_circle: *alice-laptop (alice)* disconnected from wg0 on vpn-gw-1 after 2h7m5s (1.9 MB in, 10.8 MB out)"}"#
    );
    let got = send_one(
        &receiver,
        &hook,
        plain_ctx(),
        &event(EventKind::Create, Entity::Peer),
    )
    .await;
    assert_eq!(
        got.json(),
        serde_json::json!({"text": ":wrench: peer *Fb5TaziAs1Wr* created on wg0 (vpn-gw-1)"})
    );
    // A name that would break hand-made JSON is escaped.
    let mut ctx = named_ctx();
    for label in ctx.peer_labels.values_mut() {
        label.name = "bob \"the\" \\ laptop".into();
    }
    let got = send_one(&receiver, &hook, ctx, &connect()).await;
    assert_eq!(
        got.json()["text"],
        ":large_green_circle: *bob \"the\" \\ laptop (alice)* connected to wg0 on vpn-gw-1 from 10.55.66.77:33874"
    );
}

#[tokio::test]
async fn the_discord_example_posts_these_messages() {
    let receiver = Receiver::start().await;
    let hook = example(
        "discord",
        "https://discord.com",
        &receiver,
        &[("DISCORD_WEBHOOK_PATH", "123/abc")],
    );
    assert_eq!(hook.events, ["peer.connect", "peer.disconnect"]);
    let got = send_one(&receiver, &hook, named_ctx(), &connect()).await;
    assert_eq!(got.path, "/api/webhooks/123/abc");
    assert_eq!(
        got.json(),
        serde_json::json!({"username": "wghook", "content": "🟢 **alice-laptop** connected to `wg0` on vpn-gw-1 from `10.55.66.77:33874`"})
    );
    let got = send_one(&receiver, &hook, named_ctx(), &disconnect()).await;
    assert_eq!(
        got.json(),
        serde_json::json!({"username": "wghook", "content": "🔴 **alice-laptop** disconnected from `wg0` on vpn-gw-1 after 2h7m5s"})
    );
}

#[tokio::test]
async fn the_ntfy_example_sends_text_with_title_tags_and_priority_headers() {
    let receiver = Receiver::start().await;
    let hook = example(
        "ntfy",
        "https://ntfy.sh",
        &receiver,
        &[("NTFY_TOPIC", "wg-alerts")],
    );
    let got = send_one(&receiver, &hook, named_ctx(), &connect()).await;
    assert_eq!(got.path, "/wg-alerts");
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(got.header("title"), Some("alice-laptop connected"));
    assert_eq!(got.header("tags"), Some("green_circle,wg0"));
    assert_eq!(got.header("priority"), Some("default"));
    assert_eq!(
        body_text(&got),
        "alice-laptop (alice) connected to wg0 on vpn-gw-1 from 10.55.66.77:33874"
    );
    let got = send_one(&receiver, &hook, plain_ctx(), &disconnect()).await;
    assert_eq!(got.header("title"), Some("WireGuard peer disconnected"));
    assert_eq!(got.header("tags"), Some("red_circle,wg0"));
    assert_eq!(got.header("priority"), Some("low"));
    assert_eq!(
        body_text(&got),
        format!("{PEER_KEY} (no user) left wg0 on vpn-gw-1 after 2h7m5s, 1.9 MB received"),
        "not JSON: no escaping, names fall back to the key"
    );
}

#[tokio::test]
async fn the_defguard_example_sends_get_with_a_body_and_the_event_header() {
    let receiver = Receiver::start().await;
    let hook = example(
        "defguard",
        "https://provisioning.example.com",
        &receiver,
        &[("DEFGUARD_TOKEN", "dg-t0ken")],
    );
    assert_eq!(
        hook.description.as_deref(),
        Some("provisioning: devices follow WireGuard peers")
    );
    for (kind, header) in [
        (EventKind::Create, "peer_created"),
        (EventKind::Update, "peer_modified"),
        (EventKind::Delete, "peer_deleted"),
    ] {
        let got = send_one(&receiver, &hook, named_ctx(), &event(kind, Entity::Peer)).await;
        assert_eq!(got.method, "GET");
        assert_eq!(got.path, "/defguard");
        assert_eq!(got.header("x-defguard-event"), Some(header));
        assert_eq!(
            got.header("authorization"),
            Some("dg-t0ken"),
            "the token verbatim"
        );
        assert_eq!(got.header("content-type"), Some("application/json"));
        assert_eq!(
            got.json(),
            serde_json::json!({
                "username": "alice", "device": "alice-laptop", "public_key": PEER_KEY,
                "allowed_ips": ["10.55.66.77/32", "fd00::77/128"], "interface": "wg0", "host": "vpn-gw-1"
            })
        );
    }
}

#[tokio::test]
async fn the_cymmetri_example_posts_to_one_path_per_event_with_a_bearer_token_file() {
    let receiver = Receiver::start().await;
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("cymmetri-token"), "eyJhbGciOi.t0ken\n").unwrap();
    let dir = creds.path().display().to_string();
    let hook = example(
        "cymmetri",
        "https://idm.example.com",
        &receiver,
        &[("CREDENTIALS_DIRECTORY", &dir)],
    );
    for (kind, path) in [
        (EventKind::Connect, "/webhook/peerConnect"),
        (EventKind::Disconnect, "/webhook/peerDisconnect"),
        (EventKind::Create, "/webhook/peerCreate"),
        (EventKind::Delete, "/webhook/peerDelete"),
    ] {
        let got = send_one(&receiver, &hook, named_ctx(), &event(kind, Entity::Peer)).await;
        assert_eq!(got.method, "POST");
        assert_eq!(got.path, path);
        assert_eq!(got.header("authorization"), Some("Bearer eyJhbGciOi.t0ken"));
        let v = got.json();
        assert_eq!(v["request"]["peer"]["login"], "alice");
        assert_eq!(v["request"]["peer"]["publicKey"], PEER_KEY);
    }
    let got = send_one(
        &receiver,
        &hook,
        named_ctx(),
        &event(EventKind::Update, Entity::Interface),
    )
    .await;
    assert_eq!(got.path, "/webhook/interfaceUpdate");
}

#[tokio::test]
async fn url_templates_percent_encode_values() {
    let receiver = Receiver::start().await;
    let base = receiver.url.trim_end_matches("/hook");
    let hook = hook(&format!(
        "webhook:\n  url: \"{base}/w/{{{{ peer.name }}}}/{{{{ kind }}}}?user={{{{ peer.user }}}}\"\n"
    ));
    let mut ctx = named_ctx();
    for label in ctx.peer_labels.values_mut() {
        label.name = "bob's laptop/2".into();
    }
    let got = send_one(&receiver, &hook, ctx, &connect()).await;
    assert_eq!(got.path, "/w/bob%27s%20laptop%2F2/peer.connect");
}

// ---------------------------------------------------------------------------
// Configuration errors, as `wghook check` reports them.
// ---------------------------------------------------------------------------

fn wghook() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wghook"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

#[tokio::test]
async fn check_reports_broken_templates_unknown_fields_and_unreadable_secret_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wghook.yaml");
    std::fs::write(
        &path,
        "webhooks:\n\
         \x20 - name: slack\n    url: https://hooks.example.com/x\n    body: '{\"text\": \"{{ peer.name }\"}'\n\
         \x20 - name: ntfy\n    url: https://ntfy.example.com/x\n    headers:\n      Title: \"{{ peer.nmae }}\"\n\
         \x20 - name: idm\n    url: https://idm.example.com/x\n    auth:\n      bearer_file: /nonexistent/s3cr3t-token\n\
         \x20 - name: sig\n    url: https://sig.example.com/x\n    signing_secret: s3cr3t\n",
    )
    .unwrap();
    let out = wghook()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = path.display();
    for line in [
        format!("error: {f}:4: webhooks[0].body: invalid template: syntax error: unexpected `}}`"),
        format!(
            "error: {f}:8: webhooks[1].headers.\"Title\": invalid template: unknown field \"peer.nmae\" (peer has: name, user,"
        ),
        format!(
            "error: {f}:12: webhooks[2].auth.bearer_file: cannot read secret file /nonexistent/s3cr3t-token: \
             No such file or directory (os error 2)"
        ),
        format!("error: {f}:15: webhooks[3].signing_secret: must start with whsec_"),
    ] {
        assert!(stderr.contains(&line), "missing {line:?} in:\n{stderr}");
    }
    assert!(stderr.contains("4 errors in"), "{stderr}");
}

// ---------------------------------------------------------------------------
// `wghook test`.
// ---------------------------------------------------------------------------

/// A receiver that answers every request with `status` and `body`.
async fn answering(status: u16, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(move || async move { (StatusCode::from_u16(status).unwrap(), body) });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

#[tokio::test]
async fn wghook_test_sends_a_sample_through_each_webhook_and_reports_it() {
    let receiver = Receiver::start().await;
    let thanks = answering(202, "thanks,\nqueued as 42").await;
    let failing = answering(500, "database down").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wghook.yaml");
    std::fs::write(
        &path,
        format!(
            "webhooks:\n\
             \x20 - name: recorded\n    url: {}\n    description: the test receiver\n    format: standard\n    \
             auth: {{ bearer: t0ken }}\n    signing_secret: whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\n\
             \x20 - name: thanks\n    url: {thanks}\n    events: [interface.*]\n\
             \x20 - name: failing\n    url: {failing}\n\
             \x20 - name: closed\n    url: http://{closed}/hook\n\
             monitor:\n  host: test-host\n",
            receiver.url
        ),
    )
    .unwrap();

    // One webhook, by name, and an event other than the default.
    let out = wghook()
        .args(["test", "-c"])
        .arg(&path)
        .args(["--webhook", "recorded", "--event", "peer.disconnect"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("recorded (the test receiver): ok: POST http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("-> HTTP 200 in "), "{stdout}");
    assert!(
        stdout.contains("1 webhook tested with a sample peer.disconnect, 0 failed"),
        "{stdout}"
    );
    let got = receiver.requests();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.header("authorization"), Some("Bearer t0ken"));
    assert!(r
        .header("webhook-signature")
        .is_some_and(|s| s.starts_with("v1,")));
    let v = r.json();
    assert_eq!(v["type"], "peer.disconnected");
    assert_eq!(v["data"]["host"], "test-host");
    assert_eq!(v["data"]["name"], "example-peer");
    assert!(v["data"]["session"]["duration_seconds"].as_i64().unwrap() > 0);

    // All of them: two fail, so the exit code is 1.
    let out = wghook()
        .args(["test", "-c"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .contains("thanks: note: its events filter does not take peer.connect; sending anyway"),
        "{stdout}"
    );
    assert!(
        stdout.contains("thanks: ok: POST http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("-> HTTP 202 in "), "{stdout}");
    assert!(
        stdout.contains(" ms: thanks, queued as 42"),
        "the answer on one line: {stdout}"
    );
    assert!(
        stdout.contains("failing: FAILED: POST http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-> HTTP 500 in ") && stdout.contains("database down"),
        "{stdout}"
    );
    assert!(
        stdout.contains("closed: FAILED: POST ") && stdout.contains("connection failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("4 webhooks tested with a sample peer.connect, 2 failed"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("t0ken"),
        "no secret in the output: {stdout}"
    );

    // Unknown webhook name or event.
    let out = wghook()
        .args(["test", "-c"])
        .arg(&path)
        .args(["--webhook", "nope"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no webhook named \"nope\"")
            && stderr.contains("recorded, thanks, failing, closed"),
        "{stderr}"
    );
    let out = wghook()
        .args(["test", "-c"])
        .arg(&path)
        .args(["--event", "peer.explode"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses unknown events");
}

// ---------------------------------------------------------------------------
// Large answers.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_64_kib_is_cut_at_64_kib_without_error() {
    let receiver = Receiver::start().await;
    let hook = hook(&format!("webhook:\n  url: {}\n", receiver.url));
    let sender = HttpSender::new(&hook, plain_ctx()).unwrap();
    let event = connect();
    for code in [200u16, 500] {
        receiver.respond_by(move |_, _| Reply {
            body: vec![b'x'; 1024 * 1024],
            ..Reply::status(code)
        });
        let attempt = sender.send(&event, Utc::now()).await;
        match &attempt.result {
            AttemptResult::Status {
                code: got, body, ..
            } => {
                assert_eq!(*got, code);
                assert_eq!(body.len(), MAX_RESPONSE_BODY, "for {code}");
                assert_eq!(MAX_RESPONSE_BODY, 64 * 1024);
            }
            other => panic!("a 1 MiB answer to {code} failed: {other:?}"),
        }
    }
}
