use tollgate_plugin_sdk::testing::Harness;

use super::*;

const CSV: &str = "\
First Name,Last Name,Email,Job Title,Company,Website,City,Country,Industry
Ada,Lovelace,ada@analytical.example,CTO,Analytical Engines,https://www.analytical.example/about,London,UK,Computing
Grace,Hopper,grace@navy.example,Rear Admiral,US Navy,navy.example,Arlington,USA,Defense
Alan,Turing,alan@bletchley.example,Cryptanalyst,Bletchley Park,,Bletchley,UK,\"Codes, ciphers\"
Katherine,Johnson,katherine@nasa.example,Mathematician,NASA,nasa.example,Hampton,USA,Aerospace
";

/// A harness holding `files` as the host stores uploads, in chunks of
/// `chunk` bytes (small, so records straddle chunks).
fn harness(files: &[(&str, &str)], chunk: usize) -> Harness {
    let mut harness = Harness::new();
    let mut index = Vec::new();
    for (name, text) in files {
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(chunk).collect();
        for (n, bytes) in chunks.iter().enumerate() {
            harness = harness.kv(&format!("file/{name}/{n:05}"), bytes);
        }
        index.push(serde_json::json!({"name": name, "size": text.len(), "chunks": chunks.len(), "sha256": "", "uploaded_at_ms": 0}));
    }
    harness.kv("files", serde_json::to_string(&index).unwrap().as_bytes())
}

fn query(limit: u32) -> SearchQuery {
    SearchQuery {
        keywords: None,
        title: None,
        company: None,
        domain: None,
        location: None,
        limit,
        cursor: None,
    }
}

fn names(page: &SearchPage) -> Vec<String> {
    page.leads
        .iter()
        .map(|lead| lead.first_name.clone().unwrap_or_default())
        .collect()
}

fn error(result: Result<impl std::fmt::Debug, PluginError>) -> (ErrorKind, String) {
    let error = result.unwrap_err();
    (error.kind, error.message)
}

