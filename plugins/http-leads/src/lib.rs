//! `http-leads`: a lead source over a people-search JSON API in the style
//! of Apollo's. `search` posts the query to `/v1/mixed_people/search` and
//! pages with the API's page numbers (the cursor is the next page);
//! `enrich` posts what is known of a lead to `/v1/people/match`. Every
//! request goes through the host, which allows only approved hosts.

use serde::Deserialize;
use tollgate_plugin_sdk::{
    Enrichment, ErrorKind, Field, Lead, LeadSource, PluginError, SearchPage, SearchQuery, host,
    register_plugin,
};

struct HttpLeads;

const DEFAULT_BASE_URL: &str = "https://api.apollo.io";

/// Most leads one page may ask the API for.
const PAGE_SIZE_MAX: u32 = 100;

#[derive(Deserialize)]
struct SearchResponse {
    #[serde(default)]
    people: Vec<Person>,
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct Pagination {
    page: u32,
    total_pages: u32,
}

#[derive(Deserialize)]
struct MatchResponse {
    person: Option<Person>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Person {
    id: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    title: Option<String>,
    linkedin_url: Option<String>,
    phone_number: Option<String>,
    city: Option<String>,
    state: Option<String>,
    country: Option<String>,
    time_zone: Option<String>,
    organization: Option<Organization>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Organization {
    name: Option<String>,
    primary_domain: Option<String>,
}

impl Person {
    fn into_lead(self) -> Lead {
        let location: Vec<String> = [self.city, self.state, self.country]
            .into_iter()
            .flatten()
            .collect();
        let organization = self.organization.unwrap_or_default();
        Lead {
            first_name: self.first_name,
            last_name: self.last_name,
            email: self.email,
            title: self.title,
            company: organization.name,
            domain: organization.primary_domain,
            linkedin_url: self.linkedin_url,
            phone: self.phone_number,
            location: (!location.is_empty()).then(|| location.join(", ")),
            time_zone: self.time_zone,
            custom_fields: self
                .id
                .map(|id| Field {
                    name: "apollo_id".into(),
                    value: id,
                })
                .into_iter()
                .collect(),
        }
    }
}

/// POSTs JSON to the API and returns the parsed answer, mapping HTTP
/// failures onto plugin errors the caller can act on.
fn post<T: for<'de> Deserialize<'de>>(
    path: &str,
    body: serde_json::Value,
) -> Result<T, PluginError> {
    let api_key = host::required_setting("api_key")?;
    let base = host::setting("api_base_url").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    let request = host::HttpRequest {
        method: "POST".into(),
        url: format!("{}{path}", base.trim_end_matches('/')),
        headers: vec![
            Field {
                name: "content-type".into(),
                value: "application/json".into(),
            },
            Field {
                name: "x-api-key".into(),
                value: api_key,
            },
        ],
        body: body.to_string().into_bytes(),
    };
    let response = host::http_send(&request)?;
    match response.status {
        200..=299 => serde_json::from_slice(&response.body).map_err(|error| {
            PluginError::upstream(format!("the API answered with unexpected JSON: {error}"))
        }),
        401 | 403 => Err(PluginError::new(
            ErrorKind::Unauthorized,
            "the API refused the api_key",
        )),
        429 => Err(PluginError::new(
            ErrorKind::RateLimited,
            "the API asks to slow down",
        )),
        400..=499 => Err(PluginError::invalid_input(format!(
            "the API refused the request ({}): {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ))),
        status => Err(PluginError::upstream(format!("the API failed ({status})"))),
    }
}

impl LeadSource for HttpLeads {
    fn search(query: SearchQuery) -> Result<SearchPage, PluginError> {
        let page: u32 = match &query.cursor {
            Some(cursor) => cursor.parse().map_err(|_| {
                PluginError::invalid_input(format!("cursor {cursor:?} is not a page number"))
            })?,
            None => 1,
        };
        let mut body = serde_json::json!({
            "page": page,
            "per_page": query.limit.clamp(1, PAGE_SIZE_MAX),
        });
        let criteria = [
            ("q_keywords", query.keywords.map(serde_json::Value::from)),
            (
                "person_titles",
                query.title.map(|title| serde_json::json!([title])),
            ),
            (
                "q_organization_name",
                query.company.map(serde_json::Value::from),
            ),
            (
                "q_organization_domains",
                query.domain.map(serde_json::Value::from),
            ),
            (
                "person_locations",
                query.location.map(|location| serde_json::json!([location])),
            ),
        ];
        for (name, value) in criteria {
            if let Some(value) = value {
                body[name] = value;
            }
        }
        let response: SearchResponse = post("/v1/mixed_people/search", body)?;
        let leads: Vec<Lead> = response.people.into_iter().map(Person::into_lead).collect();
        let next_cursor = response
            .pagination
            .filter(|pagination| pagination.page < pagination.total_pages)
            .map(|pagination| (pagination.page + 1).to_string());
        Ok(SearchPage {
            units: leads.len() as u64,
            leads,
            next_cursor,
        })
    }

    fn enrich(lead: Lead) -> Result<Enrichment, PluginError> {
        let body = serde_json::json!({
            "email": lead.email,
            "first_name": lead.first_name,
            "last_name": lead.last_name,
            "domain": lead.domain,
            "linkedin_url": lead.linkedin_url,
        });
        let response: MatchResponse = post("/v1/people/match", body)?;
        let found = response.person.map(Person::into_lead);
        Ok(Enrichment {
            units: u64::from(found.is_some()),
            lead: found,
        })
    }
}

register_plugin!(HttpLeads);

#[cfg(test)]
mod tests {
    use tollgate_plugin_sdk::testing::Harness;

    use super::*;

    fn query(cursor: Option<&str>) -> SearchQuery {
        SearchQuery {
            keywords: Some("fintech".into()),
            title: None,
            company: Some("Example".into()),
            domain: None,
            location: Some("Berlin".into()),
            limit: 500,
            cursor: cursor.map(str::to_owned),
        }
    }

    #[test]
    fn builds_the_request_and_maps_the_answer() {
        let mut harness = Harness::new()
            .setting("api_key", "k")
            .respond(200, r#"{"people": [{"first_name": "Ada", "organization": {"name": "Example"}}], "pagination": {"page": 3, "total_pages": 3}}"#);
        let page = harness.run(|| HttpLeads::search(query(Some("3")))).unwrap();
        assert_eq!((page.units, page.next_cursor), (1, None));
        assert_eq!(page.leads[0].company.as_deref(), Some("Example"));
        let request = &harness.requests()[0];
        assert_eq!(request.url, "https://api.apollo.io/v1/mixed_people/search");
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["page"], 3);
        assert_eq!(body["per_page"], 100, "the page size is capped");
        assert_eq!(body["q_organization_name"], "Example");
        assert_eq!(body["person_locations"], serde_json::json!(["Berlin"]));
    }

    #[test]
    fn reports_what_went_wrong_upstream() {
        let mut harness = Harness::new()
            .setting("api_key", "k")
            .respond(200, "not json")
            .respond(503, "")
            .fail_http(host::HttpError::Timeout);
        for _ in 0..3 {
            let error = harness.run(|| HttpLeads::search(query(None))).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Upstream);
            assert!(error.retryable);
        }
        let error = Harness::new()
            .setting("api_key", "k")
            .run(|| HttpLeads::search(query(Some("x"))))
            .unwrap_err();
        assert_eq!(error.message, "cursor \"x\" is not a page number");
    }
}
