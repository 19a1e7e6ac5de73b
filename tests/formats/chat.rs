//! The chat services' examples (`config/examples/`): Telegram, Gotify,
//! Microsoft Teams, Mattermost, Pushover and Matrix. Each is sent to a local
//! receiver and checked twice: against the request shape the service
//! documents (method, path, query, headers, required fields and their types,
//! as a validator per service below) and against the exact message.

use axum::http::Method;
use serde_json::{json, Value};

use super::{
    connect, disconnect, event, example, named_ctx, plain_ctx, send_one, Entity, EventKind,
    Receiver, Recorded, PEER_KEY,
};

/// The checks every JSON chat API makes of a request.
fn json_request(got: &Recorded, method: Method, path: &str) -> Value {
    assert_eq!(got.method, method);
    assert_eq!(got.path, path);
    assert_eq!(got.header("content-type"), Some("application/json"));
    got.json()
}

fn string<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` must be a string: {body}"))
}

/// Telegram Bot API `sendMessage`: `chat_id` (integer or string) and `text`
/// (1 to 4,096 characters) required; `disable_notification` a boolean. No
/// `parse_mode`: the example sends plain text, which names cannot break.
fn telegram_shape(body: &Value) {
    assert!(
        body["chat_id"].is_i64() || body["chat_id"].is_string(),
        "{body}"
    );
    let text = string(body, "text");
    assert!((1..=4096).contains(&text.chars().count()), "{text}");
    assert!(body.get("parse_mode").is_none(), "{body}");
    if let Some(quiet) = body.get("disable_notification") {
        assert!(quiet.is_boolean(), "{body}");
    }
}

#[tokio::test]
async fn the_telegram_example_calls_send_message_with_the_bot_token_in_the_path() {
    let receiver = Receiver::start().await;
    let hook = example(
        "telegram",
        "https://api.telegram.org",
        &receiver,
        &[
            ("TELEGRAM_BOT_TOKEN", "123456:ABC-DEF1234ghIkl"),
            ("TELEGRAM_CHAT_ID", "-1001234567890"),
        ],
    );
    assert_eq!(hook.events, ["peer.connect", "peer.disconnect"]);
    let got = send_one(&receiver, &hook, named_ctx(), &connect()).await;
    let body = json_request(
        &got,
        Method::POST,
        "/bot123456:ABC-DEF1234ghIkl/sendMessage",
    );
    telegram_shape(&body);
    assert_eq!(
        body,
        json!({
            "chat_id": "-1001234567890",
            "text": "🟢 alice-laptop (alice) connected to wg0 on vpn-gw-1 from 10.55.66.77:33874",
            "disable_notification": false,
        })
    );
    let got = send_one(&receiver, &hook, plain_ctx(), &disconnect()).await;
    let body = got.json();
    telegram_shape(&body);
    assert_eq!(
        body["text"],
        "🔴 Fb5TaziAs1Wr disconnected from wg0 on vpn-gw-1 after 2h7m5s (1.9 MB in, 10.8 MB out)"
    );
    assert_eq!(body["disable_notification"], true);
}

/// Gotify `POST /message`: the application token in `X-Gotify-Key` (or the
/// `token` query parameter); `message` required, `title` a string,
/// `priority` an integer, `extras` an object.
fn gotify_shape(got: &Recorded, token: &str) -> Value {
    let body = json_request(got, Method::POST, "/message");
    assert_eq!(got.header("x-gotify-key"), Some(token));
    assert!(!string(&body, "message").is_empty());
    string(&body, "title");
    assert!(body["priority"].is_i64(), "{body}");
    assert!(body["extras"].is_object(), "{body}");
    body
}

#[tokio::test]
async fn the_gotify_example_posts_a_message_with_the_app_token_header() {
    let receiver = Receiver::start().await;
    let hook = example(
        "gotify",
        "https://gotify.example.com",
        &receiver,
        &[("GOTIFY_APP_TOKEN", "AbCdEf.123")],
    );
    let got = send_one(&receiver, &hook, named_ctx(), &connect()).await;
    let body = gotify_shape(&got, "AbCdEf.123");
    assert_eq!(
        body,
        json!({
            "title": "alice-laptop connected",
            "message": "alice-laptop (alice) connected to wg0 on vpn-gw-1 from 10.55.66.77:33874",
            "priority": 5,
            "extras": {"client::display": {"contentType": "text/plain"}},
        })
    );
    let got = send_one(&receiver, &hook, named_ctx(), &disconnect()).await;
    let body = gotify_shape(&got, "AbCdEf.123");
    assert_eq!(body["title"], "alice-laptop disconnected");
    assert_eq!(
        body["message"],
        "alice-laptop (alice) left wg0 on vpn-gw-1 after 2h7m5s, 1.9 MB received"
    );
    assert_eq!(body["priority"], 2);
    let got = send_one(
        &receiver,
        &hook,
        plain_ctx(),
        &event(EventKind::Update, Entity::Peer),
    )
    .await;
    let body = gotify_shape(&got, "AbCdEf.123");
    assert_eq!(body["title"], "Fb5TaziAs1Wr updated");
    assert_eq!(
        body["message"],
        "peer Fb5TaziAs1Wr updated on wg0 (vpn-gw-1)"
    );
}

/// Mattermost incoming webhook `POST /hooks/KEY`: `text` required
/// (Markdown); `username`, `channel`, `icon_url` optional strings.
fn mattermost_shape(body: &Value) {
    assert!(!string(body, "text").is_empty());
    for optional in ["username", "channel", "icon_url"] {
        if body.get(optional).is_some() {
            string(body, optional);
        }
    }
}

#[tokio::test]
async fn the_mattermost_example_posts_markdown_text_to_the_hook() {
    let receiver = Receiver::start().await;
    let hook = example(
        "mattermost",
        "https://mattermost.example.com",
        &receiver,
        &[("MATTERMOST_HOOK_KEY", "xq4yzc7f1jbf8gk3y1wzzzbxoa")],
    );
    let got = send_one(&receiver, &hook, named_ctx(), &connect()).await;
    let body = json_request(&got, Method::POST, "/hooks/xq4yzc7f1jbf8gk3y1wzzzbxoa");
    mattermost_shape(&body);
    assert_eq!(
        body,
        json!({
            "username": "wghook",
            "text": ":large_green_circle: **alice-laptop (alice)** connected to `wg0` on vpn-gw-1 from `10.55.66.77:33874`",
        })
    );
    let got = send_one(&receiver, &hook, named_ctx(), &disconnect()).await;
    let body = got.json();
    mattermost_shape(&body);
    assert_eq!(
        body["text"],
        ":red_circle: **alice-laptop (alice)** disconnected from `wg0` on vpn-gw-1 after 2h7m5s (1.9 MB in, 10.8 MB out)"
    );
}

/// Pushover `POST /1/messages.json`: `token`, `user` and `message` required
/// strings; `title` a string of at most 250 characters, `message` at most
/// 1,024; `priority` an integer from -2 to 2; `timestamp` Unix seconds.
fn pushover_shape(body: &Value) {
    for required in ["token", "user", "message"] {
        assert!(!string(body, required).is_empty(), "{required}");
    }
    assert!(string(body, "title").chars().count() <= 250);
    assert!(string(body, "message").chars().count() <= 1024);
    let priority = body["priority"].as_i64().unwrap();
    assert!((-2..=2).contains(&priority), "{priority}");
    assert!(body["timestamp"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn the_pushover_example_posts_token_user_and_the_event_time() {
    let receiver = Receiver::start().await;
    let hook = example(
        "pushover",
        "https://api.pushover.net",
        &receiver,
        &[
            ("PUSHOVER_APP_TOKEN", "azGDORePK8gMaC0QOYAMyEEuzJnyUi"),
            ("PUSHOVER_USER_KEY", "uQiRzpo4DXghDmr9QzzfQu27cmVRsG"),
        ],
    );
    let event = connect();
    let got = send_one(&receiver, &hook, named_ctx(), &event).await;
    let body = json_request(&got, Method::POST, "/1/messages.json");
    pushover_shape(&body);
    assert_eq!(
        body,
        json!({
            "token": "azGDORePK8gMaC0QOYAMyEEuzJnyUi",
            "user": "uQiRzpo4DXghDmr9QzzfQu27cmVRsG",
            "title": "alice-laptop connected (wg0, vpn-gw-1)",
            "message": "alice-laptop (alice) connected from 10.55.66.77:33874",
            "priority": 0,
            "timestamp": event.time.timestamp(),
        })
    );
    let got = send_one(&receiver, &hook, plain_ctx(), &disconnect()).await;
    let body = got.json();
    pushover_shape(&body);
    assert_eq!(body["priority"], -1);
    assert_eq!(
        body["message"],
        "Fb5TaziAs1Wr (no user) left after 2h7m5s, 1.9 MB received, 10.8 MB sent"
    );
}

/// Matrix client-server API: `PUT
/// /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}` with the
/// room id percent-encoded, `Authorization: Bearer`; the body an
/// `m.room.message` content: `msgtype` (`m.text`, `m.notice`, ...) and
/// `body`, both strings.
fn matrix_shape(got: &Recorded, room: &str, token: &str) -> (String, Value) {
    assert_eq!(got.method, Method::PUT);
    let prefix = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/");
    let txn = got
        .path
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{} does not start with {prefix}", got.path));
    assert!(!txn.is_empty() && !txn.contains('/'), "{txn}");
    assert_eq!(
        got.header("authorization"),
        Some(&*format!("Bearer {token}"))
    );
    assert_eq!(got.header("content-type"), Some("application/json"));
    let body = got.json();
    assert!(["m.text", "m.notice"].contains(&string(&body, "msgtype")));
    assert!(!string(&body, "body").is_empty());
    (txn.to_owned(), body)
}

