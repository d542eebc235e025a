//! MeshGuard globs for actions, resources and paths.
//!
//! The contract says `*` stays within a segment and `**` crosses segments. Actions use `:`
//! as their segment separator (`read:orders`) and paths use `/`, so both are separators:
//! patterns and values have `:` mapped to `/` before globset (with `literal_separator`)
//! sees them. A pattern that is exactly `*` means "anything", because that is what every
//! policy author who writes `action: "*"` intends.
//!
//! globset parses and validates patterns (its errors are the ones users see); matching is
//! done here, on globset's own semantics (the byte-level regex it would build: `*` is
//! `[^/]*`, `?` is `[^/]`, `**/` is `(?:/?|.*/)`, `/**` is `/.*`, `/**/` is `(?:/|/.*/)`,
//! classes match one byte, empty alternates are dropped, `.` matches any byte), by a
//! small Thompson-NFA matcher with literal fast paths. That keeps the regex engine out of
//! the Wasm module (a quarter of its code) and lets [`PatternSet`] index patterns by their
//! literal prefix, so a decision costs about the same with 10 or 10,000 rules. A unit
//! test checks the matcher against globset's own on thousands of generated cases.

use globset::GlobBuilder;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// A glob that failed to compile, with the pattern and globset's explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError {
    /// The pattern as the user wrote it.
    pub pattern: String,
    /// Why globset rejected it.
    pub message: String,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid glob {:?}: {}", self.pattern, self.message)
    }
}

impl std::error::Error for GlobError {}

/// Maps a value onto the form patterns are compiled in (`:` becomes `/`).
pub fn normalize(value: &str) -> Cow<'_, str> {
    if value.contains(':') {
        Cow::Owned(value.replace(':', "/"))
    } else {
        Cow::Borrowed(value)
    }
}

fn translate(pattern: &str) -> Cow<'_, str> {
    if pattern == "*" {
        Cow::Borrowed("**")
    } else {
        normalize(pattern)
    }
}

/// Validates a pattern with globset's parser (the errors users see).
fn validate(pattern: &str) -> Result<(), GlobError> {
    GlobBuilder::new(&translate(pattern))
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|_| ())
        .map_err(|e| GlobError {
            pattern: pattern.to_string(),
            message: e.kind().to_string(),
        })
}

// --- parsing (a port of globset 0.4's parser, for a pattern it has already accepted) ---

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    Any,
    ZeroOrMore,
    RecursivePrefix,
    RecursiveSuffix,
    RecursiveZeroOrMore,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Alternates(Vec<Vec<Token>>),
}

struct Parser<'a> {
    alternates_stack: Vec<usize>,
    branches: Vec<Vec<Token>>,
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    prev: Option<char>,
    cur: Option<char>,
}

