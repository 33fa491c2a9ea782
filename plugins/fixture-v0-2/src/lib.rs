//! A lead source built against WIT 0.2: `search` stores a key named by
//! its keywords, then answers with one lead per key in its store (listed
//! with 0.2's `kv-list`), in order, each named after its key.

use tollgate_plugin_sdk::{
    Lead, LeadSource, PluginError, SearchPage, SearchQuery, host, register_plugin,
};

struct KeyLister;

impl LeadSource for KeyLister {
    fn search(query: SearchQuery) -> Result<SearchPage, PluginError> {
        let key = query.keywords.unwrap_or_default();
        host::kv_set(&format!("seen/{key}"), b"").map_err(PluginError::invalid_input)?;
        let leads: Vec<Lead> = host::kv_list("seen/", query.cursor.as_deref(), query.limit)
            .into_iter()
            .map(|key| Lead {
                first_name: Some(key),
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
            })
            .collect();
        Ok(SearchPage {
            units: leads.len() as u64,
            next_cursor: leads.last().and_then(|lead| lead.first_name.clone()),
            leads,
        })
    }
}

register_plugin!(KeyLister);
