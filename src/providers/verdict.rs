//! Whether a response is a whole answer the provider vouches for: the one rule the cache stores
//! by ([`Verdict::Complete`] only). Per format, what a successful end looks like and what an
//! error or refusal looks like:
//!
//! | format | successful end | never stored |
//! |---|---|---|
//! | OpenAI chat / completions SSE (and compatible servers) | `data: [DONE]`, and every choice seen carries a `finish_reason` | `data: {"error": …}` (or `"object": "error"`) anywhere; `finish_reason` `content_filter` (refusal), `error`, `abort`, `cancelled`; a `refusal` in a delta; `[DONE]` while a choice has no `finish_reason` (partial) |
//! | OpenAI Responses SSE | `response.completed` whose response has `status: completed` (no `[DONE]`) | `response.failed`, `response.incomplete`, `error` events; `response.refusal.*` events or a `refusal` output part |
//! | Anthropic Messages SSE | `message_stop` after a `message_delta` with a `stop_reason` | `event: error`; `stop_reason: refusal` |
//! | Gemini SSE (`alt=sse`) | every candidate seen ends with `finishReason` `STOP` or `MAX_TOKENS` | `{"error": …}`; `promptFeedback.blockReason`; any other `finishReason` (`SAFETY`, `RECITATION`, `LANGUAGE`, `OTHER`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`, `MALFORMED_FUNCTION_CALL`, `IMAGE_*`, `NO_IMAGE`, `UNEXPECTED_TOOL_CALL`, `TOO_MANY_TOOL_CALLS`, …) |
//! | Ollama NDJSON | an object with `"done": true` | `{"error": …}`; `done_reason` `load` / `unload` (a model loaded or unloaded, no answer); Ollama has no refusal signal |
//! | JSON (every provider) | a body that parses, every Gemini candidate in it (or in the array of a non-SSE Gemini stream) with a `finishReason` | a top-level `error`, `"type": "error"` or `"object": "error"`; the refusals and failures above in their non-streamed form (`finish_reason: content_filter`, `message.refusal`, `stop_reason: refusal`, Gemini `blockReason` / blocking `finishReason`, a Responses object whose `status` is not `completed`); Ollama `"done": false` |
//! | anything else | the body ended as framed | — |
//!
//! A stream of any format that breaks off before its successful end is [`Verdict::Incomplete`].
//! The rules look for positive proof of success: an event promptgate cannot read proves nothing.

use super::doc::{Body, Doc};
use std::fmt;

/// What the provider said about a response, judged from its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A whole answer, ended the way the format ends a successful answer: storable.
    Complete,
    /// Not (yet) proven whole: cut short, no successful end seen, or unreadable.
    Incomplete,
    /// The provider reported an error or a refusal, or the answer is not one: never stored.
    Failed(Failure),
}

/// Why a response is not an answer worth keeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An error object or error event in a 2xx body.
    Error,
    /// A refusal or a safety / policy block: these come and go, so a retry may get an answer.
    Refusal,
    /// The provider stopped without finishing (`response.incomplete`, a queued background
    /// response, a malformed tool call).
    Unfinished,
    /// A reply that is no answer (Ollama loading or unloading a model).
    NoAnswer,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Complete => "complete",
            Verdict::Incomplete => "incomplete (no successful end seen)",
            Verdict::Failed(Failure::Error) => "an error reported in the body",
            Verdict::Failed(Failure::Refusal) => "a refusal or safety block",
            Verdict::Failed(Failure::Unfinished) => "stopped unfinished",
            Verdict::Failed(Failure::NoAnswer) => "not an answer",
        })
    }
}

/// OpenAI-compatible `finish_reason` values that end a choice without an answer. Any other
/// value is a finished answer: compatible servers spell theirs differently (`eos_token`,
/// `stop_sequence`), so only the failures are listed.
fn chat_finish_failure(reason: &str) -> Option<Failure> {
    match reason {
        "content_filter" => Some(Failure::Refusal),
        "error" | "abort" | "cancelled" | "canceled" => Some(Failure::Error),
        _ => None,
    }
}

