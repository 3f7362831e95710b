//! The device-name template (`[naming] template = "Cart A - {n:02}"`): parsed once at load,
//! rendered for each iPad.

/// Placeholders the naming template understands.
pub const NAME_PLACEHOLDERS: [&str; 4] = ["serial", "slot", "n", "model"];

/// A device-name template such as `Cart A - {n:02}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate {
    source: String,
    parts: Vec<NamePart>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum NamePart {
    Text(String),
    Serial,
    Slot,
    Model,
    /// `{n}`, or `{n:0W}` zero-padded to W digits.
    N {
        width: usize,
    },
}

/// The values a name is made from.
#[derive(Clone, Copy, Debug)]
pub struct NameVars<'a> {
    pub serial: &'a str,
    /// Empty in the name when the slot is not known.
    pub slot: Option<&'a str>,
    pub n: u32,
    /// The marketing name ("iPad (9th generation)"), or the product type when unknown.
    pub model: &'a str,
}

/// Why a template was refused; the message reads after the setting's name
/// (`naming.template: has an unknown placeholder {nn}; …`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameTemplateError {
    #[error("is empty; write a template such as \"Cart A - {{n:02}}\"")]
    Empty,
    #[error("has a }} with no {{ before it (write }}}} for a literal brace)")]
    UnopenedBrace,
    #[error("has a {{ that is not closed after \"{{{after}\" (write {{{{ for a literal brace)")]
    UnclosedBrace { after: String },
    #[error("has {{{placeholder}}}: the width of {{n}} is written {{n:02}} (0 then 1 to 9 digits)")]
    BadWidth { placeholder: String },
    #[error(
        "has an unknown placeholder {{{placeholder}}}; use {{serial}}, {{slot}}, {{n}} (or {{n:02}} for 01, 02, …) or {{model}}"
    )]
    UnknownPlaceholder { placeholder: String },
}

impl NameTemplate {
    /// Parses a template, refusing unknown placeholders and unbalanced braces (`{{` and `}}`
    /// stand for literal braces).
    pub fn parse(source: &str) -> Result<NameTemplate, NameTemplateError> {
        if source.trim().is_empty() {
            return Err(NameTemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => return Err(NameTemplateError::UnopenedBrace),
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(NameTemplateError::UnclosedBrace { after: name });
                    }
                    if !text.is_empty() {
                        parts.push(NamePart::Text(std::mem::take(&mut text)));
                    }
                    parts.push(parse_placeholder(&name)?);
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(NamePart::Text(text));
        }
        Ok(NameTemplate {
            source: source.to_owned(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the template contains `{slot}`.
    pub fn uses_slot(&self) -> bool {
        self.parts.contains(&NamePart::Slot)
    }

    /// The device name for these values.
    pub fn render(&self, vars: &NameVars<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                NamePart::Text(t) => out.push_str(t),
                NamePart::Serial => out.push_str(vars.serial),
                NamePart::Slot => out.push_str(vars.slot.unwrap_or("")),
                NamePart::Model => out.push_str(vars.model),
                NamePart::N { width } => {
                    out.push_str(&format!("{:0width$}", vars.n, width = *width))
                }
            }
        }
        out
    }
}

fn parse_placeholder(name: &str) -> Result<NamePart, NameTemplateError> {
    match name.trim() {
        "serial" => Ok(NamePart::Serial),
        "slot" => Ok(NamePart::Slot),
        "model" => Ok(NamePart::Model),
        "n" => Ok(NamePart::N { width: 0 }),
        other => {
            if let Some(spec) = other.strip_prefix("n:") {
                let digits = spec.strip_prefix('0').unwrap_or("");
                if let Ok(width @ 1..=9) = digits.parse::<usize>() {
                    return Ok(NamePart::N { width });
                }
                return Err(NameTemplateError::BadWidth {
                    placeholder: other.to_owned(),
                });
            }
            Err(NameTemplateError::UnknownPlaceholder {
                placeholder: other.to_owned(),
            })
        }
    }
}
