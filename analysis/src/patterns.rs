//! Message templates and their grouping.
//!
//! Two stages, so that the id stamped on a record never changes:
//!
//! 1. [`template`] masks what is evidently a value, from the message alone:
//!    anything with a digit (numbers, ids, hashes, IPs, timestamps),
//!    `true`/`false`/`null`, paths, quoted strings, `key=value` values,
//!    `host:port`, a unit after a number (`12 ms`, `4 KB`) and a bracketed
//!    restatement of a number (`18846 bytes (18.4 KB)`). Runs of values
//!    become one wildcard. The template's 64-bit FNV-1a hash is the
//!    record's pattern id: the same on every collector, in every release
//!    that keeps this masking.
//! 2. [`Grouper`] learns what the first stage cannot see, such as the user
//!    name in `Failed password for root from <*>`: templates of the same
//!    length that agree everywhere but one position (never the first) fall
//!    into one group once [`VARIANTS`] of them differ there. The result
//!    depends only on the set of templates, not their order, so the groups
//!    of a window are the same whichever collector computes them.

use std::collections::HashMap;

/// The wildcard that stands for a value.
pub const WILDCARD: &str = "<*>";

/// Distinct templates that must vary at one position before it is
/// treated as a value.
pub const VARIANTS: usize = 3;

/// Templates with fewer constant tokens are never merged: too little is
/// left to tell two events apart.
const MIN_CONSTANTS: usize = 3;

/// A message's template and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub id: u64,
    pub text: String,
}

/// The template of one message (stage 1).
pub fn template(message: &str) -> Template {
    let text = mask(message);
    Template {
        id: fnv1a(text.as_bytes()),
        text,
    }
}