/// Gemini `finishReason`: only these two end a candidate with its answer; everything else in
/// the `FinishReason` enum is a block, a failed tool call or unspecified.
fn gemini_finish_failure(reason: &str) -> Option<Failure> {
    match reason {
        "STOP" | "MAX_TOKENS" => None,
        "SAFETY"
        | "RECITATION"
        | "LANGUAGE"
        | "OTHER"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "IMAGE_OTHER"
        | "NO_IMAGE" => Some(Failure::Refusal),
        _ => Some(Failure::Unfinished),
    }
}

/// Anthropic `stop_reason`: `refusal` is the one that is not an answer.
fn anthropic_stop_failure(reason: &str) -> Option<Failure> {
    (reason == "refusal").then_some(Failure::Refusal)
}

/// Ollama `done_reason`: loading or unloading a model answers nothing.
fn ollama_done_failure(reason: &str) -> Option<Failure> {
    matches!(reason, "load" | "unload").then_some(Failure::NoAnswer)
}

/// Failures any single document shows, streamed or whole: error objects and refusals.
fn doc_failure(doc: &Doc) -> Option<Failure> {
    // `"object": "error"`: older vLLM error responses.
    if doc.error.0 || doc.kind.is("error") || doc.object.is("error") {
        return Some(Failure::Error);
    }
    if doc
        .prompt_feedback
        .get()
        .is_some_and(|p| p.block_reason.get().is_some())
    {
        return Some(Failure::Refusal);
    }
    for choice in &doc.choices.0 {
        if let Some(f) = choice.finish_reason.get().and_then(chat_finish_failure) {
            return Some(f);
        }
        let refused = [&choice.delta, &choice.message].iter().any(|m| {
            m.get()
                .is_some_and(|m| m.refusal.get().is_some_and(|r| !r.is_empty()))
        });
        if refused {
            return Some(Failure::Refusal);
        }
    }
    for candidate in &doc.candidates.0 {
        if let Some(f) = candidate
            .finish_reason
            .get()
            .and_then(gemini_finish_failure)
        {
            return Some(f);
        }
    }
    let stop = doc
        .stop_reason
        .get()
        .or_else(|| doc.delta.get()?.stop_reason.get());
    if let Some(f) = stop.and_then(anthropic_stop_failure) {
        return Some(f);
    }
    if let Some(f) = doc.done_reason.get().and_then(ollama_done_failure) {
        return Some(f);
    }
    response_failure(doc)
}

/// A Responses API object (`"object": "response"`) that did not complete, or refused.
fn response_failure(doc: &Doc) -> Option<Failure> {
    let refused = doc
        .output
        .0
        .iter()
        .any(|item| item.content.0.iter().any(|part| part.kind.is("refusal")));
    if refused {
        return Some(Failure::Refusal);
    }
    if !doc.object.is("response") {
        return None;
    }
    match doc.status.get() {
        None | Some("completed") => None,
        Some("failed") => Some(Failure::Error),
        // incomplete, cancelled, queued, in_progress: not a finished answer
        Some(_) => Some(Failure::Unfinished),
    }
}

/// The verdict on a whole JSON body.
pub(super) fn judge_body(body: Option<&Body>) -> Verdict {
    let Some(body) = body else {
        return Verdict::Incomplete;
    };
    // Gemini candidates seen across the documents (an array is a stream): `(index, finished)`.
    let mut candidates = Vec::new();
    for doc in body.docs() {
        if let Some(f) = doc_failure(doc) {
            return Verdict::Failed(f);
        }
        // An Ollama answer that says it is not done is a piece of a stream, not an answer.
        if doc.done.0 == Some(false) {
            return Verdict::Incomplete;
        }
        for candidate in &doc.candidates.0 {
            let index = candidate.index.0.unwrap_or(0);
            mark(
                &mut candidates,
                index,
                candidate.finish_reason.get().is_some(),
            );
        }
    }
    // A Gemini candidate without a finishReason "has not stopped generating".
    if candidates.iter().any(|c| !c.1) {
        return Verdict::Incomplete;
    }
    Verdict::Complete
}

