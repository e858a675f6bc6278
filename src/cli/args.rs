//! Flags of the CLI's subcommands, in Consul's spellings: `-flag value`, `-flag=value`, and the
//! same with two dashes. Each command declares its flags; anything else is an error naming it.

use std::collections::BTreeMap;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Value,
}

/// Parsed arguments of one command.
#[derive(Debug, Default)]
pub struct Args {
    values: BTreeMap<String, String>,
    bools: Vec<String>,
    pub positional: Vec<String>,
}

impl Args {
    /// Parse `raw` against the `known` flags (`-http-addr` is known to every command).
    pub fn parse(raw: &[String], known: &[(&str, Kind)]) -> Result<Args, String> {
        let kind_of =
            |name: &str| known.iter().chain(&[("http-addr", Kind::Value)]).find(|(n, _)| *n == name).map(|(_, k)| *k);
        let mut args = Args::default();
        let mut rest = raw.iter();
        while let Some(arg) = rest.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')).filter(|f| !f.is_empty()) else {
                args.positional.push(arg.clone());
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            match kind_of(name) {
                None => return Err(format!("unknown flag -{name}")),
                Some(Kind::Bool) => {
                    if inline.as_deref().is_some_and(|v| v != "true") {
                        continue;
                    }
                    args.bools.push(name.to_string());
                }
                Some(Kind::Value) => {
                    let value = match inline {
                        Some(value) => value,
                        None => rest.next().cloned().ok_or(format!("flag -{name} needs a value"))?,
                    };
                    args.values.insert(name.to_string(), value);
                }
            }
        }
        Ok(args)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn flag(&self, name: &str) -> bool {
        self.bools.iter().any(|b| b == name)
    }
}

/// Columns separated by two spaces, each as wide as its widest cell (Consul's `columnize`).
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| if c + 1 == row.len() { cell.clone() } else { format!("{cell:<w$}", w = widths[c]) })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    /// Single and double dashes, inline and separate values, booleans, positionals.
    #[test]
    fn consul_spellings_parse() {
        let known = [("prune", Kind::Bool), ("id", Kind::Value)];
        let args = Args::parse(&strings(&["-prune", "--id=abc", "-http-addr", "h:1", "node1"]), &known).unwrap();
        assert!(args.flag("prune"));
        assert_eq!(args.value("id"), Some("abc"));
        assert_eq!(args.value("http-addr"), Some("h:1"));
        assert_eq!(args.positional, ["node1"]);
    }

    /// An unknown flag or a missing value is named in the error.
    #[test]
    fn errors_name_the_flag() {
        assert!(Args::parse(&strings(&["-bogus"]), &[]).unwrap_err().contains("-bogus"));
        assert!(Args::parse(&strings(&["-http-addr"]), &[]).unwrap_err().contains("-http-addr"));
    }

    /// Columns line up on the widest cell.
    #[test]
    fn tables_align() {
        let rows = vec![vec!["Node".to_string(), "Status".into()], vec!["a-long-name".into(), "alive".into()]];
        assert_eq!(table(&rows), "Node         Status\na-long-name  alive\n");
    }
}
