//! Personalised text: each step's subject, body and HTML body are minijinja
//! templates over the lead (`{{ lead.first_name | default("there") }}`),
//! the sender and the unsubscribe link.
//!
//! Undefined is strict: a lead field with no value and no default fails the
//! render, naming the variable, so that nobody receives "Hi ,". HTML bodies
//! are auto-escaped; text is not.

use minijinja::{Environment, UndefinedBehavior, Value};

use super::leads::{Fields, TEXT_FIELDS};

/// Output of one render: a long email is a few kilobytes.
pub const OUTPUT_BYTES_MAX: usize = 256 << 10;
/// Fuel for one render, so a template cannot loop for long.
const RENDER_FUEL: u64 = 100_000;

fn environment(html: bool) -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_fuel(Some(RENDER_FUEL));
    environment.set_auto_escape_callback(move |_| match html {
        true => minijinja::AutoEscape::Html,
        false => minijinja::AutoEscape::None,
    });
    environment
}

/// Whether `source` is a template (its syntax, not its variables).
pub fn check(source: &str) -> Result<(), String> {
    let environment = environment(false);
    environment
        .template_from_str(source)
        .map(|_| ())
        .map_err(|error| format!("not a valid template: {}", error_text(&error)))
}

fn error_text(error: &minijinja::Error) -> String {
    let mut text = error.kind().to_string();
    if let Some(detail) = error.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    if let Some(line) = error.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

/// What a template may use.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub lead: Fields,
    pub sender_name: Option<String>,
    pub sender_address: String,
    pub unsubscribe_url: Option<String>,
}

impl Context {
    /// The context as minijinja values. Absent fields are left out, so
    /// that using one without a default is an error.
    fn value(&self) -> Value {
        let mut lead = serde_json::Map::new();
        for name in TEXT_FIELDS {
            if let Some(text) = self.lead.text(name) {
                lead.insert(name.to_owned(), text.into());
            }
        }
        if let Some(size) = self.lead.company_size {
            lead.insert("company_size".into(), size.into());
        }
        let custom: serde_json::Map<String, serde_json::Value> = self
            .lead
            .custom_fields
            .iter()
            .map(|(name, value)| (name.clone(), value.clone().into()))
            .collect();
        lead.insert("custom".into(), custom.into());
        lead.insert(
            "tags".into(),
            self.lead.tags.iter().cloned().collect::<Vec<_>>().into(),
        );
        let mut sender = serde_json::Map::new();
        sender.insert("address".into(), self.sender_address.clone().into());
        if let Some(name) = &self.sender_name {
            sender.insert("name".into(), name.clone().into());
        }
        let mut root = serde_json::Map::new();
        root.insert("lead".into(), lead.into());
        root.insert("sender".into(), sender.into());
        if let Some(url) = &self.unsubscribe_url {
            root.insert("unsubscribe_url".into(), url.clone().into());
        }
        Value::from(minijinja::value::Serde(serde_json::Value::Object(root)))
    }

    /// Whether a dotted variable (`lead.first_name`) has a value here.
    fn has(&self, path: &str) -> bool {
        let mut parts = path.split('.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("lead"), Some("custom"), Some(name)) => {
                self.lead.custom_fields.contains_key(name)
            }
            (Some("lead"), Some("company_size"), None) => self.lead.company_size.is_some(),
            (Some("lead"), Some(name), None) => {
                self.lead.text(name).is_some() || name == "custom" || name == "tags"
            }
            (Some("sender"), Some("name"), None) => self.sender_name.is_some(),
            (Some("sender"), Some("address"), None) => true,
            (Some("unsubscribe_url"), None, None) => self.unsubscribe_url.is_some(),
            (Some("lead" | "sender"), None, None) => true,
            _ => false,
        }
    }
}

/// Renders `source`; as HTML (auto-escaped) when `html`. The error says
/// which variables this lead lacks.
pub fn render(source: &str, html: bool, context: &Context) -> Result<String, String> {
    let environment = environment(html);
    let template = environment
        .template_from_str(source)
        .map_err(|error| format!("not a valid template: {}", error_text(&error)))?;
    let rendered = template.render(context.value()).map_err(|error| {
        match error.kind() {
            minijinja::ErrorKind::UndefinedError => {
                let mut missing: Vec<String> = template
                    .undeclared_variables(true)
                    .into_iter()
                    .filter(|path| !context.has(path))
                    .collect();
                missing.sort();
                match missing.is_empty() {
                    true => format!("a variable has no value: {}", error_text(&error)),
                    false => format!(
                        "{} has no value for this lead and no default; fill it in or write {{{{ {} | default(\"...\") }}}}",
                        missing.join(", "),
                        missing[0]
                    ),
                }
            }
            _ => error_text(&error),
        }
    })?;
    if rendered.len() > OUTPUT_BYTES_MAX {
        return Err(format!("renders to more than {OUTPUT_BYTES_MAX} bytes"));
    }
    Ok(rendered)
}

