//! A complete row kept as compact JSON text.
//!
//! A [`Row`] is an ordered map of JSON values: a few hundred bytes of pointers and
//! allocations per field. Where many rows are held at once only to be written somewhere
//! (a declarative import of 100,000 consumers, say), the text is a tenth of that.

use crate::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowText(Box<str>);

impl RowText {
    pub fn new(row: &Row) -> RowText {
        // A map with string keys always serialises.
        RowText(
            serde_json::to_string(row)
                .unwrap_or_default()
                .into_boxed_str(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The row again. The text was written by [`RowText::new`], so it parses back to
    /// the same map; the empty row stands for the impossible failure.
    pub fn to_row(&self) -> Row {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl From<&Row> for RowText {
    fn from(row: &Row) -> RowText {
        RowText::new(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_keeping_field_order() {
        let v = json!({"z": 1, "a": [1.5, null, {"k": "v"}], "m": "é\"", "n": u64::MAX});
        let row = v.as_object().unwrap().clone();
        let t = RowText::new(&row);
        let back = t.to_row();
        assert_eq!(back, row);
        assert_eq!(back.keys().collect::<Vec<_>>(), ["z", "a", "m", "n"]);
    }
}
