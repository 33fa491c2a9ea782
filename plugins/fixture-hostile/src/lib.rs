//! A lead source that misbehaves in whatever way `keywords` names, so the
//! host's limits can be tested against real wasm: `loop`, `memory`, `big`,
//! `panic`, `trap`, `http` (to a host it did not declare), `print`, and
//! anything else returns one lead.

use tollgate_plugin_sdk::{
    Lead, LeadSource, PluginError, SearchPage, SearchQuery, host, register_plugin,
};

struct Hostile;

fn lead(name: &str) -> Lead {
    Lead {
        first_name: Some(name.to_owned()),
        last_name: None,
        email: None,
        title: None,
        company: None,
        domain: None,
        linkedin_url: None,
        phone: None,
        location: None,
        time_zone: None,
        custom_fields: Vec::new(),
    }
}

impl LeadSource for Hostile {
    fn search(query: SearchQuery) -> Result<SearchPage, PluginError> {
        match query.keywords.as_deref().unwrap_or_default() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "big" => {
                let huge = "x".repeat(2 << 20);
                Ok(SearchPage {
                    leads: vec![lead(&huge)],
                    next_cursor: None,
                    units: 1,
                })
            }
            "panic" => panic!("the plugin panicked on purpose"),
            "trap" => std::process::abort(),
            "http" => {
                let request = host::HttpRequest {
                    method: "GET".into(),
                    url: "http://undeclared.example/".into(),
                    headers: Vec::new(),
                    body: Vec::new(),
                };
                match host::http_send(&request) {
                    Err(host::HttpError::Denied(reason)) => Err(PluginError::new(
                        tollgate_plugin_sdk::ErrorKind::Upstream,
                        format!("denied: {reason}"),
                    )),
                    other => Err(PluginError::invalid_input(format!(
                        "expected a denial, got {other:?}"
                    ))),
                }
            }
            "print" => {
                println!("hello from stdout");
                eprintln!("hello from stderr");
                host::log(host::LogLevel::Warn, "hello from the log import");
                Ok(SearchPage {
                    leads: vec![lead("printed")],
                    next_cursor: None,
                    units: 1,
                })
            }
            _ => Ok(SearchPage {
                leads: vec![lead("Ada")],
                next_cursor: None,
                units: 1,
            }),
        }
    }
}

register_plugin!(Hostile);
