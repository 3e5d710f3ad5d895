//! The search syntax, after Datadog, Kibana and HyperDX:
//!
//! ```text
//! level:error service:api status:>=500 "timeout" -path:/health
//! (service:api OR service:web) AND NOT host:canary-*
//! duration_ms>1000 attr.order_id=42
//! ```
//!
//! Grammar (keywords in capitals; juxtaposition means AND):
//!
//! ```text
//! query   := or
//! or      := and ( OR and )*
//! and     := unary ( [AND] unary )*
//! unary   := ( NOT | "-" ) unary | "(" or ")" | term
//! term    := field ":" [op] value | field op value | value
//! op      := ">=" | "<=" | ">" | "<" | "="
//! value   := word | "quoted \" string"
//! ```
//!
//! The parser only builds a tree; `sql` decides what each field means. Every
//! error carries the character position it refers to.

pub const MAX_QUERY_CHARS: usize = 4096;
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Term(Term),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// `None` for free text.
    pub field: Option<String>,
    pub op: Op,
    pub value: String,
    /// A quoted value is literal: `*` is not a wildcard in it.
    pub quoted: bool,
    /// Character position of the term, for errors.
    pub pos: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query syntax error at position {pos}: {message}")]
pub struct SyntaxError {
    /// Characters from the start of the query (0-based).
    pub pos: usize,
    pub message: String,
}

fn err<T>(pos: usize, message: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        pos,
        message: message.into(),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Minus,
    And,
    Or,
    Not,
    Term(Term),
}

/// Parses a query; an empty or blank query is `None` (match everything).
pub fn parse(query: &str) -> Result<Option<Expr>, SyntaxError> {
    if query.chars().count() > MAX_QUERY_CHARS {
        return err(
            MAX_QUERY_CHARS,
            format!("query is longer than {MAX_QUERY_CHARS} characters"),
        );
    }
    let toks = lex(query)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut p = Parser {
        toks,
        at: 0,
        end: query.chars().count(),
    };
    let expr = p.or(0)?;
    if let Some((pos, tok)) = p.toks.get(p.at) {
        let what = if *tok == Tok::Close {
            "unbalanced ')'"
        } else {
            "unexpected input"
        };
        return err(*pos, what);
    }
    Ok(Some(expr))
}

fn lex(query: &str) -> Result<Vec<(usize, Tok)>, SyntaxError> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            out.push((i, Tok::Open));
            i += 1;
        } else if c == ')' {
            out.push((i, Tok::Close));
            i += 1;
        } else if c == '-' && chars.get(i + 1).is_some_and(|n| !n.is_whitespace()) {
            out.push((i, Tok::Minus));
            i += 1;
        } else if c == '"' {
            let (value, next) = quoted(&chars, i)?;
            out.push((i, Tok::Term(free_text(value, true, i))));
            i = next;
        } else {
            let start = i;
            while i < chars.len() && !is_boundary(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let tok = match word.as_str() {
                "AND" => Tok::And,
                "OR" => Tok::Or,
                "NOT" => Tok::Not,
                _ => {
                    let (term, next) = field_term(&chars, start, i)?;
                    i = next;
                    Tok::Term(term)
                }
            };
            out.push((start, tok));
        }
    }
    Ok(out)
}

fn is_boundary(c: char) -> bool {
    c.is_whitespace() || c == '(' || c == ')' || c == '"'
}

/// A quoted string starting at `start` (the opening quote): its value and
/// the position after the closing quote.
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), SyntaxError> {
    let mut value = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' => return Ok((value, i + 1)),
            '\\' if i + 1 < chars.len() => {
                value.push(chars[i + 1]);
                i += 2;
            }
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    err(start, "unterminated quoted string")
}

fn free_text(value: String, quoted: bool, pos: usize) -> Term {
    Term {
        field: None,
        op: Op::Eq,
        value,
        quoted,
        pos,
    }
}

/// Field names: a letter or `_`, then letters, digits, `_`, `.` and `-`
/// (`attr.x-request-id`).
fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'
}

