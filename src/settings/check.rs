//! [`Check`]: collects every problem of a configuration and interprets the
//! scalars every module uses (durations, numbers, flags, choices, paths).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ConfigError;
use super::kind::{Dur, Flag, Named, Num, Pick};
use super::text::Text;

/// Longest duration accepted anywhere: every duration ends up in timer or
/// clock arithmetic, which a larger one could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The problems found so far, and where each key of the file was written.
pub struct Check {
    file: PathBuf,
    /// Line of each key (`monitor.interval`), or of each list item.
    lines: HashMap<String, usize>,
    errors: Vec<ConfigError>,
}

impl Check {
    /// A check of `file`, whose keys were found at `lines`, with the
    /// problems reading it already found.
    pub fn new(file: &Path, lines: HashMap<String, usize>, errors: Vec<ConfigError>) -> Self {
        Self {
            file: file.to_path_buf(),
            lines,
            errors,
        }
    }

    /// The configuration file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Relative paths in the file are taken from its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        match self.file.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// The line `key` was written on (1 when it was not written).
    pub fn key_line(&self, key: &str) -> usize {
        self.lines.get(key).copied().unwrap_or(1)
    }

    /// True if anything was reported.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The problems, the file's first and in line order (stable: those on
    /// one line keep the order they were found in), then other files'.
    pub fn into_errors(self) -> Vec<ConfigError> {
        let mut errors = self.errors;
        let path = self.file;
        errors.sort_by(|a, b| {
            (a.file != path, &a.file, a.line).cmp(&(b.file != path, &b.file, b.line))
        });
        errors
    }

    /// Reports a problem of `key` at `line`.
    pub fn error_at(&mut self, line: usize, key: &str, message: impl Into<String>) {
        let error = ConfigError {
            file: self.file.clone(),
            line: Some(line),
            key: key.to_string(),
            message: message.into(),
        };
        self.push(error);
    }

    /// Reports a problem found in another file (a wg-quick file, say).
    pub fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// Reports a problem of a value.
    pub fn error<K>(&mut self, t: &Text<K>, message: impl Into<String>) {
        self.error_at(t.line, &t.key, message);
    }

    /// The text of a value; `None` if it could not be read (reported).
    pub fn text<K>(&mut self, t: &Text<K>) -> Option<String> {
        t.value().map(str::to_string)
    }

    /// `true` or `false` (also `True`, `TRUE`, ...).
    pub fn boolean(&mut self, t: &Text<Flag>) -> Option<bool> {
        let text = self.text(t)?;
        match text.as_str() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => {
                self.error(t, format!("expected true or false, found {text:?}"));
                None
            }
        }
    }

    /// A duration of at most [`MAX_DURATION`].
    pub fn duration(&mut self, t: &Text<Dur>) -> Option<Duration> {
        let text = self.text(t)?;
        match parse_duration(&text) {
            Some(d) if d > MAX_DURATION => {
                self.error(t, format!("duration {text:?} is too long (at most 8760h)"));
                None
            }
            Some(d) => Some(d),
            None => {
                let message = format!("invalid duration {text:?} (use e.g. 5s, 1m, 1h30m)");
                self.error(t, message);
                None
            }
        }
    }

    /// A duration of at least `min` (which is at least 1 ns, so never zero).
    pub fn duration_at_least(&mut self, t: &Text<Dur>, min: Duration) -> Option<Duration> {
        let d = self.duration(t)?;
        if d >= min {
            return Some(d);
        }
        let message = if min <= Duration::from_nanos(1) {
            "must be greater than 0".to_string()
        } else {
            format!(
                "must be at least {} (got {})",
                format_duration(min),
                format_duration(d)
            )
        };
        self.error(t, message);
        None
    }

    /// A whole number in `min..=max`.
    pub fn integer(&mut self, t: &Text<Num>, min: u64, max: u64) -> Option<u64> {
        let text = self.text(t)?;
        match text.trim().replace('_', "").parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let message =
                    format!("expected a whole number from {min} to {max}, found {text:?}");
                self.error(t, message);
                None
            }
        }
    }

    /// One of `T`'s values, by name.
    pub fn pick<T: Named>(&mut self, t: &Text<Pick<T>>) -> Option<T> {
        let text = self.text(t)?;
        if let Some(value) = T::ALL.iter().find(|v| v.name() == text) {
            return Some(*value);
        }
        let names: Vec<&str> = T::ALL.iter().map(|v| v.name()).collect();
        self.error(
            t,
            format!("invalid value {text:?} (use {})", or_list(&names)),
        );
        None
    }

    /// A path, relative ones taken from the configuration file's directory.
    pub fn path<K>(&mut self, t: &Text<K>) -> Option<PathBuf> {
        let text = self.text(t)?;
        if text.is_empty() {
            self.error(t, "must not be empty");
            return None;
        }
        Some(self.resolve(Path::new(&text)))
    }

    /// A key with an alias: the value and the key it was given under; both
    /// given is an error (the first wins).
    pub fn aliased<'t, K>(
        &mut self,
        (key, value): (&str, Option<&'t Text<K>>),
        (alias, alias_value): (&str, Option<&'t Text<K>>),
    ) -> Option<&'t Text<K>> {
        if let (Some(value), Some(other)) = (value, alias_value) {
            let message = format!(
                "both {key} (line {}) and its alias {alias} are set; keep one",
                value.line
            );
            self.error(other, message);
        }
        value.or(alias_value)
    }

    /// Every item of a list read by `item`; `None` if any failed (all are
    /// read, so that every problem is reported). An absent list is empty.
    pub fn list<I, T>(
        &mut self,
        items: Option<&Vec<I>>,
        mut item: impl FnMut(&mut Self, &I) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Some(items) = items else {
            return Some(Vec::new());
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for i in items {
            match item(self, i) {
                Some(value) => out.push(value),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// "unknown key", with the closest known key when one is close, else the
/// list of known keys.
pub fn unknown_key_message(key: &str, known: &[&str]) -> String {
    let closest = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .min_by_key(|(d, _)| *d);
    match closest {
        Some((d, k)) if d <= 2 || (d <= 3 && key.len() > 8) => {
            format!("unknown key (did you mean {k}?)")
        }
        _ => format!("unknown key (known keys: {})", known.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses `500ms`, `5s`, `3m`, `1h30m`, `1.5h` (Go's units: ns, us, µs, ms,
/// s, m, h, in any combination) or a bare integer meaning seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().ok().map(Duration::from_secs);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        rest = after;
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            _ => return None,
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || int.len() > 19 || frac.len() > 18 {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac_value: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        let part = int
            .checked_mul(unit_nanos)?
            .checked_add(frac_value.checked_mul(unit_nanos)? / scale)?;
        total = total.checked_add(part)?;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).ok()?;
    let nanos = u32::try_from(total % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, nanos))
}

/// Shows a duration the way it is written in the file (`100ms`, `2m30s`).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        if d.subsec_nanos().is_multiple_of(1_000_000) && d.as_secs() == 0 {
            return format!("{}ms", d.subsec_millis());
        }
        return format!("{d:?}");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// The key path of `key` inside the mapping at `path` (`monitor` + `interval`).
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `a, b or c`.
pub fn or_list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
