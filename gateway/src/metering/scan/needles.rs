//! The scanner's search mode, for JSON from a trusted writer (Google's answers): the watched keys
//! are found by searching for them as written, `"name"`, with a SIMD multi-needle search, instead
//! of walking every string. In valid JSON an unescaped quote followed by `name"` and a colon can
//! only be that key: inside a string the closing quote would have to be escaped. So a match counts
//! when its opening quote is not escaped and a colon follows. Names written with escapes are not
//! recognised (Google never writes them; requests, which anyone writes, use the walking mode).

use aho_corasick::{packed, AhoCorasick, MatchKind};

use super::{Found, Key, Scanner};

/// Bytes kept from one chunk to the next: a needle split by a chunk's end starts in them.
pub(super) const WINDOW: usize = 31;

/// The watched keys as needles, built once per key set.
#[derive(Debug)]
pub struct Needles {
    pub(super) keys: &'static [Key],
    finder: Finder,
}

/// Teddy (SIMD, the packed searcher) where the CPU has it. The general automaton's own
/// prefilter would stop at every quote, as every needle starts with one.
#[derive(Debug)]
enum Finder {
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

impl Needles {
    /// Needles for these keys (a needle's index is its key's index); `None` when a key is too
    /// long for the window or no searcher can be built, and the caller walks every string.
    pub fn new(keys: &'static [Key]) -> Option<Needles> {
        Needles::build(keys, true)
    }

    /// `packed`: try Teddy first (tests build the fallback alone to check it too).
    fn build(keys: &'static [Key], packed: bool) -> Option<Needles> {
        if keys.iter().any(|k| k.name.len() + 2 > WINDOW + 1) {
            return None;
        }
        let quoted: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| [&b"\""[..], k.name, b"\""].concat())
            .collect();
        let teddy = packed
            .then(|| {
                packed::Config::new()
                    .match_kind(packed::MatchKind::LeftmostFirst)
                    .builder()
                    .extend(&quoted)
                    .build()
            })
            .flatten();
        let finder = match teddy {
            Some(s) => Finder::Packed(s),
            None => Finder::Automaton(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(&quoted)
                    .ok()?,
            ),
        };
        Some(Needles { keys, finder })
    }

    /// The same needles searched by the general automaton only.
    #[cfg(test)]
    pub(super) fn automaton(keys: &'static [Key]) -> Option<Needles> {
        Needles::build(keys, false)
    }

    /// The first needle in `hay`: its key, start and end.
    fn find(&self, hay: &[u8]) -> Option<(usize, usize, usize)> {
        let m = match &self.finder {
            Finder::Packed(s) => s.find(hay)?,
            Finder::Automaton(a) => a.find(hay)?,
        };
        Some((m.pattern().as_usize(), m.start(), m.end()))
    }
}

/// The run of backslashes just before `pos` in `hay`; `before` is the run that ended just before
/// `hay` began.
fn run_before(hay: &[u8], pos: usize, before: usize) -> usize {
    let run = hay[..pos].iter().rev().take_while(|&&b| b == b'\\').count();
    if run == pos {
        run + before
    } else {
        run
    }
}

/// Whether the byte at `pos` is escaped (follows an odd run of backslashes).
fn escaped_at(hay: &[u8], pos: usize, before: usize) -> bool {
    run_before(hay, pos, before) % 2 == 1
}

impl Scanner {
    /// [`Scanner::feed`] in search mode.
    pub(super) fn feed_search(
        &mut self,
        needles: &Needles,
        chunk: &[u8],
        on: &mut impl FnMut(Found<'_>),
    ) {
        // The backslash run that ended where this chunk begins.
        let before = self.bs_run;
        let mut i = 0;
        // Where the bytes searched since the last match or value begin (the next window's).
        let mut from = 0;
        if self.win_len > 0 {
            if let Some((key, end)) = self.spanning(needles, chunk) {
                self.pending = Some(key);
                i = end;
                from = end;
            }
        }
        while i < chunk.len() {
            if self.capture.is_some() {
                i += self.feed_capture(&chunk[i..], on);
                from = i;
                continue;
            }
            if let Some(key) = self.pending {
                let Some(off) = chunk[i..]
                    .iter()
                    .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                else {
                    i = chunk.len();
                    from = i;
                    break;
                };
                i += off;
                self.pending = None;
                if chunk[i] == b':' {
                    i += 1;
                    from = i;
                    self.start(key, on);
                    continue;
                }
                from = i;
            }
            match needles.find(&chunk[i..]) {
                Some((key, start, end)) => {
                    let start = i + start;
                    i += end;
                    from = i;
                    self.win_len = 0;
                    if !escaped_at(chunk, start, before) {
                        self.pending = Some(key);
                    }
                }
                None => break,
            }
        }
        if self.capture.is_some() || self.pending.is_some() {
            self.win_len = 0;
        } else {
            self.keep_window(&chunk[from..], chunk, from, before);
        }
        self.bs_run = run_before(chunk, chunk.len(), before);
    }

    /// A needle that began in the window and ends in this chunk: its key and where it ends in
    /// the chunk (`None` when there is none, or it is escaped).
    fn spanning(&mut self, needles: &Needles, chunk: &[u8]) -> Option<(usize, usize)> {
        let head = &chunk[..chunk.len().min(WINDOW)];
        let mut join = [0u8; 2 * WINDOW];
        let w = self.win_len;
        join[..w].copy_from_slice(&self.win[..w]);
        join[w..w + head.len()].copy_from_slice(head);
        let joined = &join[..w + head.len()];
        let (mut at, mut found) = (0, None);
        while let Some((key, start, end)) = needles.find(&joined[at..]) {
            let (start, end) = (at + start, at + end);
            if end <= w {
                at = end; // searched already, in the previous chunk
                continue;
            }
            if start < w && !escaped_at(&self.win[..w], start, self.win_run) {
                found = Some((key, end - w));
            }
            break;
        }
        if found.is_some() {
            self.win_len = 0;
        }
        found
    }

    /// Keeps the last bytes searched for the next chunk, and the backslash run before them.
    /// `tail` is `chunk[from..]`.
    fn keep_window(&mut self, tail: &[u8], chunk: &[u8], from: usize, before: usize) {
        let take = tail.len().min(WINDOW);
        let keep_old = (WINDOW - take).min(self.win_len);
        let drop = self.win_len - keep_old;
        let first = from + tail.len() - take;
        self.win_run = if keep_old > 0 {
            run_before(&self.win[..self.win_len], drop, self.win_run)
        } else {
            run_before(chunk, first, before)
        };
        self.win.copy_within(drop..self.win_len, 0);
        self.win[keep_old..keep_old + take].copy_from_slice(&tail[tail.len() - take..]);
        self.win_len = keep_old + take;
        // A needle begins with a quote: nothing before the window's first one can start one.
        match memchr::memchr(b'"', &self.win[..self.win_len]) {
            None => self.win_len = 0,
            Some(q) => {
                self.win_run = run_before(&self.win[..self.win_len], q, self.win_run);
                self.win.copy_within(q..self.win_len, 0);
                self.win_len -= q;
            }
        }
    }
}
