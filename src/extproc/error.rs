//! Errors answered to the gateway as an `ImmediateResponse`, with GIE's codes and text
//! (`inference error: <Code> - <msg>`) so dashboards, alerts and clients see what they expect.

use std::fmt;

/// GIE's error codes, plus `PayloadTooLarge` for the body size limit GIE does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    BadRequest,
    PayloadTooLarge,
    ResourceExhausted,
    Internal,
    ServiceUnavailable,
}

impl Code {
    pub fn http_status(self) -> u16 {
        match self {
            Code::BadRequest => 400,
            Code::PayloadTooLarge => 413,
            Code::ResourceExhausted => 429,
            Code::Internal => 500,
            Code::ServiceUnavailable => 503,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "BadRequest",
            Code::PayloadTooLarge => "PayloadTooLarge",
            Code::ResourceExhausted => "ResourceExhausted",
            Code::Internal => "Internal",
            Code::ServiceUnavailable => "ServiceUnavailable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InferenceError {
    pub code: Code,
    pub message: String,
}

impl InferenceError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }
}

impl fmt::Display for InferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "inference error: {} - {}",
            self.code.as_str(),
            self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gie_text_and_status() {
        let e = InferenceError::bad_request("model not found in request body");
        assert_eq!(
            e.to_string(),
            "inference error: BadRequest - model not found in request body"
        );
        assert_eq!(e.code.http_status(), 400);
        assert_eq!(Code::ResourceExhausted.http_status(), 429);
        assert_eq!(Code::ServiceUnavailable.http_status(), 503);
        assert_eq!(Code::Internal.http_status(), 500);
        assert_eq!(Code::PayloadTooLarge.http_status(), 413);
    }
}
