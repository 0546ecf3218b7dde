//! Maps YAML field paths (`routes[2].targets[0]`) to the line they are written on,
//! so that every config problem can point at its line.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Field path → 1-based line number, built from one pass over the YAML events.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text`. Syntax errors are reported by serde_yaml, so here they just end the index early.
    pub fn build(text: &str) -> LineIndex {
        let mut builder = Builder::default();
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        LineIndex {
            lines: builder.lines,
        }
    }

    /// The line of `path`, or of its closest indexed ancestor.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// Called for every node in value position; returns that node's path.
    fn enter_value(&mut self, line: usize) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => key.take().map(|k| child(path, &k)),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                self.lines.insert(p.clone(), line);
                Some(p)
            }
        }
    }

    /// True when the next scalar in the current mapping is a key.
    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(text, ..) if self.expecting_key() => {
                if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                    self.lines.insert(child(path, &text), line);
                    *key = Some(text);
                }
            }
            Event::Scalar(..) | Event::Alias(_) => {
                self.enter_value(line);
            }
            Event::MappingStart(..) => {
                let path = self.enter_value(line).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.enter_value(line).unwrap_or_default();
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "listen: x\nupstreams:\n  openai:\n    url: u\nroutes:\n  - name: a\n    targets: [openai]\n  - name: b\n    targets:\n      - upstream: opnai\n";

    #[test]
    fn finds_lines_of_nested_fields() {
        let idx = LineIndex::build(YAML);
        assert_eq!(idx.line_of("listen"), Some(1));
        assert_eq!(idx.line_of("upstreams.openai.url"), Some(4));
        assert_eq!(idx.line_of("routes[1]"), Some(8));
        assert_eq!(idx.line_of("routes[1].targets[0].upstream"), Some(10));
        assert_eq!(idx.line_of("routes[0].targets[0]"), Some(7));
        // falls back to the closest ancestor
        assert_eq!(idx.line_of("routes[1].cache.ttl"), Some(8));
    }
}
