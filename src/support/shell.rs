//! Quoting for the POSIX sh scripts veil writes (container actions, environment
//! files of an image).

#![forbid(unsafe_code)]

/// Quotes a string for POSIX sh: `'…'` with embedded quotes escaped.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::sh_quote;

    #[test]
    fn quotes_survive_sh() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh_quote("a'b $HOME \\ \"c\"")))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"a'b $HOME \\ \"c\"");
    }
}
