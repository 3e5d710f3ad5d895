//! `logferry-collector patterns` and `classify`: what the collector makes
//! of messages and HTTP requests at ingest, run offline over a file, so
//! that operators can check it on their own logs before shipping them. Both
//! call exactly the code that ingest calls, with no settings.

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};

use anyhow::Context;
use clap::{Arg, ArgMatches, Command};
use logferry_analysis::{patterns, security};
use logferry_daemon::Offline;
use serde::Deserialize;

/// A reader that stopped reading (`| head`) ends the output, not the tool
/// with an error.
fn quiet_on_closed_pipe(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

pub fn commands() -> Vec<Offline> {
    let file = || {
        Arg::new("file")
            .value_name("FILE")
            .help("Input file; standard input when absent")
    };
    vec![
        Offline {
            command: Command::new("patterns")
                .about("Write `<pattern id>\\t<template>` for each message line of the input, in order")
                .arg(file()),
                        run: |args| quiet_on_closed_pipe(run_patterns(args)),
        },
        Offline {
            command: Command::new("classify")
                .about("Write {\"class\",\"rules\"} for each HTTP request (JSON line: method, path, query, user_agent, body, content_type)")
                .arg(file()),
                        run: |args| quiet_on_closed_pipe(run_classify(args)),
        },
    ]
}

fn input(args: &ArgMatches) -> anyhow::Result<Box<dyn BufRead>> {
    Ok(match args.get_one::<String>("file") {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    })
}

/// Every line's template, then the grouping of all templates seen: the
/// group ids of the whole input, as the analytics API groups a window.
fn run_patterns(args: &ArgMatches) -> anyhow::Result<()> {
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut templates: Vec<String> = Vec::new();
    let mut lines: Vec<u32> = Vec::new();
    for (n, line) in input(args)?.lines().enumerate() {
        let line = line.with_context(|| format!("line {}: cannot read", n + 1))?;
        let text = patterns::template(&line).text;
        let next = templates.len() as u32;
        let i = *index.entry(text).or_insert_with_key(|t| {
            templates.push(t.clone());
            next
        });
        lines.push(i);
    }
    let mut grouper = patterns::Grouper::new();
    for t in &templates {
        grouper.add(t);
    }
    let groups = grouper.groups();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for i in lines {
        let group = &groups[&templates[i as usize]];
        writeln!(out, "{:016x}\t{}", group.id, group.template)?;
    }
    out.flush()?;
    Ok(())
}

#[derive(Deserialize)]
struct RequestLine {
    #[serde(default)]
    method: String,
    path: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
}

fn run_classify(args: &ArgMatches) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (n, line) in input(args)?.lines().enumerate() {
        let line = line.with_context(|| format!("line {}: cannot read", n + 1))?;
        let r: RequestLine = serde_json::from_str(&line).with_context(|| {
            format!(
                "line {}: not a request (a JSON object with at least `path`)",
                n + 1
            )
        })?;
        let verdict = security::classify(&security::Request {
            method: &r.method,
            path: &r.path,
            query: &r.query,
            user_agent: Some(&r.user_agent),
            body: r.body.as_deref().unwrap_or(""),
            content_type: r.content_type.as_deref().unwrap_or(""),
        });
        serde_json::to_writer(&mut out, &verdict).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
