//! A streaming JSON key scanner: it watches for a few keys in a byte stream that arrives in
//! arbitrary chunks (one JSON body, SSE `data:` events, or a JSON array) and reports their values,
//! keeping only a small fixed state between chunks. Long strings (base64 images) are skipped with
//! SIMD `memchr`, so megabytes of payload cost almost nothing.
//!
//! No I/O and no allocation proportional to the body: captured values are bounded by
//! [`MAX_CAPTURE`]; a value longer than that is reported as truncated.
//!
//! Keys are found in one of two ways: by walking every string (requests: anyone writes them, so
//! names written with escapes count too), or by searching for the names as written (answers
//! from Google, [`Needles`]).

mod needles;

pub use needles::Needles;

/// Longest value kept for a watched key (a `usageMetadata` object is well under 2 KB).
pub const MAX_CAPTURE: usize = 16 * 1024;
/// Longest key the scanner can match, as written: room for the longest watched name with every
/// character escaped (`\u0063` is six bytes), since Google decodes escaped keys.
const MAX_KEY: usize = 144;

/// What to do when a watched key is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Capture the whole value (object, array, string or scalar), up to [`MAX_CAPTURE`].
    Value,
    /// Only count occurrences of the key.
    Count,
    /// Capture a string value's raw (still escaped) content up to a caller-chosen bound and
    /// report its full length.
    Text,
}

/// A watched key and what to do with it.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key as it appears between quotes.
    pub name: &'static [u8],
    /// What to do.
    pub watch: Watch,
}

/// One finding.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// A watched key with [`Watch::Count`] occurred.
    Counted(usize),
    /// The value of a [`Watch::Value`] key (`truncated` when longer than the bound).
    Value {
        key: usize,
        bytes: &'a [u8],
        truncated: bool,
    },
    /// A [`Watch::Text`] string: the first bytes and its full length in bytes.
    Text {
        key: usize,
        head: &'a [u8],
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Unknown,
    Structured,
    Str,
    Scalar,
}

#[derive(Debug, Clone)]
struct Capture {
    key: usize,
    watch: Watch,
    shape: Shape,
    depth: u32,
    in_str: bool,
    esc: bool,
    len: usize,
    truncated: bool,
}

/// A JSON string's raw contents (escapes included, quotes not), decoded (`None` if they are not
/// valid JSON).
pub(crate) fn decode_json_string(raw: &[u8]) -> Option<String> {
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).ok()
}

/// The scanner's state between chunks.
#[derive(Debug, Clone)]
pub struct Scanner {
    keys: &'static [Key],
    text_bound: usize,
    in_string: bool,
    escape: bool,
    key_buf: [u8; MAX_KEY],
    key_len: usize,
    key_overflow: bool,
    /// The string held an escape: `key_buf` holds it raw and is decoded before comparing.
    key_escaped: bool,
    pending: Option<usize>,
    capture: Option<Capture>,
    buf: Vec<u8>,
    /// Search mode's needles (`None`: walk every string).
    needles: Option<&'static Needles>,
    /// Search mode: the last bytes searched, where a needle split by a chunk's end begins.
    win: [u8; needles::WINDOW],
    win_len: usize,
    /// The run of backslashes just before `win` began.
    win_run: usize,
    /// The run of backslashes the data fed so far ends with.
    bs_run: usize,
}

impl Scanner {
    /// A scanner that walks every string for these keys; `text_bound` limits how much of each
    /// `Text` value is kept.
    pub fn new(keys: &'static [Key], text_bound: usize) -> Scanner {
        // Every watched name must fit wholly escaped (tests run with debug assertions).
        debug_assert!(
            keys.iter().all(|k| k.name.len() * 6 <= MAX_KEY),
            "a watched key is too long for MAX_KEY"
        );
        Scanner::with(keys, text_bound, None)
    }

    /// A scanner that searches for its needles' keys (JSON from a trusted writer).
    pub fn searching(needles: &'static Needles, text_bound: usize) -> Scanner {
        Scanner::with(needles.keys, text_bound, Some(needles))
    }

    fn with(keys: &'static [Key], text_bound: usize, needles: Option<&'static Needles>) -> Scanner {
        Scanner {
            keys,
            text_bound,
            in_string: false,
            escape: false,
            key_buf: [0; MAX_KEY],
            key_len: 0,
            key_overflow: false,
            key_escaped: false,
            pending: None,
            capture: None,
            buf: Vec::new(),
            needles,
            win: [0; needles::WINDOW],
            win_len: 0,
            win_run: 0,
            bs_run: 0,
        }
    }