impl Parser<'_> {
    fn parse(pattern: &str) -> Option<Vec<Token>> {
        let mut p = Parser {
            alternates_stack: Vec::new(),
            branches: vec![Vec::new()],
            chars: pattern.chars().peekable(),
            prev: None,
            cur: None,
        };
        while let Some(c) = p.bump() {
            match c {
                '?' => p.push(Token::Any)?,
                '*' => p.star()?,
                '[' => p.class()?,
                '{' => {
                    p.alternates_stack.push(p.branches.len());
                    p.branches.push(Vec::new());
                }
                '}' => {
                    let start = p.alternates_stack.pop()?;
                    if start > p.branches.len() {
                        return None;
                    }
                    let alts = Token::Alternates(p.branches.drain(start..).collect());
                    p.push(alts)?;
                }
                ',' => {
                    if p.alternates_stack.is_empty() {
                        p.push(Token::Literal(','))?;
                    } else {
                        p.branches.push(Vec::new());
                    }
                }
                '\\' => {
                    let c = p.bump()?;
                    p.push(Token::Literal(c))?;
                }
                c => p.push(Token::Literal(c))?,
            }
        }
        if p.branches.len() == 1 {
            p.branches.pop()
        } else {
            None
        }
    }

    fn bump(&mut self) -> Option<char> {
        self.prev = self.cur;
        self.cur = self.chars.next();
        self.cur
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn push(&mut self, t: Token) -> Option<()> {
        self.branches.last_mut().map(|b| b.push(t))
    }

    fn have_tokens(&self) -> Option<bool> {
        self.branches.last().map(|b| !b.is_empty())
    }

    fn star(&mut self) -> Option<()> {
        let prev = self.prev;
        if self.peek() != Some('*') {
            return self.push(Token::ZeroOrMore);
        }
        self.bump();
        if !self.have_tokens()? {
            if self.peek().is_some_and(|c| c != '/') {
                self.push(Token::ZeroOrMore)?;
                self.push(Token::ZeroOrMore)?;
            } else {
                self.push(Token::RecursivePrefix)?;
                self.bump();
            }
            return Some(());
        }
        if prev != Some('/')
            && (self.branches.len() <= 1 || (prev != Some(',') && prev != Some('{')))
        {
            self.push(Token::ZeroOrMore)?;
            return self.push(Token::ZeroOrMore);
        }
        let is_suffix = match self.peek() {
            None => {
                self.bump();
                true
            }
            Some(',') | Some('}') if self.branches.len() >= 2 => true,
            Some('/') => {
                self.bump();
                false
            }
            _ => {
                self.push(Token::ZeroOrMore)?;
                return self.push(Token::ZeroOrMore);
            }
        };
        let last = self.branches.last_mut()?.pop()?;
        match last {
            Token::RecursivePrefix => self.push(Token::RecursivePrefix),
            Token::RecursiveSuffix => self.push(Token::RecursiveSuffix),
            _ if is_suffix => self.push(Token::RecursiveSuffix),
            _ => self.push(Token::RecursiveZeroOrMore),
        }
    }

    fn class(&mut self) -> Option<()> {
        let mut ranges: Vec<(char, char)> = Vec::new();
        let negated = matches!(self.peek(), Some('!') | Some('^'));
        if negated {
            self.bump();
        }
        let mut first = true;
        let mut in_range = false;
        loop {
            let c = self.bump()?;
            match c {
                ']' if first => ranges.push((']', ']')),
                ']' => break,
                '-' if first => ranges.push(('-', '-')),
                '-' if in_range => {
                    ranges.last_mut()?.1 = '-';
                    in_range = false;
                }
                '-' => in_range = true,
                c => {
                    if in_range {
                        ranges.last_mut()?.1 = c;
                    } else {
                        ranges.push((c, c));
                    }
                    in_range = false;
                }
            }
            first = false;
        }
        if in_range {
            ranges.push(('-', '-'));
        }
        self.push(Token::Class { negated, ranges })
    }
}

// --- matching ------------------------------------------------------------------------

/// A set of bytes (one bit each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    const EMPTY: ByteSet = ByteSet([0; 4]);
    const ALL: ByteSet = ByteSet([u64::MAX; 4]);

    fn add(&mut self, b: u8) {
        if let Some(w) = self.0.get_mut(usize::from(b >> 6)) {
            *w |= 1 << (b & 63);
        }
    }

    fn add_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.add(b);
        }
    }

    fn all_but(b: u8) -> ByteSet {
        let mut s = ByteSet([u64::MAX; 4]);
        if let Some(w) = s.0.get_mut(usize::from(b >> 6)) {
            *w &= !(1 << (b & 63));
        }
        s
    }

    fn one(b: u8) -> ByteSet {
        let mut s = ByteSet::EMPTY;
        s.add(b);
        s
    }

    fn negate(self) -> ByteSet {
        ByteSet(self.0.map(|w| !w))
    }

    fn contains(&self, b: u8) -> bool {
        self.0
            .get(usize::from(b >> 6))
            .is_some_and(|w| w & (1 << (b & 63)) != 0)
    }
}

/// One NFA instruction.
#[derive(Debug, Clone)]
enum Inst {
    Byte(ByteSet, usize),
    Split(usize, usize),
    Match,
}

/// Compiles tokens into a Thompson NFA, exactly as globset's regex would match.
struct Compiler {
    prog: Vec<Inst>,
}

const NOT_SLASH: u8 = b'/';

impl Compiler {
    fn emit(&mut self, i: Inst) -> usize {
        self.prog.push(i);
        self.prog.len() - 1
    }

    fn patch(&mut self, at: usize, to: usize) {
        if let Some(i) = self.prog.get_mut(at) {
            match i {
                Inst::Byte(_, next) => *next = to,
                Inst::Split(_, b) => *b = to,
                Inst::Match => {}
            }
        }
    }