/// The pattern id of a template's text.
pub fn id_of(text: &str) -> u64 {
    fnv1a(text.as_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn mask(message: &str) -> String {
    let cleaned = strip_values(message.trim());
    let mut out = String::with_capacity(cleaned.len());
    let mut last_was_value = false;
    for token in cleaned.split_whitespace() {
        if last_was_value {
            let (core, tail) = split_trailing(token);
            if is_unit(core) {
                // `12 ms,` → the unit joins the value; its punctuation stays.
                out.push_str(tail);
                last_was_value = tail.is_empty();
                continue;
            }
        }
        let masked = mask_token(token);
        let is_value = masked == WILDCARD;
        if is_value && last_was_value && out.ends_with(WILDCARD) {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&masked);
        last_was_value = is_value;
    }
    out
}

/// Replaces quoted strings with the wildcard and drops bracketed
/// restatements of numbers, such as `(18.4 KB)`.
fn strip_values(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let starts_token = i == 0
            || matches!(
                bytes[i - 1],
                b' ' | b'\t' | b'=' | b':' | b'(' | b'[' | b','
            );
        if (c == b'"' || c == b'\'') && starts_token {
            if let Some(len) = s[i + 1..].find(c as char) {
                let end = i + 1 + len;
                let ends_token = end + 1 == bytes.len()
                    || matches!(
                        bytes[end + 1],
                        b' ' | b'\t' | b',' | b';' | b')' | b']' | b'}' | b'.' | b':'
                    );
                if ends_token {
                    out.push_str(&s[copied..i]);
                    out.push_str(WILDCARD);
                    i = end + 1;
                    copied = i;
                    continue;
                }
            }
        }
        if c == b'(' {
            if let Some(len) = number_restatement(&s[i + 1..]) {
                out.push_str(&s[copied..i]);
                out.push(' ');
                i += 1 + len;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&s[copied..]);
    out
}

/// The length up to and including `)` of `12.5 KB)`-like text: an
/// optional sign, a number, an optional short unit.
fn number_restatement(s: &str) -> Option<usize> {
    let close = s.find(')')?;
    let inner = s[..close].trim();
    let inner = inner.trim_start_matches(['-', '+', '<', '>', '~']);
    let digits = inner.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == ',');
    if digits.len() == inner.len() {
        return None;
    }
    let unit = digits.trim();
    (unit.len() <= 5 && unit.chars().all(|c| c.is_ascii_alphabetic() || c == '%'))
        .then_some(close + 1)
}

const LEADING: &[char] = &['(', '[', '{', '<'];
const TRAILING: &[char] = &['.', ',', ';', ':', ')', ']', '}', '>'];

fn split_trailing(token: &str) -> (&str, &str) {
    let core = token.trim_end_matches(TRAILING);
    (core, &token[core.len()..])
}

fn is_unit(s: &str) -> bool {
    matches!(
        s,
        "%" | "B"
            | "KB"
            | "MB"
            | "GB"
            | "TB"
            | "KiB"
            | "MiB"
            | "GiB"
            | "TiB"
            | "b"
            | "kb"
            | "mb"
            | "gb"
            | "ms"
            | "us"
            | "µs"
            | "ns"
            | "s"
            | "sec"
            | "secs"
            | "seconds"
            | "bytes"
    )
}

fn mask_token(token: &str) -> String {
    let mut pre = token.len() - token.trim_start_matches(LEADING).len();
    let (core, post) = split_trailing(&token[pre..]);
    if core.is_empty() {
        return token.to_string();
    }
    // `<1` is a number with a comparison, not a bracket.
    if pre > 0 && token.as_bytes()[pre - 1] == b'<' && core.as_bytes()[0].is_ascii_digit() {
        pre -= 1;
    }
    let lead = &token[..pre];
    if is_host_port(core) {
        return format!("{lead}{WILDCARD}{post}");
    }
    if let Some((key, op, value)) = key_value(core) {
        return if op == '=' || is_value(value) {
            format!("{lead}{key}{op}{WILDCARD}{post}")
        } else {
            token.to_string()
        };
    }
    if core == WILDCARD || is_value(core) {
        return format!("{lead}{WILDCARD}{post}");
    }
    token.to_string()
}

fn is_value(t: &str) -> bool {
    if t.is_empty() {
        return false;
    }
    if t.bytes().any(|b| b.is_ascii_digit()) {
        return true;
    }
    if t.eq_ignore_ascii_case("true")
        || t.eq_ignore_ascii_case("false")
        || t.eq_ignore_ascii_case("null")
        || t.eq_ignore_ascii_case("none")
        || t.eq_ignore_ascii_case("nil")
    {
        return true;
    }
    t.len() > 1 && t.contains('/')
}

/// `name.example:8080`: a host name with a dot, then a numeric port.
fn is_host_port(t: &str) -> bool {
    let Some((host, port)) = t.rsplit_once(':') else {
        return false;
    };
    !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && host.contains('.')
        && host.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `key=value` or `key:value`, with an identifier-like key.
fn key_value(t: &str) -> Option<(&str, char, &str)> {
    let at = t.find(['=', ':'])?;
    let (key, rest) = t.split_at(at);
    let value = &rest[1..];
    let mut chars = key.chars();
    let first = chars.next()?;
    let key_ok = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    (key_ok && !value.is_empty()).then(|| (key, rest.as_bytes()[0] as char, value))
}

/// A group of templates: its id and its merged template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: u64,
    pub template: String,
}

/// Groups templates that differ only at one varying position (stage 2).
#[derive(Debug, Default)]
pub struct Grouper {
    /// Template text → its index in `parent`.
    index: HashMap<String, usize>,
    texts: Vec<String>,
    parent: Vec<usize>,
    /// (position, template with that position wildcarded) → members.
    signatures: HashMap<(usize, String), Vec<usize>>,
}

impl Grouper {
    pub fn new() -> Grouper {
        Grouper::default()
    }

    /// Adds a template (as [`template`] made it); adding it again is a
    /// no-op.
    pub fn add(&mut self, text: &str) {
        if self.index.contains_key(text) {
            return;
        }
        let me = self.texts.len();
        self.index.insert(text.to_string(), me);
        self.texts.push(text.to_string());
        self.parent.push(me);
        let tokens: Vec<&str> = text.split(' ').collect();
        if tokens.iter().filter(|t| **t != WILDCARD).count() < MIN_CONSTANTS {
            return;
        }
        for position in 1..tokens.len() {
            let mut signature = tokens.clone();
            signature[position] = WILDCARD;
            let members = self
                .signatures
                .entry((position, signature.join(" ")))
                .or_default();
            members.push(me);
            if members.len() >= VARIANTS {
                let members = members.clone();
                for m in members {
                    self.union(me, m);
                }
            }
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            // The lower index is the root; which one it is does not
            // matter, as a group's id comes from its merged template.
            let (root, child) = if a < b { (a, b) } else { (b, a) };
            self.parent[child] = root;
        }
    }

    /// Every added template's group, keyed by template text.
    pub fn groups(&mut self) -> HashMap<String, Group> {
        let mut merged: HashMap<usize, Vec<String>> = HashMap::new();
        for i in 0..self.texts.len() {
            let root = self.find(i);
            let tokens: Vec<String> = self.texts[i].split(' ').map(str::to_string).collect();
            match merged.get_mut(&root) {
                None => {
                    merged.insert(root, tokens);
                }
                Some(acc) => {
                    for (a, b) in acc.iter_mut().zip(&tokens) {
                        if a != b {
                            *a = WILDCARD.to_string();
                        }
                    }
                }
            }
        }
        let mut out = HashMap::with_capacity(self.texts.len());
        for i in 0..self.texts.len() {
            let root = self.find(i);
            let template = merged[&root].join(" ");
            let group = Group {
                id: id_of(&template),
                template,
            };
            out.insert(self.texts[i].clone(), group);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> String {
        template(s).text
    }

    #[test]
    fn masks_values_from_the_message_alone() {
        assert_eq!(
            t("Request completed: GET /api/users/123 - 200 (45.2ms)"),
            "Request completed: GET <*> - <*>"
        );
        assert_eq!(
            t("user=bob logged in after 3 tries"),
            "user=<*> logged in after <*> tries"
        );
        assert_eq!(
            t("Connected to db.example.com:5432 in 12 ms, ok"),
            "Connected to <*> in <*>, ok"
        );
        assert_eq!(
            t("sent 18846 bytes (18.4 KB) lifetime <1 sec"),
            "sent <*> lifetime <*>"
        );
        assert_eq!(
            t("value \"abc def\" rejected: flag=true"),
            "value <*> rejected: flag=<*>"
        );
        assert_eq!(
            t("Can't find child 42 in scoreboard, don't retry"),
            "Can't find child <*> in scoreboard, don't retry"
        );
        assert_eq!(t("ready: true"), "ready: <*>");
        assert_eq!(t("blk_-123 blk_456 blk_789 deleted"), "<*> deleted");
    }

    #[test]
    fn ids_are_hashes_of_the_template() {
        let a = template("disk 1 full");
        let b = template("disk 22 full");
        assert_eq!(a, b);
        assert_eq!(a.id, id_of("disk <*> full"));
        assert_ne!(a.id, template("disk 1 empty").id);
    }

    fn grouped(lines: &[&str]) -> Vec<String> {
        let mut g = Grouper::new();
        let templates: Vec<String> = lines.iter().map(|l| t(l)).collect();
        for x in &templates {
            g.add(x);
        }
        let groups = g.groups();
        templates
            .iter()
            .map(|x| groups[x].template.clone())
            .collect()
    }

    #[test]
    fn a_position_that_varies_enough_becomes_a_wildcard() {
        let lines = [
            "Failed password for root from 1.2.3.4",
            "Failed password for admin from 1.2.3.5",
            "Failed password for guest from 1.2.3.6",
            "Failed password for test1 from 1.2.3.7",
        ];
        assert!(grouped(&lines)
            .iter()
            .all(|g| g == "Failed password for <*> from <*>"));
        // Two variants are not enough: `stored as bytes` and `stored as values` stay apart.
        let two = [
            "Block 1 stored as bytes in memory",
            "Block 2 stored as values in memory",
        ];
        let g = grouped(&two);
        assert_ne!(g[0], g[1]);
        // The first token never varies.
        let first = [
            "Accepted password for a b c",
            "Failed password for a b c",
            "Broken password for a b c",
        ];
        let g = grouped(&first);
        assert_ne!(g[0], g[1]);
    }

    proptest::proptest! {
        #[test]
        fn grouping_ignores_order(mut users in proptest::collection::vec("[a-m]{2,6}", 1..12), seed in 0u64..1000) {
            let mut lines: Vec<String> = users.iter().map(|u| format!("Invalid user {u} from 10.0.0.1 port 22")).collect();
            lines.push("Connection closed by 10.0.0.2 [preauth]".into());
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let forward = grouped(&refs);
            let mut order: Vec<usize> = (0..lines.len()).collect();
            order.rotate_left((seed as usize) % lines.len());
            let shuffled: Vec<&str> = order.iter().map(|&i| refs[i]).collect();
            let back = grouped(&shuffled);
            for (k, &i) in order.iter().enumerate() {
                proptest::prop_assert_eq!(&back[k], &forward[i]);
            }
            users.sort();
            users.dedup();
            proptest::prop_assert_eq!(forward[0] == "Invalid user <*> from <*> port <*>", users.len() >= VARIANTS);
        }
    }
}
