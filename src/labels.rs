//! The `peers:` and `interfaces:` maps: names, users and labels for peers
//! by public key, ping addresses, and display names for interfaces.
//! Raw as written, validated into [`Labels`]; names read from wg-quick files
//! ([`crate::names`]) fill only the names this map leaves empty.

use std::collections::HashMap;
use std::net::IpAddr;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::event::PeerLabel;
use crate::model::PublicKey;
use crate::monitor::interface_name_problem;
use crate::settings::{Check, Text};

/// One entry of the `peers:` map, as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RawPeer {
    /// The peer's name in events and templates (wins over wg-quick comments).
    pub name: Option<Text>,
    /// The user the peer belongs to.
    pub user: Option<Text>,
    /// Free `key: value` labels for templates and scripts.
    pub labels: Option<IndexMap<String, Text>>,
    /// Where ping checks send their echo requests instead of the peer's
    /// first allowed IP.
    pub ping_address: Option<Text>,
}

/// One entry of the `interfaces:` map, as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RawInterface {
    /// Display name (wg-portal's `DisplayName`); empty: the interface's name.
    pub name: Option<Text>,
}

/// The `peers:` map: public key (base64) -> names, labels, ping address.
pub type RawPeers = IndexMap<String, Option<RawPeer>>;
/// The `interfaces:` map: interface name -> display name.
pub type RawInterfaces = IndexMap<String, Option<RawInterface>>;

/// One entry of the `interfaces:` map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceLabel {
    /// Display name (`interface.display_name`, wg-portal's `DisplayName`);
    /// empty: the interface's name is shown.
    pub name: String,
}

/// What the two maps say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels {
    pub peers: HashMap<PublicKey, PeerLabel>,
    pub ping_addresses: HashMap<PublicKey, IpAddr>,
    pub interfaces: HashMap<String, InterfaceLabel>,
}

/// Validates both maps; entries in error are left out.
pub fn validate(
    peers: Option<&RawPeers>,
    interfaces: Option<&RawInterfaces>,
    check: &mut Check,
) -> Labels {
    let mut out = Labels::default();
    let mut first_line: HashMap<PublicKey, usize> = HashMap::new();
    for (text, raw) in peers.into_iter().flatten() {
        // Quoted: base64 keys hold `/`, `+` and `=`.
        let path = format!("peers.{text:?}");
        let key_line = check.key_line(&path);
        let key = match PublicKey::from_base64(text) {
            Ok(key) => Some(key),
            Err(e) => {
                let message = format!(
                    "invalid public key ({e}); use the 44-character base64 form `wg show` prints"
                );
                check.error_at(key_line, &path, message);
                None
            }
        };
        let label = match raw {
            Some(raw) => peer_label(raw, check),
            None => Some((PeerLabel::default(), None)),
        };
        let (Some(key), Some((label, ping_address))) = (key, label) else {
            continue;
        };
        if let Some(first) = first_line.get(&key) {
            check.error_at(
                key_line,
                &path,
                format!("the same public key as line {first}"),
            );
            continue;
        }
        first_line.insert(key, key_line);
        out.peers.insert(key, label);
        if let Some(address) = ping_address {
            out.ping_addresses.insert(key, address);
        }
    }
    for (name, raw) in interfaces.into_iter().flatten() {
        let path = format!("interfaces.{name:?}");
        let problem = if name.chars().any(char::is_control) {
            Some("interface names contain no spaces or /")
        } else {
            interface_name_problem(name, false)
        };
        if let Some(problem) = problem {
            let message = format!("invalid interface name ({problem})");
            check.error_at(check.key_line(&path), &path, message);
        }
        let mut label = InterfaceLabel::default();
        if let Some(t) = raw.as_ref().and_then(|raw| raw.name.as_ref()) {
            match check.text(t) {
                Some(text) => label.name = text,
                None => continue,
            }
        }
        if problem.is_none() {
            out.interfaces.insert(name.clone(), label);
        }
    }
    out
}

/// One entry of `peers:`: its names and labels, and its ping address.
fn peer_label(raw: &RawPeer, check: &mut Check) -> Option<(PeerLabel, Option<IpAddr>)> {
    let mut label = PeerLabel::default();
    let mut ok = true;
    for (t, target) in [(&raw.name, &mut label.name), (&raw.user, &mut label.user)] {
        if let Some(t) = t {
            match check.text(t) {
                Some(value) => *target = value,
                None => ok = false,
            }
        }
    }
    for (name, t) in raw.labels.iter().flatten() {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            let message = "invalid label name (use letters, digits, _, - and .)";
            check.error_at(check.key_line(&t.key), &t.key, message);
            ok = false;
            continue;
        }
        match check.text(t) {
            Some(value) => {
                label.labels.insert(name.clone(), value);
            }
            None => ok = false,
        }
    }
    let mut ping_address = None;
    if let Some(t) = &raw.ping_address {
        match check.text(t) {
            Some(text) => match text.trim().parse::<IpAddr>() {
                Ok(address) => ping_address = Some(address),
                Err(_) => {
                    let message =
                        format!("invalid IP address {text:?} (use e.g. 10.8.0.2 or fd00::2)");
                    check.error(t, message);
                    ok = false;
                }
            },
            None => ok = false,
        }
    }
    ok.then_some((label, ping_address))
}