#[test]
fn maps_usual_column_names_and_keeps_the_rest_as_custom_fields() {
    let mut harness = harness(&[("leads.csv", CSV)], 7);
    let page = harness.run(|| CsvLeads::search(query(10))).unwrap();
    assert_eq!(names(&page), ["Ada", "Grace", "Alan", "Katherine"]);
    assert_eq!((page.units, page.next_cursor), (4, None));
    let ada = &page.leads[0];
    assert_eq!(ada.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(ada.email.as_deref(), Some("ada@analytical.example"));
    assert_eq!(ada.title.as_deref(), Some("CTO"));
    assert_eq!(ada.company.as_deref(), Some("Analytical Engines"));
    assert_eq!(ada.domain.as_deref(), Some("analytical.example"));
    assert_eq!(ada.location.as_deref(), Some("London, UK"));
    assert_eq!(
        ada.custom_fields,
        [Field {
            name: "Industry".into(),
            value: "Computing".into()
        }]
    );
    // A quoted comma stays in its field.
    assert_eq!(page.leads[2].custom_fields[0].value, "Codes, ciphers");
    assert_eq!(page.leads[2].domain, None);
}

#[test]
fn every_criterion_set_must_match() {
    let mut harness = harness(&[("leads.csv", CSV)], 64);
    let mut search = |edit: &dyn Fn(&mut SearchQuery)| {
        let mut q = query(10);
        edit(&mut q);
        names(&harness.run(|| CsvLeads::search(q)).unwrap())
    };
    assert_eq!(
        search(&|q| q.location = Some("usa".into())),
        ["Grace", "Katherine"]
    );
    assert_eq!(
        search(&|q| {
            q.location = Some("USA".into());
            q.title = Some("math".into());
        }),
        ["Katherine"]
    );
    assert_eq!(search(&|q| q.company = Some("bletchley".into())), ["Alan"]);
    // The domain matches the company's website or the email's.
    assert_eq!(
        search(&|q| q.domain = Some("https://navy.example/".into())),
        ["Grace"]
    );
    assert_eq!(
        search(&|q| q.domain = Some("bletchley.example".into())),
        ["Alan"]
    );
    assert_eq!(
        search(&|q| q.domain = Some("example".into())),
        Vec::<String>::new()
    );
    // Every keyword, anywhere, custom fields included.
    assert_eq!(
        search(&|q| q.keywords = Some("uk ciphers".into())),
        ["Alan"]
    );
    assert_eq!(
        search(&|q| q.keywords = Some("uk aerospace".into())),
        Vec::<String>::new()
    );
}

#[test]
fn pages_through_matches_with_the_cursor_across_files() {
    let more = "email,name,title\nmary@example.com,Mary Somerville,Polymath\n";
    let mut harness = harness(&[("a.csv", CSV), ("b.csv", more)], 16);
    let first = harness.run(|| CsvLeads::search(query(2))).unwrap();
    assert_eq!(names(&first), ["Ada", "Grace"]);
    assert_eq!(first.next_cursor.as_deref(), Some("2"));
    let mut next = query(2);
    next.cursor = first.next_cursor.clone();
    let second = harness.run(|| CsvLeads::search(next)).unwrap();
    assert_eq!(names(&second), ["Alan", "Katherine"]);
    let mut last = query(2);
    last.cursor = second.next_cursor.clone();
    let last = harness.run(|| CsvLeads::search(last)).unwrap();
    // A full name is split at its last space.
    assert_eq!(names(&last), ["Mary"]);
    assert_eq!(last.leads[0].last_name.as_deref(), Some("Somerville"));
    assert_eq!((last.units, last.next_cursor), (1, None));

    // The `files` setting chooses which uploads are searched.
    let mut harness = harness.setting("files", "b.csv");
    assert_eq!(
        names(&harness.run(|| CsvLeads::search(query(10))).unwrap()),
        ["Mary"]
    );
}

#[test]
fn the_columns_setting_maps_unusual_headers() {
    let text = "E-mail Address,Who,Org\nada@analytical.example,Ada Lovelace,Analytical Engines\n";
    let mut harness = harness(&[("leads.csv", text)], 1024)
        .setting("columns", "email = E-mail Address, name=who, company=Org");
    let page = harness.run(|| CsvLeads::search(query(10))).unwrap();
    let ada = &page.leads[0];
    assert_eq!(
        (
            ada.email.as_deref(),
            ada.first_name.as_deref(),
            ada.company.as_deref()
        ),
        (
            Some("ada@analytical.example"),
            Some("Ada"),
            Some("Analytical Engines")
        )
    );
    assert!(ada.custom_fields.is_empty());

    let mut bad = harness.clone().setting("columns", "email=Mail");
    let (kind, message) = error(bad.run(|| CsvLeads::search(query(10))));
    assert_eq!(kind, ErrorKind::Misconfigured);
    assert_eq!(
        message,
        "setting \"columns\" maps a field to column \"Mail\", which leads.csv does not have; its columns are E-mail Address, Who, Org"
    );
    let mut bad = harness.clone().setting("columns", "mail=Org");
    let (_, message) = error(bad.run(|| CsvLeads::search(query(10))));
    assert!(
        message.starts_with("setting \"columns\": \"mail\" is not a lead field"),
        "{message}"
    );
    let mut bad = harness.setting("columns", "email");
    let (_, message) = error(bad.run(|| CsvLeads::search(query(10))));
    assert_eq!(
        message,
        "setting \"columns\": \"email\" is not field=Column"
    );
}

#[test]
fn refuses_bad_queries_missing_files_and_broken_csv() {
    let mut one_file = harness(&[("leads.csv", CSV)], 64);
    let (kind, message) = error(one_file.run(|| CsvLeads::search(query(0))));
    assert_eq!(
        (kind, message.as_str()),
        (ErrorKind::InvalidInput, "limit must be 1 to 1000, not 0")
    );
    let mut q = query(10);
    q.cursor = Some("page-two".into());
    let (_, message) = error(one_file.run(|| CsvLeads::search(q)));
    assert_eq!(
        message,
        "cursor \"page-two\" is not one this plugin returned"
    );

    let (kind, message) = error(Harness::new().run(|| CsvLeads::search(query(10))));
    assert_eq!(kind, ErrorKind::Misconfigured);
    assert!(message.starts_with("no CSV file is uploaded"), "{message}");
    let mut chosen = one_file.setting("files", "other.csv");
    let (_, message) = error(chosen.run(|| CsvLeads::search(query(10))));
    assert_eq!(
        message,
        "setting \"files\" names \"other.csv\", which is not uploaded"
    );

    // Invalid UTF-8 in a record: the error names the file and the line.
    let broken = b"email,name\nada@example.com,Ada\nbad@example.com,\xff\xfe\n";
    let mut broken = Harness::new()
        .kv("files", br#"[{"name": "bad.csv", "chunks": 1}]"#)
        .kv("file/bad.csv/00000", broken);
    let (kind, message) = error(broken.run(|| CsvLeads::search(query(10))));
    assert_eq!(kind, ErrorKind::InvalidInput);
    assert!(
        message.starts_with("bad.csv is not readable CSV near line 3"),
        "{message}"
    );
}

#[test]
fn enrich_finds_the_row_by_email_or_linkedin_and_fills_gaps() {
    let text = "email,linkedin,phone,title\nada@analytical.example,https://www.linkedin.com/in/ada/,+44 20 7946 0000,CTO\n";
    let mut harness = harness(&[("leads.csv", text)], 1024);
    let mut lead = Lead {
        first_name: Some("Ada".into()),
        last_name: None,
        email: Some("ADA@analytical.example".into()),
        title: Some("Countess".into()),
        company: None,
        domain: None,
        linkedin_url: None,
        phone: None,
        location: None,
        time_zone: None,
        custom_fields: Vec::new(),
    };
    let enriched = harness.run(|| CsvLeads::enrich(lead.clone())).unwrap();
    assert_eq!(enriched.units, 1);
    let found = enriched.lead.unwrap();
    // What the caller knew wins; what it lacked comes from the file.
    assert_eq!(found.title.as_deref(), Some("Countess"));
    assert_eq!(found.phone.as_deref(), Some("+44 20 7946 0000"));

    lead.email = None;
    lead.linkedin_url = Some("http://linkedin.com/in/ada".into());
    let enriched = harness.run(|| CsvLeads::enrich(lead.clone())).unwrap();
    assert_eq!(
        enriched.lead.unwrap().email.as_deref(),
        Some("ada@analytical.example")
    );

    lead.linkedin_url = Some("https://linkedin.com/in/someone-else".into());
    let enriched = harness.run(|| CsvLeads::enrich(lead.clone())).unwrap();
    assert_eq!((enriched.lead, enriched.units), (None, 0));

    lead.linkedin_url = None;
    let (kind, _) = error(harness.run(|| CsvLeads::enrich(lead)));
    assert_eq!(kind, ErrorKind::InvalidInput);
}