/// Plain text as HTML: escaped, its lines kept, its http(s) links made
/// links. Used to track a text-only email's opens and clicks.
pub fn text_to_html(text: &str) -> String {
    let mut html = String::from("<div style=\"white-space: pre-wrap\">");
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            html.push_str("<br>\n");
        }
        for (word_index, word) in line.split(' ').enumerate() {
            if word_index > 0 {
                html.push(' ');
            }
            let escaped = escape(word);
            match word.starts_with("https://") || word.starts_with("http://") {
                true => html.push_str(&format!("<a href=\"{escaped}\">{escaped}</a>")),
                false => html.push_str(&escaped),
            }
        }
    }
    html.push_str("</div>");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Rewrites every `href="http(s)://..."` in `html` through `track`, and
/// appends `pixel` (an `<img>`) at the end of the body.
pub fn track_links(html: &str, track: impl Fn(&str) -> String, pixel: &str) -> String {
    let mut out = String::with_capacity(html.len() + 256);
    let mut rest = html;
    while let Some(at) = rest.find("href=\"") {
        let (before, after) = rest.split_at(at + "href=\"".len());
        out.push_str(before);
        let end = after.find('"').unwrap_or(after.len());
        let url = &after[..end];
        let unescaped = url.replace("&amp;", "&");
        match unescaped.starts_with("https://") || unescaped.starts_with("http://") {
            true => out.push_str(&escape(&track(&unescaped))),
            false => out.push_str(url),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    match out.rfind("</body>") {
        Some(at) => out.insert_str(at, pixel),
        None => out.push_str(pixel),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ada() -> Context {
        Context {
            lead: Fields {
                first_name: Some("Ada".into()),
                company: Some("Analytical & Co".into()),
                custom_fields: [("industry".to_owned(), "looms".to_owned())].into(),
                ..Fields::default()
            },
            sender_name: Some("Sam".into()),
            sender_address: "sam@acme.example".into(),
            unsubscribe_url: Some("https://t.example/u/1".into()),
        }
    }

    #[test]
    fn templates_use_the_lead_and_defaults() {
        let text = render(
            "Hi {{ lead.first_name }} at {{ lead.company }} ({{ lead.custom.industry }}), {{ lead.title | default(\"friend\") }}. {{ sender.name }}",
            false,
            &ada(),
        )
        .unwrap();
        assert_eq!(text, "Hi Ada at Analytical & Co (looms), friend. Sam");
        let html = render("<p>{{ lead.company }}</p>", true, &ada()).unwrap();
        assert_eq!(html, "<p>Analytical &amp; Co</p>");
    }

    #[test]
    fn a_missing_value_without_a_default_is_named() {
        let error = render(
            "Hi {{ lead.last_name }}, {{ lead.first_name }}",
            false,
            &ada(),
        )
        .unwrap_err();
        assert!(error.starts_with("lead.last_name has no value"), "{error}");
        let error = render("{% if lead.title %}x{% endif %}", false, &ada());
        assert!(error.is_err(), "{error:?}");
        assert!(check("Hi {{ lead.first_name").is_err());
        assert!(check("Hi {{ lead.nothing }}").is_ok());
    }

    #[test]
    fn links_are_tracked_and_a_pixel_added() {
        let html = "<p><a href=\"https://acme.example/demo?a=1&amp;b=2\">demo</a> <a href=\"mailto:x@y.z\">mail</a></p></body>";
        let tracked = track_links(
            html,
            |url| format!("https://t.example/c?u=[{url}]"),
            "<img src=\"https://t.example/o\">",
        );
        assert_eq!(
            tracked,
            "<p><a href=\"https://t.example/c?u=[https://acme.example/demo?a=1&amp;b=2]\">demo</a> <a href=\"mailto:x@y.z\">mail</a></p><img src=\"https://t.example/o\"></body>"
        );
        assert_eq!(
            text_to_html("Hi <Ada>\nsee https://acme.example/x"),
            "<div style=\"white-space: pre-wrap\">Hi &lt;Ada&gt;<br>\nsee <a href=\"https://acme.example/x\">https://acme.example/x</a></div>"
        );
    }
}
