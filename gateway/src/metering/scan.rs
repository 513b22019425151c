//! A streaming JSON key scanner: it watches for a few keys in a byte stream that arrives in
//! arbitrary chunks (one JSON body, SSE `data:` events, or a JSON array) and reports their values,
//! keeping only a small fixed state between chunks. Long strings (base64 images) are skipped with
//! SIMD `memchr`, so megabytes of payload cost almost nothing.
//!
//! No I/O and no allocation proportional to the body: captured values are bounded by
//! [`MAX_CAPTURE`]; a value longer than that is reported as truncated.

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
}

impl Scanner {
    /// A scanner for these keys; `text_bound` limits how much of each `Text` value is kept.
    pub fn new(keys: &'static [Key], text_bound: usize) -> Scanner {
        // Every watched name must fit wholly escaped (tests run with debug assertions).
        debug_assert!(
            keys.iter().all(|k| k.name.len() * 6 <= MAX_KEY),
            "a watched key is too long for MAX_KEY"
        );
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
        }
    }

    /// Feeds the next chunk, calling `on` for each finding.
    pub fn feed(&mut self, mut data: &[u8], on: &mut impl FnMut(Found<'_>)) {
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

    /// Consumes bytes of a captured value; returns how many were used.
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
        let mut done = false;
        while i < data.len() && !done {
            let b = data[i];
            match c.shape {
                Shape::Unknown => {
                    i += 1;
                    match b {
                        b' ' | b'\t' | b'\r' | b'\n' => continue,
                        b'{' | b'[' => {
                            c.shape = Shape::Structured;
                            c.depth = 1;
                        }
                        b'"' => {
                            c.shape = Shape::Str;
                            continue; // the quotes are not part of a string's content
                        }
                        _ => c.shape = Shape::Scalar,
                    }
                    push(&mut self.buf, c, b, bound);
                }
                Shape::Str => {
                    // Fast path: copy or skip up to the next quote or backslash.
                    if !c.esc {
                        let run = find_quote_or_escape(&data[i..]).unwrap_or(data.len() - i);
                        push_slice(&mut self.buf, c, &data[i..i + run], bound);
                        i += run;
                        if i == data.len() {
                            break;
                        }
                    }
                    let b = data[i];
                    i += 1;
                    if c.esc {
                        c.esc = false;
                    } else if b == b'\\' {
                        c.esc = true;
                    } else if b == b'"' {
                        done = true;
                        continue;
                    }
                    push(&mut self.buf, c, b, bound);
                }
                Shape::Scalar => {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                        done = true; // the delimiter belongs to the enclosing structure
                    } else {
                        i += 1;
                        push(&mut self.buf, c, b, bound);
                    }
                }
                Shape::Structured => {
                    // Find where the value ends (or the chunk does), then copy that run once.
                    let start = i;
                    while i < data.len() && !done {
                        if c.in_str && !c.esc {
                            // Inside a string only a quote or a backslash matters.
                            match find_quote_or_escape(&data[i..]) {
                                Some(off) => i += off,
                                None => {
                                    i = data.len();
                                    break;
                                }
                            }
                        }
                        let b = data[i];
                        i += 1;
                        if c.in_str {
                            if c.esc {
                                c.esc = false;
                            } else if b == b'\\' {
                                c.esc = true;
                            } else if b == b'"' {
                                c.in_str = false;
                            }
                        } else {
                            match b {
                                b'"' => c.in_str = true,
                                b'{' | b'[' => c.depth += 1,
                                b'}' | b']' => {
                                    c.depth -= 1;
                                    done = c.depth == 0;
                                }
                                _ => {}
                            }
                        }
                    }
                    push_slice(&mut self.buf, c, &data[start..i], bound);
                }
            }
        }
        if done {
            if let Some(c) = self.capture.take() {
                let found = match c.watch {
                    Watch::Text => Found::Text {
                        key: c.key,
                        head: &self.buf,
                        len: c.len,
                    },
                    _ => Found::Value {
                        key: c.key,
                        bytes: &self.buf,
                        truncated: c.truncated,
                    },
                };
                on(found);
            }
        }
        i
    }
}

/// Bytes looked at one by one before handing a search to memchr: most JSON strings (keys, enum
/// values, numbers' surroundings) end within a few bytes, where memchr's setup costs more than
/// the search (an SSE event of a stream holds ~15 such strings).
const SHORT: usize = 16;

/// The next quote or backslash.
#[inline]
fn find_quote_or_escape(hay: &[u8]) -> Option<usize> {
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

fn push(buf: &mut Vec<u8>, c: &mut Capture, b: u8, bound: usize) {
    c.len += 1;
    if buf.len() < bound {
        buf.push(b);
    } else {
        c.truncated = true;
    }
}

#[cfg(test)]
mod tests;
