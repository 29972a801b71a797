//! Source positions of the nodes of a YAML document, by path (`services[0].clusters[1]`).
//!
//! serde gives positions only for its own errors; the checks made after deserializing
//! (unknown cluster, cycle, empty image) look their node up here to report `line:column`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Default)]
pub(crate) struct PositionIndex {
    by_path: HashMap<String, Pos>,
}

impl PositionIndex {
    /// Indexes `text`; a document that does not scan gives an empty index (serde reports
    /// the syntax error with its own position before any lookup happens).
    pub(crate) fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Self::default();
        }
        Self {
            by_path: builder.by_path,
        }
    }

    /// The position of `path`, or of its nearest indexed ancestor.
    pub(crate) fn get(&self, path: &str) -> Pos {
        let mut path = path;
        loop {
            if let Some(pos) = self.by_path.get(path) {
                return *pos;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                None => return Pos { line: 1, column: 1 },
            }
        }
    }
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next; None while a key is expected.
        key: Option<String>,
        /// No key seen yet: the scanner marks a block mapping at its first `:`, so the
        /// first key's position replaces it.
        fresh: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    by_path: HashMap<String, Pos>,
}

impl Builder {
    /// The path of the node starting now, or None when the node is a mapping key.
    fn node_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key, .. }) => key.take().map(|k| {
                if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                }
            }),
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        // Marker columns count from 0 in practice; report them from 1 like serde_yaml.
        self.by_path.entry(path.to_string()).or_insert(Pos {
            line: mark.line(),
            column: mark.col() + 1,
        });
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => match self.node_path() {
                Some(path) => self.record(&path, mark),
                None => {
                    let mut first = None;
                    if let Some(Frame::Map { key, fresh, path }) = self.stack.last_mut() {
                        *key = Some(value);
                        if std::mem::take(fresh) {
                            first = Some(path.clone());
                        }
                    }
                    if let Some(path) = first {
                        self.by_path.insert(
                            path,
                            Pos {
                                line: mark.line(),
                                column: mark.col() + 1,
                            },
                        );
                    }
                }
            },
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                // A collection used as a mapping key is not addressable; index it under "?".
                let path = self.node_path().unwrap_or_else(|| "?".to_string());
                self.record(&path, mark);
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq { path, next: 0 }
                } else {
                    Frame::Map {
                        path,
                        key: None,
                        fresh: true,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                if let Some(path) = self.node_path() {
                    self.record(&path, mark);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_point_at_values() {
        let text = "a:\n  b: [x, y]\nlist:\n  - name: one\n    items:\n      - z\n";
        let idx = PositionIndex::build(text);
        assert_eq!(
            idx.get("a.b[1]"),
            Pos {
                line: 2,
                column: 10
            }
        );
        assert_eq!(
            idx.get("list[0].name"),
            Pos {
                line: 4,
                column: 11
            }
        );
        assert_eq!(idx.get("list[0].items[0]"), Pos { line: 6, column: 9 });
        // Unknown leaf falls back to its parent.
        assert_eq!(idx.get("list[0].nope"), Pos { line: 4, column: 5 });
    }
}