#[tokio::test]
async fn the_matrix_example_puts_a_notice_with_the_event_id_as_transaction() {
    let receiver = Receiver::start().await;
    let hook = example(
        "matrix",
        "https://matrix.example.org",
        &receiver,
        &[
            ("MATRIX_HOMESERVER", "matrix.example.org"),
            ("MATRIX_ROOM_ID", "!OGEhHVWSdvArJzumhm:example.org"),
            ("MATRIX_ACCESS_TOKEN", "syt_d2dob29r_ZmFrZXRva2Vu_0aBcDe"),
        ],
    );
    let room = "%21OGEhHVWSdvArJzumhm%3Aexample.org";
    let token = "syt_d2dob29r_ZmFrZXRva2Vu_0aBcDe";
    let event = connect();
    let got = send_one(&receiver, &hook, named_ctx(), &event).await;
    let (txn, body) = matrix_shape(&got, room, token);
    assert_eq!(txn, event.id.to_string(), "a retry is the same transaction");
    assert_eq!(
        body,
        json!({
            "msgtype": "m.notice",
            "body": "🟢 alice-laptop (alice) connected to wg0 on vpn-gw-1 from 10.55.66.77:33874",
        })
    );
    let event = disconnect();
    let got = send_one(&receiver, &hook, plain_ctx(), &event).await;
    let (txn, body) = matrix_shape(&got, room, token);
    assert_eq!(txn, event.id.to_string());
    assert_eq!(
        body["body"],
        "🔴 Fb5TaziAs1Wr disconnected from wg0 on vpn-gw-1 after 2h7m5s (1.9 MB in, 10.8 MB out)"
    );
}

