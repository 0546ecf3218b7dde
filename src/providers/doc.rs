//! The fields of a provider's JSON document (a whole answer, or one stream event) that
//! promptgate reads — whether it is an answer ([`super::verdict`]) and the tokens it used
//! ([`super::usage`]) — parsed in one pass that skips everything else.
//!
//! Every field type here is lenient: a value of an unexpected JSON type reads as absent
//! instead of failing the whole document, so only a syntax error makes a document unreadable.
//! (An error object whose `choices` happened to be a string must still read as an error.)

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// One provider document: the union of the fields every format promptgate knows uses.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Doc<'a> {
    /// Anthropic and Responses event types (`message_stop`, `response.completed`, `error`).
    #[serde(borrow, rename = "type")]
    pub kind: Text<'a>,
    /// OpenAI object kind (`chat.completion`, `response`, ...).
    #[serde(borrow)]
    pub object: Text<'a>,
    /// Present and not `null`: the document reports an error (every provider's error shape).
    pub error: Present,
    /// A Responses object's `status` (`completed`, `failed`, `incomplete`, `queued`, ...).
    #[serde(borrow)]
    pub status: Text<'a>,
    #[serde(borrow)]
    pub model: Text<'a>,
    /// Gemini's model.
    #[serde(borrow, rename = "modelVersion")]
    pub model_version: Text<'a>,
    /// OpenAI, Anthropic, Responses.
    pub usage: Obj<Counts>,
    /// Gemini.
    #[serde(rename = "usageMetadata")]
    pub usage_metadata: Obj<GeminiCounts>,
    /// Ollama.
    pub prompt_eval_count: Num,
    pub eval_count: Num,
    pub done: Flag,
    #[serde(borrow)]
    pub done_reason: Text<'a>,
    /// OpenAI chat and completions.
    #[serde(borrow)]
    pub choices: List<Choice<'a>>,
    /// Gemini.
    #[serde(borrow)]
    pub candidates: List<Candidate<'a>>,
    #[serde(borrow, rename = "promptFeedback")]
    pub prompt_feedback: Obj<PromptFeedback<'a>>,
    /// Anthropic (a whole message).
    #[serde(borrow)]
    pub stop_reason: Text<'a>,
    /// Anthropic's `message_delta` event.
    #[serde(borrow)]
    pub delta: Obj<Delta<'a>>,
    /// Responses output items.
    #[serde(borrow)]
    pub output: List<OutputItem<'a>>,
    /// Anthropic's `message_start` wraps the message (model, input usage); Ollama's chat
    /// message has none of the fields, which is fine.
    #[serde(borrow)]
    pub message: Obj<Box<Doc<'a>>>,
    /// Responses stream events wrap the response (`response.created`, `response.completed`).
    #[serde(borrow)]
    pub response: Obj<Box<Doc<'a>>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Counts {
    /// OpenAI chat: every prompt token, cached ones included.
    pub prompt_tokens: Num,
    pub completion_tokens: Num,
    /// Anthropic: the prompt tokens not read from or written to its cache. Responses: every
    /// prompt token, cached ones included.
    pub input_tokens: Num,
    pub output_tokens: Num,
    /// OpenAI chat: `cached_tokens`.
    pub prompt_tokens_details: Obj<CachedDetails>,
    /// Responses: `cached_tokens`.
    pub input_tokens_details: Obj<CachedDetails>,
    /// Anthropic.
    pub cache_creation_input_tokens: Num,
    pub cache_read_input_tokens: Num,
}

/// OpenAI's `prompt_tokens_details` / `input_tokens_details`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct CachedDetails {
    pub cached_tokens: Num,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct GeminiCounts {
    /// Every prompt token, cached ones included.
    pub prompt_token_count: Num,
    pub cached_content_token_count: Num,
    pub candidates_token_count: Num,
    pub thoughts_token_count: Num,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Choice<'a> {
    pub index: Num,
    #[serde(borrow)]
    pub finish_reason: Text<'a>,
    /// Streamed chunk.
    #[serde(borrow)]
    pub delta: Obj<Message<'a>>,
    /// Whole answer.
    #[serde(borrow)]
    pub message: Obj<Message<'a>>,
}

