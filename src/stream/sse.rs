//! An incremental parser of `text/event-stream` bytes, as the WHATWG spec reads them: lines end
//! in LF, CRLF or CR (a CR at the end of a chunk waits for the next to see whether LF follows),
//! `:` starts a comment, `data` lines join with LF, a blank line dispatches.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, when one was given.
    pub event: Option<String>,
    /// The `data:` lines joined with LF.
    pub data: String,
}

/// Turns chunks of bytes, split anywhere, into events.
#[derive(Debug)]
pub struct SseParser {
    pending: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
    max_line: usize,
    overflowed: bool,
}

impl SseParser {
    /// A parser that gives up (see [`SseParser::overflowed`]) on a line longer than `max_line`
    /// bytes, so an upstream that never sends a newline cannot grow memory without bound.
    pub fn new(max_line: usize) -> Self {
        Self {
            pending: Vec::new(),
            data: Vec::new(),
            has_data: false,
            event: None,
            max_line,
            overflowed: false,
        }
    }

    /// Whether a line went over the limit; no events come out after that.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Feeds a chunk; complete events are appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) {
        if self.overflowed {
            return;
        }
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(offset) = self.pending[start..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
        {
            let end = start + offset;
            let next = match self.pending[end] {
                b'\r' if end + 1 == self.pending.len() => break,
                b'\r' if self.pending[end + 1] == b'\n' => end + 2,
                _ => end + 1,
            };
            let line = self.pending[start..end].to_vec();
            self.line(&line, out);
            start = next;
        }
        self.pending.drain(..start);
        if self.pending.len() > self.max_line || self.data.len() > self.max_line {
            self.overflowed = true;
            self.pending = Vec::new();
            self.data = Vec::new();
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            if self.has_data {
                if self.data.last() == Some(&b'\n') {
                    self.data.pop();
                }
                out.push(Event {
                    event: self.event.take(),
                    data: String::from_utf8_lossy(&self.data).into_owned(),
                });
            }
            self.data.clear();
            self.has_data = false;
            self.event = None;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<Event> {
        let mut parser = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            parser.feed(chunk, &mut out);
        }
        out
    }

    fn data(d: &str) -> Event {
        Event {
            event: None,
            data: d.to_owned(),
        }
    }

    #[test]
    fn events_come_out_alike_however_the_bytes_are_split() {
        let input = b": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\ndata:two\rdata: lines\r\revent: error\ndata: x\n\nid: 3\nretry: 10\n\ndata: [DONE]\n\n";
        let expected = vec![
            data("{\"a\":1}"),
            data("two\nlines"),
            Event {
                event: Some("error".to_owned()),
                data: "x".to_owned(),
            },
            data("[DONE]"),
        ];
        for piece in 1..=input.len() {
            assert_eq!(parse_in_pieces(input, piece), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert_eq!(parse_in_pieces(b"data: {\"a\":1}\n", 4), vec![]);
        assert_eq!(parse_in_pieces(b"data: partial", 4), vec![]);
    }

    #[test]
    fn a_line_without_end_overflows_instead_of_growing() {
        let mut parser = SseParser::new(16);
        let mut out = Vec::new();
        parser.feed(b"data: 0123456789abcdef", &mut out);
        assert!(parser.overflowed());
        parser.feed(b"\n\ndata: x\n\n", &mut out);
        assert!(out.is_empty());
    }
}
