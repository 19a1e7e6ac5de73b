//! Peer names from wg-quick files (`monitor.names_from`).
//!
//! wg-quick users name their peers with comments inside `[Peer]` sections:
//!
//! ```text
//! [Peer]
//! # Name = alice-laptop
//! PublicKey = Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=
//! AllowedIPs = 10.8.0.2/32
//! ```
//!
//! `# Name = ...` and `# friendly_name = ...` (the form of
//! prometheus_wireguard_exporter) are recognised, keys case-insensitive, and
//! name the `PublicKey` of the section they are in, wherever in the section
//! the comment stands.
//!
//! [`parse`] is pure (text in, names or every problem with its line out);
//! [`load`] expands the configured patterns, reads the files and calls it.
//!
//! Invariants:
//! - Nothing but `[Peer]` sections is interpreted; other sections and keys
//!   (`PrivateKey`, `PostUp`, ...) are skipped without being kept, so no
//!   private or preshared key ever leaves this module, and no error message
//!   quotes a line's value except a malformed public key.
//! - A file named without wildcards must be readable; a file matched by a
//!   wildcard that cannot be read (typically `/etc/wireguard` is root-only) is
//!   a warning and skipped. A malformed file is an error either way.
//! - Names are kept as written, control characters included: a name is
//!   data, carried to receivers as JSON (escaped there) and to templates as
//!   it is. Where a name reaches a terminal (`wghook peers`) it is escaped
//!   at that point, so the same rule covers names from the `peers:` map,
//!   which can hold `\e` too.
//! - Within a file, the first name of a key wins only if all its names agree
//!   (a conflict is an error); across files, the first file (in the order the
//!   patterns and their sorted matches give) wins and a conflict is a warning.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::model::PublicKey;

/// One peer name found in a wg-quick file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerName {
    pub public_key: PublicKey,
    pub name: String,
    /// 1-based line of the name comment.
    pub line: usize,
}

/// One malformed line of a wg-quick file: its 1-based line and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// A problem that makes the configuration invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamesError {
    /// A file named without wildcards (item `pattern` of the list) cannot be read.
    Unreadable {
        pattern: usize,
        path: PathBuf,
        reason: String,
    },
    /// A wg-quick file has a malformed line or section.
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// What [`load`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Names by public key.
    pub names: HashMap<PublicKey, String>,
    /// Problems that make the configuration invalid.
    pub errors: Vec<NamesError>,
    /// Problems worth telling the operator that do not stop wghook.
    pub warnings: Vec<String>,
}

