//! The configuration's JSON Schema and its documentation: what the binary
//! prints is what is committed, every shipped configuration names it and
//! passes an independent validator (Python's `jsonschema`), which rejects
//! what `wghook check` rejects; the reference documents every key; the
//! `wghook check` examples in the documentation print what they say.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn wghook() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wghook"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// `config/wghook.yaml` and every file of `config/examples/`.
fn shipped_configurations() -> Vec<PathBuf> {
    let mut out = vec![root().join("config/wghook.yaml")];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("config/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 5, "{examples:?}");
    out.extend(examples);
    out
}

/// Validates each file with Python's `jsonschema` against the committed
/// schema; returns, per file, the validator's messages.
fn independent_validator(files: &[PathBuf]) -> Vec<(PathBuf, Vec<String>)> {
    const SCRIPT: &str = r#"
import json, sys
import jsonschema, yaml
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
def messages(errors):
    # An error under anyOf (Option<T>) carries the real reasons in its context.
    for e in errors:
        yield e.message
        yield from messages(e.context)
out = []
for path in sys.argv[2:]:
    document = yaml.safe_load(open(path))
    out.append([path, sorted(messages(validator.iter_errors(document)))])
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(root().join("config/wghook.schema.json"))
        .args(files)
        .output()
        .expect("python3 runs (the schema tests need python3 with jsonschema and pyyaml)");
    assert!(
        out.status.success(),
        "the independent validator failed (pip install jsonschema pyyaml):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn wghook_schema_prints_the_committed_schema() {
    let out = wghook().arg("schema").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read(root().join("config/wghook.schema.json")).unwrap();
    assert!(
        out.stdout == committed,
        "config/wghook.schema.json is not what `wghook schema` prints; \
         run `cargo run -- schema > config/wghook.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn every_shipped_configuration_names_the_schema_and_passes_an_independent_validator() {
    let files = shipped_configurations();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let first = text.lines().next().unwrap_or("");
        let target = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| {
                panic!("{} does not start with the schema modeline", file.display())
            });
        // The installed file points at the installed schema; the examples
        // in the repository at the committed one.
        let resolved = if target == wghook::config::schema::INSTALLED_PATH {
            root().join("config/wghook.schema.json")
        } else {
            file.parent().unwrap().join(target)
        };
        assert_eq!(
            resolved.canonicalize().unwrap(),
            root()
                .join("config/wghook.schema.json")
                .canonicalize()
                .unwrap(),
            "{} names {target}",
            file.display()
        );
    }
    for (file, errors) in independent_validator(&files) {
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
}

#[test]
fn the_independent_validator_rejects_a_misspelt_key_and_a_wrong_type_as_check_does() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "misspelt.yaml",
            "webhook:\n  url: https://hooks.example.com/x\nmonitor:\n  intervall: 5s\n",
            "'intervall' was unexpected",
        ),
        (
            "wrong-type.yaml",
            "webhook:\n  url: https://hooks.example.com/x\n  timeout: [10s]\n",
            "is not valid under any of the given schemas",
        ),
        (
            "bad-choice.yaml",
            "webhook:\n  url: https://hooks.example.com/x\n  format: slack\n",
            "is not one of",
        ),
    ];
    let mut files = Vec::new();
    for (name, text, _) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let results = independent_validator(&files);
    for ((name, _, expected), (_, errors)) in cases.iter().zip(&results) {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{name}: the validator said {errors:?}"
        );
    }
    // And wghook itself refuses each of them.
    for path in &files {
        let out = wghook().arg("check").arg("-c").arg(path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", path.display());
    }
}

#[test]
fn the_configuration_reference_documents_every_key() {
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let missing: Vec<String> = wghook::config::schema::key_paths()
        .into_iter()
        .filter(|key| !text.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document {missing:?}"
    );
    // And documents no key that does not exist (a renamed or removed one).
    let known = wghook::config::schema::all_key_paths();
    let rows: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert!(rows.len() >= known.len() / 2, "{rows:?}");
    let unknown: Vec<&&str> = rows
        .iter()
        .filter(|k| !known.iter().any(|p| p == *k))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys the configuration does not have: {unknown:?}"
    );
}

/// Every `$ wghook check -c FILE` block of the README and docs/, with the
/// YAML block before it as FILE: the output is exactly what the block says.
#[test]
fn the_check_examples_in_the_documentation_print_what_they_say() {
    let mut documents = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            documents.push(path);
        }
    }
    let mut examples = 0;
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        let blocks = code_blocks(&text);
        for (i, (_, block)) in blocks.iter().enumerate() {
            let Some(command) = block
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("$ wghook check -c "))
            else {
                continue;
            };
            let (lang, input) = &blocks[i.checked_sub(1).unwrap_or_else(|| {
                panic!("{}: a check example without its input", document.display())
            })];
            assert_eq!(
                lang,
                "yaml",
                "{}: the block before {command:?}",
                document.display()
            );
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(command.trim()), input).unwrap();
            let out = wghook()
                .current_dir(dir.path())
                .args(["check", "-c", command.trim()])
                .output()
                .unwrap();
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let said: String = block.lines().skip(1).map(|l| format!("{l}\n")).collect();
            assert_eq!(printed, said, "{}: {command}", document.display());
            examples += 1;
        }
    }
    assert!(
        examples >= 1,
        "no `wghook check` example found in {documents:?}"
    );
}

/// The fenced code blocks of a Markdown text: (language, content).
fn code_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => current = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => out.extend(current.take()),
            (Some((_, content)), None) => {
                content.push_str(line);
                content.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}
