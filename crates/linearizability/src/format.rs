//! A plain-text file format for histories, one operation per line, so a
//! harness can save what it recorded and anyone can read, diff, edit and
//! re-check it.
//!
//! ```text
//! # client key call ret operation -> outcome
//! 3 "k" 1000 2500 put "v1" -> ok
//! 4 "k" 1200 2600 get -> "v1"
//! 4 "k" 2700 3100 get -> none
//! 5 "k" 1300 - cas "v1" "v2" -> unknown
//! 5 "k" 3300 4000 cas none "v3" -> false
//! ```
//!
//! Fields are separated by spaces. `call` and `ret` are nanoseconds; `ret`
//! is `-` when the client never got an answer. Keys and values are quoted:
//! printable ASCII as is, `\"`, `\\`, and `\xNN` for any other byte.
//! `none` is an absent value: a get of a missing key, or a compare-and-set
//! that requires the key to be absent. Outcomes are `ok` (put), a value or
//! `none` (get), `true`/`false` (compare-and-set), or `unknown`. Blank
//! lines and lines starting with `#` are ignored.
//!
//! Lines are self-contained, so a harness may append them as operations
//! complete ([`write_operation`]) and a crash loses at most the last one.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use thiserror::Error;

use crate::history::{display_value, Operation, RegisterInput, RegisterOutput, Value};

/// A line that is not an operation.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// Reading a history file failed.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("reading history: {0}")]
    Io(#[from] io::Error),
    #[error("parsing history: {0}")]
    Parse(#[from] ParseError),
}

const HEADER: &str = "# client key call ret operation -> outcome";

/// One operation as one line, without the newline.
pub fn format_operation(op: &Operation) -> String {
    let ret = op.ret.map_or_else(|| "-".to_owned(), |r| r.to_string());
    let value_or_none =
        |v: Option<&Value>| v.map_or_else(|| "none".to_owned(), |v| display_value(v));
    let input = match &op.input {
        RegisterInput::Put { value } => format!("put {}", display_value(value)),
        RegisterInput::Get => "get".to_owned(),
        RegisterInput::Cas { expected, new } => {
            format!(
                "cas {} {}",
                value_or_none(expected.as_ref()),
                display_value(new)
            )
        }
    };
    let output = match &op.output {
        RegisterOutput::Put => "ok".to_owned(),
        RegisterOutput::Get { value } => value_or_none(value.as_ref()),
        RegisterOutput::Cas { succeeded } => succeeded.to_string(),
        RegisterOutput::Unknown => "unknown".to_owned(),
    };
    format!(
        "{} {} {} {} {} -> {}",
        op.client,
        display_value(&op.key),
        op.call,
        ret,
        input,
        output
    )
}

/// Appends one operation as a line.
pub fn write_operation(mut w: impl Write, op: &Operation) -> io::Result<()> {
    writeln!(w, "{}", format_operation(op))
}

/// Writes a whole history, with a header comment.
pub fn write_history(mut w: impl Write, history: &[Operation]) -> io::Result<()> {
    writeln!(w, "{HEADER}")?;
    for op in history {
        write_operation(&mut w, op)?;
    }
    Ok(())
}

/// The whole history as text.
pub fn history_to_string(history: &[Operation]) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for op in history {
        out.push_str(&format_operation(op));
        out.push('\n');
    }
    out
}

/// Writes the history to a file (replacing it) and syncs it, so it
/// survives whatever the test does next.
pub fn save_history(path: impl AsRef<Path>, history: &[Operation]) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    write_history(&mut w, history)?;
    let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}

pub fn load_history(path: impl AsRef<Path>) -> Result<Vec<Operation>, LoadError> {
    read_history(BufReader::new(File::open(path)?))
}

pub fn read_history(r: impl BufRead) -> Result<Vec<Operation>, LoadError> {
    let mut history = Vec::new();
    for (index, line) in r.lines().enumerate() {
        if let Some(op) = parse_line(&line?, index + 1)? {
            history.push(op);
        }
    }
    Ok(history)
}

pub fn parse_history(text: &str) -> Result<Vec<Operation>, ParseError> {
    let mut history = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if let Some(op) = parse_line(line, index + 1)? {
            history.push(op);
        }
    }
    Ok(history)
}

/// Parses one line; `None` for blank lines and comments.
pub fn parse_operation(line: &str) -> Result<Option<Operation>, ParseError> {
    parse_line(line, 1)
}

fn parse_line(line: &str, number: usize) -> Result<Option<Operation>, ParseError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let error = |message: String| ParseError {
        line: number,
        message,
    };
    let tokens = tokenize(trimmed).map_err(error)?;
    Parser { tokens, at: 0 }
        .operation()
        .map(Some)
        .map_err(error)
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(Vec<u8>),
}

fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut bytes = Vec::new();
            loop {
                match chars.next() {
                    None => {
                        return Err(format!(
                            "unterminated string starting at column {}",
                            start + 1
                        ))
                    }
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '"')) => bytes.push(b'"'),
                        Some((_, '\\')) => bytes.push(b'\\'),
                        Some((at, 'x')) => {
                            let hex: String = (0..2)
                                .filter_map(|_| chars.next().map(|(_, h)| h))
                                .collect();
                            let byte = u8::from_str_radix(&hex, 16)
                                .ok()
                                .filter(|_| hex.len() == 2)
                                .ok_or_else(|| format!("bad \\x escape at column {}", at + 1))?;
                            bytes.push(byte);
                        }
                        _ => {
                            return Err(format!(
                                "bad escape in string starting at column {}",
                                start + 1
                            ))
                        }
                    },
                    Some((_, c)) => {
                        let mut buf = [0; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            tokens.push(Token::Quoted(bytes));
        } else {
            let mut word = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() || c == '"' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(Token::Word(word));
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn operation(mut self) -> Result<Operation, String> {
        let client = self.number("client")?;
        let key = self.quoted("key")?;
        let call = self.number("call time")?;
        let ret = if self.peek_word("-") {
            self.at += 1;
            None
        } else {
            Some(self.number("return time or -")?)
        };
        let verb = self.word("put, get or cas")?;
        let input = match verb.as_str() {
            "put" => RegisterInput::Put {
                value: self.quoted("value")?,
            },
            "get" => RegisterInput::Get,
            "cas" => RegisterInput::Cas {
                expected: self.value_or_none("expected value or none")?,
                new: self.quoted("new value")?,
            },
            other => return Err(format!("expected put, get or cas, found {other:?}")),
        };
        self.expect_word("->")?;
        let output = if self.peek_word("unknown") {
            self.at += 1;
            RegisterOutput::Unknown
        } else {
            match input {
                RegisterInput::Put { .. } => {
                    self.expect_word("ok")?;
                    RegisterOutput::Put
                }
                RegisterInput::Get => RegisterOutput::Get {
                    value: self.value_or_none("value, none or unknown")?,
                },
                RegisterInput::Cas { .. } => match self.word("true, false or unknown")?.as_str() {
                    "true" => RegisterOutput::Cas { succeeded: true },
                    "false" => RegisterOutput::Cas { succeeded: false },
                    other => {
                        return Err(format!("expected true, false or unknown, found {other:?}"))
                    }
                },
            }
        };
        if let Some(extra) = self.tokens.get(self.at) {
            return Err(format!("unexpected {extra:?} after the outcome"));
        }
        Ok(Operation {
            client,
            key,
            call,
            ret,
            input,
            output,
        })
    }

    fn next(&mut self, what: &str) -> Result<&Token, String> {
        let token = self
            .tokens
            .get(self.at)
            .ok_or_else(|| format!("line ends where {what} was expected"))?;
        self.at += 1;
        Ok(token)
    }

    fn word(&mut self, what: &str) -> Result<String, String> {
        match self.next(what)? {
            Token::Word(w) => Ok(w.clone()),
            Token::Quoted(_) => Err(format!("expected {what}, found a quoted string")),
        }
    }

    fn quoted(&mut self, what: &str) -> Result<Value, String> {
        match self.next(what)? {
            Token::Quoted(bytes) => Ok(bytes.clone()),
            Token::Word(w) => Err(format!("expected {what} (a quoted string), found {w:?}")),
        }
    }

    fn value_or_none(&mut self, what: &str) -> Result<Option<Value>, String> {
        match self.next(what)? {
            Token::Quoted(bytes) => Ok(Some(bytes.clone())),
            Token::Word(w) if w == "none" => Ok(None),
            Token::Word(w) => Err(format!("expected {what}, found {w:?}")),
        }
    }

    fn number(&mut self, what: &str) -> Result<u64, String> {
        let w = self.word(what)?;
        w.parse()
            .map_err(|_| format!("expected {what} (a non-negative integer), found {w:?}"))
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w == word)
    }

    fn expect_word(&mut self, word: &str) -> Result<(), String> {
        let found = self.word(word)?;
        if found == word {
            Ok(())
        } else {
            Err(format!("expected {word:?}, found {found:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Operation> {
        vec![
            Operation::put(3, "k", 1000, 2500, "v1"),
            Operation::get(4, "k", 1200, 2600, Some("v1")),
            Operation::get(4, "k", 2700, 3100, None),
            Operation::unknown(5, "k", 1300, RegisterInput::cas(Some("v1"), "v2")),
            Operation::cas(5, "k", 3300, 4000, None, "v3", false),
            Operation {
                client: 6,
                key: vec![0, b'"', b'\\', 0xff],
                call: 5,
                ret: Some(6),
                input: RegisterInput::Put {
                    value: "é \" x".into(),
                },
                output: RegisterOutput::Unknown,
            },
        ]
    }

    #[test]
    fn the_module_example_parses() {
        let text = r#"
# client key call ret operation -> outcome
3 "k" 1000 2500 put "v1" -> ok
4 "k" 1200 2600 get -> "v1"
4 "k" 2700 3100 get -> none
5 "k" 1300 - cas "v1" "v2" -> unknown
5 "k" 3300 4000 cas none "v3" -> false
"#;
        assert_eq!(parse_history(text).unwrap(), sample()[..5]);
    }

    #[test]
    fn round_trips() {
        let history = sample();
        let text = history_to_string(&history);
        assert_eq!(parse_history(&text).unwrap(), history);
        assert!(text.contains(r#"6 "\x00\"\\\xff" 5 6 put "\xc3\xa9 \" x" -> unknown"#));
        let mut buf = Vec::new();
        write_history(&mut buf, &history).unwrap();
        assert_eq!(read_history(&buf[..]).unwrap(), history);
    }

    #[test]
    fn errors_name_the_line() {
        let err =
            parse_history("1 \"k\" 1 2 put \"v\" -> ok\n1 \"k\" 1 2 get -> maybe\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("maybe"), "{err}");
        for bad in [
            "1 \"k\" 1 2 put \"v\" -> ok extra",
            "1 \"k\" 1 2 put \"v -> ok",
            "1 \"k\" 1 2 put \"\\x4\" -> ok",
            "1 k 1 2 get -> none",
            "x \"k\" 1 2 get -> none",
            "1 \"k\" 1 2 cas none \"v\" -> ok",
            "1 \"k\" 1",
        ] {
            assert!(parse_operation(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn saves_and_loads_a_file() {
        let dir = std::env::temp_dir().join(format!("raftkv-lin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.txt");
        save_history(&path, &sample()).unwrap();
        assert_eq!(load_history(&path).unwrap(), sample());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