    /// Emits `set` and returns the instruction whose `next` must be patched.
    fn byte(&mut self, set: ByteSet) -> usize {
        let at = self.prog.len();
        self.emit(Inst::Byte(set, at + 1))
    }

    /// `set*`: returns nothing to patch (falls through to the next instruction).
    fn star(&mut self, set: ByteSet) {
        // L: Split(L+1, L+2); L+1: Byte(set) -> L; L+2: ...
        let l = self.prog.len();
        self.emit(Inst::Split(l + 1, l + 2));
        self.emit(Inst::Byte(set, l));
    }

    /// Compiles a sequence; control falls through to the instruction after it.
    fn seq(&mut self, tokens: &[Token]) {
        for t in tokens {
            self.token(t);
        }
    }

    /// `(?:b0|b1|...)`: `branch(self, i)` emits branch `i`; control falls through after.
    fn alternatives(&mut self, n: usize, mut branch: impl FnMut(&mut Compiler, usize)) {
        let mut ends = Vec::new();
        for i in 0..n {
            if i + 1 < n {
                let split = self.emit(Inst::Split(0, 0));
                let start = self.prog.len();
                if let Some(Inst::Split(a, _)) = self.prog.get_mut(split) {
                    *a = start;
                }
                branch(self, i);
                // An epsilon jump to the common end, patched below.
                ends.push(self.emit(Inst::Split(0, 0)));
                let next = self.prog.len();
                self.patch(split, next);
            } else {
                branch(self, i);
            }
        }
        let end = self.prog.len();
        for j in ends {
            if let Some(Inst::Split(a, b)) = self.prog.get_mut(j) {
                *a = end;
                *b = end;
            }
        }
    }

    fn token(&mut self, t: &Token) {
        match t {
            Token::Literal(c) => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    self.byte(ByteSet::one(b));
                }
            }
            Token::Any => {
                self.byte(ByteSet::all_but(NOT_SLASH));
            }
            Token::ZeroOrMore => self.star(ByteSet::all_but(NOT_SLASH)),
            // (?:/?|.*/)
            Token::RecursivePrefix => self.alternatives(2, |c, i| {
                if i == 0 {
                    let l = c.prog.len();
                    c.emit(Inst::Split(l + 1, l + 2));
                    c.byte(ByteSet::one(b'/'));
                } else {
                    c.star(ByteSet::ALL);
                    c.byte(ByteSet::one(b'/'));
                }
            }),
            // /.*
            Token::RecursiveSuffix => {
                self.byte(ByteSet::one(b'/'));
                self.star(ByteSet::ALL);
            }
            // (?:/|/.*/)
            Token::RecursiveZeroOrMore => self.alternatives(2, |c, i| {
                c.byte(ByteSet::one(b'/'));
                if i == 1 {
                    c.star(ByteSet::ALL);
                    c.byte(ByteSet::one(b'/'));
                }
            }),
            Token::Class { negated, ranges } => {
                let set = class_set(ranges);
                self.byte(if *negated { set.negate() } else { set });
            }
            Token::Alternates(branches) => {
                let parts: Vec<&Vec<Token>> =
                    branches.iter().filter(|b| !regex_is_empty(b)).collect();
                if parts.is_empty() {
                    return;
                }
                self.alternatives(parts.len(), |c, i| {
                    if let Some(p) = parts.get(i) {
                        c.seq(p);
                    }
                });
            }
        }
    }
}

/// Whether globset would render these tokens as an empty regex (then an alternate branch
/// is dropped).
fn regex_is_empty(tokens: &[Token]) -> bool {
    tokens.iter().all(|t| match t {
        Token::Alternates(bs) => bs.iter().all(|b| regex_is_empty(b)),
        _ => false,
    })
}

/// The bytes a class matches in globset's byte-oriented regex: each range is written as
/// `<bytes of start>-<bytes of end>`, so for multi-byte characters only the last byte of
/// the start and the first byte of the end form the range, and the other bytes stand alone.
fn class_set(ranges: &[(char, char)]) -> ByteSet {
    let mut set = ByteSet::EMPTY;
    for (lo, hi) in ranges {
        let mut b0 = [0u8; 4];
        let mut b1 = [0u8; 4];
        let lo_bytes = lo.encode_utf8(&mut b0).as_bytes();
        if lo == hi {
            for b in lo_bytes {
                set.add(*b);
            }
            continue;
        }
        let hi_bytes = hi.encode_utf8(&mut b1).as_bytes();
        let (Some((lo_last, lo_rest)), Some((hi_first, hi_rest))) =
            (lo_bytes.split_last(), hi_bytes.split_first())
        else {
            continue;
        };
        for b in lo_rest {
            set.add(*b);
        }
        set.add_range(*lo_last, *hi_first);
        for b in hi_rest {
            set.add(*b);
        }
    }
    set
}

