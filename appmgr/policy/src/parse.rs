//! Strict parsing of one policy file, with errors that name the file, line and key.

use crate::board::Condition;
use crate::limits::PolicyResources;
use crate::PolicyError;
use appmgr_types::{escape_for_display, Glob, Permissions};
use serde::Deserialize;
use std::sync::Arc;

/// What to do when an app requests more than policy grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExcess {
    /// Refuse the install or update (and the launch). The default.
    #[default]
    Refuse,
    /// Install and run without the excess, and report what was dropped.
    Drop,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRule {
    apps: Vec<Glob>,
    #[serde(default)]
    grant: Permissions,
    #[serde(default)]
    deny: Permissions,
    #[serde(default)]
    resources: PolicyResources,
    #[serde(default)]
    on_excess: Option<OnExcess>,
    #[serde(default)]
    when: Condition,
    #[serde(default)]
    service: crate::service::ServicePolicy,
    /// `update-hold = "REASON"`: `update` leaves the app as it is; `""` lifts a hold a
    /// less specific rule set.
    #[serde(default)]
    update_hold: Option<String>,
}

/// One parsed rule, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub file: Arc<str>,
    /// 1-based position in its file.
    pub index: usize,
    /// Line of the rule's `[[rule]]` header (or inline table).
    pub line: usize,
    pub apps: Vec<Glob>,
    pub grant: Permissions,
    pub deny: Permissions,
    pub resources: PolicyResources,
    pub on_excess: Option<OnExcess>,
    pub when: Condition,
    pub service: crate::service::ServicePolicy,
    pub update_hold: Option<String>,
}

/// Files larger than this are refused: a policy is a few kilobytes, and the parser
/// should not be handed a memory bomb.
pub const MAX_FILE_SIZE: usize = 1 << 20;

fn line_of(src: &[u8], offset: usize) -> usize {
    1 + src[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

pub(crate) fn parse_file(name: &str, bytes: &[u8]) -> Result<Vec<Rule>, PolicyError> {
    if bytes.len() > MAX_FILE_SIZE {
        return Err(PolicyError::Parse {
            file: escape_for_display(name),
            line: 1,
            column: 1,
            key: None,
            message: format!("file is larger than {MAX_FILE_SIZE} bytes"),
        });
    }
    let src = std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        // The valid prefix is UTF-8 by definition.
        let prefix = std::str::from_utf8(valid).unwrap_or_default();
        PolicyError::Utf8 {
            file: escape_for_display(name),
            line: line_of(bytes, e.valid_up_to()),
            key: key_before(prefix, prefix.len()).map(|k| escape_for_display(&k)),
        }
    })?;
    // TOML forbids control characters other than tab and newlines anywhere, even in
    // comments; say so precisely rather than through the parser's generic message.
    if let Some((off, c)) = src
        .char_indices()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(PolicyError::ControlChar {
            file: escape_for_display(name),
            line: line_of(bytes, off),
            key: key_before(src, off).map(|k| escape_for_display(&k)),
            char: format!("U+{:04X}", c as u32),
        });
    }
    let raw: RawFile = toml::from_str(src).map_err(|e| {
        let off = e.span().map_or(0, |s| bad_element_in(src, s, e.message()));
        let line = line_of(bytes, off);
        let line_start = src[..off.min(src.len())].rfind('\n').map_or(0, |i| i + 1);
        // One line, and nothing a terminal would interpret: a quoted key or value in
        // the message may carry control or bidi characters from the file.
        let message = escape_for_display(&e.message().trim().replace('\n', " "));
        let message = if message.is_empty() {
            "syntax error".to_string()
        } else {
            message
        };
        PolicyError::Parse {
            file: escape_for_display(name),
            line,
            column: 1 + src[line_start..off.min(src.len())].chars().count(),
            key: key_of(e.message())
                .or_else(|| key_before(src, off))
                .map(|k| escape_for_display(&k)),
            message,
        }
    })?;
    let file: Arc<str> = Arc::from(name);
    raw.rule
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let line = line_of(bytes, r.span().start);
            let r = r.into_inner();
            if r.apps.is_empty() {
                return Err(PolicyError::Rule {
                    file: escape_for_display(name),
                    line,
                    rule: i + 1,
                    message: "`apps` must list at least one pattern".into(),
                });
            }
            if let Err(message) = r.service.validate() {
                return Err(PolicyError::Rule {
                    file: escape_for_display(name),
                    line,
                    rule: i + 1,
                    message,
                });
            }
            if let Some(h) = &r.update_hold {
                if h.chars().count() > 200 || h.chars().any(char::is_control) {
                    return Err(PolicyError::Rule {
                        file: escape_for_display(name),
                        line,
                        rule: i + 1,
                        message: "update-hold: a reason of at most 200 characters, no control \
                                  characters"
                            .into(),
                    });
                }
            }
            Ok(Rule {
                file: file.clone(),
                index: i + 1,
                line,
                apps: r.apps,
                grant: r.grant,
                deny: r.deny,
                resources: r.resources,
                on_excess: r.on_excess,
                when: r.when,
                service: r.service,
                update_hold: r.update_hold,
            })
        })
        .collect()
}

