//! Any report table as CSV: a header row and then one row per record,
//! every value as text, quoted as RFC 4180 says (the `csv` crate).

/// A table: its column names and rows, each as long as the header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.columns.len(), "a row as wide as the header");
        self.rows.push(row);
    }

    /// The table from a JSON array of objects, one column per key of
    /// `columns`; a missing or null value is an empty cell, a nested one
    /// is written as JSON.
    pub fn from_json(columns: &[&'static str], records: &[serde_json::Value]) -> Table {
        let mut table = Table::new(columns);
        for record in records {
            table.push(
                columns
                    .iter()
                    .map(|column| match record.get(column) {
                        None | Some(serde_json::Value::Null) => String::new(),
                        Some(serde_json::Value::String(text)) => text.clone(),
                        Some(other) => other.to_string(),
                    })
                    .collect(),
            );
        }
        table
    }

    pub fn to_csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer
            .write_record(&self.columns)
            .and_then(|()| {
                self.rows
                    .iter()
                    .try_for_each(|row| writer.write_record(row))
            })
            .expect("writing to memory does not fail");
        String::from_utf8(writer.into_inner().expect("in memory")).expect("UTF-8 in, UTF-8 out")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_commas_quotes_and_newlines_are_quoted() {
        let records = [
            serde_json::json!({"name": "Acme, Inc.", "note": "said \"hi\"\nthen left", "n": 3}),
            serde_json::json!({"name": "Globex", "n": null}),
        ];
        let table = Table::from_json(&["name", "note", "n"], &records);
        assert_eq!(
            table.to_csv(),
            "name,note,n\n\"Acme, Inc.\",\"said \"\"hi\"\"\nthen left\",3\nGlobex,,\n"
        );
    }
}
