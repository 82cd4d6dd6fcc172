/// True if `s` holds a character that must never appear in a name or path shown to an
/// operator: C0/C1 controls, DEL, and the Unicode bidi overrides/isolates that can make a
/// terminal show text in an order other than the bytes' (CVE-2021-42574 "Trojan Source").
pub fn has_unsafe_chars(s: &str) -> bool {
    s.chars().any(is_unsafe_char)
}

fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200e}' | '\u{200f}'          // LRM, RLM
            | '\u{202a}'..='\u{202e}'        // LRE, RLE, PDF, LRO, RLO
            | '\u{2066}'..='\u{2069}'        // LRI, RLI, FSI, PDI
            | '\u{061c}'                     // Arabic letter mark
            | '\u{feff}'                     // zero-width no-break space / BOM
        )
}

/// Escapes `s` for display on a terminal or in a log: unsafe characters become `\u{XXXX}`
/// (and `\\` stays unambiguous), everything else is kept as it is.
pub fn escape_for_display(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if is_unsafe_char(c) {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi() {
        assert_eq!(escape_for_display("a\u{1b}[31mb"), "a\\u{001b}[31mb");
        assert_eq!(escape_for_display("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(escape_for_display("tab\there"), "tab\\u{0009}here");
        assert_eq!(escape_for_display("plain/path é"), "plain/path é");
        assert!(has_unsafe_chars("a\u{2066}"));
        assert!(has_unsafe_chars("nul\0"));
        assert!(!has_unsafe_chars("org.example.App"));
    }
}
