//! Server-sent events as MCP's Streamable HTTP sends them (`text/event-stream`): events
//! separated by blank lines, `data:` lines joined with `\n`, comments (`:`), `id:`,
//! `event:` and `retry:` fields, any of CRLF / LF / CR line ends.
//!
//! Only whole bodies are handled: the response phase buffers the stream first. An event
//! whose data is rewritten is written back with LF line ends; every other event is kept
//! byte for byte.

/// One event of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event's text as received, including its terminating blank line.
    pub raw: &'a str,
    /// Its lines other than `data:` (comments, `id:`, `event:`, `retry:`), as received.
    pub other_lines: Vec<&'a str>,
    /// The `data:` lines joined with `\n`; `None` when the event has none.
    pub data: Option<String>,
    /// Whether a blank line ended it (false for a partial event at the end of the body).
    pub terminated: bool,
}

impl Event<'_> {
    /// The event with new data, written with LF line ends.
    pub fn with_data(&self, data: &str) -> String {
        let mut out = String::with_capacity(data.len() + 64);
        for l in &self.other_lines {
            out.push_str(l);
            out.push('\n');
        }
        for l in data.split('\n') {
            out.push_str("data: ");
            out.push_str(l);
            out.push('\n');
        }
        if self.terminated {
            out.push('\n');
        }
        out
    }
}

/// A new terminated event carrying `data`.
pub fn event(data: &str) -> String {
    Event {
        raw: "",
        other_lines: Vec::new(),
        data: None,
        terminated: true,
    }
    .with_data(data)
}

/// Splits a line off `text`: the line without its end, and the rest after the end.
fn split_line(text: &str) -> (&str, Option<&str>) {
    match text.find(['\r', '\n']) {
        None => (text, None),
        Some(i) => {
            let line = text.get(..i).unwrap_or_default();
            let rest = text.get(i..).unwrap_or_default();
            let rest = rest
                .strip_prefix("\r\n")
                .or_else(|| rest.strip_prefix('\r'))
                .or_else(|| rest.strip_prefix('\n'))
                .unwrap_or(rest);
            (line, Some(rest))
        }
    }
}

/// Parses a whole stream into events.
pub fn parse(text: &str) -> Vec<Event<'_>> {
    let mut events = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest;
        let mut other_lines = Vec::new();
        let mut data: Option<String> = None;
        let mut terminated = false;
        loop {
            let (line, after) = split_line(rest);
            let Some(after) = after else {
                // the body ended mid-line: a partial event
                if !line.is_empty() {
                    take_line(line, &mut other_lines, &mut data);
                }
                rest = "";
                break;
            };
            rest = after;
            if line.is_empty() {
                terminated = true;
                break;
            }
            take_line(line, &mut other_lines, &mut data);
            if rest.is_empty() {
                break;
            }
        }
        let used = start.len() - rest.len();
        events.push(Event {
            raw: start.get(..used).unwrap_or(start),
            other_lines,
            data,
            terminated,
        });
    }
    events
}

fn take_line<'a>(line: &'a str, other: &mut Vec<&'a str>, data: &mut Option<String>) {
    let (field, value) = match line.split_once(':') {
        Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
        None => (line, ""),
    };
    if field == "data" {
        match data {
            Some(d) => {
                d.push('\n');
                d.push_str(value);
            }
            None => *data = Some(value.to_string()),
        }
    } else {
        other.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fields_and_multiline_data() {
        let s = ": keepalive\n\nid: 1\nevent: message\ndata: {\"a\":\ndata:1}\n\n";
        let ev = parse(s);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, None);
        assert_eq!(ev[0].other_lines, [": keepalive"]);
        assert_eq!(ev[1].data.as_deref(), Some("{\"a\":\n1}"));
        assert_eq!(ev[1].other_lines, ["id: 1", "event: message"]);
        assert!(ev[1].terminated);
        let joined: String = ev.iter().map(|e| e.raw).collect();
        assert_eq!(joined, s);
    }

    #[test]
    fn crlf_cr_and_partial_trailing_event() {
        let s = "data: x\r\n\r\ndata: y\r\rdata: z";
        let ev = parse(s);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].data.as_deref(), Some("x"));
        assert_eq!(ev[1].data.as_deref(), Some("y"));
        assert_eq!(ev[2].data.as_deref(), Some("z"));
        assert!(!ev[2].terminated);
        assert_eq!(ev.iter().map(|e| e.raw).collect::<String>(), s);
        assert_eq!(ev[2].with_data("q"), "data: q\n");
    }

    #[test]
    fn rewriting_keeps_other_fields() {
        let ev = parse("id: 7\r\ndata: old\r\n\r\n");
        assert_eq!(
            ev[0].with_data("new\nline"),
            "id: 7\ndata: new\ndata: line\n\n"
        );
        assert_eq!(event("{}"), "data: {}\n\n");
        assert!(parse("").is_empty());
        // `data` without a colon is an empty data line
        assert_eq!(parse("data\n\n")[0].data.as_deref(), Some(""));
    }

    #[test]
    fn field_values_and_comment_only_streams() {
        let ev = parse("data:a:b\ndata:  two spaces\n\n");
        assert_eq!(ev[0].data.as_deref(), Some("a:b\n two spaces"));
        let ev = parse(": only a comment\n\n: another\n\n");
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|e| e.data.is_none() && e.terminated));
        // blank lines between events make empty events, kept verbatim
        let s = "\n\ndata: x\n\n";
        assert_eq!(parse(s).iter().map(|e| e.raw).collect::<String>(), s);
    }
}
