//! A plain-text table: a label column, then one right-aligned column per scenario, with
//! section titles between groups of rows.

use std::fmt::Write as _;

/// A plain-text table with a label column and one column per scenario.
pub struct Table {
    headers: Vec<String>,
    lines: Vec<Line>,
}

enum Line {
    Section(String),
    Row(String, Vec<String>),
}

impl Table {
    pub fn new(headers: impl Iterator<Item = String>) -> Self {
        Self {
            headers: headers.collect(),
            lines: Vec::new(),
        }
    }

    pub fn section(&mut self, title: &str) {
        self.lines.push(Line::Section(title.to_owned()));
    }

    pub fn row(&mut self, label: &str, cells: Vec<String>) {
        self.lines.push(Line::Row(format!("  {label}"), cells));
    }

    pub fn render(&self) -> String {
        let label_width = self
            .lines
            .iter()
            .filter_map(|line| match line {
                Line::Row(label, _) => Some(label.chars().count()),
                Line::Section(_) => None,
            })
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = self
            .headers
            .iter()
            .enumerate()
            .map(|(index, header)| {
                self.lines
                    .iter()
                    .filter_map(|line| match line {
                        Line::Row(_, cells) => cells.get(index).map(|c| c.chars().count()),
                        Line::Section(_) => None,
                    })
                    .chain([header.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();

        let mut out = String::new();
        let mut line = format!("{:label_width$}", "");
        for (header, width) in self.headers.iter().zip(&widths) {
            let _ = write!(line, "  {header:>width$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
        for entry in &self.lines {
            match entry {
                Line::Section(title) => {
                    let _ = writeln!(out, "{title}");
                }
                Line::Row(label, cells) => {
                    let mut line = format!("{label:label_width$}");
                    for (cell, width) in cells.iter().zip(&widths) {
                        let _ = write!(line, "  {cell:>width$}");
                    }
                    out.push_str(line.trim_end());
                    out.push('\n');
                }
            }
        }
        out
    }
}