/// True if `pattern` holds a glob wildcard (`*`, `?` or `[`).
pub fn is_pattern(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Reads the names of every file `patterns` name, in order.
///
/// A pattern with wildcards matching no file is a warning (an interface may
/// not be configured yet); its matches are read in sorted order.
pub fn load(patterns: &[PathBuf]) -> Loaded {
    let mut out = Loaded::default();
    // Where each name came from, for conflicts across files.
    let mut origin: HashMap<PublicKey, (PathBuf, usize)> = HashMap::new();
    for (index, pattern) in patterns.iter().enumerate() {
        let text = pattern.to_string_lossy();
        let files: Vec<PathBuf> = if is_pattern(&text) {
            match glob::glob(&text) {
                Ok(paths) => {
                    let mut files = Vec::new();
                    for entry in paths {
                        match entry {
                            Ok(path) if path.is_file() => files.push(path),
                            Ok(_) => {}
                            Err(e) => out.warnings.push(format!(
                                "names_from: skipping {}: {} (give wghook read access to use its names)",
                                e.path().display(),
                                e.error()
                            )),
                        }
                    }
                    if files.is_empty() {
                        out.warnings
                            .push(format!("names_from: {text} matches no readable file"));
                    }
                    files.sort();
                    files
                }
                Err(e) => {
                    // The configuration checks patterns before calling load.
                    out.errors.push(NamesError::Unreadable {
                        pattern: index,
                        path: pattern.clone(),
                        reason: format!("invalid pattern: {e}"),
                    });
                    continue;
                }
            }
        } else {
            vec![pattern.clone()]
        };
        let from_glob = is_pattern(&text);
        for path in files {
            let text = match read(&path) {
                Ok(text) => text,
                Err(reason) if from_glob => {
                    out.warnings.push(format!(
                        "names_from: skipping {}: {reason} (give wghook read access to use its names)",
                        path.display()
                    ));
                    continue;
                }
                Err(reason) => {
                    out.errors.push(NamesError::Unreadable {
                        pattern: index,
                        path,
                        reason,
                    });
                    continue;
                }
            };
            match parse(&text) {
                Ok(names) => {
                    for n in names {
                        if let Some((first, line)) = origin.get(&n.public_key) {
                            if out.names.get(&n.public_key) != Some(&n.name) {
                                out.warnings.push(format!(
                                    "names_from: {}:{}: peer {} is already named {:?} in {}:{line}; keeping that name",
                                    path.display(),
                                    n.line,
                                    n.public_key,
                                    out.names.get(&n.public_key).map_or("", String::as_str),
                                    first.display()
                                ));
                            }
                            continue;
                        }
                        origin.insert(n.public_key, (path.clone(), n.line));
                        out.names.insert(n.public_key, n.name);
                    }
                }
                Err(errors) => {
                    out.errors
                        .extend(errors.into_iter().map(|e| NamesError::Malformed {
                            path: path.clone(),
                            line: e.line,
                            message: e.message,
                        }));
                }
            }
        }
    }
    out
}

/// The whole file as UTF-8, or why not (see [`crate::files`] for the limits).
fn read(path: &Path) -> Result<String, String> {
    crate::files::read_bounded_text(path, crate::files::MAX_NAMES_FILE).map_err(|e| e.to_string())
}

/// A `[Peer]` section being read.
#[derive(Default)]
struct Section {
    /// Line of the `[Peer]` header.
    line: usize,
    key: Option<(PublicKey, usize)>,
    name: Option<(String, usize)>,
}

/// The names of the `[Peer]` sections of one wg-quick file, in file order;
/// or every malformed line.
///
/// Malformed: a line that is not blank, a comment, a `[Section]` header or
/// `Key = Value`; a `[Peer]` without `PublicKey`, with two, or with one that
/// is not a 32-byte base64 key; two different names in one section; the same
/// public key in two sections with different names.
pub fn parse(text: &str) -> Result<Vec<PeerName>, Vec<ParseError>> {
    let mut names = Vec::new();
    let mut errors = Vec::new();
    let mut section: Option<Section> = None;
    let finish = |section: Option<Section>, names: &mut Vec<PeerName>, errors: &mut Vec<_>| {
        let Some(s) = section else { return };
        match (s.key, s.name) {
            (Some((key, _)), Some((name, line))) => names.push(PeerName {
                public_key: key,
                name,
                line,
            }),
            (Some(_), None) => {}
            (None, _) => errors.push(ParseError {
                line: s.line,
                message: "[Peer] section without PublicKey".to_string(),
            }),
        }
    };

    // A UTF-8 byte order mark is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            if let (Some(s), Some(name)) = (section.as_mut(), name_comment(comment)) {
                match &s.name {
                    None => s.name = Some((name, line_no)),
                    Some((first, first_line)) if *first != name => errors.push(ParseError {
                        line: line_no,
                        message: format!(
                            "a second, different name for this peer ({name:?}; line {first_line} says {first:?})"
                        ),
                    }),
                    Some(_) => {}
                }
            }
            continue;
        }
        // wg-quick drops everything after a `#`.
        let content = trimmed.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if content.starts_with('[') {
            finish(section.take(), &mut names, &mut errors);
            if !content.ends_with(']') {
                errors.push(ParseError {
                    line: line_no,
                    message: "unterminated section header (write [Interface] or [Peer])"
                        .to_string(),
                });
            } else if content[1..content.len() - 1]
                .trim()
                .eq_ignore_ascii_case("peer")
            {
                section = Some(Section {
                    line: line_no,
                    ..Section::default()
                });
            }
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            // Not quoted: the line may be a misplaced key.
            errors.push(ParseError {
                line: line_no,
                message: "expected `Key = Value`, a # comment or a [Section] header".to_string(),
            });
            continue;
        };
        let Some(s) = section.as_mut() else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("publickey") {
            continue;
        }
        let value = value.trim();
        match PublicKey::from_base64(value) {
            Ok(key) => match s.key {
                None => s.key = Some((key, line_no)),
                Some((_, first)) => errors.push(ParseError {
                    line: line_no,
                    message: format!(
                        "second PublicKey in this [Peer] section (first at line {first})"
                    ),
                }),
            },
            Err(e) => errors.push(ParseError {
                line: line_no,
                message: format!("invalid PublicKey {value:?} ({e})"),
            }),
        }
    }
    finish(section.take(), &mut names, &mut errors);

    // One key named twice: fine if the names agree.
    let mut seen: HashMap<PublicKey, (usize, usize)> = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        if let Some(&(first, first_line)) = seen.get(&n.public_key) {
            if names[first].name != n.name {
                errors.push(ParseError {
                    line: n.line,
                    message: format!(
                        "peer {} is named {:?} here and {:?} at line {first_line}",
                        n.public_key, n.name, names[first].name
                    ),
                });
            }
        } else {
            seen.insert(n.public_key, (i, n.line));
        }
    }
    if errors.is_empty() {
        let mut kept = HashMap::new();
        names.retain(|n| kept.insert(n.public_key, ()).is_none());
        Ok(names)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

/// The name in a comment's text (after `#`), if it is `Name = ...` or
/// `friendly_name = ...` (any case, any number of leading `#` and spaces).
/// An empty name is no name.
fn name_comment(comment: &str) -> Option<String> {
    let comment = comment.trim_start_matches('#').trim();
    let (key, value) = comment.split_once('=')?;
    let key = key.trim();
    if !(key.eq_ignore_ascii_case("name") || key.eq_ignore_ascii_case("friendly_name")) {
        return None;
    }
    let value = value.trim();
    // Some generators quote the value.
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
        .trim();
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "Fb5TaziAs1WrPBjC/MFbWsIelVXvi0hDKZ3YQM9wmU8=";
    const BOB: &str = "amDFZkwcutgFado44vU29t75ZgBBND5UbSxmUB4qKlY=";
    const CAROL: &str = "5KteldwbjKEbFG+9WRFHkD60mgvdY4nIXskfY/MxBAc=";

    fn key(b64: &str) -> PublicKey {
        PublicKey::from_base64(b64).unwrap()
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/wg-quick")
            .join(name)
    }

    fn names_of(text: &str) -> Vec<(PublicKey, String, usize)> {
        parse(text)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .into_iter()
            .map(|n| (n.public_key, n.name, n.line))
            .collect()
    }

    fn errors_of(text: &str) -> Vec<(usize, String)> {
        match parse(text) {
            Ok(n) => panic!("accepted: {n:?}"),
            Err(e) => e.into_iter().map(|e| (e.line, e.message)).collect(),
        }
    }

    #[test]
    fn the_wg_quick_fixture_names_its_peers() {
        let text = std::fs::read_to_string(fixture("wg0.conf")).unwrap();
        let names = names_of(&text);
        assert_eq!(
            names,
            [
                (key(ALICE), "alice-laptop".to_string(), 11),
                (key(BOB), "Bob's phone".to_string(), 19),
            ],
            "carol's section has no name comment"
        );
        // Nothing of [Interface] (PrivateKey) or the preshared key is kept.
        assert!(!format!("{names:?}").contains("PrivateKey"));
    }

    #[test]
    fn name_comments_are_case_insensitive_and_may_follow_the_key() {
        let text = format!(
            "[peer]\npublickey={ALICE}\n#NAME=a\n\n[Peer]\n## friendly_name = \"b c\"\n  \
             PublicKey = {BOB} # trailing comment\n[Peer]\n# FRIENDLY_NAME = \nPublicKey = {CAROL}\n"
        );
        assert_eq!(
            names_of(&text),
            [(key(ALICE), "a".into(), 3), (key(BOB), "b c".into(), 6)],
            "an empty name is no name"
        );
    }

    #[test]
    fn comments_outside_peer_sections_and_other_keys_are_ignored() {
        let text = format!(
            "# Name = whole file\n[Interface]\n# Name = office\nPrivateKey = x\nPostUp = iptables -A FORWARD\n\
             [Peer]\nPublicKey = {ALICE}\nEndpoint = vpn.example.com:51820\n"
        );
        assert_eq!(names_of(&text), []);
    }

    #[test]
    fn the_same_name_twice_is_fine() {
        let text = format!("[Peer]\n# Name = a\n# friendly_name = a\nPublicKey = {ALICE}\n");
        assert_eq!(names_of(&text), [(key(ALICE), "a".into(), 2)]);
    }

    #[test]
    fn malformed_sections_are_reported_with_their_lines() {
        let text = format!(
            "[Interface]\nPrivateKey = secret\nListenPort\n\
             [Peer]\n# Name = a\nAllowedIPs = 10.0.0.2/32\n\
             [Peer]\nPublicKey = AAAA\n\
             [Peer]\nPublicKey = {ALICE}\nPublicKey = {BOB}\n# Name = b\n# Name = c\n\
             [Peer\n\
             [Peer]\n# Name = d\nPublicKey = {ALICE}\n"
        );
        let want: Vec<(usize, String)> = vec![
            (
                3,
                "expected `Key = Value`, a # comment or a [Section] header".into(),
            ),
            (4, "[Peer] section without PublicKey".into()),
            (7, "[Peer] section without PublicKey".into()),
            (
                8,
                "invalid PublicKey \"AAAA\" (key is 3 bytes long, expected 32)".into(),
            ),
            (
                11,
                "second PublicKey in this [Peer] section (first at line 10)".into(),
            ),
            (
                13,
                "a second, different name for this peer (\"c\"; line 12 says \"b\")".into(),
            ),
            (
                14,
                "unterminated section header (write [Interface] or [Peer])".into(),
            ),
            (
                16,
                format!("peer {ALICE} is named \"d\" here and \"b\" at line 12"),
            ),
        ];
        assert_eq!(errors_of(&text), want);
        // The private key's value is never quoted.
        assert!(!format!("{:?}", errors_of(&text)).contains("secret"));
    }

    #[test]
    fn load_reads_globs_and_literal_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.conf"),
            format!("[Peer]\n# Name = from-a\nPublicKey = {ALICE}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.conf"),
            format!(
                "[Peer]\n# Name = other\nPublicKey = {ALICE}\n[Peer]\n# Name = bob\nPublicKey = {BOB}\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a config\n").unwrap();
        let loaded = load(&[dir.path().join("*.conf"), fixture("wg0.conf")]);
        assert_eq!(loaded.errors, []);
        assert_eq!(loaded.names.len(), 2);
        assert_eq!(loaded.names[&key(ALICE)], "from-a", "the first file wins");
        assert_eq!(loaded.names[&key(BOB)], "bob");
        // b.conf and the fixture name alice again, the fixture names bob again.
        assert_eq!(loaded.warnings.len(), 3, "{:?}", loaded.warnings);
        assert!(loaded.warnings[2].contains("wg0.conf:19: peer "));
        assert!(
            loaded.warnings[0].contains("b.conf:2: peer ")
                && loaded.warnings[0].contains("already named \"from-a\""),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn a_missing_literal_file_is_an_error_a_pattern_matching_nothing_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("wg9.conf");
        let loaded = load(&[dir.path().join("*.conf"), missing.clone()]);
        assert_eq!(
            loaded.errors,
            [NamesError::Unreadable {
                pattern: 1,
                path: missing,
                reason: "No such file or directory (os error 2)".into()
            }]
        );
        assert_eq!(
            loaded.warnings,
            [format!(
                "names_from: {} matches no readable file",
                dir.path().join("*.conf").display()
            )]
        );
    }

    #[test]
    fn malformed_files_are_errors_even_when_matched_by_a_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg1.conf");
        std::fs::write(&path, "[Peer]\n# Name = x\n").unwrap();
        let loaded = load(&[dir.path().join("wg*.conf")]);
        assert_eq!(
            loaded.errors,
            [NamesError::Malformed {
                path,
                line: 1,
                message: "[Peer] section without PublicKey".into()
            }]
        );
        assert!(loaded.names.is_empty());
    }

    #[test]
    fn unreadable_matches_of_a_pattern_are_skipped_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        // A directory named like a file cannot be read as one; a non-UTF-8
        // file cannot either. (Permissions do not stop root, who runs tests.)
        std::fs::write(dir.path().join("bad.conf"), [0xff, 0xfe, 0x00]).unwrap();
        std::fs::write(
            dir.path().join("good.conf"),
            format!("[Peer]\n# Name = g\nPublicKey = {ALICE}\n"),
        )
        .unwrap();
        let loaded = load(&[dir.path().join("*.conf")]);
        assert_eq!(loaded.errors, []);
        assert_eq!(loaded.names[&key(ALICE)], "g");
        assert_eq!(
            loaded.warnings,
            [format!(
                "names_from: skipping {}: not a UTF-8 text file (give wghook read access to use its names)",
                dir.path().join("bad.conf").display()
            )]
        );
        // The same file named literally is an error.
        let loaded = load(&[dir.path().join("bad.conf")]);
        assert!(matches!(
            &loaded.errors[..],
            [NamesError::Unreadable { pattern: 0, reason, .. }] if reason == "not a UTF-8 text file"
        ));
    }
}
