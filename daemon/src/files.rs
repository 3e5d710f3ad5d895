//! The text a configuration is parsed from: the config file, then every
//! `*.toml` file of the directory beside it named after it with `.d`
//! (`agent.toml` → `agent.d/`), in name order, each with `${VAR}` and
//! `${VAR:-default}` replaced from the environment.
//!
//! The extra files are merged into the main one: tables key by key, arrays
//! (`[[sources]]`) appended; a plain value set in two files is a problem.
//! A variable is replaced according to where it stands: inside a basic
//! string it is escaped as one, inside a literal string it must not need
//! escaping, outside strings it goes in as it is (`port = ${PORT}`), and in
//! comments it is left alone. `$${` is a literal `${`.

use std::path::{Path, PathBuf};

/// The configuration's text (one document), or every problem found.
pub fn read(path: &Path, get: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read the file: {e}")])?;
    let main = interpolate(&text, get)?;
    let extra = extra_files(path)?;
    if extra.is_empty() {
        // One file: parsed as written, so errors keep its line numbers.
        return Ok(main);
    }
    let mut problems = Vec::new();
    let mut merged = parse_table(&main, path, &mut problems);
    for file in &extra {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}: cannot read the file: {e}", file.display()));
                continue;
            }
        };
        match interpolate(&text, get) {
            Ok(text) => {
                let table = parse_table(&text, file, &mut problems);
                merge(&mut merged, table, "", file, &mut problems);
            }
            Err(p) => problems.extend(p.into_iter().map(|p| format!("{}: {p}", file.display()))),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    toml::to_string(&merged).map_err(|e| vec![e.to_string()])
}

/// What the config set's files look like on disk (path, modification time
/// and length of each), to notice a change.
pub fn stamp(path: &Path) -> Vec<(PathBuf, Option<std::time::SystemTime>, u64)> {
    let mut files = vec![path.to_path_buf()];
    files.extend(extra_files(path).unwrap_or_default());
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (p, modified, len)
        })
        .collect()
}