/// How a pattern is matched.
#[derive(Debug, Clone)]
enum Matcher {
    /// No wildcard: byte equality.
    Exact(Vec<u8>),
    /// `prefix*` (one trailing star): a prefix, then no `/`.
    PrefixStar(Vec<u8>),
    /// Anything (`**`, or `*` as a whole pattern).
    Everything,
    /// The general case.
    Nfa(Vec<Inst>),
}

impl Matcher {
    fn compile(tokens: &[Token]) -> Matcher {
        if tokens == [Token::RecursivePrefix] {
            return Matcher::Everything;
        }
        let literal = |ts: &[Token]| -> Option<Vec<u8>> {
            let mut out = String::new();
            for t in ts {
                match t {
                    Token::Literal(c) => out.push(*c),
                    _ => return None,
                }
            }
            Some(out.into_bytes())
        };
        if let Some(bytes) = literal(tokens) {
            return Matcher::Exact(bytes);
        }
        if let Some((Token::ZeroOrMore, head)) = tokens.split_last() {
            if let Some(bytes) = literal(head) {
                return Matcher::PrefixStar(bytes);
            }
        }
        let mut c = Compiler { prog: Vec::new() };
        c.seq(tokens);
        c.emit(Inst::Match);
        Matcher::Nfa(c.prog)
    }

    fn is_match(&self, value: &[u8]) -> bool {
        match self {
            Matcher::Exact(b) => value == b.as_slice(),
            Matcher::PrefixStar(p) => value
                .strip_prefix(p.as_slice())
                .is_some_and(|rest| !rest.contains(&b'/')),
            Matcher::Everything => true,
            Matcher::Nfa(prog) => nfa_match(prog, value),
        }
    }
}

/// Adds `pc` and everything reachable from it without consuming input. `stack` is
/// scratch space the caller reuses: one per match instead of one per input byte (a route
/// like `/v1/orders/**` against a 13-byte path made 14 allocations per request, a quarter
/// of the cached request path's; tests/allocations.rs counts them).
fn add_state(
    prog: &[Inst],
    list: &mut Vec<usize>,
    seen: &mut [bool],
    stack: &mut Vec<usize>,
    pc: usize,
) {
    stack.clear();
    stack.push(pc);
    while let Some(pc) = stack.pop() {
        match seen.get_mut(pc) {
            Some(s) if !*s => *s = true,
            _ => continue,
        }
        match prog.get(pc) {
            Some(Inst::Split(a, b)) => {
                stack.push(*b);
                stack.push(*a);
            }
            Some(_) => list.push(pc),
            None => {}
        }
    }
}

/// Pike-VM simulation: linear in pattern size × value length, whatever the pattern.
fn nfa_match(prog: &[Inst], value: &[u8]) -> bool {
    let mut current = Vec::with_capacity(prog.len());
    let mut next = Vec::with_capacity(prog.len());
    let mut seen = vec![false; prog.len()];
    let mut stack = Vec::with_capacity(prog.len());
    add_state(prog, &mut current, &mut seen, &mut stack, 0);
    for &b in value {
        seen.iter_mut().for_each(|s| *s = false);
        next.clear();
        for &pc in &current {
            if let Some(Inst::Byte(set, to)) = prog.get(pc) {
                if set.contains(b) {
                    add_state(prog, &mut next, &mut seen, &mut stack, *to);
                }
            }
        }
        std::mem::swap(&mut current, &mut next);
        if current.is_empty() {
            return false;
        }
    }
    current
        .iter()
        .any(|&pc| matches!(prog.get(pc), Some(Inst::Match)))
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    matcher: Matcher,
    /// The literal text every match starts with (for indexing in a [`PatternSet`]).
    prefix: Vec<u8>,
    literal: bool,
    source: String,
}

