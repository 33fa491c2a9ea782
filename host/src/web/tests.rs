use serde_json::json;

use super::{TEMPLATES, filters};

#[test]
fn every_template_renders_with_nothing_in_it() {
    for (name, _) in super::pages::TEMPLATES {
        if *name == "macros.html" {
            continue;
        }
        let template = TEMPLATES.get_template(name).unwrap();
        if let Err(error) = template.render(minijinja::value::Serde(&json!({
            "csrf": "token",
            "user": {"role": "admin", "tenant": 1, "admin": true, "operator": false},
        }))) {
            panic!("{name}: {error:#}");
        }
    }
}

#[test]
fn credits_are_grouped_and_trimmed() {
    assert_eq!(filters::credits("1250".into()), "1,250");
    assert_eq!(filters::credits("-1234567.500".into()), "-1,234,567.5");
    assert_eq!(filters::credits("0.25".into()), "0.25");
    assert_eq!(filters::credits("100.000".into()), "100");
    assert_eq!(filters::minor(-1999), "-19.99");
    assert_eq!(
        filters::when("2026-12-07T14:05:09Z".into()),
        "2026-12-07 14:05"
    );
}