/// What a stream has shown so far, event by event; [`StreamJudge::verdict`] applies the
/// format's rule for a successful end.
#[derive(Debug, Default)]
pub(super) struct StreamJudge {
    failure: Option<Failure>,
    /// OpenAI `data: [DONE]`.
    done_marker: bool,
    /// OpenAI choices seen: `(index, finished)`.
    choices: Vec<(u64, bool)>,
    /// Gemini candidates seen: `(index, finished)`.
    candidates: Vec<(u64, bool)>,
    /// A Responses API event was seen; then only `response.completed` ends the stream.
    responses: bool,
    responses_completed: bool,
    /// An Anthropic Messages event was seen; then only `message_stop` ends the stream.
    anthropic: bool,
    anthropic_stop_reason: bool,
    anthropic_stop: bool,
    /// Ollama `"done": true`.
    ndjson_done: bool,
}

/// Marks `index` seen in `list`, and finished if `finished`.
fn mark(list: &mut Vec<(u64, bool)>, index: u64, finished: bool) {
    match list.iter_mut().find(|(i, _)| *i == index) {
        Some(entry) => entry.1 |= finished,
        None => list.push((index, finished)),
    }
}

impl StreamJudge {
    fn fail(&mut self, failure: Failure) {
        // The first failure is the one reported; any failure is final.
        self.failure.get_or_insert(failure);
    }

    /// An SSE `event:` line.
    pub fn event_name(&mut self, name: &[u8]) {
        match name {
            b"error" => self.fail(Failure::Error),
            b"response.failed" => self.fail(Failure::Error),
            b"response.incomplete" => self.fail(Failure::Unfinished),
            _ => {}
        }
    }

    /// An SSE `data: [DONE]` line.
    pub fn done_marker(&mut self) {
        self.done_marker = true;
    }

    /// One SSE event's data.
    pub fn sse_event(&mut self, doc: &Doc) {
        if let Some(f) = doc_failure(doc) {
            self.fail(f);
        }
        for choice in &doc.choices.0 {
            let index = choice.index.0.unwrap_or(0);
            mark(
                &mut self.choices,
                index,
                choice.finish_reason.get().is_some(),
            );
        }
        for candidate in &doc.candidates.0 {
            let index = candidate.index.0.unwrap_or(0);
            mark(
                &mut self.candidates,
                index,
                candidate.finish_reason.get().is_some(),
            );
        }
        let kind = doc.kind.get().unwrap_or("");
        if let Some(event) = kind.strip_prefix("response.") {
            self.responses = true;
            match event {
                "completed" => match doc.response.get() {
                    Some(response) => match doc_failure(response) {
                        None => self.responses_completed = true,
                        Some(f) => self.fail(f),
                    },
                    None => self.fail(Failure::Unfinished),
                },
                "failed" => self.fail(Failure::Error),
                "incomplete" => self.fail(Failure::Unfinished),
                "refusal.delta" | "refusal.done" => self.fail(Failure::Refusal),
                _ => {}
            }
        }
        match kind {
            "message_start"
            | "content_block_start"
            | "content_block_delta"
            | "content_block_stop"
            | "ping" => self.anthropic = true,
            "message_delta" => {
                self.anthropic = true;
                if doc
                    .delta
                    .get()
                    .is_some_and(|d| d.stop_reason.get().is_some())
                {
                    self.anthropic_stop_reason = true;
                }
            }
            "message_stop" => {
                self.anthropic = true;
                self.anthropic_stop = true;
            }
            _ => {}
        }
    }

    /// One NDJSON object.
    pub fn ndjson_object(&mut self, doc: &Doc) {
        if let Some(f) = doc_failure(doc) {
            self.fail(f);
        }
        if doc.done.0 == Some(true) {
            self.ndjson_done = true;
        }
    }

