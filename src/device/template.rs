//! Registration-ID templates such as `breakroom{n}-contoso-tstrsd-007` or `dev-{n:05}`.
//!
//! One `{n}` placeholder (optionally zero-padded, `{n:05}`) or none at all (a single fixed ID).
//! Rendering and matching live together so the reference webhook's per-class faults match exactly
//! the IDs the population generates.

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTemplate {
    prefix: String,
    suffix: String,
    /// `None`: the template has no placeholder.
    width: Option<usize>,
}

/// Why a template is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// More than one placeholder.
    #[error("only one `{{n}}` placeholder is allowed")]
    Several,
    /// `{` without a valid `{n}` / `{n:WIDTH}`.
    #[error("`{0}` is not a placeholder; write `{{n}}` or `{{n:05}}`")]
    BadPlaceholder(String),
    /// Characters DPS does not allow in a registration ID (dps-protocol.md §1).
    #[error("registration IDs may contain only letters, digits and `-._:` (found {0:?})")]
    BadChar(char),
}

impl IdTemplate {
    /// Parses a template.
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let Some(open) = s.find('{') else {
            check_chars(s)?;
            return Ok(Self {
                prefix: s.to_owned(),
                suffix: String::new(),
                width: None,
            });
        };
        let close = s[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| TemplateError::BadPlaceholder(s[open..].to_owned()))?;
        let inner = &s[open + 1..close];
        let width = match inner {
            "n" => 0,
            _ => inner
                .strip_prefix("n:")
                .and_then(|w| w.parse::<usize>().ok())
                .filter(|w| *w <= 20)
                .ok_or_else(|| TemplateError::BadPlaceholder(format!("{{{inner}}}")))?,
        };
        let (prefix, suffix) = (&s[..open], &s[close + 1..]);
        if suffix.contains('{') {
            return Err(TemplateError::Several);
        }
        check_chars(prefix)?;
        check_chars(suffix)?;
        Ok(Self {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
            width: Some(width),
        })
    }

    /// True when the template has a `{n}` placeholder.
    pub fn has_placeholder(&self) -> bool {
        self.width.is_some()
    }

    /// Writes the ID for `n` into `out` (cleared first).
    pub fn render_into(&self, n: u64, out: &mut String) {
        out.clear();
        out.push_str(&self.prefix);
        if let Some(w) = self.width {
            // itoa, zero-padded by hand: `write!` with a width runs the formatting machinery for
            // every request.
            let mut digits = itoa::Buffer::new();
            let d = digits.format(n);
            out.extend(std::iter::repeat_n('0', w.saturating_sub(d.len())));
            out.push_str(d);
        }
        out.push_str(&self.suffix);
    }

    /// The ID for `n`.
    pub fn render(&self, n: u64) -> String {
        let mut s = String::with_capacity(self.prefix.len() + self.suffix.len() + 8);
        self.render_into(n, &mut s);
        s
    }

    /// The `n` of an ID this template renders, if it is one.
    pub fn matches(&self, id: &str) -> Option<u64> {
        let mid = id.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        match self.width {
            None => mid.is_empty().then_some(0),
            Some(w) => {
                if mid.is_empty()
                    || !mid.bytes().all(|b| b.is_ascii_digit())
                    || (mid.len() > 1 && mid.len() > w && mid.starts_with('0'))
                {
                    return None;
                }
                let n: u64 = mid.parse().ok()?;
                (self.render(n) == id).then_some(n)
            }
        }
    }
}

impl std::fmt::Display for IdTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.width {
            None => f.write_str(&self.prefix),
            Some(0) => write!(f, "{}{{n}}{}", self.prefix, self.suffix),
            Some(w) => write!(f, "{}{{n:{w:02}}}{}", self.prefix, self.suffix),
        }
    }
}

fn check_chars(s: &str) -> Result<(), TemplateError> {
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._:".contains(*c)))
    {
        Some(c) => Err(TemplateError::BadChar(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_match() {
        let t = IdTemplate::parse("breakroom{n}-contoso-tstrsd-007").unwrap();
        assert_eq!(t.render(499), "breakroom499-contoso-tstrsd-007");
        assert_eq!(t.matches("breakroom499-contoso-tstrsd-007"), Some(499));
        assert_eq!(t.matches("breakroom-contoso-tstrsd-007"), None);
        assert_eq!(t.matches("breakroom0499-contoso-tstrsd-007"), None);
        assert_eq!(t.matches("mainbuilding167-contoso-hpsd-088"), None);
        let p = IdTemplate::parse("dev-{n:05}").unwrap();
        assert_eq!(p.render(42), "dev-00042");
        assert_eq!(p.matches("dev-00042"), Some(42));
        assert_eq!(p.matches("dev-42"), None);
        assert_eq!(p.to_string(), "dev-{n:05}");
        let f = IdTemplate::parse("contoso-toaster-007").unwrap();
        assert!(!f.has_placeholder());
        assert_eq!(f.render(9), "contoso-toaster-007");
        assert_eq!(f.matches("contoso-toaster-007"), Some(0));
    }

    #[test]
    fn errors() {
        assert_eq!(IdTemplate::parse("a{n}b{n}"), Err(TemplateError::Several));
        assert_eq!(
            IdTemplate::parse("a{x}"),
            Err(TemplateError::BadPlaceholder("{x}".into()))
        );
        assert_eq!(
            IdTemplate::parse("a b{n}"),
            Err(TemplateError::BadChar(' '))
        );
    }
}