/// A Teams Workflows webhook ("Post to a channel when a webhook request is
/// received"): a `message` whose attachments are Adaptive Cards
/// (`contentType` `application/vnd.microsoft.card.adaptive`, `content` of
/// type `AdaptiveCard` with a `version` and a `body` of elements); the
/// elements used here are `TextBlock` (`text`) and `FactSet` (`facts` of
/// `title`/`value` strings).
fn teams_card(body: &Value) -> &Vec<Value> {
    assert_eq!(body["type"], "message");
    let attachments = body["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    let card = &attachments[0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let content = &card["content"];
    assert_eq!(content["type"], "AdaptiveCard");
    assert_eq!(
        content["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert!(["1.0", "1.2", "1.3", "1.4", "1.5"].contains(&string(content, "version")));
    let elements = content["body"].as_array().unwrap();
    for element in elements {
        match string(element, "type") {
            "TextBlock" => assert!(!string(element, "text").is_empty()),
            "FactSet" => {
                for fact in element["facts"].as_array().unwrap() {
                    string(fact, "title");
                    string(fact, "value");
                }
            }
            other => panic!("unexpected element {other}"),
        }
    }
    elements
}

fn facts(element: &Value) -> Vec<(String, String)> {
    element["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (string(f, "title").into(), string(f, "value").into()))
        .collect()
}

#[tokio::test]
async fn the_teams_example_posts_an_adaptive_card_to_the_whole_workflow_url() {
    let receiver = Receiver::start().await;
    let workflow = "https://prod-00.westeurope.logic.azure.com:443/workflows/0a1b2c/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=s3cr3tSig";
    let hook = example(
        "teams",
        "https://prod-00.westeurope.logic.azure.com:443",
        &receiver,
        &[("TEAMS_WORKFLOW_URL", workflow)],
    );
    receiver.respond_with(202);
    let got = send_one(&receiver, &hook, named_ctx(), &connect()).await;
    let body = json_request(
        &got,
        Method::POST,
        "/workflows/0a1b2c/triggers/manual/paths/invoke",
    );
    assert_eq!(
        got.query,
        "api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=s3cr3tSig"
    );
    let elements = teams_card(&body);
    assert_eq!(elements[0]["text"], "🟢 alice-laptop connected");
    assert_eq!(
        facts(&elements[1]),
        [
            ("User".into(), "alice".into()),
            ("Interface".into(), "wg0 on vpn-gw-1".into()),
            ("From".into(), "10.55.66.77:33874".into()),
            ("Key".into(), PEER_KEY.into()),
        ]
    );
    let got = send_one(&receiver, &hook, plain_ctx(), &disconnect()).await;
    let body = got.json();
    let elements = teams_card(&body);
    assert_eq!(elements[0]["text"], "🔴 Fb5TaziAs1Wr disconnected");
    assert_eq!(
        facts(&elements[1])[..3],
        [
            ("User".into(), "-".into()),
            ("Interface".into(), "wg0 on vpn-gw-1".into()),
            ("Session".into(), "2h7m5s, 1.9 MB in, 10.8 MB out".into()),
        ]
    );
}
