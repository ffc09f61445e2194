//! Errors classified where the code must decide.
//!
//! In the style of async-nats' `Error<Kind>`: an [`Error`] carries a kind,
//! which callers match on, and the error it came from as its
//! [`source`](std::error::Error::source). Each kind says whether another
//! attempt may succeed ([`ErrorKind::is_retryable`]), so a caller retries
//! what can succeed later (a throttled call, a broker without a leader, a
//! compare-and-set conflict) and fails at once what never will (access
//! denied, an invalid request, a missing resource).
//!
//! Unlike async-nats, an error's text is one complete line written where the
//! error is made (naming the target or key), not the kind followed by the
//! source's text: a source may be a long chain (the AWS SDK's), and the line
//! goes as it is into logs, capacity records and audit reasons.

use std::fmt;

/// A boxed error, as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What an error means to the caller.
pub trait ErrorKind: Copy + fmt::Debug + fmt::Display + PartialEq + Send + Sync + 'static {
    /// Whether another attempt may succeed.
    fn is_retryable(self) -> bool;
}

/// An error of kind `K`: see the module doc.
#[derive(Debug)]
pub struct Error<K: ErrorKind> {
    kind: K,
    message: String,
    source: Option<BoxError>,
}

impl<K: ErrorKind> Error<K> {
    /// An error with no source. Line breaks in `message` become spaces.
    pub fn new(kind: K, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: one_line(message.into()),
            source: None,
        }
    }

    /// An error caused by `source`. Line breaks in `message` become spaces.
    pub fn with_source(kind: K, message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error {
            kind,
            message: one_line(message.into()),
            source: Some(source.into()),
        }
    }

    /// The kind.
    pub fn kind(&self) -> K {
        self.kind
    }

    /// Whether another attempt may succeed: the kind's answer.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

fn one_line(message: String) -> String {
    if message.contains(['\n', '\r']) {
        message.replace(['\n', '\r'], " ")
    } else {
        message
    }
}

impl<K: ErrorKind> fmt::Display for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<K: ErrorKind> std::error::Error for Error<K> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|source| source.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// The first error in `error`'s chain (itself, then its sources) that is a
/// `T`.
pub fn find_in_chain<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        cause = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        Busy,
        Refused,
    }

    impl fmt::Display for Kind {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                Kind::Busy => "busy",
                Kind::Refused => "refused",
            })
        }
    }

    impl ErrorKind for Kind {
        fn is_retryable(self) -> bool {
            self == Kind::Busy
        }
    }

    #[test]
    fn kind_decides_retrying_and_the_text_is_one_line() {
        let busy = Error::new(Kind::Busy, "target a: busy");
        assert!(busy.is_retryable());
        assert_eq!(busy.kind(), Kind::Busy);
        let source = std::io::Error::other("line one\nline two");
        let refused = Error::with_source(Kind::Refused, "target a:\nrefused", source);
        assert!(!refused.is_retryable());
        assert_eq!(refused.to_string(), "target a: refused");
        let io = find_in_chain::<std::io::Error>(&refused).expect("the source is kept");
        assert_eq!(io.to_string(), "line one\nline two");
    }
}
