//! The JSON Schema of the configuration file, generated from the same raw
//! settings types the file is read with, so it cannot drift from them.
//! `wghook schema` prints it; `config/wghook.schema.json` is this output,
//! committed (a test compares them) and installed by the .deb under
//! `/usr/share/wghook/`.

use super::RawConfig;

/// Where the .deb installs the schema (what the shipped examples point at).
pub const INSTALLED_PATH: &str = "/usr/share/wghook/wghook.schema.json";

/// The schema as pretty-printed JSON, with a final line break.
pub fn schema_json() -> String {
    let mut schema = schemars::schema_for!(RawConfig);
    schema.insert(
        "description".into(),
        "wghook's configuration file (wghook.yaml). Keys and values as `wghook check` \
         accepts them; `${VAR}` in a value is replaced from the environment."
            .into(),
    );
    let mut out = serde_json::to_string_pretty(&schema).unwrap_or_default();
    out.push('\n');
    out
}

/// Every key of the file as a dotted path (`monitor.interval`,
/// `webhook.auth.basic.username`, `peers.<key>.name`), in schema order; a
/// section type met twice (`retry` under `delivery` and under `webhook`,
/// the items of `webhooks`) is listed under its first path only.
pub fn key_paths() -> Vec<String> {
    paths(true)
}

/// Every key of the file as a dotted path, a section type met twice listed
/// under each of its paths (`delivery.retry.delays`, `webhook.retry.delays`).
pub fn all_key_paths() -> Vec<String> {
    paths(false)
}

fn paths(first_only: bool) -> Vec<String> {
    let schema = serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or_default();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    walk(
        &schema,
        &schema,
        "",
        first_only.then_some(&mut seen),
        &mut out,
    );
    out
}

fn walk(
    root: &serde_json::Value,
    node: &serde_json::Value,
    path: &str,
    mut seen: Option<&mut std::collections::HashSet<String>>,
    out: &mut Vec<String>,
) {
    let node = resolve(root, node);
    // `Option<T>`: `anyOf: [T, null]`.
    if let Some(alternatives) = node.get("anyOf").and_then(|a| a.as_array()) {
        for alternative in alternatives {
            let target = alternative.get("$ref").and_then(|r| r.as_str());
            if let (Some(r), Some(seen)) = (target, seen.as_deref_mut()) {
                if !seen.insert(r.to_string()) {
                    continue;
                }
            }
            walk(
                root,
                resolve(root, alternative),
                path,
                seen.as_deref_mut(),
                out,
            );
        }
        return;
    }
    if let Some(properties) = node.get("properties").and_then(|p| p.as_object()) {
        for (key, value) in properties {
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            out.push(child.clone());
            walk(root, value, &child, seen.as_deref_mut(), out);
        }
    } else if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        let placeholder = if path == "peers" { "<key>" } else { "<name>" };
        let inner = resolve(root, values);
        if has_properties(root, inner) {
            walk(root, inner, &format!("{path}.{placeholder}"), seen, out);
        }
    }
}

fn has_properties(root: &serde_json::Value, node: &serde_json::Value) -> bool {
    let node = resolve(root, node);
    node.get("properties").is_some()
        || node
            .get("anyOf")
            .and_then(|a| a.as_array())
            .is_some_and(|a| a.iter().any(|n| has_properties(root, n)))
}

/// Follows a `$ref` into `$defs`.
fn resolve<'v>(root: &'v serde_json::Value, node: &'v serde_json::Value) -> &'v serde_json::Value {
    match node.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| root.get("$defs")?.get(name))
            .unwrap_or(node),
        None => node,
    }
}
