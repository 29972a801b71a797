//! Pagination and tag filters shared by every backend.

use base64::Engine;
use tollgate_model::{Error, Result, Row};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagFilter {
    /// `tags=a,b`: every tag.
    All(Vec<String>),
    /// `tags=a/b`: any tag.
    Any(Vec<String>),
}

impl TagFilter {
    pub fn tags(&self) -> &[String] {
        match self {
            TagFilter::All(t) | TagFilter::Any(t) => t,
        }
    }

    pub fn matches(&self, row: &Row) -> bool {
        let has = |t: &String| {
            row.get("tags")
                .and_then(|v| v.as_array())
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(t)))
        };
        match self {
            TagFilter::All(t) => t.iter().all(has),
            TagFilter::Any(t) => t.iter().any(has),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct PageQuery {
    pub size: usize,
    /// Opaque token from a previous page.
    pub offset: Option<String>,
    /// Only rows whose foreign key `field` points to this id (nested listings).
    pub foreign: Option<(&'static str, String)>,
    pub tags: Option<TagFilter>,
}

#[derive(Clone, Debug, Default)]
pub struct Page {
    pub rows: Vec<Row>,
    /// Token for the next page; `None` on the last one.
    pub next_offset: Option<String>,
}

/// Offsets are the last id of the page, base64 encoded: opaque to clients, stable under
/// concurrent inserts, and the same for every backend that orders by id.
pub fn encode_offset(last_id: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("[\"{last_id}\"]"))
}

pub fn decode_offset(token: &str) -> Result<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| Error::invalid_offset(token, "bad base64 encoding"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| Error::invalid_offset(token, "bad json encoding"))?;
    let v: Vec<String> = serde_json::from_str(&text)
        .map_err(|_| Error::invalid_offset(token, "bad json encoding"))?;
    match v.as_slice() {
        [id] if tollgate_model::schema::is_uuid(id) => Ok(id.clone()),
        _ => Err(Error::invalid_offset(token, "bad json encoding")),
    }
}

/// Offsets of `/tags` pages: the last (entity, id, tag) triple.
pub fn encode_tag_offset(last: &(String, String, String)) -> String {
    let v = serde_json::json!([last.0, last.1, last.2]);
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

pub fn decode_tag_offset(token: &str) -> Result<(String, String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| Error::invalid_offset(token, "bad base64 encoding"))?;
    let v: (String, String, String) = serde_json::from_slice(&bytes)
        .map_err(|_| Error::invalid_offset(token, "bad json encoding"))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_reject_garbage() {
        let id = "6f4fc1ee-d6a6-4a1b-9c52-1b0d1b7c9f2a";
        assert_eq!(decode_offset(&encode_offset(id)).unwrap(), id);
        let e = decode_offset("!!!").unwrap_err();
        assert_eq!(
            e.message(),
            "'!!!' is not a valid offset: bad base64 encoding"
        );
        assert_eq!(e.to_json()["code"], 7);
    }
}