/// Where the error in `span` is: the span's start, or, when the message quotes an
/// invalid value (`invalid egress entry "x:0": ...`) and the span (an array, say)
/// holds that string, the string itself, so a bad entry of a multi-line array is
/// reported on its own line.
fn bad_element_in(src: &str, span: std::ops::Range<usize>, message: &str) -> usize {
    let quoted = message
        .strip_prefix("invalid ")
        .and_then(|m| m.split_once('"'))
        .and_then(|(_, rest)| rest.split_once("\": "))
        .map(|(v, _)| v)
        .filter(|v| !v.is_empty() && !v.contains(['\\', '"', '\'']));
    let within = src.get(span.clone()).unwrap_or_default();
    quoted
        .and_then(|v| {
            [format!("\"{v}\""), format!("'{v}'")]
                .iter()
                .filter_map(|q| within.find(q.as_str()))
                .min()
        })
        .map_or(span.start, |i| span.start + i)
}

/// The key named in a serde message about keys (`unknown field `x``).
fn key_of(message: &str) -> Option<String> {
    let about_key = ["unknown field", "duplicate key", "missing field"]
        .iter()
        .any(|p| message.starts_with(p));
    if !about_key {
        return None;
    }
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// The key whose value is at `off`: the last `key =` before it, looking back over lines
/// (a value may be a multi-line array) but not past a table header.
fn key_before(src: &str, off: usize) -> Option<String> {
    let before = &src[..off.min(src.len())];
    for line in before.rsplit('\n') {
        let t = line.trim_start();
        if let Some(k) = last_key_in(line) {
            return Some(k);
        }
        if t.starts_with('[') {
            return None;
        }
    }
    None
}

fn last_key_in(line: &str) -> Option<String> {
    let b = line.as_bytes();
    let mut in_str = false;
    let mut found = None;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => in_str = !in_str,
            b'\\' if in_str => i += 1,
            b'#' if !in_str => break,
            b'=' if !in_str => {
                let head = line[..i].trim_end();
                let start = head
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                    .map_or(0, |p| p + 1);
                if start < head.len() {
                    found = Some(head[start..].to_string());
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> PolicyError {
        parse_file("10-test.toml", src.as_bytes()).unwrap_err()
    }

    fn parse_err(src: &str) -> (usize, Option<String>, String) {
        match err(src) {
            PolicyError::Parse {
                line, key, message, ..
            } => (line, key, message),
            other => panic!("not a parse error: {other}"),
        }
    }

    #[test]
    fn parses_rules_with_lines() {
        let rules = parse_file(
            "10-a.toml",
            b"# comment\n[[rule]]\napps = [\"org.a.*\"]\ngrant = { network = true }\n\n[[rule]]\napps = [\"org.b.B\"]\non-excess = \"drop\"\n",
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!((rules[0].index, rules[0].line), (1, 2));
        assert_eq!((rules[1].index, rules[1].line), (2, 6));
        assert!(rules[0].grant.network.any);
        assert_eq!(rules[1].on_excess, Some(OnExcess::Drop));
        assert!(parse_file("empty.toml", b"").unwrap().is_empty());
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let (line, key, _) = parse_err("[[rule]]\napps = [\"a.b\"]\ngrant = { netwrok = true }\n");
        assert_eq!((line, key.as_deref()), (3, Some("netwrok")));
        let (line, key, _) = parse_err("[[rule]]\napps = [\"a.b\"]\nfoo = 1\n");
        assert_eq!((line, key.as_deref()), (3, Some("foo")));
        let (line, key, _) = parse_err("[[rules]]\napps = [\"a.b\"]\n");
        assert_eq!((line, key.as_deref()), (1, Some("rules")));
        let (line, key, _) =
            parse_err("[[rule]]\napps = [\"a.b\"]\n[rule.when]\nhas-device = [\"gpu\"]\n");
        assert_eq!((line, key.as_deref()), (4, Some("has-device")));
        let (line, key, _) =
            parse_err("[[rule]]\napps = [\"a.b\"]\nresources = { swap = \"1M\" }\n");
        assert_eq!((line, key.as_deref()), (3, Some("swap")));
        let e = err("[[rule]]\napps = [\"a.b\"]\ngrant = { netwrok = true }\n");
        let msg = e.to_string();
        assert!(msg.starts_with("10-test.toml:3:"), "{msg}");
        assert!(msg.contains("key `netwrok`"), "{msg}");
        assert_eq!(e.class(), appmgr_types::ErrorClass::Policy);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (src, line, key) in [
            (
                "[[rule]]\napps = [\"a.b\"]\n\n[rule.grant]\nnetwork = \"yes\"\n",
                5,
                "network",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\ngrant = { devices = [\"GPU\"] }\n",
                3,
                "devices",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\ngrant = { devices = [\n  \"gpu\",\n  3,\n] }\n",
                5,
                "devices",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\ngrant = { devices = [\n  \"gpu\",\n  \"GPU\",\n] }\n",
                5,
                "devices",
            ),
            ("[[rule]]\napps = [\"a/b\"]\n", 2, "apps"),
            (
                "[[rule]]\napps = [\"a.b\"]\non-excess = \"ignore\"\n",
                3,
                "on-excess",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\nresources = { memory-max = \"12X\" }\n",
                3,
                "memory-max",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\nresources = { cpu-max = \"30\" }\n",
                3,
                "cpu-max",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\ngrant = { filesystems = [\"/etc/../x\"] }\n",
                3,
                "filesystems",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\nwhen = { has-nodes = [\"/etc/passwd\"] }\n",
                3,
                "has-nodes",
            ),
        ] {
            let (l, k, m) = parse_err(src);
            assert_eq!((l, k.as_deref()), (line, Some(key)), "{src}: {m}");
        }
    }

    #[test]
    fn bad_network_entries_name_file_line_and_value() {
        for (src, line, key, value) in [
            (
                "[[rule]]\napps = [\"a.b\"]\ngrant = { network = { egress = [\"x:99999\"] } }\n",
                3,
                "egress",
                "x:99999",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\n\n[rule.grant.network]\ndns = true\negress = [\n  \"10.0.0.0/8:1\",\n  \"10.1.2.3/8:80\",\n]\n",
                8,
                "egress",
                "10.1.2.3/8:80",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\n[rule.deny]\nnetwork.egress = [\"[::1]:80\"]\n",
                4,
                "egress",
                "[::1]:80",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\ngrant = { network = { listen = [\"0/udp\"] } }\n",
                3,
                "listen",
                "0/udp",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\ngrant = { network = { talk-to = [\"bad/app\"] } }\n",
                3,
                "talk-to",
                "bad/app",
            ),
            (
                "[[rule]]\napps = [\"a.b\"]\ngrant = { network = { egres = [] } }\n",
                3,
                "egres",
                "egres",
            ),
        ] {
            let e = err(src);
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("10-test.toml:{line}:")),
                "{src}: {msg}"
            );
            assert!(msg.contains(&format!("key `{key}`")), "{src}: {msg}");
            assert!(msg.contains(value), "{src}: {msg}");
            assert_eq!(e.class(), appmgr_types::ErrorClass::Policy);
        }
    }

    #[test]
    fn duplicates_missing_and_syntax() {
        let (line, key, _) = parse_err("[[rule]]\napps = [\"a.b\"]\napps = [\"c.d\"]\n");
        assert_eq!((line, key.as_deref()), (3, Some("apps")));
        let (line, key, _) =
            parse_err("[[rule]]\napps = [\"a.b\"]\ngrant = { network = true, network = false }\n");
        assert_eq!((line, key.as_deref()), (3, Some("network")));
        let (line, key, _) = parse_err("[[rule]]\ngrant = {}\n");
        assert_eq!((line, key.as_deref()), (1, Some("apps")));
        let (line, _, _) = parse_err("[[rule]]\napps = [\"a.b\"\n");
        assert!(line >= 2);
        match err("[[rule]]\napps = []\n") {
            PolicyError::Rule {
                line: 1, rule: 1, ..
            } => {}
            other => panic!("{other}"),
        }
    }

    #[test]
    fn invalid_utf8_and_control_characters() {
        match parse_file("x.toml", b"# ok\n[[rule]]\napps = [\"a.\xff\"]\n").unwrap_err() {
            e @ PolicyError::Utf8 { line: 3, .. } => {
                assert_eq!(e.to_string(), "x.toml:3: key `apps`: invalid utf-8")
            }
            other => panic!("{other}"),
        }
        match parse_file("x.toml", b"# nul \0 here\n").unwrap_err() {
            PolicyError::ControlChar { line: 1, .. } => {}
            other => panic!("{other}"),
        }
        let e = parse_file(
            "x.toml",
            "[[rule]]\napps = [\"a.b\"]\n\"k\u{202e}\" = 1\n".as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains('\u{202e}') && e.contains("\\u{202e}"), "{e}");
        match parse_file("x.toml", "\n# esc \u{1b}[31m\n".as_bytes()).unwrap_err() {
            e @ PolicyError::ControlChar { line: 2, .. } => {
                assert!(e.to_string().contains("U+001B"))
            }
            other => panic!("{other}"),
        }
        // Bidi overrides cannot hide in values: patterns and paths refuse them.
        assert!(parse_file("x.toml", "[[rule]]\napps = [\"a.b\u{202e}\"]\n".as_bytes()).is_err());
    }
}
