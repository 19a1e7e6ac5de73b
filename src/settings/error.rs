//! A problem of the configuration, located: `FILE:LINE: KEY: MESSAGE`.

use std::fmt;
use std::path::PathBuf;

/// One problem in the configuration, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file, as it was given.
    pub file: PathBuf,
    /// 1-based line; `None` when the problem is the file as a whole.
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `webhooks[1].url`; empty for the file as a whole.
    pub key: String,
    /// Lowercase, says what is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `FILE:LINE: KEY: MESSAGE`, leaving out the parts that are not known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one configuration file, in line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