    /// The verdict on what was seen: each format's successful end, in the order of how
    /// specific its events are.
    pub fn verdict(&self) -> Verdict {
        if let Some(f) = self.failure {
            return Verdict::Failed(f);
        }
        let all_finished = |list: &[(u64, bool)]| !list.is_empty() && list.iter().all(|c| c.1);
        let complete = if self.responses {
            self.responses_completed
        } else if self.anthropic {
            self.anthropic_stop && self.anthropic_stop_reason
        } else if self.done_marker {
            all_finished(&self.choices)
        } else if !self.candidates.is_empty() {
            all_finished(&self.candidates)
        } else {
            self.ndjson_done
        };
        if complete {
            Verdict::Complete
        } else {
            Verdict::Incomplete
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ResponseReader;
    use bytes::Bytes;

    const SSE: &str = "text/event-stream; charset=utf-8";
    const NDJSON: &str = "application/x-ndjson";
    const JSON: &str = "application/json";

    fn judge_bytes(content_type: &str, chunks: &[&[u8]]) -> Verdict {
        let mut r = ResponseReader::new(content_type, None);
        for c in chunks {
            r.observe(&Bytes::copy_from_slice(c));
        }
        r.finish();
        r.verdict()
    }

    fn judge(content_type: &str, chunks: &[&str]) -> Verdict {
        let chunks: Vec<&[u8]> = chunks.iter().map(|c| c.as_bytes()).collect();
        judge_bytes(content_type, &chunks)
    }

    /// `judge`, and the same verdict whatever the chunking.
    fn judge_any_cut(content_type: &str, body: &str) -> Verdict {
        let whole = judge(content_type, &[body]);
        for size in [1, 3, 17] {
            let pieces: Vec<&[u8]> = body.as_bytes().chunks(size).collect();
            assert_eq!(
                judge_bytes(content_type, &pieces),
                whole,
                "chunks of {size}: {body}"
            );
        }
        whole
    }

    fn chat_chunk(delta: &str, finish: &str) -> String {
        format!(
            "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    }

    #[test]
    fn openai_chat_streams() {
        let hi = chat_chunk(r#"{"content":"hi"}"#, "null");
        let stop = chat_chunk("{}", "\"stop\"");
        let done = "data: [DONE]\n\n";
        let ok = format!("{hi}{stop}{done}");
        assert_eq!(judge_any_cut(SSE, &ok), Verdict::Complete);
        // a usage chunk with no choices after the finish does not matter
        let with_usage = format!(
            "{hi}{stop}data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":1}}}}\n\n{done}"
        );
        assert_eq!(judge_any_cut(SSE, &with_usage), Verdict::Complete);
        // partial: [DONE] but no choice finished
        assert_eq!(
            judge_any_cut(SSE, &format!("{hi}{done}")),
            Verdict::Incomplete
        );
        // no [DONE]: cut short
        assert_eq!(
            judge_any_cut(SSE, &format!("{hi}{stop}")),
            Verdict::Incomplete
        );
        // an error inside the 200 stream, then [DONE] (vLLM and others)
        let error = "data: {\"error\":{\"message\":\"engine died\",\"code\":500}}\n\n";
        assert_eq!(
            judge_any_cut(SSE, &format!("{hi}{error}{stop}{done}")),
            Verdict::Failed(Failure::Error)
        );
        assert_eq!(
            judge_any_cut(SSE, &format!("{hi}{error}{done}")),
            Verdict::Failed(Failure::Error)
        );
        // content filter and refusals
        let filtered = chat_chunk("{}", "\"content_filter\"");
        assert_eq!(
            judge_any_cut(SSE, &format!("{hi}{filtered}{done}")),
            Verdict::Failed(Failure::Refusal)
        );
        let refusal = chat_chunk(r#"{"refusal":"I can't help with that."}"#, "null");
        assert_eq!(
            judge_any_cut(SSE, &format!("{refusal}{stop}{done}")),
            Verdict::Failed(Failure::Refusal)
        );
        let no_refusal = chat_chunk(r#"{"content":"x","refusal":null}"#, "null");
        assert_eq!(
            judge_any_cut(SSE, &format!("{no_refusal}{stop}{done}")),
            Verdict::Complete
        );
        // n = 2: both choices must finish
        let second = "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"b\"},\"finish_reason\":null}]}\n\n";
        assert_eq!(
            judge_any_cut(SSE, &format!("{hi}{second}{stop}{done}")),
            Verdict::Incomplete
        );
        let second_stop =
            "data: {\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n";
        assert_eq!(
            judge_any_cut(SSE, &format!("{hi}{second}{stop}{second_stop}{done}")),
            Verdict::Complete
        );
        // legacy completions: same rule
        let completion =
            "data: {\"object\":\"text_completion\",\"choices\":[{\"text\":\"x\",\"index\":0,\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(
            judge_any_cut(SSE, &format!("{completion}{done}")),
            Verdict::Complete
        );
        let filtered_completion =
            "data: {\"object\":\"text_completion\",\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"content_filter\"}]}\n\n";
        assert_eq!(
            judge_any_cut(SSE, &format!("{filtered_completion}{done}")),
            Verdict::Failed(Failure::Refusal)
        );
        // an abort from a compatible server
        let aborted = chat_chunk("{}", "\"abort\"");
        assert_eq!(
            judge_any_cut(SSE, &format!("{hi}{aborted}{done}")),
            Verdict::Failed(Failure::Error)
        );
    }

    fn responses_event(kind: &str, data: &str) -> String {
        format!("event: {kind}\ndata: {{\"type\":\"{kind}\"{data}}}\n\n")
    }

    #[test]
    fn openai_responses_streams() {
        let created = responses_event(
            "response.created",
            r#","response":{"object":"response","status":"in_progress","model":"gpt-4o","usage":null,"error":null}"#,
        );
        let delta = responses_event("response.output_text.delta", r#","delta":"hi""#);
        let completed = responses_event(
            "response.completed",
            r#","response":{"object":"response","status":"completed","error":null,"usage":{"input_tokens":5,"output_tokens":2}}"#,
        );
        assert_eq!(
            judge_any_cut(SSE, &format!("{created}{delta}{completed}")),
            Verdict::Complete
        );
        // cut before the end
        assert_eq!(
            judge_any_cut(SSE, &format!("{created}{delta}")),
            Verdict::Incomplete
        );
        // a [DONE] does not end a Responses stream
        assert_eq!(
            judge_any_cut(SSE, &format!("{created}{delta}data: [DONE]\n\n")),
            Verdict::Incomplete
        );
        let failed = responses_event(
            "response.failed",
            r#","response":{"object":"response","status":"failed","error":{"code":"server_error"}}"#,
        );
        assert_eq!(
            judge_any_cut(SSE, &format!("{created}{delta}{failed}")),
            Verdict::Failed(Failure::Error)
        );
        let incomplete = responses_event(
            "response.incomplete",
            r#","response":{"object":"response","status":"incomplete"}"#,
        );
        assert_eq!(
            judge_any_cut(SSE, &format!("{created}{delta}{incomplete}")),
            Verdict::Failed(Failure::Unfinished)
        );
        let error = responses_event("error", r#","code":"server_error","message":"boom""#);
        assert_eq!(
            judge_any_cut(SSE, &format!("{created}{error}{completed}")),
            Verdict::Failed(Failure::Error)
        );
        let refusal = responses_event("response.refusal.done", r#","refusal":"no""#);
        assert_eq!(
            judge_any_cut(SSE, &format!("{created}{refusal}{completed}")),
            Verdict::Failed(Failure::Refusal)
        );
        // a completed event whose response is not completed is no success
        let odd = responses_event(
            "response.completed",
            r#","response":{"object":"response","status":"incomplete"}"#,
        );
        assert_eq!(
            judge_any_cut(SSE, &format!("{created}{odd}")),
            Verdict::Failed(Failure::Unfinished)
        );
    }

    fn anthropic_event(kind: &str, data: &str) -> String {
        format!("event: {kind}\ndata: {{\"type\":\"{kind}\"{data}}}\n\n")
    }

    #[test]
    fn anthropic_streams() {
        let start = anthropic_event(
            "message_start",
            r#","message":{"type":"message","model":"claude","stop_reason":null,"usage":{"input_tokens":3}}"#,
        );
        let text = anthropic_event(
            "content_block_delta",
            r#","index":0,"delta":{"type":"text_delta","text":"hi"}"#,
        );
        let delta = |reason: &str| {
            anthropic_event(
                "message_delta",
                &format!(r#","delta":{{"stop_reason":"{reason}"}},"usage":{{"output_tokens":2}}"#),
            )
        };
        let stop = anthropic_event("message_stop", "");
        let ok = format!("{start}{text}{}{stop}", delta("end_turn"));
        assert_eq!(judge_any_cut(SSE, &ok), Verdict::Complete);
        assert_eq!(
            judge_any_cut(SSE, &format!("{start}{text}{}", delta("end_turn"))),
            Verdict::Incomplete
        );
        // message_stop without any stop_reason: not a finished message
        assert_eq!(
            judge_any_cut(SSE, &format!("{start}{text}{stop}")),
            Verdict::Incomplete
        );
        assert_eq!(
            judge_any_cut(SSE, &format!("{start}{text}{}{stop}", delta("refusal"))),
            Verdict::Failed(Failure::Refusal)
        );
        let error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(
            judge_any_cut(SSE, &format!("{start}{text}{error}")),
            Verdict::Failed(Failure::Error)
        );
        // the error event's name alone is enough, even with unreadable data
        assert_eq!(
            judge_any_cut(
                SSE,
                &format!(
                    "{start}event: error\ndata: oops\n\n{}{stop}",
                    delta("end_turn")
                )
            ),
            Verdict::Failed(Failure::Error)
        );
    }

    fn gemini(candidates: &str) -> String {
        format!(
            "data: {{\"candidates\":{candidates},\"modelVersion\":\"gemini-2.5-flash\"}}\r\n\r\n"
        )
    }

    #[test]
    fn gemini_streams() {
        let part = gemini(r#"[{"content":{"parts":[{"text":"hi"}]},"index":0}]"#);
        let stop =
            gemini(r#"[{"content":{"parts":[{"text":"!"}]},"finishReason":"STOP","index":0}]"#);
        assert_eq!(
            judge_any_cut(SSE, &format!("{part}{stop}")),
            Verdict::Complete
        );
        assert_eq!(judge_any_cut(SSE, &part), Verdict::Incomplete);
        let max = gemini(r#"[{"finishReason":"MAX_TOKENS"}]"#);
        assert_eq!(
            judge_any_cut(SSE, &format!("{part}{max}")),
            Verdict::Complete
        );
        for blocking in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
            "OTHER",
            "IMAGE_SAFETY",
        ] {
            let blocked = gemini(&format!(
                r#"[{{"finishReason":"{blocking}","index":0,"safetyRatings":[]}}]"#
            ));
            assert_eq!(
                judge_any_cut(SSE, &format!("{part}{blocked}")),
                Verdict::Failed(Failure::Refusal),
                "{blocking}"
            );
        }
        for failing in [
            "MALFORMED_FUNCTION_CALL",
            "FINISH_REASON_UNSPECIFIED",
            "SOMETHING_NEW",
        ] {
            let failed = gemini(&format!(r#"[{{"finishReason":"{failing}"}}]"#));
            assert_eq!(
                judge_any_cut(SSE, &format!("{part}{failed}")),
                Verdict::Failed(Failure::Unfinished),
                "{failing}"
            );
        }
        let prompt_blocked = "data: {\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"},\"usageMetadata\":{\"promptTokenCount\":9}}\r\n\r\n";
        assert_eq!(
            judge_any_cut(SSE, prompt_blocked),
            Verdict::Failed(Failure::Refusal)
        );
        let error = "data: {\"error\":{\"code\":503,\"status\":\"UNAVAILABLE\"}}\r\n\r\n";
        assert_eq!(
            judge_any_cut(SSE, &format!("{part}{error}{stop}")),
            Verdict::Failed(Failure::Error)
        );
        // two candidates: both must end
        let second = gemini(r#"[{"content":{"parts":[{"text":"b"}]},"index":1}]"#);
        assert_eq!(
            judge_any_cut(SSE, &format!("{part}{second}{stop}")),
            Verdict::Incomplete
        );
    }

    #[test]
    fn ollama_streams() {
        let part = "{\"model\":\"llama3.2\",\"message\":{\"content\":\"hi\"},\"done\":false}\n";
        let done =
            "{\"model\":\"llama3.2\",\"done\":true,\"done_reason\":\"stop\",\"eval_count\":3}";
        assert_eq!(
            judge_any_cut(NDJSON, &format!("{part}{done}")),
            Verdict::Complete
        );
        assert_eq!(
            judge_any_cut(NDJSON, &format!("{part}{done}\n")),
            Verdict::Complete
        );
        assert_eq!(judge_any_cut(NDJSON, part), Verdict::Incomplete);
        let error = "{\"error\":\"model runner has unexpectedly stopped\"}\n";
        assert_eq!(
            judge_any_cut(NDJSON, &format!("{part}{error}")),
            Verdict::Failed(Failure::Error)
        );
        let load = "{\"model\":\"llama3.2\",\"done\":true,\"done_reason\":\"load\"}\n";
        assert_eq!(
            judge_any_cut(NDJSON, load),
            Verdict::Failed(Failure::NoAnswer)
        );
        // the marker's text inside a message is not the marker
        assert_eq!(
            judge_any_cut(
                NDJSON,
                "{\"message\":{\"content\":\"\\\"done\\\":true\"},\"done\":false}\n"
            ),
            Verdict::Incomplete
        );
    }

    /// Found by the `stream_end` fuzz target (before verdicts): a partial last NDJSON line that
    /// parsed as JSON so far was judged complete at the end of each chunk, so byte-by-byte
    /// delivery said "ended" where the same bytes in one chunk did not.
    #[test]
    fn verdict_does_not_depend_on_chunk_boundaries() {
        for data in [
            &b"{Ynee}\n{\"done\":true}\0\0\0\0\0\0\0\0\0\0"[..],
            b"{\"done\":true} x\n",
            b"{\"done\":true}",
        ] {
            let whole = judge_bytes(NDJSON, &[data]);
            let bytewise: Vec<&[u8]> = data.chunks(1).collect();
            assert_eq!(
                whole,
                judge_bytes(NDJSON, &bytewise),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
        assert_eq!(
            judge_bytes(NDJSON, &[b"{\"done\":true}"]),
            Verdict::Complete
        );
        assert_eq!(
            judge_bytes(NDJSON, &[b"{\"done\":true} x\n"]),
            Verdict::Incomplete
        );
    }

    #[test]
    fn lookalikes_are_not_ends() {
        // the marker's text inside a message is not the marker
        assert_eq!(
            judge_any_cut(SSE, "data: {\"content\":\"data: [DONE]\"}\n\n"),
            Verdict::Incomplete
        );
        assert_eq!(
            judge_any_cut(SSE, "data: {\"content\":\"event: message_stop\"}\n\n"),
            Verdict::Incomplete
        );
        assert_eq!(judge(SSE, &[]), Verdict::Incomplete);
        assert_eq!(judge(NDJSON, &[]), Verdict::Incomplete);
    }

    #[test]
    fn json_answers() {
        let ok = [
            r#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null},"finish_reason":"stop"}]}"#,
            r#"{"object":"list","data":[{"embedding":[0.1]}]}"#,
            r#"{"type":"message","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn"}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}]}"#,
            r#"{"embedding":{"values":[1,2]}}"#,
            r#"{"totalTokens":12}"#,
            r#"{"object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}],"error":null}"#,
            r#"{"model":"llama3.2","message":{"content":"hi"},"done":true,"done_reason":"stop"}"#,
            r#"{"text":"transcribed words"}"#,
            // Gemini's non-SSE stream: an array of responses
            r#"[{"candidates":[{"content":{"parts":[{"text":"a"}]}}]},{"candidates":[{"finishReason":"STOP"}]}]"#,
            r#"{"candidates":[],"usageMetadata":{"promptTokenCount":1}}"#,
            r#"[1, 2, 3]"#,
            r#"42"#,
        ];
        for body in ok {
            assert_eq!(judge(JSON, &[body]), Verdict::Complete, "{body}");
        }
        let failed = [
            (r#"{"error":{"message":"engine died"}}"#, Failure::Error),
            (
                r#"{"type":"error","error":{"type":"overloaded_error"}}"#,
                Failure::Error,
            ),
            (r#"{"error":"model not loaded"}"#, Failure::Error),
            (
                r#"{"object":"error","message":"engine dead","type":"InternalServerError","code":500}"#,
                Failure::Error,
            ),
            (
                r#"{"choices":[{"message":{"content":null},"finish_reason":"content_filter"}]}"#,
                Failure::Refusal,
            ),
            (
                r#"{"choices":[{"message":{"content":null,"refusal":"I can't"},"finish_reason":"stop"}]}"#,
                Failure::Refusal,
            ),
            (
                r#"{"type":"message","content":[],"stop_reason":"refusal"}"#,
                Failure::Refusal,
            ),
            // legacy completions filter the same way as chat
            (
                r#"{"object":"text_completion","choices":[{"text":"","index":0,"finish_reason":"content_filter"}]}"#,
                Failure::Refusal,
            ),
            // a content-filtered Responses answer stops as `incomplete`
            (
                r#"{"object":"response","status":"incomplete","incomplete_details":{"reason":"content_filter"},"output":[]}"#,
                Failure::Unfinished,
            ),
            (
                r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#,
                Failure::Refusal,
            ),
            (
                r#"{"candidates":[{"finishReason":"RECITATION"}]}"#,
                Failure::Refusal,
            ),
            (
                r#"[{"candidates":[{"content":{}}]},{"candidates":[{"finishReason":"SAFETY"}]}]"#,
                Failure::Refusal,
            ),
            (
                r#"{"object":"response","status":"failed","error":{"code":"x"}}"#,
                Failure::Error,
            ),
            (
                r#"{"object":"response","status":"queued"}"#,
                Failure::Unfinished,
            ),
            (
                r#"{"object":"response","status":"incomplete"}"#,
                Failure::Unfinished,
            ),
            (
                r#"{"object":"response","status":"completed","output":[{"type":"message","content":[{"type":"refusal","refusal":"no"}]}]}"#,
                Failure::Refusal,
            ),
            (
                r#"{"model":"llama3.2","done":true,"done_reason":"unload"}"#,
                Failure::NoAnswer,
            ),
        ];
        for (body, failure) in failed {
            assert_eq!(judge(JSON, &[body]), Verdict::Failed(failure), "{body}");
        }
        // truncated or broken JSON is not whole
        assert_eq!(
            judge(JSON, &[r#"{"choices":[{"message""#]),
            Verdict::Incomplete
        );
        assert_eq!(judge(JSON, &[""]), Verdict::Incomplete);
        assert_eq!(judge(JSON, &[r#"{"done":false}"#]), Verdict::Incomplete);
        // a Gemini candidate that has not stopped, whole or in a non-SSE stream's array
        assert_eq!(
            judge(
                JSON,
                &[r#"{"candidates":[{"content":{"parts":[{"text":"a"}]}}]}"#]
            ),
            Verdict::Incomplete
        );
        assert_eq!(
            judge(
                JSON,
                &[r#"[{"candidates":[{"content":{}}]},{"candidates":[{"content":{}}]}]"#]
            ),
            Verdict::Incomplete
        );
        // bodies promptgate does not read are judged by their framing alone
        assert_eq!(
            judge("text/plain", &["1\n00:00 --> 00:01\nhi"]),
            Verdict::Complete
        );
        assert_eq!(judge("", &[""]), Verdict::Complete);
    }

    #[test]
    fn verdict_before_the_end() {
        let mut r = ResponseReader::new(SSE, None);
        r.observe(&Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        ));
        assert_eq!(
            r.verdict(),
            Verdict::Complete,
            "a stream's end is known as it passes"
        );
        let mut r = ResponseReader::new(JSON, None);
        r.observe(&Bytes::from_static(b"{}"));
        assert_eq!(
            r.verdict(),
            Verdict::Incomplete,
            "a JSON body is judged at its end"
        );
        r.finish();
        assert_eq!(r.verdict(), Verdict::Complete);
    }
}