impl Pattern {
    /// Compiles a pattern; errors name the pattern.
    pub fn new(pattern: &str) -> Result<Pattern, GlobError> {
        validate(pattern)?;
        let translated = translate(pattern);
        let tokens = Parser::parse(&translated).ok_or_else(|| GlobError {
            pattern: pattern.to_string(),
            message: "unsupported glob".into(),
        })?;
        let mut prefix = String::new();
        for t in &tokens {
            match t {
                Token::Literal(c) => prefix.push(*c),
                _ => break,
            }
        }
        Ok(Pattern {
            matcher: Matcher::compile(&tokens),
            prefix: prefix.into_bytes(),
            literal: !pattern.contains(['*', '?', '[', '{']),
            source: pattern.to_string(),
        })
    }

    /// Matches a value already passed through [`normalize`].
    pub fn matches_normalized(&self, value: &str) -> bool {
        self.matcher.is_match(value.as_bytes())
    }

    /// Matches a raw value.
    pub fn matches(&self, value: &str) -> bool {
        self.matcher.is_match(normalize(value).as_bytes())
    }

    /// How specific the pattern is: literal characters count, wildcards do not, and an
    /// exact pattern outranks any wildcard one. Used to name the "most specific" rule.
    pub fn specificity(&self) -> usize {
        let literal_chars = self
            .source
            .chars()
            .filter(|c| !matches!(c, '*' | '?' | '[' | ']' | '{' | '}'))
            .count();
        if self.literal {
            literal_chars + 10_000
        } else {
            literal_chars
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// Many patterns indexed so that finding those that match a value costs a few hash
/// lookups plus the patterns sharing its literal prefix, however many patterns there are:
/// exact patterns by their text, the others by their literal prefix cut after its last
/// `/` (a value can only match patterns whose cut prefix is one of its own `/`-prefixes).
#[derive(Debug, Clone, Default)]
pub struct PatternSet {
    exact: HashMap<Vec<u8>, Vec<usize>>,
    by_prefix: HashMap<Vec<u8>, Vec<(usize, Pattern)>>,
}

impl PatternSet {
    /// Compiles all patterns; the index of a match is the pattern's position.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<PatternSet, GlobError> {
        let mut set = PatternSet::default();
        for (i, p) in patterns.into_iter().enumerate() {
            let pat = Pattern::new(p)?;
            match &pat.matcher {
                Matcher::Exact(bytes) => set.exact.entry(bytes.clone()).or_default().push(i),
                _ => {
                    let cut = pat
                        .prefix
                        .iter()
                        .rposition(|b| *b == b'/')
                        .map_or(0, |at| at + 1);
                    let key = pat.prefix.get(..cut).unwrap_or_default().to_vec();
                    set.by_prefix.entry(key).or_default().push((i, pat));
                }
            }
        }
        Ok(set)
    }

    /// Indices of the patterns that match a normalized value, in ascending order (`out`
    /// is cleared first).
    pub fn matches_into(&self, normalized: &str, out: &mut Vec<usize>) {
        out.clear();
        let value = normalized.as_bytes();
        if let Some(ids) = self.exact.get(value) {
            out.extend_from_slice(ids);
        }
        if !self.by_prefix.is_empty() {
            let cuts = std::iter::once(0).chain(
                value
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'/')
                    .map(|(i, _)| i + 1),
            );
            for cut in cuts {
                let Some(key) = value.get(..cut) else {
                    continue;
                };
                if let Some(pats) = self.by_prefix.get(key) {
                    for (i, p) in pats {
                        if p.matcher.is_match(value) {
                            out.push(*i);
                        }
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_within_a_segment() {
        let p = Pattern::new("read:*").unwrap();
        assert!(p.matches("read:orders"));
        assert!(!p.matches("read:orders:123"));
        assert!(!p.matches("write:orders"));
        let deep = Pattern::new("read:**").unwrap();
        assert!(deep.matches("read:orders:123"));
        let path = Pattern::new("/v1/email/*").unwrap();
        assert!(path.matches("/v1/email/send"));
        assert!(!path.matches("/v1/email/send/now"));
        assert!(Pattern::new("/v1/**").unwrap().matches("/v1/a/b/c"));
    }

    #[test]
    fn lone_star_matches_everything() {
        let p = Pattern::new("*").unwrap();
        assert!(p.matches("read:orders:1"));
        assert!(p.matches("x"));
    }

    #[test]
    fn specificity_prefers_literals() {
        let exact = Pattern::new("write:email").unwrap();
        let wild = Pattern::new("write:*").unwrap();
        assert!(exact.specificity() > wild.specificity());
        assert!(Pattern::new("write:em*").unwrap().specificity() > wild.specificity());
    }

    #[test]
    fn bad_glob_names_pattern() {
        let e = Pattern::new("read:[a").unwrap_err();
        assert_eq!(e.pattern, "read:[a");
        assert!(e.to_string().contains("read:[a"), "{e}");
    }

    #[test]
    fn set_reports_indices() {
        let s = PatternSet::new(["read:*", "write:email", "*"]).unwrap();
        let mut out = vec![];
        s.matches_into(&normalize("write:email"), &mut out);
        out.sort();
        assert_eq!(out, vec![1, 2]);
    }
    /// The matcher agrees with globset's own (the regex it would build) on generated
    /// patterns and values, including classes, alternates, escapes, `**` in every
    /// position, non-ASCII and newlines.
    #[test]
    fn agrees_with_globset_on_generated_cases() {
        use globset::{GlobBuilder, GlobSetBuilder};
        const PIECES: [&str; 24] = [
            "a",
            "b",
            "/",
            ":",
            "*",
            "**",
            "?",
            "[ab]",
            "[!a]",
            "[a-c]",
            "{a,b}",
            "{a,}",
            "{,/}",
            "{**,b}",
            "\\*",
            "é",
            "-",
            ",",
            "[é-ü]",
            "[]a]",
            "{a,{b,c}}",
            "**/",
            "/**",
            "x",
        ];
        const VALUES: [&str; 10] = ["a", "b", "/", "é", "ü", "\n", "*", "c", "x", "ab"];
        // A small deterministic PRNG (xorshift), so failures reproduce.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut checked = 0;
        for _ in 0..3000 {
            let len = 1 + next(5);
            let pattern: String = (0..len).map(|_| PIECES[next(PIECES.len())]).collect();
            let Ok(ours) = Pattern::new(&pattern) else {
                continue;
            };
            let theirs = GlobBuilder::new(&translate(&pattern))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .unwrap()
                .compile_matcher();
            let mut values: Vec<String> = (0..12)
                .map(|_| {
                    let len = next(6);
                    (0..len).map(|_| VALUES[next(VALUES.len())]).collect()
                })
                .collect();
            // Values built from the pattern's own literals hit the interesting paths.
            values.push(pattern.replace(['*', '?', '[', ']', '{', '}', ',', '!', '\\'], ""));
            values.push(normalize(&pattern.replace("**", "a/b").replace('*', "a")).into_owned());
            for v in &values {
                let v = normalize(v);
                assert_eq!(
                    ours.matches_normalized(&v),
                    theirs.is_match(v.as_ref()),
                    "pattern {pattern:?} value {v:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
        // The set agrees with globset's set, indices and order included.
        let patterns = [
            "read:*",
            "read:**",
            "*",
            "write:email",
            "read:orders",
            "**/x",
            "a/**/b",
            "{read,write}:*",
            "re?d:*",
            "[rw]*:orders",
            "read:orders:*",
        ];
        let ours = PatternSet::new(patterns).unwrap();
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(
                GlobBuilder::new(&translate(p))
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .unwrap(),
            );
        }
        let theirs = b.build().unwrap();
        for v in [
            "read:orders",
            "read:orders:1",
            "write:email",
            "x",
            "q/x",
            "a/b",
            "a/c/d/b",
            "read",
            "",
            "wread:orders",
            "rxad:z",
        ] {
            let v = normalize(v);
            let mut a = vec![];
            ours.matches_into(&v, &mut a);
            assert_eq!(a, theirs.matches(v.as_ref()), "value {v:?}");
        }
    }

    #[test]
    fn set_scales_by_prefix() {
        let patterns: Vec<String> = (0..10_000)
            .map(|i| match i % 3 {
                0 => format!("read:res-{i}"),
                1 => format!("read:res-{i}:*"),
                _ => format!("write:grp-{i}:**"),
            })
            .collect();
        let set = PatternSet::new(patterns.iter().map(String::as_str)).unwrap();
        let mut out = vec![];
        set.matches_into(&normalize("read:res-3"), &mut out);
        assert_eq!(out, vec![3]);
        set.matches_into(&normalize("read:res-4:x"), &mut out);
        assert_eq!(out, vec![4]);
        set.matches_into(&normalize("write:grp-5:a:b"), &mut out);
        assert_eq!(out, vec![5]);
    }
}