/// `<stem>.d/*.toml` beside `path`, in name order; none when there is no
/// such directory.
fn extra_files(path: &Path) -> Result<Vec<PathBuf>, Vec<String>> {
    let dir = path.with_extension("d");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(vec![format!("{}: {e}", dir.display())]),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn parse_table(text: &str, file: &Path, problems: &mut Vec<String>) -> toml::Table {
    text.parse::<toml::Table>().unwrap_or_else(|e| {
        problems.push(format!("{}: {e}", file.display()));
        toml::Table::new()
    })
}

fn merge(
    into: &mut toml::Table,
    from: toml::Table,
    at: &str,
    file: &Path,
    problems: &mut Vec<String>,
) {
    for (key, value) in from {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match (into.get_mut(&key), value) {
            (None, value) => {
                into.insert(key, value);
            }
            (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => {
                merge(mine, theirs, &path, file, problems);
            }
            (Some(toml::Value::Array(mine)), toml::Value::Array(theirs)) => mine.extend(theirs),
            (Some(_), _) => problems.push(format!(
                "{path}: set again in {} (only tables merge and arrays add up)",
                file.display()
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Code,
    Comment,
    Basic,
    Literal,
    MultiBasic,
    MultiLiteral,
}

/// `${VAR}` and `${VAR:-default}` (the default also when VAR is empty)
/// replaced in TOML text; see the module's account of where.
pub fn interpolate(
    text: &str,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut state = In::Code;
    let mut rest = text;
    let line = |rest: &str| text[..text.len() - rest.len()].matches('\n').count() + 1;
    while let Some(c) = rest.chars().next() {
        if state != In::Comment && rest.starts_with("$${") {
            out.push_str("${");
            rest = &rest[3..];
            continue;
        }
        if state != In::Comment && rest.starts_with("${") {
            let this_line = &rest[..rest.find('\n').unwrap_or(rest.len())];
            let Some(end) = this_line.find('}') else {
                problems.push(format!("line {}: `${{` without its `}}`", line(rest)));
                break;
            };
            let expr = &rest[2..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let value = get(name)
                .filter(|v| !v.is_empty() || default.is_none())
                .or_else(|| default.map(str::to_owned));
            match (valid, value) {
                (false, _) => problems.push(format!(
                    "line {}: `${{{expr}}}`: not a variable name",
                    line(rest)
                )),
                (true, None) => problems.push(format!(
                    "line {}: ${{{name}}} is not set and has no default (`${{{name}:-default}}`)",
                    line(rest)
                )),
                (true, Some(v)) => match escape(&v, state) {
                    Some(v) => out.push_str(&v),
                    None => problems.push(format!(
                        "line {}: the value of ${{{name}}} cannot go into a literal ('…') string; use a basic (\"…\") one",
                        line(rest)
                    )),
                },
            }
            rest = &rest[end + 1..];
            continue;
        }
        let starts = |s: &str| rest.starts_with(s);
        let (next, taken) = match state {
            In::Code if starts("\"\"\"") => (In::MultiBasic, 3),
            In::Code if starts("'''") => (In::MultiLiteral, 3),
            In::Code if c == '"' => (In::Basic, 1),
            In::Code if c == '\'' => (In::Literal, 1),
            In::Code if c == '#' => (In::Comment, 1),
            In::Comment if c == '\n' => (In::Code, 1),
            // An escape is copied whole, so `\"` ends nothing.
            In::Basic | In::MultiBasic if c == '\\' => (
                state,
                1 + rest[1..].chars().next().map_or(0, char::len_utf8),
            ),
            In::Basic if c == '"' || c == '\n' => (In::Code, 1),
            In::MultiBasic if starts("\"\"\"") => (In::Code, 3),
            In::Literal if c == '\'' || c == '\n' => (In::Code, 1),
            In::MultiLiteral if starts("'''") => (In::Code, 3),
            _ => (state, c.len_utf8()),
        };
        out.push_str(&rest[..taken]);
        rest = &rest[taken..];
        state = next;
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// `value` as it must be written where `state` says; `None` when it cannot.
fn escape(value: &str, state: In) -> Option<String> {
    match state {
        In::Code | In::Comment => Some(value.to_owned()),
        In::Basic | In::MultiBasic => {
            let mut out = String::with_capacity(value.len());
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                    c => out.push(c),
                }
            }
            Some(out)
        }
        In::Literal => (!value.contains(['\'', '\n'])).then(|| value.to_owned()),
        In::MultiLiteral => (!value.contains("'''")).then(|| value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "PORT" => Some("4320".into()),
            "TOKEN" => Some("a\"b\\c".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("it's".into()),
            _ => None,
        }
    }

    #[test]
    fn variables_are_replaced_where_they_stand() {
        let text = "port = ${PORT}\ntoken = \"x${TOKEN}\"\nlit = '${PORT}'\n\
                    dflt = \"${MISSING:-none}\"\nempty = \"${EMPTY:-d}\"\n\
                    # ${MISSING} in a comment\nkept = \"$${PORT}\"\nq = \"\\\"${PORT}\"\n";
        let out = interpolate(text, &env).expect("all set");
        let t: toml::Table = out.parse().expect("still TOML");
        assert_eq!(t["port"].as_integer(), Some(4320));
        assert_eq!(
            t["token"].as_str(),
            Some("xa\"b\\c"),
            "escaped in a basic string"
        );
        assert_eq!(t["lit"].as_str(), Some("4320"));
        assert_eq!(t["dflt"].as_str(), Some("none"));
        assert_eq!(t["empty"].as_str(), Some("d"));
        assert_eq!(t["kept"].as_str(), Some("${PORT}"));
        assert_eq!(t["q"].as_str(), Some("\"4320"));
    }

    #[test]
    fn every_unset_variable_is_a_problem_with_its_line() {
        let err = interpolate(
            "a = \"${NOPE}\"\nb = '${QUOTE}'\nc = ${1X}\nd = \"${OPEN",
            &env,
        )
        .expect_err("problems");
        assert_eq!(err.len(), 4, "{err:?}");
        assert!(err[0].starts_with("line 1: ${NOPE} is not set"), "{err:?}");
        assert!(
            err[1].starts_with("line 2:") && err[1].contains("literal"),
            "{err:?}"
        );
        assert!(
            err[2].starts_with("line 3:") && err[2].contains("not a variable"),
            "{err:?}"
        );
        assert!(err[3].starts_with("line 4:"), "{err:?}");
    }

    #[test]
    fn extra_files_merge_tables_and_add_up_arrays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("agent.toml");
        std::fs::write(
            &main,
            "data_dir = \"/x\"\n[forward]\nendpoints = [\"a\"]\n[[sources]]\nname = \"one\"\n",
        )
        .expect("write");
        std::fs::create_dir(dir.path().join("agent.d")).expect("dir");
        std::fs::write(
            dir.path().join("agent.d/20-b.toml"),
            "[[sources]]\nname = \"three\"\n",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("agent.d/10-a.toml"),
            "[forward]\nbatch_timeout_ms = ${PORT}\n[[sources]]\nname = \"two\"\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("agent.d/notes.txt"), "not toml").expect("write");
        let t: toml::Table = read(&main, &env).expect("merged").parse().expect("TOML");
        let names: Vec<&str> = t["sources"]
            .as_array()
            .expect("array")
            .iter()
            .map(|s| s["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["one", "two", "three"]);
        assert_eq!(t["forward"]["batch_timeout_ms"].as_integer(), Some(4320));
        assert_eq!(t["data_dir"].as_str(), Some("/x"));
        let before = stamp(&main);
        assert_eq!(before.len(), 3);
        std::fs::write(dir.path().join("agent.d/30-c.toml"), "data_dir = \"/y\"\n").expect("write");
        assert_ne!(stamp(&main), before, "a new file is a change");
        let err = read(&main, &env).expect_err("set twice");
        assert!(
            err[0].starts_with("data_dir: set again in") && err[0].contains("30-c.toml"),
            "{err:?}"
        );
    }
}
