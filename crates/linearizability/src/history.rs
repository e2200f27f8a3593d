//! The recorded history: operations, their inputs and outputs, validation,
//! and how an operation is shown to a human.

use std::fmt;

use thiserror::Error;

/// A key: arbitrary bytes, as in etcd.
pub type Key = Vec<u8>;
/// A value: arbitrary bytes, as in etcd.
pub type Value = Vec<u8>;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    /// Set the value.
    Put { value: Value },
    /// Read the value.
    Get,
    /// Set `new` if the current value equals `expected` (`None`: the key is
    /// absent); otherwise change nothing.
    Cas { expected: Option<Value>, new: Value },
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    /// A put was acknowledged.
    Put,
    /// A get returned this value (`None`: the key was absent).
    Get { value: Option<Value> },
    /// A compare-and-set reported whether the comparison held.
    Cas { succeeded: bool },
    /// The client does not know whether the operation took effect (timeout,
    /// unavailable, connection lost). It may take effect at any point after
    /// its call, or never.
    Unknown,
}

/// One client operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Which client issued it. A client runs one operation at a time, but
    /// the checker does not rely on that.
    pub client: u64,
    pub key: Key,
    /// When the client sent it, in nanoseconds on a clock shared by all
    /// clients.
    pub call: u64,
    /// When the client got the answer. Required for known outcomes; ignored
    /// for [`RegisterOutput::Unknown`] (the client's giving up says nothing
    /// about when the operation took effect), where it may be `None`.
    pub ret: Option<u64>,
    pub input: RegisterInput,
    pub output: RegisterOutput,
}

/// Why a history cannot be checked at all.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum HistoryError {
    #[error("operation #{index} returned at {ret} before it was called at {call}")]
    ReturnBeforeCall { index: usize, call: u64, ret: u64 },
    #[error("operation #{index} has a known outcome but no return time")]
    MissingReturn { index: usize },
    #[error("operation #{index}: output {output} does not answer input {input}")]
    MismatchedOutput {
        index: usize,
        input: String,
        output: String,
    },
}

impl RegisterInput {
    pub fn put(value: impl Into<Value>) -> Self {
        RegisterInput::Put {
            value: value.into(),
        }
    }

    pub fn cas(expected: Option<&str>, new: impl Into<Value>) -> Self {
        RegisterInput::Cas {
            expected: expected.map(Value::from),
            new: new.into(),
        }
    }
}

// The constructors take text values (`&str`) for readable tests; build the
// struct directly for arbitrary bytes.
impl Operation {
    /// An acknowledged put.
    pub fn put(client: u64, key: impl Into<Key>, call: u64, ret: u64, value: &str) -> Self {
        Operation {
            client,
            key: key.into(),
            call,
            ret: Some(ret),
            input: RegisterInput::put(value),
            output: RegisterOutput::Put,
        }
    }

    /// A get that returned `observed` (`None`: absent).
    pub fn get(
        client: u64,
        key: impl Into<Key>,
        call: u64,
        ret: u64,
        observed: Option<&str>,
    ) -> Self {
        Operation {
            client,
            key: key.into(),
            call,
            ret: Some(ret),
            input: RegisterInput::Get,
            output: RegisterOutput::Get {
                value: observed.map(Value::from),
            },
        }
    }

    /// A compare-and-set that reported `succeeded`.
    pub fn cas(
        client: u64,
        key: impl Into<Key>,
        call: u64,
        ret: u64,
        expected: Option<&str>,
        new: &str,
        succeeded: bool,
    ) -> Self {
        Operation {
            client,
            key: key.into(),
            call,
            ret: Some(ret),
            input: RegisterInput::cas(expected, new),
            output: RegisterOutput::Cas { succeeded },
        }
    }

    /// An operation whose outcome the client never learned.
    pub fn unknown(client: u64, key: impl Into<Key>, call: u64, input: RegisterInput) -> Self {
        Operation {
            client,
            key: key.into(),
            call,
            ret: None,
            input,
            output: RegisterOutput::Unknown,
        }
    }

    pub fn is_unknown(&self) -> bool {
        self.output == RegisterOutput::Unknown
    }

    /// Shows the operation with times relative to `origin` (usually the
    /// first call of the history), e.g.
    /// `client 3 [t=12.345ms .. 12.400ms] get -> Some("5")`.
    pub fn display_relative(&self, origin: u64) -> OperationDisplay<'_> {
        OperationDisplay { op: self, origin }
    }
}

