use crate::InvalidValue;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A shell-style pattern over app IDs: `*` matches any run of characters (dots
/// included), `?` one character; nothing else is special. Used by trust scopes and policy
/// rules. Patterns are validated like IDs: no control characters, no `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Glob(String);

impl Glob {
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        if s.is_empty() || s.len() > 255 {
            return Err(InvalidValue::new(
                "pattern",
                s,
                "must be 1 to 255 characters",
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?')))
        {
            return Err(InvalidValue::new(
                "pattern",
                s,
                format!(
                    "character {:?} is not allowed (letters, digits, . _ - * ?)",
                    c
                ),
            ));
        }
        Ok(Glob(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the pattern matches `text` as a whole.
    pub fn matches(&self, text: &str) -> bool {
        wildcard_match(self.0.as_bytes(), text.as_bytes())
    }

    /// How specific the pattern is: the number of literal characters. A pattern without
    /// wildcards ranks above any pattern with them (used for "most specific rule wins").
    pub fn specificity(&self) -> (bool, usize) {
        let literal = self.0.bytes().filter(|b| *b != b'*' && *b != b'?').count();
        (!self.0.contains(['*', '?']), literal)
    }
}

/// Iterative wildcard match (`*` any run, `?` one byte) with a single backtracking point:
/// linear in practice, no recursion, so a hostile pattern cannot blow the stack. Shared
/// by app-ID globs and by board profiles' device-node patterns (per path component).
pub fn wildcard_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

impl TryFrom<String> for Glob {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Glob::new(&s)
    }
}

impl From<Glob> for String {
    fn from(g: Glob) -> String {
        g.0
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let g = |s: &str| Glob::new(s).unwrap();
        assert!(g("org.example.*").matches("org.example.App"));
        assert!(g("org.example.*").matches("org.example.a.b"));
        assert!(!g("org.example.*").matches("org.examples.App"));
        assert!(g("*").matches("anything.at.all"));
        assert!(g("org.?x.App").matches("org.ex.App"));
        assert!(!g("org.example.App").matches("org.example.App2"));
        assert!(g("*.App").matches("com.x.App"));
        assert!(g("a*b*c").matches("aXXbYYc"));
        assert!(!g("a*b*c").matches("aXXbYY"));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("org/x").is_err());
        assert!(Glob::new("org.x\n").is_err());
        assert!(Glob::new("[abc]").is_err());
    }

    #[test]
    fn specificity_orders_exact_first() {
        let exact = Glob::new("org.a.B").unwrap();
        let long = Glob::new("org.a.*").unwrap();
        let short = Glob::new("org.*").unwrap();
        assert!(exact.specificity() > long.specificity());
        assert!(long.specificity() > short.specificity());
    }
}