/// An OpenAI chat message or delta: only its refusal matters here.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Message<'a> {
    #[serde(borrow)]
    pub refusal: Text<'a>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Candidate<'a> {
    pub index: Num,
    #[serde(borrow)]
    pub finish_reason: Text<'a>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct PromptFeedback<'a> {
    #[serde(borrow)]
    pub block_reason: Text<'a>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Delta<'a> {
    #[serde(borrow)]
    pub stop_reason: Text<'a>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct OutputItem<'a> {
    #[serde(borrow)]
    pub content: List<Part<'a>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(super) struct Part<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Text<'a>,
}

/// A whole JSON body: one document, or an array of them (Gemini's non-SSE stream).
#[derive(Debug, Default)]
pub(super) enum Body<'a> {
    One(Box<Doc<'a>>),
    Many(Vec<Doc<'a>>),
    /// A scalar, or an array without documents.
    #[default]
    Neither,
}

/// Drains the rest of a map or sequence that is not wanted (the parser must still read it).
macro_rules! skip_containers {
    () => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

/// Scalars of other types read as the default (absent) value.
macro_rules! default_scalars {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            Ok(Default::default())
        })*
    };
}

/// A string field; any other JSON type reads as absent.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Text<'a>(pub Option<Cow<'a, str>>);

impl Text<'_> {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }

    pub fn is(&self, value: &str) -> bool {
        self.get() == Some(value)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            default_scalars!(visit_bool: bool, visit_u64: u64, visit_i64: i64, visit_f64: f64);
            skip_containers!();
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A non-negative integer field; any other JSON type reads as absent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Num(pub Option<u64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(Some(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
                Ok(Num(None))
            }
            default_scalars!(visit_bool: bool, visit_i64: i64, visit_f64: f64, visit_str: &str);
            skip_containers!();
        }
        d.deserialize_any(V)
    }
}

/// A boolean field; any other JSON type reads as absent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flag(pub Option<bool>);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(Some(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Flag, E> {
                Ok(Flag(None))
            }
            default_scalars!(visit_u64: u64, visit_i64: i64, visit_f64: f64, visit_str: &str);
            skip_containers!();
        }
        d.deserialize_any(V)
    }
}

/// True when the field is present with any value but `null`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Present(pub bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Present;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Present, E> {
                Ok(Present(false))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Present, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Present(true))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Present, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Present(true))
            }
        }
        d.deserialize_any(V)
    }
}

/// An object field read as `T` (a lenient struct); any other JSON type reads as absent.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<T> Obj<T> {
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Obj<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Obj(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            default_scalars!(
                visit_bool: bool,
                visit_u64: u64,
                visit_i64: i64,
                visit_f64: f64,
                visit_str: &str
            );
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An array field whose object elements read as `T`; other elements, and any other JSON type
/// in place of the array, are skipped.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Obj<T>>()? {
                    items.extend(item.0);
                }
                Ok(List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<List<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(List(Vec::new()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            default_scalars!(
                visit_bool: bool,
                visit_u64: u64,
                visit_i64: i64,
                visit_f64: f64,
                visit_str: &str
            );
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Body<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Body<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Body<'a>, A::Error> {
                Doc::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|d| Body::One(Box::new(d)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body<'a>, A::Error> {
                let mut docs = Vec::new();
                while let Some(item) = seq.next_element::<Obj<Doc<'a>>>()? {
                    docs.extend(item.0);
                }
                Ok(if docs.is_empty() {
                    Body::Neither
                } else {
                    Body::Many(docs)
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Body<'a>, E> {
                Ok(Body::Neither)
            }
            default_scalars!(
                visit_bool: bool,
                visit_u64: u64,
                visit_i64: i64,
                visit_f64: f64,
                visit_str: &str
            );
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'a> Body<'a> {
    /// The documents of the body.
    pub fn docs(&self) -> &[Doc<'a>] {
        match self {
            Body::One(doc) => std::slice::from_ref(&**doc),
            Body::Many(docs) => docs,
            Body::Neither => &[],
        }
    }
}

/// Parses one document (a stream event); `None` when it is not a JSON object.
pub(super) fn parse_doc(json: &[u8]) -> Option<Doc<'_>> {
    match serde_json::from_slice::<Body>(json).ok()? {
        Body::One(doc) => Some(*doc),
        _ => None,
    }
}

/// Parses a whole JSON body; `None` on a syntax error (a truncated or broken body).
pub(super) fn parse_body(json: &[u8]) -> Option<Body<'_>> {
    serde_json::from_slice::<Body>(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_unexpected_types_read_as_absent() {
        let doc = parse_doc(
            br#"{"type":7,"error":{"message":"x"},"choices":"oops","candidates":[1,{"finishReason":"STOP","index":"0"}],
                "message":"a string","response":[1],"usage":{"input_tokens":-1,"output_tokens":3},"done":"yes"}"#,
        )
        .unwrap();
        assert_eq!(doc.kind, Text(None));
        assert!(doc.error.0);
        assert!(doc.choices.0.is_empty());
        assert_eq!(doc.candidates.0.len(), 1);
        assert!(doc.candidates.0[0].finish_reason.is("STOP"));
        assert_eq!(doc.candidates.0[0].index, Num(None));
        assert!(doc.message.get().is_none() && doc.response.get().is_none());
        let usage = doc.usage.get().unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens),
            (Num(None), Num(Some(3)))
        );
        assert_eq!(doc.done, Flag(None));
    }

    #[test]
    fn null_error_is_absent_and_escaped_strings_read() {
        let doc = parse_doc(br#"{"error":null,"status":"compl\u0065ted"}"#).unwrap();
        assert!(!doc.error.0);
        assert!(doc.status.is("completed"));
    }

    #[test]
    fn bodies() {
        assert!(matches!(parse_body(b"[{\"a\":1},2]"), Some(Body::Many(d)) if d.len() == 1));
        assert!(matches!(parse_body(b"[1,2]"), Some(Body::Neither)));
        assert!(matches!(parse_body(b" 3 "), Some(Body::Neither)));
        assert!(parse_body(b"{\"a\":").is_none());
        assert!(parse_body(b"{} x").is_none());
        assert!(parse_doc(b"[{}]").is_none());
    }
}