/// The word `chars[start..end]`: `field:[op]value`, `field op value`, or
/// free text. A quote right after the operator starts a quoted value, which
/// may run past `end`. Returns the term and where lexing resumes.
fn field_term(chars: &[char], start: usize, end: usize) -> Result<(Term, usize), SyntaxError> {
    let word = &chars[start..end];
    let name_len = word
        .iter()
        .enumerate()
        .take_while(|(i, c)| match i {
            0 => c.is_ascii_alphabetic() || **c == '_',
            _ => is_field_char(**c),
        })
        .count();
    let rest = &word[name_len..];
    let (op, op_len) = match rest {
        [':', '>', '=', ..] => (Op::Ge, 3),
        [':', '<', '=', ..] => (Op::Le, 3),
        [':', '>', ..] => (Op::Gt, 2),
        [':', '<', ..] => (Op::Lt, 2),
        [':', ..] => (Op::Eq, 1),
        ['>', '=', ..] => (Op::Ge, 2),
        ['<', '=', ..] => (Op::Le, 2),
        ['>', ..] => (Op::Gt, 1),
        ['<', ..] => (Op::Lt, 1),
        ['=', ..] => (Op::Eq, 1),
        _ => {
            let text: String = word.iter().collect();
            return Ok((free_text(text, false, start), end));
        }
    };
    if name_len == 0 {
        return err(start, "expected a field name before the operator");
    }
    let field: String = word[..name_len].iter().collect();
    let value_at = start + name_len + op_len;
    let (value, quoted_value, next) = if value_at == end && chars.get(end) == Some(&'"') {
        let (v, next) = quoted(chars, end)?;
        (v, true, next)
    } else {
        (chars[value_at..end].iter().collect::<String>(), false, end)
    };
    if value.is_empty() && !quoted_value {
        return err(value_at, format!("expected a value after `{field}`"));
    }
    Ok((
        Term {
            field: Some(field),
            op,
            value,
            quoted: quoted_value,
            pos: start,
        },
        next,
    ))
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |(p, _)| *p)
    }

    fn or(&mut self, depth: usize) -> Result<Expr, SyntaxError> {
        let mut parts = vec![self.and(depth)?];
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, SyntaxError> {
        let mut parts = vec![self.unary(depth)?];
        loop {
            match self.peek() {
                Some(Tok::And) => {
                    self.at += 1;
                    parts.push(self.unary(depth)?);
                }
                Some(Tok::Or | Tok::Close) | None => break,
                Some(_) => parts.push(self.unary(depth)?),
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, SyntaxError> {
        if depth > MAX_DEPTH {
            return err(self.pos(), "query is nested too deeply");
        }
        let pos = self.pos();
        let Some((_, tok)) = self.toks.get(self.at).cloned() else {
            return err(pos, "expected a term, found the end of the query");
        };
        self.at += 1;
        match tok {
            Tok::Not | Tok::Minus => Ok(Expr::Not(Box::new(self.unary(depth + 1)?))),
            Tok::Open => {
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(&Tok::Close) {
                    return err(
                        self.pos(),
                        format!("expected ')' to close the '(' at {pos}"),
                    );
                }
                self.at += 1;
                Ok(inner)
            }
            Tok::Term(t) => Ok(Expr::Term(t)),
            Tok::Close => err(pos, "unbalanced ')'"),
            Tok::And | Tok::Or => err(pos, "expected a term before AND/OR"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(field: Option<&str>, op: Op, value: &str, pos: usize) -> Expr {
        Expr::Term(Term {
            field: field.map(String::from),
            op,
            value: value.into(),
            quoted: false,
            pos,
        })
    }

    #[test]
    fn the_datadog_example() {
        let q = r#"level:error service:api status:>=500 "timeout" -path:/health"#;
        let Some(Expr::And(parts)) = parse(q).expect("parses") else {
            panic!("an AND")
        };
        assert_eq!(parts[0], term(Some("level"), Op::Eq, "error", 0));
        assert_eq!(parts[2], term(Some("status"), Op::Ge, "500", 24));
        assert_eq!(
            parts[3],
            Expr::Term(Term {
                field: None,
                op: Op::Eq,
                value: "timeout".into(),
                quoted: true,
                pos: 37
            })
        );
        assert_eq!(
            parts[4],
            Expr::Not(Box::new(term(Some("path"), Op::Eq, "/health", 48)))
        );
    }

    #[test]
    fn operators_precedence_and_groups() {
        let q = "a:1 OR b:2 c:3";
        assert_eq!(
            parse(q).expect("parses"),
            Some(Expr::Or(vec![
                term(Some("a"), Op::Eq, "1", 0),
                Expr::And(vec![
                    term(Some("b"), Op::Eq, "2", 7),
                    term(Some("c"), Op::Eq, "3", 11)
                ])
            ]))
        );
        let q = "NOT (a:1 OR b:2) AND duration_ms>1000 attr.order_id=42";
        let Some(Expr::And(parts)) = parse(q).expect("parses") else {
            panic!("an AND")
        };
        assert!(matches!(&parts[0], Expr::Not(inner) if matches!(**inner, Expr::Or(_))));
        assert_eq!(parts[1], term(Some("duration_ms"), Op::Gt, "1000", 21));
        assert_eq!(parts[2], term(Some("attr.order_id"), Op::Eq, "42", 38));
        assert_eq!(
            parse(r#"service:"my api""#).expect("parses"),
            Some(Expr::Term(Term {
                field: Some("service".into()),
                op: Op::Eq,
                value: "my api".into(),
                quoted: true,
                pos: 0
            }))
        );
        assert_eq!(parse("   ").expect("parses"), None);
        // A lone dash is text; a URL must be quoted to be text.
        assert_eq!(
            parse("a - b").expect("parses"),
            Some(Expr::And(vec![
                term(None, Op::Eq, "a", 0),
                term(None, Op::Eq, "-", 2),
                term(None, Op::Eq, "b", 4)
            ]))
        );
    }

    #[test]
    fn errors_point_at_the_mistake() {
        let cases = [
            ("level:error (service:api", 24, "expected ')'"),
            ("level:error service:api)", 23, "unbalanced ')'"),
            ("status:", 7, "expected a value after `status`"),
            (r#"body:"never closed"#, 5, "unterminated quoted string"),
            ("a:1 OR", 6, "expected a term, found the end"),
            ("AND a:1", 0, "expected a term before AND/OR"),
            (":>5", 0, "expected a field name"),
        ];
        for (q, pos, msg) in cases {
            let e = parse(q).expect_err(q);
            assert_eq!(e.pos, pos, "{q}: {e}");
            assert!(e.message.contains(msg), "{q}: {e}");
        }
        let deep = "(".repeat(100) + "a" + &")".repeat(100);
        assert!(parse(&deep)
            .expect_err("too deep")
            .message
            .contains("nested"));
        assert!(parse(&"a ".repeat(3000)).is_err(), "too long");
    }
}
