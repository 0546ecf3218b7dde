//! The JSON body of every error response, proxy and admin alike:
//! `{"error":{"type":…,"message":…}}`, the shape the provider SDKs already parse.

/// The error body as a JSON value, for a caller that adds fields to `error` (they follow
/// `type` and `message`, in the order added).
pub(crate) fn value(kind: &str, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {"type": kind, "message": message}})
}

/// The error body, serialised.
pub(crate) fn body(kind: &str, message: &str) -> String {
    value(kind, message).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape_is_type_then_message() {
        assert_eq!(
            super::body("bad_request", "say \"hi\"\n"),
            r#"{"error":{"type":"bad_request","message":"say \"hi\"\n"}}"#
        );
        let mut v = super::value("invalid_config", "2 problems");
        v["error"]["problems"] = serde_json::json!([]);
        assert_eq!(
            v.to_string(),
            r#"{"error":{"type":"invalid_config","message":"2 problems","problems":[]}}"#
        );
    }
}