/// Checks what the search relies on; `index` in errors is the position in
/// `history`.
pub(crate) fn validate(history: &[Operation]) -> Result<(), HistoryError> {
    for (index, op) in history.iter().enumerate() {
        let matches = matches!(
            (&op.input, &op.output),
            (_, RegisterOutput::Unknown)
                | (RegisterInput::Put { .. }, RegisterOutput::Put)
                | (RegisterInput::Get, RegisterOutput::Get { .. })
                | (RegisterInput::Cas { .. }, RegisterOutput::Cas { .. })
        );
        if !matches {
            return Err(HistoryError::MismatchedOutput {
                index,
                input: InputDisplay(&op.input).to_string(),
                output: OutputDisplay(&op.output).to_string(),
            });
        }
        match op.ret {
            Some(ret) if ret < op.call => {
                return Err(HistoryError::ReturnBeforeCall {
                    index,
                    call: op.call,
                    ret,
                })
            }
            None if !op.is_unknown() => return Err(HistoryError::MissingReturn { index }),
            _ => {}
        }
    }
    Ok(())
}

/// Shows an optional value as `Some("text")` or `None`; see
/// [`display_value`] for the quoting.
pub(crate) struct OptionValue<'a>(pub(crate) Option<&'a [u8]>);

impl fmt::Display for OptionValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "Some({})", display_value(v)),
            None => f.write_str("None"),
        }
    }
}

/// Quotes bytes the way the history file does: printable ASCII as is,
/// `"` and `\` escaped, anything else as `\xNN`.
pub fn display_value(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// Nanoseconds since `origin` as milliseconds: three decimals when the
/// offset is a whole number of microseconds, six otherwise, so that
/// sub-microsecond orderings are never hidden by rounding.
pub(crate) fn format_time(ns: u64, origin: u64) -> String {
    let d = ns.saturating_sub(origin);
    if d.is_multiple_of(1_000) {
        format!("{}.{:03}ms", d / 1_000_000, (d % 1_000_000) / 1_000)
    } else {
        format!("{}.{:06}ms", d / 1_000_000, d % 1_000_000)
    }
}

struct InputDisplay<'a>(&'a RegisterInput);

impl fmt::Display for InputDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            RegisterInput::Put { value } => write!(f, "put {}", display_value(value)),
            RegisterInput::Get => f.write_str("get"),
            RegisterInput::Cas { expected, new } => write!(
                f,
                "cas(if {} then {})",
                OptionValue(expected.as_deref()),
                display_value(new)
            ),
        }
    }
}

struct OutputDisplay<'a>(&'a RegisterOutput);

impl fmt::Display for OutputDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            RegisterOutput::Put => f.write_str("ok"),
            RegisterOutput::Get { value } => OptionValue(value.as_deref()).fmt(f),
            RegisterOutput::Cas { succeeded: true } => f.write_str("succeeded"),
            RegisterOutput::Cas { succeeded: false } => f.write_str("failed"),
            RegisterOutput::Unknown => f.write_str("unknown"),
        }
    }
}

/// See [`Operation::display_relative`].
pub struct OperationDisplay<'a> {
    op: &'a Operation,
    origin: u64,
}

impl fmt::Display for OperationDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.op;
        let ret = match (op.ret, op.is_unknown()) {
            (Some(ret), false) => format_time(ret, self.origin),
            // The client gave up at `ret`, but the operation may still take
            // effect later: show both facts.
            (Some(ret), true) => format!("? (gave up {})", format_time(ret, self.origin)),
            (None, _) => "?".to_owned(),
        };
        write!(
            f,
            "client {} [t={} .. {}] {} -> {}",
            op.client,
            format_time(op.call, self.origin),
            ret,
            InputDisplay(&op.input),
            OutputDisplay(&op.output)
        )
    }
}

/// Times relative to 0; prefer [`Operation::display_relative`].
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display_relative(0).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_the_counterexample_lines() {
        let op = Operation::get(3, "k", 1_012_345_000, 1_012_400_000, Some("5"));
        assert_eq!(
            op.display_relative(1_000_000_000).to_string(),
            r#"client 3 [t=12.345ms .. 12.400ms] get -> Some("5")"#
        );
        let op = Operation::unknown(1, "k", 1_500, RegisterInput::cas(None, "a\n"));
        assert_eq!(
            op.to_string(),
            r#"client 1 [t=0.001500ms .. ?] cas(if None then "a\x0a") -> unknown"#
        );
    }

    #[test]
    fn validation_rejects_malformed_operations() {
        let mut op = Operation::put(1, "k", 10, 5, "v");
        assert_eq!(
            validate(&[op.clone()]),
            Err(HistoryError::ReturnBeforeCall {
                index: 0,
                call: 10,
                ret: 5
            })
        );
        op.ret = None;
        assert_eq!(
            validate(&[op.clone()]),
            Err(HistoryError::MissingReturn { index: 0 })
        );
        op.ret = Some(20);
        op.output = RegisterOutput::Cas { succeeded: true };
        assert!(matches!(
            validate(&[op]),
            Err(HistoryError::MismatchedOutput { index: 0, .. })
        ));
    }
}
