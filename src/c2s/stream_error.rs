//! Stream error conditions (RFC 6120 §4.9.3) martlet sends before closing a stream.

use super::conn::ConnEnd;
use crate::router::Revocation;
use crate::xml::stream_parser::ParseError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    BadFormat,
    Conflict,
    ConnectionTimeout,
    HostUnknown,
    InternalServerError,
    InvalidNamespace,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    Reset,
    ResourceConstraint,
    RestrictedXml,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamError {
    pub fn condition(self) -> &'static str {
        match self {
            StreamError::BadFormat => "bad-format",
            StreamError::Conflict => "conflict",
            StreamError::ConnectionTimeout => "connection-timeout",
            StreamError::HostUnknown => "host-unknown",
            StreamError::InternalServerError => "internal-server-error",
            StreamError::InvalidNamespace => "invalid-namespace",
            StreamError::NotAuthorized => "not-authorized",
            StreamError::NotWellFormed => "not-well-formed",
            StreamError::PolicyViolation => "policy-violation",
            StreamError::Reset => "reset",
            StreamError::ResourceConstraint => "resource-constraint",
            StreamError::RestrictedXml => "restricted-xml",
            StreamError::SystemShutdown => "system-shutdown",
            StreamError::UndefinedCondition => "undefined-condition",
            StreamError::UnsupportedStanzaType => "unsupported-stanza-type",
            StreamError::UnsupportedVersion => "unsupported-version",
        }
    }

    /// `<stream:error>` with the condition and a human-readable text, then the stream close.
    pub fn to_xml(self, text: &str) -> String {
        let mut out = String::with_capacity(200 + text.len());
        out.push_str("<stream:error><");
        out.push_str(self.condition());
        out.push_str(" xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
        if !text.is_empty() {
            out.push_str("<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>");
            out.push_str(&escape(text));
            out.push_str("</text>");
        }
        out.push_str("</stream:error></stream:stream>");
        out
    }
}

impl From<&ParseError> for StreamError {
    fn from(e: &ParseError) -> Self {
        match e {
            ParseError::NotWellFormed(_) => StreamError::NotWellFormed,
            ParseError::Restricted(_) => StreamError::RestrictedXml,
            ParseError::TooLarge { .. } | ParseError::HeaderTooLarge { .. } | ParseError::TooDeep { .. } => StreamError::PolicyViolation,
        }
    }
}

/// Escapes text content for the few strings martlet writes by hand.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 6120 §4.9.3.12 and §4.9.3.16: a deleted account's stream is no longer authorized; a
/// changed password resets the stream, so the client authenticates with the new one.
pub fn revoked(why: Revocation) -> ConnEnd {
    match why {
        Revocation::AccountDeleted => ConnEnd::Error(StreamError::NotAuthorized, "the account was deleted".into()),
        Revocation::PasswordChanged => ConnEnd::Error(StreamError::Reset, "the password was changed; log in again".into()),
    }
}