    /// Feeds the next chunk, calling `on` for each finding.
    pub fn feed(&mut self, mut data: &[u8], on: &mut impl FnMut(Found<'_>)) {
        if let Some(needles) = self.needles {
            return self.feed_search(needles, data, on);
        }
        while !data.is_empty() {
            if self.capture.is_some() {
                let used = self.feed_capture(data, on);
                data = &data[used..];
                continue;
            }
            if self.in_string {
                let used = self.feed_string(data);
                data = &data[used..];
                continue;
            }
            if self.pending.is_none() {
                // Outside strings with no key waiting for its colon, only a quote matters:
                // numbers, arrays and punctuation are skipped at memchr speed.
                match find_quote(data) {
                    Some(off) => data = &data[off..],
                    None => return,
                }
            }
            let b = data[0];
            data = &data[1..];
            match b {
                b'"' => {
                    self.in_string = true;
                    self.key_len = 0;
                    self.key_overflow = false;
                    self.key_escaped = false;
                }
                b':' => {
                    if let Some(k) = self.pending.take() {
                        self.start(k, on);
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ => self.pending = None,
            }
        }
    }

    /// Inside a string that is not being captured: jump to its next quote or backslash with
    /// memchr, keeping what it skipped when it is still short enough to be a watched key.
    fn feed_string(&mut self, data: &[u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            if self.escape {
                // The escaped byte, kept raw with its backslash (a key written with escapes,
                // `"cached\u0043ontent"`, is still that key once decoded).
                self.escape = false;
                self.collect_key(&data[i..i + 1]);
                i += 1;
                continue;
            }
            let Some(off) = find_quote_or_escape(&data[i..]) else {
                self.collect_key(&data[i..]);
                return data.len();
            };
            let run = &data[i..i + off];
            i += off + 1;
            if data[i - 1] == b'\\' {
                self.collect_key(run);
                self.collect_key(b"\\");
                self.key_escaped = true;
                self.escape = true;
                continue;
            }
            self.in_string = false;
            // A string that began in this chunk is compared where it lies; one that spans
            // chunks was gathered in `key_buf`.
            let whole = if self.key_len == 0 && !self.key_overflow {
                Some(run)
            } else {
                self.collect_key(run);
                (!self.key_overflow).then_some(&self.key_buf[..self.key_len])
            };
            let find = |k: &[u8]| {
                self.keys.iter().position(|key| {
                    key.name.len() == k.len() && key.name.first() == k.first() && key.name == k
                })
            };
            self.pending = match whole {
                Some(raw) if self.key_escaped => {
                    decode_json_string(raw).and_then(|k| find(k.as_bytes()))
                }
                Some(k) => find(k),
                None => None,
            };
            return i;
        }
        i
    }

    /// Appends string bytes to the possible key, or marks it too long to be one.
    fn collect_key(&mut self, bytes: &[u8]) {
        if self.key_overflow {
            return;
        }
        match self
            .key_buf
            .get_mut(self.key_len..self.key_len + bytes.len())
        {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.key_len += bytes.len();
            }
            None => self.key_overflow = true,
        }
    }

    fn start(&mut self, key: usize, on: &mut impl FnMut(Found<'_>)) {
        let watch = self.keys[key].watch;
        if watch == Watch::Count {
            on(Found::Counted(key));
            return;
        }
        self.buf.clear();
        self.capture = Some(Capture {
            key,
            watch,
            shape: Shape::Unknown,
            depth: 0,
            in_str: false,
            esc: false,
            len: 0,
            truncated: false,
        });
    }

    /// Consumes bytes of a captured value; returns how many were used. A value that begins and
    /// ends in one chunk is reported from the chunk itself; only one that spans chunks is
    /// gathered in `buf`.
    fn feed_capture(&mut self, data: &[u8], on: &mut impl FnMut(Found<'_>)) -> usize {
        let Some(c) = self.capture.as_mut() else {
            return 0;
        };
        let bound = if c.watch == Watch::Text {
            self.text_bound
        } else {
            MAX_CAPTURE
        };
        let mut i = 0;
        // The value's bytes in this chunk: from `from` (after whitespace and a string's opening
        // quote) to `to`, once the value ends here (a string's closing quote and a scalar's
        // delimiter are not part of it).
        let mut from = 0;
        let mut to = None;
        while i < data.len() && to.is_none() {
            match c.shape {
                Shape::Unknown => {
                    i += 1;
                    match data[i - 1] {
                        b' ' | b'\t' | b'\r' | b'\n' => from = i,
                        b'{' | b'[' => {
                            c.shape = Shape::Structured;
                            c.depth = 1;
                            from = i - 1;
                        }
                        b'"' => {
                            c.shape = Shape::Str;
                            from = i;
                        }
                        _ => {
                            c.shape = Shape::Scalar;
                            from = i - 1;
                        }
                    }
                }
                Shape::Str => {
                    let (next, closed) = through_string(data, i, &mut c.esc);
                    i = next;
                    if closed {
                        to = Some(i - 1);
                    }
                }
                Shape::Scalar => {
                    // The delimiter belongs to the enclosing structure: it is not consumed.
                    match data[i..].iter().position(|b| {
                        matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
                    }) {
                        None => i = data.len(),
                        Some(off) => {
                            i += off;
                            to = Some(i);
                        }
                    }
                }
                Shape::Structured if c.in_str => {
                    let (next, closed) = through_string(data, i, &mut c.esc);
                    i = next;
                    c.in_str = !closed;
                }
                Shape::Structured => match find_structure(&data[i..]) {
                    None => i = data.len(),
                    Some(off) => {
                        i += off + 1;
                        match data[i - 1] {
                            b'"' => c.in_str = true,
                            b'{' | b'[' => c.depth += 1,
                            _ => {
                                c.depth -= 1;
                                if c.depth == 0 {
                                    to = Some(i);
                                }
                            }
                        }
                    }
                },
            }
        }
        let end = to.unwrap_or(data.len());
        let run = &data[from.min(end)..end];
        if to.is_none() {
            push_slice(&mut self.buf, c, run, bound);
            return i;
        }
        let Some(mut c) = self.capture.take() else {
            return i;
        };
        // Nothing gathered before: the value lies in this chunk.
        let bytes = if c.len == 0 {
            c.len = run.len();
            c.truncated = run.len() > bound;
            &run[..run.len().min(bound)]
        } else {
            push_slice(&mut self.buf, &mut c, run, bound);
            &self.buf[..]
        };
        on(match c.watch {
            Watch::Text => Found::Text {
                key: c.key,
                head: bytes,
                len: c.len,
            },
            _ => Found::Value {
                key: c.key,
                bytes,
                truncated: c.truncated,
            },
        });
        i
    }
}

/// Bytes looked at one by one before handing a search to memchr: most JSON strings (keys, enum
/// values, numbers' surroundings) end within a few bytes, where memchr's setup costs more than
/// the search (an SSE event of a stream holds ~15 such strings).
const SHORT: usize = 16;

/// The next quote or backslash.
#[inline]
pub(super) fn find_quote_or_escape(hay: &[u8]) -> Option<usize> {
    find_short(
        hay,
        |w| has_byte(w, b'"') | has_byte(w, b'\\'),
        |b| b == b'"' || b == b'\\',
    )
    .or_else(|| {
        let from = hay.len().min(SHORT);
        memchr::memchr2(b'"', b'\\', &hay[from..]).map(|i| i + from)
    })
}

/// The next quote.
#[inline]
fn find_quote(hay: &[u8]) -> Option<usize> {
    find_short(hay, |w| has_byte(w, b'"'), |b| b == b'"').or_else(|| {
        let from = hay.len().min(SHORT);
        memchr::memchr(b'"', &hay[from..]).map(|i| i + from)
    })
}

/// Inside a string, from `i`: past its closing quote (`true`) or as far as the chunk allows
/// (`false`), keeping whether the last byte seen was an unfinished escape in `esc`.
fn through_string(data: &[u8], i: usize, esc: &mut bool) -> (usize, bool) {
    if *esc {
        *esc = false;
        return (i + 1, false);
    }
    match find_quote_or_escape(&data[i..]) {
        None => (data.len(), false),
        Some(off) => {
            let at = i + off;
            *esc = data[at] == b'\\';
            (at + 1, !*esc)
        }
    }
}

/// The next quote or bracket (`{`, `[`, `}`, `]`): all that matters outside strings while finding
/// where a captured object or array ends. Eight bytes at a time: `[` and `]` are `{` and `}` with
/// bit 5 clear, so one comparison finds both of a pair.
#[inline]
fn find_structure(hay: &[u8]) -> Option<usize> {
    const BIT5: u64 = 0x2020_2020_2020_2020;
    let mut i = 0;
    while let Some(w) = hay.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let w = u64::from_le_bytes(*w);
        let m = has_byte(w, b'"') | has_byte(w | BIT5, b'{') | has_byte(w | BIT5, b'}');
        if m != 0 {
            // The lowest marked byte is exact for its own comparison, so for all three.
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    hay[i..]
        .iter()
        .position(|&b| matches!(b, b'"' | b'{' | b'[' | b'}' | b']'))
        .map(|p| i + p)
}

/// Looks through the first [`SHORT`] bytes eight at a time (`word` marks matching bytes of a
/// little-endian word with their high bit), then byte by byte where fewer than eight are left.
#[inline]
fn find_short(hay: &[u8], word: impl Fn(u64) -> u64, byte: impl Fn(u8) -> bool) -> Option<usize> {
    let head = &hay[..hay.len().min(SHORT)];
    let mut i = 0;
    while let Some(w) = head.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let m = word(u64::from_le_bytes(*w));
        if m != 0 {
            // The lowest marked byte is exact (borrows only reach bytes above a match).
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    head[i..].iter().position(|&b| byte(b)).map(|p| i + p)
}

/// High bit set in each byte of `w` equal to `b` (exact for the lowest such byte).
#[inline]
fn has_byte(w: u64, b: u8) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let x = w ^ (LO * u64::from(b));
    x.wrapping_sub(LO) & !x & HI
}

fn push_slice(buf: &mut Vec<u8>, c: &mut Capture, bytes: &[u8], bound: usize) {
    c.len += bytes.len();
    let room = bound.saturating_sub(buf.len()).min(bytes.len());
    buf.extend_from_slice(&bytes[..room]);
    if room < bytes.len() {
        c.truncated = true;
    }
}

#[cfg(test)]
mod tests;
