//! The condition language of policy rules (`conditions: ["time.hour >= 9 AND time.hour <= 17"]`).
//!
//! Conditions are parsed once, when the configuration is loaded, so every mistake is reported
//! with the condition text and a column while an operator is still looking at the config. At
//! request time evaluation cannot fail: a condition that refers to a value the request does not
//! carry is simply not true. That is done with three-valued (Kleene) logic rather than by
//! treating "missing" as false at the leaves, because `NOT missing == 1` must not become true
//! just because a header was absent — a deny rule guarded by such a condition would otherwise
//! be bypassed by omitting the header.
//!
//! The parser bounds both the source length and the nesting depth so that a hostile or
//! mistaken configuration can neither exhaust the stack of the (recursive) evaluator nor make
//! per-request evaluation expensive.

use std::borrow::Cow;
use std::fmt;

/// Longest condition accepted, in bytes. Real conditions are a line or two; anything longer is
/// almost certainly generated or pasted by mistake and would only slow down every request.
pub const MAX_SOURCE_LEN: usize = 4096;

/// Deepest nesting of parentheses and `NOT`s accepted. The parser and evaluator recurse once per
/// level, so this bound is what keeps them far from the stack limit of a Wasm VM.
pub const MAX_DEPTH: usize = 64;

/// A value a name resolves to at request time, or a literal written in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text, e.g. a header value or a claim.
    Str(String),
    /// Any number; integers and decimals share one type so `9 == 9.0` holds.
    Num(f64),
    /// A boolean; a bare operand is true only when it resolves to `Bool(true)`.
    Bool(bool),
    /// A list, e.g. a claim holding several groups, for `x in name`.
    List(Vec<Value>),
}

/// Resolves the names a condition refers to against the current request.
///
/// This is a trait rather than a map so the caller can resolve names lazily from headers,
/// claims and context without building a map for every request.
pub trait Lookup {
    /// Resolves the full dotted name (e.g. `"request.headers.x-recipient-domain"`).
    /// `None` means the value is missing, which makes any comparison on it unknown.
    fn lookup(&self, name: &str) -> Option<Value>;
}

/// A parsed condition. Keeps its source text so audit logs and errors can quote it verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    source: String,
    expr: Expr,
}

impl Condition {
    /// Parses a condition; errors name the offending column so config mistakes are fixable
    /// without guessing.
    ///
    /// # Errors
    ///
    /// Any syntax error, an empty condition, one longer than [`MAX_SOURCE_LEN`] bytes or one
    /// nested deeper than [`MAX_DEPTH`]; see [`ConditionErrorKind`].
    pub fn parse(source: &str) -> Result<Condition, ConditionError> {
        let expr = Parser::parse(source)?;
        Ok(Condition {
            source: source.to_owned(),
            expr,
        })
    }

    /// The condition exactly as written in the configuration.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against a request. Only a definitely true condition yields `true`: an unknown
    /// result (because a referenced value is missing) is treated as not satisfied, never as an
    /// error, so request handling can't fail on a condition.
    #[must_use]
    pub fn eval(&self, ctx: &dyn Lookup) -> bool {
        self.expr.eval(ctx) == Tri::True
    }

    /// Checks every name against `known`; the first unknown one is an error at its column
    /// whose message lists `valid()` (the caller's table of names), so a typo such as
    /// `time.hours` is reported at load time rather than evaluating to false for ever.
    ///
    /// # Errors
    ///
    /// [`ConditionErrorKind::UnknownName`] for the leftmost name `known` rejects.
    pub fn check_names(
        &self,
        known: impl Fn(&str) -> bool,
        valid: impl FnOnce() -> String,
    ) -> Result<(), ConditionError> {
        // Re-lexing the source (it parsed, so lexing succeeds) gives each name its column
        // without carrying positions in the syntax tree the evaluator walks.
        let mut lexer = Lexer {
            chars: self.source.chars().collect(),
            pos: 0,
        };
        while let Ok(token) = lexer.next_token() {
            match token.tok {
                Tok::End => break,
                Tok::Name(name) if !known(&name) => {
                    return Err(ConditionError {
                        source: self.source.clone(),
                        position: token.col,
                        kind: ConditionErrorKind::UnknownName {
                            name,
                            valid: valid(),
                        },
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Condition {
    type Err = ConditionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Condition::parse(s)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A condition that could not be parsed. Carries the full text and the column so the message
/// can point at the mistake on its own, without the surrounding configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionError {
    /// The condition as written.
    pub source: String,
    /// 1-based column of the offending character or token, counted in characters (not bytes),
    /// because that is what an editor shows.
    pub position: usize,
    /// What went wrong.
    pub kind: ConditionErrorKind,
}

/// Why a condition was rejected.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConditionErrorKind {
    /// The condition is empty or only whitespace; an empty condition is almost always a
    /// templating mistake, so it is not silently treated as true.
    Empty,
    /// Longer than `max` bytes.
    TooLong {
        /// The limit, [`MAX_SOURCE_LEN`].
        max: usize,
    },
    /// Parentheses and `NOT`s nested deeper than `max`.
    TooDeep {
        /// The limit, [`MAX_DEPTH`].
        max: usize,
    },
    /// A character that can't start any token.
    UnexpectedChar(char),
    /// A string literal without its closing quote.
    UnterminatedString,
    /// A backslash escape other than `\" \' \\ \n \t`.
    InvalidEscape(char),
    /// A malformed number, e.g. `1.`, `1.2.3`, `9am`.
    InvalidNumber(String),
    /// A dotted name with an empty segment, e.g. `time..hour` or `time.`.
    InvalidName(String),
    /// A token where something else was needed.
    UnexpectedToken {
        /// The token as written.
        found: String,
        /// What would have been valid there.
        expected: &'static str,
    },
    /// The condition ended where something else was needed.
    UnexpectedEnd {
        /// What would have been valid there.
        expected: &'static str,
    },
    /// `null` was used; missing values are already handled by making comparisons unknown.
    NullNotSupported,
    /// A dotted name outside the policy language's table of names (see
    /// [`Condition::check_names`]).
    UnknownName {
        /// The name as written.
        name: String,
        /// The valid names, as the message lists them.
        valid: String,
    },
}

impl fmt::Display for ConditionErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConditionErrorKind::Empty => f.write_str("empty condition"),
            ConditionErrorKind::TooLong { max } => {
                write!(f, "condition is longer than {max} bytes")
            }
            ConditionErrorKind::TooDeep { max } => {
                write!(f, "parentheses and NOTs nesting deeper than {max}")
            }
            ConditionErrorKind::UnexpectedChar(c) => {
                write!(f, "unexpected character `{c}`")?;
                match c {
                    '=' => f.write_str(" (use `==` to compare)"),
                    '&' => f.write_str(" (use `&&` or AND)"),
                    '|' => f.write_str(" (use `||` or OR)"),
                    '-' => f.write_str(" (`-` must be followed by digits in a number)"),
                    _ => Ok(()),
                }
            }
            ConditionErrorKind::UnterminatedString => {
                f.write_str("unterminated string (missing closing quote)")
            }
            ConditionErrorKind::InvalidEscape(c) => write!(
                f,
                "invalid escape `\\{c}` in string (allowed: \\\" \\' \\\\ \\n \\t)"
            ),
            ConditionErrorKind::InvalidNumber(s) => write!(
                f,
                "invalid number `{s}` (expected an integer or decimal like 42, -5 or 3.25)"
            ),
            ConditionErrorKind::InvalidName(s) => write!(
                f,
                "invalid name `{s}`: a `.` must be followed by a letter, digit, `_` or `-`"
            ),
            ConditionErrorKind::UnexpectedToken { found, expected } => {
                write!(f, "expected {expected} but found `{found}`")
            }
            ConditionErrorKind::UnexpectedEnd { expected } => {
                write!(f, "expected {expected} but the condition ended")
            }
            ConditionErrorKind::NullNotSupported => f.write_str(
                "`null` is not supported (a comparison with a missing value is already false)",
            ),
            ConditionErrorKind::UnknownName { name, valid } => {
                write!(f, "unknown name `{name}` (valid names: {valid})")
            }
        }
    }
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Quoting a multi-kilobyte condition would bury the message, and its length is the
        // whole problem anyway.
        if matches!(self.kind, ConditionErrorKind::TooLong { .. }) {
            let head: String = self.source.chars().take(60).collect();
            write!(f, "condition \"{head}…\"")?;
        } else {
            write!(f, "condition \"{}\"", self.source)?;
        }
        match &self.kind {
            // The list of valid names is long; the column belongs next to the name.
            ConditionErrorKind::UnknownName { name, valid } => write!(
                f,
                ": unknown name `{name}` at column {} (valid names: {valid})",
                self.position
            ),
            kind => write!(f, ": {kind} at column {}", self.position),
        }
    }
}

impl std::error::Error for ConditionError {}

// ---------------------------------------------------------------------------------------------
// Syntax tree and evaluation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Name(String),
    Lit(Value),
}

#[derive(Debug, Clone, PartialEq)]
enum ListSrc {
    Lit(Vec<Value>),
    Name(String),
}

// AND/OR chains are n-ary so a long flat chain doesn't translate into deep recursion.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Cmp {
        left: Operand,
        op: CmpOp,
        right: Operand,
    },
    In {
        left: Operand,
        list: ListSrc,
        negated: bool,
    },
    Truthy(Operand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn from_bool(b: bool) -> Tri {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }

    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

fn resolve<'a>(op: &'a Operand, ctx: &dyn Lookup) -> Option<Cow<'a, Value>> {
    match op {
        Operand::Lit(v) => Some(Cow::Borrowed(v)),
        Operand::Name(n) => ctx.lookup(n).map(Cow::Owned),
    }
}

impl Expr {
    fn eval(&self, ctx: &dyn Lookup) -> Tri {
        match self {
            Expr::Or(items) => {
                let mut unknown = false;
                for item in items {
                    match item.eval(ctx) {
                        Tri::True => return Tri::True,
                        Tri::Unknown => unknown = true,
                        Tri::False => {}
                    }
                }
                if unknown {
                    Tri::Unknown
                } else {
                    Tri::False
                }
            }
            Expr::And(items) => {
                let mut unknown = false;
                for item in items {
                    match item.eval(ctx) {
                        Tri::False => return Tri::False,
                        Tri::Unknown => unknown = true,
                        Tri::True => {}
                    }
                }
                if unknown {
                    Tri::Unknown
                } else {
                    Tri::True
                }
            }
            Expr::Not(inner) => inner.eval(ctx).not(),
            Expr::Cmp { left, op, right } => match (resolve(left, ctx), resolve(right, ctx)) {
                (Some(l), Some(r)) => Tri::from_bool(compare(&l, *op, &r)),
                _ => Tri::Unknown,
            },
            Expr::In {
                left,
                list,
                negated,
            } => {
                let Some(l) = resolve(left, ctx) else {
                    return Tri::Unknown;
                };
                let found = match list {
                    ListSrc::Lit(items) => items.iter().any(|v| values_equal(&l, v)),
                    ListSrc::Name(n) => match ctx.lookup(n) {
                        None => return Tri::Unknown,
                        Some(Value::List(items)) => items.iter().any(|v| values_equal(&l, v)),
                        // A single-valued claim where a list was expected is a list of one,
                        // so `x in agent.claims.groups` works whether the issuer emits one
                        // group as a string or as an array.
                        Some(single) => values_equal(&l, &single),
                    },
                };
                Tri::from_bool(found != *negated)
            }
            Expr::Truthy(op) => match resolve(op, ctx) {
                None => Tri::Unknown,
                Some(v) => Tri::from_bool(matches!(*v, Value::Bool(true))),
            },
        }
    }
}

/// Parses a string as a number the way headers carry them. Non-finite results ("NaN", "inf")
/// are not numbers here: a header saying `inf` must not satisfy `amount > 100`.
fn str_as_num(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

fn str_as_bool(s: &str) -> Option<bool> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("true") {
        Some(true)
    } else if t.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Equality shared by `==`, `!=` and `in`, with the string coercions headers need (every
/// header value is a string, but policies naturally compare them to numbers and booleans).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Num(n), Value::Str(s)) | (Value::Str(s), Value::Num(n)) => {
            str_as_num(s).is_some_and(|m| m == *n)
        }
        (Value::Bool(b), Value::Str(s)) | (Value::Str(s), Value::Bool(b)) => {
            str_as_bool(s).is_some_and(|c| c == *b)
        }
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        _ => false,
    }
}

fn values_order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Num(x), Value::Num(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(x.as_str().cmp(y.as_str())),
        (Value::Num(x), Value::Str(s)) => str_as_num(s).and_then(|y| x.partial_cmp(&y)),
        (Value::Str(s), Value::Num(y)) => str_as_num(s).and_then(|x| x.partial_cmp(y)),
        _ => None,
    }
}

fn compare(a: &Value, op: CmpOp, b: &Value) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match op {
        CmpOp::Eq => values_equal(a, b),
        CmpOp::Ne => !values_equal(a, b),
        CmpOp::Lt => values_order(a, b) == Some(Less),
        CmpOp::Le => matches!(values_order(a, b), Some(Less | Equal)),
        CmpOp::Gt => values_order(a, b) == Some(Greater),
        CmpOp::Ge => matches!(values_order(a, b), Some(Greater | Equal)),
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Cmp(CmpOp),
    And,
    Or,
    Not,
    In,
    Bool(bool),
    Str(String),
    Num(f64),
    Name(String),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based character column of the token's first character.
    col: usize,
    /// The token as written, for error messages.
    text: String,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

// Works on chars rather than bytes so columns are character columns and no slicing can land
// inside a multi-byte character.
struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

type LexResult = Result<Token, (usize, ConditionErrorKind)>;

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos.saturating_add(offset)).copied()
    }

    fn text(&self, start: usize) -> String {
        self.chars
            .get(start..self.pos)
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }

    fn token(&self, tok: Tok, start: usize) -> Token {
        Token {
            tok,
            col: start.saturating_add(1),
            text: self.text(start),
        }
    }

    fn next_token(&mut self) -> LexResult {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos = self.pos.saturating_add(1);
        }
        let start = self.pos;
        let col = start.saturating_add(1);
        let Some(c) = self.peek() else {
            return Ok(self.token(Tok::End, start));
        };
        let next = self.peek_at(1);
        let (tok, len) = match (c, next) {
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('[', _) => (Tok::LBracket, 1),
            (']', _) => (Tok::RBracket, 1),
            (',', _) => (Tok::Comma, 1),
            ('=', Some('=')) => (Tok::Cmp(CmpOp::Eq), 2),
            ('!', Some('=')) => (Tok::Cmp(CmpOp::Ne), 2),
            ('!', _) => (Tok::Not, 1),
            ('<', Some('=')) => (Tok::Cmp(CmpOp::Le), 2),
            ('<', _) => (Tok::Cmp(CmpOp::Lt), 1),
            ('>', Some('=')) => (Tok::Cmp(CmpOp::Ge), 2),
            ('>', _) => (Tok::Cmp(CmpOp::Gt), 1),
            ('&', Some('&')) => (Tok::And, 2),
            ('|', Some('|')) => (Tok::Or, 2),
            ('"' | '\'', _) => return self.string(c),
            ('-', Some(d)) if d.is_ascii_digit() => return self.number(),
            (d, _) if d.is_ascii_digit() => return self.number(),
            (s, _) if is_name_start(s) => return self.word(),
            _ => return Err((col, ConditionErrorKind::UnexpectedChar(c))),
        };
        self.pos = self.pos.saturating_add(len);
        Ok(self.token(tok, start))
    }

    fn string(&mut self, quote: char) -> LexResult {
        let start = self.pos;
        self.pos = self.pos.saturating_add(1);
        let mut value = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err((
                    start.saturating_add(1),
                    ConditionErrorKind::UnterminatedString,
                ));
            };
            if c == quote {
                self.pos = self.pos.saturating_add(1);
                return Ok(self.token(Tok::Str(value), start));
            }
            if c == '\\' {
                let escaped = match self.peek_at(1) {
                    None => {
                        return Err((
                            start.saturating_add(1),
                            ConditionErrorKind::UnterminatedString,
                        ))
                    }
                    Some('"') => '"',
                    Some('\'') => '\'',
                    Some('\\') => '\\',
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some(other) => {
                        return Err((
                            self.pos.saturating_add(1),
                            ConditionErrorKind::InvalidEscape(other),
                        ))
                    }
                };
                value.push(escaped);
                self.pos = self.pos.saturating_add(2);
            } else {
                value.push(c);
                self.pos = self.pos.saturating_add(1);
            }
        }
    }

    fn number(&mut self) -> LexResult {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos = self.pos.saturating_add(1);
        }
        let digits = |lx: &mut Lexer| {
            while lx.peek().is_some_and(|c| c.is_ascii_digit()) {
                lx.pos = lx.pos.saturating_add(1);
            }
        };
        digits(self);
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.pos = self.pos.saturating_add(1);
            digits(self);
        }
        // Anything name-like glued to the number (`9am`, `1.2.3`, `5-3`, `1.`) is one bad
        // token; splitting it would produce a more confusing error further on.
        let mut malformed = false;
        while self.peek().is_some_and(is_name_char) {
            malformed = true;
            self.pos = self.pos.saturating_add(1);
        }
        let text = self.text(start);
        let col = start.saturating_add(1);
        if malformed {
            return Err((col, ConditionErrorKind::InvalidNumber(text)));
        }
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(self.token(Tok::Num(n), start)),
            _ => Err((col, ConditionErrorKind::InvalidNumber(text))),
        }
    }

    fn word(&mut self) -> LexResult {
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos = self.pos.saturating_add(1);
        }
        let text = self.text(start);
        let col = start.saturating_add(1);
        let mut chars = text.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '.' && chars.peek().is_none_or(|&(_, n)| n == '.') {
                return Err((col.saturating_add(i), ConditionErrorKind::InvalidName(text)));
            }
        }
        // Only an undotted word can be a keyword, so `context.in` or `agent.claims.not`
        // stay ordinary names.
        let keyword = |k: &str| text.eq_ignore_ascii_case(k);
        let tok = if keyword("and") {
            Tok::And
        } else if keyword("or") {
            Tok::Or
        } else if keyword("not") {
            Tok::Not
        } else if keyword("in") {
            Tok::In
        } else if keyword("true") {
            Tok::Bool(true)
        } else if keyword("false") {
            Tok::Bool(false)
        } else if keyword("null") {
            return Err((col, ConditionErrorKind::NullNotSupported));
        } else {
            Tok::Name(text.clone())
        };
        Ok(Token { tok, col, text })
    }
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

const AFTER_EXPR_TOP: &str = "AND, OR or end of condition";
const AFTER_EXPR_PAREN: &str = "AND, OR or `)`";
const AFTER_BARE_TOP: &str = "a comparison operator, IN, AND, OR or end of condition";
const AFTER_BARE_PAREN: &str = "a comparison operator, IN, AND, OR or `)`";
const AFTER_LITERAL: &str =
    "a comparison operator or IN after a string or number (a bare literal is never true)";
const OPERAND: &str = "a name, literal, NOT or `(`";
const RIGHT_OPERAND: &str = "a name or literal";
const LIST_OR_NAME: &str = "`[` or a name after IN";
const LIST_ITEM: &str = "a string, number, true or false in the list";
const LIST_ITEM_OR_END: &str = "a string, number, true, false or `]`";
const LIST_SEP: &str = "`,` or `]`";
const IN_AFTER_NOT: &str = "IN after NOT";

/// A chain of one is just its element, so `(a == 1)` evaluates without a wrapper.
fn collapse(mut items: Vec<Expr>, wrap: fn(Vec<Expr>) -> Expr) -> Expr {
    if items.len() == 1 {
        if let Some(only) = items.pop() {
            return only;
        }
    }
    wrap(items)
}

// Lexes lazily, one token ahead, so the first error reported is the leftmost one.
struct Parser<'s> {
    source: &'s str,
    lexer: Lexer,
    cur: Token,
    depth: usize,
    parens: usize,
}

impl<'s> Parser<'s> {
    fn parse(source: &'s str) -> Result<Expr, ConditionError> {
        if source.len() > MAX_SOURCE_LEN {
            let col = source
                .char_indices()
                .take_while(|&(b, _)| b < MAX_SOURCE_LEN)
                .count()
                .saturating_add(1);
            return Err(ConditionError {
                source: source.to_owned(),
                position: col,
                kind: ConditionErrorKind::TooLong {
                    max: MAX_SOURCE_LEN,
                },
            });
        }
        if source.trim().is_empty() {
            return Err(ConditionError {
                source: source.to_owned(),
                position: 1,
                kind: ConditionErrorKind::Empty,
            });
        }
        let mut lexer = Lexer {
            chars: source.chars().collect(),
            pos: 0,
        };
        let first = lexer
            .next_token()
            .map_err(|(col, kind)| Self::error_at(source, col, kind))?;
        let mut parser = Parser {
            source,
            lexer,
            cur: first,
            depth: 0,
            parens: 0,
        };
        let expr = parser.parse_or()?;
        if parser.cur.tok != Tok::End {
            return Err(parser.unexpected(AFTER_EXPR_TOP));
        }
        Ok(expr)
    }

    fn error_at(source: &str, position: usize, kind: ConditionErrorKind) -> ConditionError {
        ConditionError {
            source: source.to_owned(),
            position,
            kind,
        }
    }

    fn error(&self, position: usize, kind: ConditionErrorKind) -> ConditionError {
        Self::error_at(self.source, position, kind)
    }

    fn unexpected(&self, expected: &'static str) -> ConditionError {
        let kind = if self.cur.tok == Tok::End {
            ConditionErrorKind::UnexpectedEnd { expected }
        } else {
            ConditionErrorKind::UnexpectedToken {
                found: self.cur.text.clone(),
                expected,
            }
        };
        self.error(self.cur.col, kind)
    }

    /// Moves to the next token, returning the one just consumed.
    fn advance(&mut self) -> Result<Token, ConditionError> {
        let next = self
            .lexer
            .next_token()
            .map_err(|(col, kind)| self.error(col, kind))?;
        Ok(std::mem::replace(&mut self.cur, next))
    }

    fn enter(&mut self) -> Result<(), ConditionError> {
        self.depth = self.depth.saturating_add(1);
        if self.depth > MAX_DEPTH {
            return Err(self.error(self.cur.col, ConditionErrorKind::TooDeep { max: MAX_DEPTH }));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn parse_or(&mut self) -> Result<Expr, ConditionError> {
        let mut items = vec![self.parse_and()?];
        while self.cur.tok == Tok::Or {
            self.advance()?;
            items.push(self.parse_and()?);
        }
        Ok(collapse(items, Expr::Or))
    }

    fn parse_and(&mut self) -> Result<Expr, ConditionError> {
        let mut items = vec![self.parse_unary()?];
        while self.cur.tok == Tok::And {
            self.advance()?;
            items.push(self.parse_unary()?);
        }
        Ok(collapse(items, Expr::And))
    }

    fn parse_unary(&mut self) -> Result<Expr, ConditionError> {
        if self.cur.tok == Tok::Not {
            self.enter()?;
            self.advance()?;
            let inner = self.parse_unary()?;
            self.leave();
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Expr, ConditionError> {
        if self.cur.tok != Tok::LParen {
            return self.parse_comparison();
        }
        self.enter()?;
        self.parens = self.parens.saturating_add(1);
        self.advance()?;
        let inner = self.parse_or()?;
        if self.cur.tok != Tok::RParen {
            return Err(self.unexpected(AFTER_EXPR_PAREN));
        }
        self.advance()?;
        self.parens = self.parens.saturating_sub(1);
        self.leave();
        Ok(inner)
    }

    /// Consumes an operand if the current token is one.
    fn operand(&mut self, expected: &'static str) -> Result<Operand, ConditionError> {
        let op = match &self.cur.tok {
            Tok::Name(n) => Operand::Name(n.clone()),
            Tok::Str(s) => Operand::Lit(Value::Str(s.clone())),
            Tok::Num(n) => Operand::Lit(Value::Num(*n)),
            Tok::Bool(b) => Operand::Lit(Value::Bool(*b)),
            _ => return Err(self.unexpected(expected)),
        };
        self.advance()?;
        Ok(op)
    }

    fn parse_comparison(&mut self) -> Result<Expr, ConditionError> {
        let left = self.operand(OPERAND)?;
        match self.cur.tok {
            Tok::Cmp(op) => {
                self.advance()?;
                let right = self.operand(RIGHT_OPERAND)?;
                Ok(Expr::Cmp { left, op, right })
            }
            Tok::In => {
                self.advance()?;
                let list = self.parse_list_src()?;
                Ok(Expr::In {
                    left,
                    list,
                    negated: false,
                })
            }
            Tok::Not => {
                self.advance()?;
                if self.cur.tok != Tok::In {
                    return Err(self.unexpected(IN_AFTER_NOT));
                }
                self.advance()?;
                let list = self.parse_list_src()?;
                Ok(Expr::In {
                    left,
                    list,
                    negated: true,
                })
            }
            _ => {
                // A bare string or number can never be true, so it is a mistake, not a
                // condition.
                if matches!(left, Operand::Lit(Value::Str(_) | Value::Num(_))) {
                    return Err(self.unexpected(AFTER_LITERAL));
                }
                if !matches!(self.cur.tok, Tok::And | Tok::Or | Tok::RParen | Tok::End) {
                    return Err(self.unexpected(if self.parens > 0 {
                        AFTER_BARE_PAREN
                    } else {
                        AFTER_BARE_TOP
                    }));
                }
                Ok(Expr::Truthy(left))
            }
        }
    }

    fn parse_list_src(&mut self) -> Result<ListSrc, ConditionError> {
        match &self.cur.tok {
            Tok::Name(n) => {
                let name = n.clone();
                self.advance()?;
                Ok(ListSrc::Name(name))
            }
            Tok::LBracket => {
                self.advance()?;
                let mut items = Vec::new();
                loop {
                    let item = match &self.cur.tok {
                        Tok::RBracket => break,
                        Tok::Str(s) => Value::Str(s.clone()),
                        Tok::Num(n) => Value::Num(*n),
                        Tok::Bool(b) => Value::Bool(*b),
                        _ => {
                            return Err(self.unexpected(if items.is_empty() {
                                LIST_ITEM_OR_END
                            } else {
                                LIST_ITEM
                            }))
                        }
                    };
                    items.push(item);
                    self.advance()?;
                    match self.cur.tok {
                        // A trailing comma is accepted, as in most config languages.
                        Tok::Comma => {
                            self.advance()?;
                        }
                        Tok::RBracket => break,
                        _ => return Err(self.unexpected(LIST_SEP)),
                    }
                }
                self.advance()?;
                Ok(ListSrc::Lit(items))
            }
            _ => Err(self.unexpected(LIST_OR_NAME)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Ctx(HashMap<String, Value>);

    impl Lookup for Ctx {
        fn lookup(&self, name: &str) -> Option<Value> {
            self.0.get(name).cloned()
        }
    }

    fn s(v: &str) -> Value {
        Value::Str(v.to_owned())
    }

    fn ctx() -> Ctx {
        let mut m = HashMap::new();
        m.insert("time.hour".to_owned(), Value::Num(10.0));
        m.insert("time.weekday".to_owned(), s("mon"));
        m.insert("context.amount".to_owned(), Value::Num(250.5));
        m.insert("request.headers.x-amount".to_owned(), s("250"));
        m.insert(
            "request.headers.x-recipient-domain".to_owned(),
            s("example.com"),
        );
        m.insert("request.headers.x-dry-run".to_owned(), s("true"));
        m.insert("request.headers.x-flag".to_owned(), s("FALSE"));
        m.insert("request.headers.x-word".to_owned(), s("abc"));
        m.insert("agent.claims.admin".to_owned(), Value::Bool(true));
        m.insert("agent.claims.guest".to_owned(), Value::Bool(false));
        m.insert("agent.claims.department".to_owned(), s("finance"));
        m.insert(
            "agent.claims.groups".to_owned(),
            Value::List(vec![s("ops"), s("eng")]),
        );
        m.insert("agent.claims.level".to_owned(), Value::Num(3.0));
        m.insert("agent.claims.single".to_owned(), s("ops"));
        m.insert(
            "allowed.domains".to_owned(),
            Value::List(vec![s("example.com"), s("example.org")]),
        );
        m.insert(
            "allowed.levels".to_owned(),
            Value::List(vec![Value::Num(1.0), Value::Num(3.0)]),
        );
        m.insert("context.in".to_owned(), Value::Num(1.0));
        m.insert("agent.claims.not".to_owned(), Value::Bool(true));
        m.insert("a".to_owned(), Value::Num(1.0));
        m.insert("b".to_owned(), Value::Num(2.0));
        m.insert("t".to_owned(), Value::Bool(true));
        m.insert("f".to_owned(), Value::Bool(false));
        m.insert("quote".to_owned(), s("it's \"x\"\\\n\t"));
        m.insert("neg".to_owned(), Value::Num(-5.0));
        m.insert("unicode".to_owned(), s("héllo"));
        Ctx(m)
    }

    fn eval(src: &str) -> bool {
        let c = Condition::parse(src).unwrap_or_else(|e| panic!("parse {src:?}: {e}"));
        c.eval(&ctx())
    }

    fn tri(src: &str) -> Tri {
        Condition::parse(src).unwrap().expr.eval(&ctx())
    }

    fn err(src: &str) -> ConditionError {
        match Condition::parse(src) {
            Ok(c) => panic!("{src:?} parsed unexpectedly: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn simple_comparisons() {
        assert!(eval("time.hour >= 9 AND time.hour <= 17"));
        assert!(!eval("time.hour >= 11 AND time.hour <= 17"));
        assert!(eval("time.hour == 10"));
        assert!(eval("time.hour == 10.0"));
        assert!(eval("time.hour != 11"));
        assert!(!eval("time.hour != 10"));
        assert!(eval("time.hour < 11"));
        assert!(!eval("time.hour < 10"));
        assert!(eval("time.hour <= 10"));
        assert!(eval("time.hour > 9"));
        assert!(!eval("time.hour > 10"));
        assert!(eval("time.hour >= 10"));
        assert!(eval("9 < time.hour"));
        assert!(eval("context.amount > 250.25"));
        assert!(eval("time.weekday == \"mon\""));
        assert!(eval("time.weekday == 'mon'"));
        assert!(eval("time.weekday < 'tue'"));
        assert!(!eval("time.weekday > 'tue'"));
        assert!(eval("a < b"));
        assert!(eval("time.hour>=9&&time.hour<=17"));
    }

    #[test]
    fn precedence_and_parentheses() {
        // AND binds tighter than OR.
        assert!(eval("a == 1 OR a == 2 AND a == 3"));
        assert!(!eval("(a == 1 OR a == 2) AND a == 3"));
        // NOT binds tighter than AND.
        assert!(!eval("NOT a == 1 AND a == 1"));
        assert!(eval("NOT (a == 2 AND a == 1)"));
        assert!(eval("NOT a == 2 OR a == 2"));
        assert!(eval("((a == 1))"));
        assert!(eval("!(a == 2) && (b == 2 || a == 5)"));
        assert!(eval("!!t"));
        assert!(eval("NOT NOT a == 1"));
        assert!(eval("a == 2 OR a == 3 OR a == 1"));
        assert!(!eval("a == 1 AND b == 2 AND a == 3"));
    }

    #[test]
    fn case_insensitive_keywords() {
        assert!(eval("a == 1 and b == 2"));
        assert!(eval("a == 1 And b == 2"));
        assert!(eval("a == 5 or b == 2"));
        assert!(eval("not a == 5"));
        assert!(eval("Not a == 5"));
        assert!(eval("t == TRUE"));
        assert!(eval("f == False"));
        assert!(eval("a In [1, 2]"));
        assert!(eval("a NOT IN [3]"));
        assert!(eval("a not in [3]"));
    }

    #[test]
    fn in_lists() {
        assert!(eval("time.weekday in ['mon', 'tue']"));
        assert!(!eval("time.weekday in ['sat', 'sun']"));
        assert!(eval("time.weekday not in ['sat', 'sun']"));
        assert!(!eval("time.weekday NOT IN ['mon']"));
        assert!(!eval("a in []"));
        assert!(eval("a not in []"));
        assert!(eval("a in [3, 2, 1,]"));
        assert!(eval("request.headers.x-amount in [100, 250]"));
        assert!(eval("t in [false, true]"));
        assert!(eval("request.headers.x-dry-run in [true]"));
        // Name-valued lists.
        assert!(eval(
            "request.headers.x-recipient-domain in allowed.domains"
        ));
        assert!(eval("'ops' in agent.claims.groups"));
        assert!(!eval("'hr' in agent.claims.groups"));
        assert!(eval("'hr' not in agent.claims.groups"));
        assert!(eval("agent.claims.level in allowed.levels"));
        // A scalar used as a list is a list of one.
        assert!(eval("'ops' in agent.claims.single"));
        assert!(!eval("'eng' in agent.claims.single"));
    }

    #[test]
    fn hyphenated_and_keyword_like_names() {
        assert!(eval(
            "request.headers.x-recipient-domain == \"example.com\""
        ));
        assert!(eval("request.headers.x-recipient-domain != 'evil.com'"));
        assert!(eval("context.in == 1"));
        assert!(eval("agent.claims.not"));
        assert!(eval("agent.claims.admin AND NOT agent.claims.guest"));
        let c = Condition::parse("request.headers.x-a-b- == 1").unwrap();
        assert_eq!(names_of(&c), vec!["request.headers.x-a-b-"]);
    }

    #[test]
    fn bare_operands() {
        assert!(eval("agent.claims.admin"));
        assert!(!eval("agent.claims.guest"));
        assert!(eval("true"));
        assert!(!eval("false"));
        // A present non-bool value is false, even the string "true".
        assert!(!eval("request.headers.x-dry-run"));
        assert!(eval("NOT request.headers.x-dry-run"));
        assert!(!eval("agent.claims.admin AND NOT agent.claims.admin"));
        assert_eq!(tri("missing"), Tri::Unknown);
        assert!(!eval(
            "agent.claims.admin AND NOT request.headers.x-missing"
        ));
        assert!(eval("(agent.claims.admin)"));
    }

    #[test]
    fn negative_numbers_and_quoting() {
        assert!(eval("neg == -5"));
        assert!(eval("neg < -4.5"));
        assert!(eval("neg > -5.5"));
        assert!(eval("a > -1"));
        assert!(eval(r#"quote == "it's \"x\"\\\n\t""#));
        assert!(eval(r#"quote == 'it\'s "x"\\\n	'"#));
        assert!(eval("unicode == 'héllo'"));
        assert!(eval("'' != unicode"));
        assert!(eval("a == 001"));
    }

    #[test]
    fn three_valued_logic() {
        assert_eq!(tri("missing == 1"), Tri::Unknown);
        assert_eq!(tri("1 == missing"), Tri::Unknown);
        assert_eq!(tri("missing != 1"), Tri::Unknown);
        assert!(!eval("missing != 1"));
        assert!(!eval("NOT missing == 1"));
        assert!(!eval("NOT (missing == 1)"));
        assert!(eval("missing == 1 OR true"));
        assert!(eval("true OR missing == 1"));
        assert!(!eval("missing == 1 OR false"));
        assert_eq!(tri("missing == 1 OR false"), Tri::Unknown);
        assert_eq!(tri("missing == 1 AND false"), Tri::False);
        assert!(eval("NOT (missing == 1 AND false)"));
        assert_eq!(tri("missing == 1 AND true"), Tri::Unknown);
        assert!(!eval("NOT (missing == 1 AND true)"));
        assert_eq!(tri("missing in [1]"), Tri::Unknown);
        assert_eq!(tri("missing not in [1]"), Tri::Unknown);
        assert_eq!(tri("a in missing.list"), Tri::Unknown);
        assert_eq!(tri("a not in missing.list"), Tri::Unknown);
        assert_eq!(tri("NOT missing"), Tri::Unknown);
    }

    #[test]
    fn coercions() {
        assert!(eval("request.headers.x-amount > 100"));
        assert!(eval("request.headers.x-amount == 250"));
        assert!(eval("request.headers.x-amount == 250.0"));
        assert!(eval("250 == request.headers.x-amount"));
        assert!(eval("100 < request.headers.x-amount"));
        assert!(!eval("request.headers.x-amount < 100"));
        // String vs string stays lexicographic.
        assert!(eval("request.headers.x-amount < '3'"));
        // Non-numeric string vs number.
        assert!(!eval("request.headers.x-word == 1"));
        assert!(eval("request.headers.x-word != 1"));
        assert!(!eval("request.headers.x-word > 1"));
        assert!(!eval("request.headers.x-word < 1"));
        // Bool vs string.
        assert!(eval("request.headers.x-dry-run == true"));
        assert!(eval("request.headers.x-flag == false"));
        assert!(eval("request.headers.x-flag != true"));
        assert!(!eval("request.headers.x-word == true"));
        assert!(eval("request.headers.x-word != true"));
        // Bool ordering is never true.
        assert!(!eval("t > f"));
        assert!(!eval("t >= t"));
        assert!(eval("t == true AND t != false"));
        // Bool vs number never equal.
        assert!(!eval("t == 1"));
        assert!(eval("t != 1"));
        // Lists: equality element-wise, ordering never.
        let mut c = ctx();
        c.0.insert("l1".into(), Value::List(vec![Value::Num(1.0), s("2")]));
        c.0.insert("l2".into(), Value::List(vec![s("1"), Value::Num(2.0)]));
        c.0.insert("l3".into(), Value::List(vec![Value::Num(1.0)]));
        c.0.insert("inf".into(), s("inf"));
        c.0.insert("nan".into(), Value::Num(f64::NAN));
        let ev = |src: &str| Condition::parse(src).unwrap().eval(&c);
        assert!(ev("l1 == l2"));
        assert!(!ev("l1 == l3"));
        assert!(ev("l1 != l3"));
        assert!(!ev("l1 < l2"));
        assert!(!ev("l1 == 1"));
        assert!(!ev("inf > 100"));
        assert!(!ev("nan == nan"));
        assert!(ev("nan != nan"));
        assert!(!ev("nan < 1"));
        assert!(!ev("nan >= 1"));
    }

    #[test]
    fn names_and_source() {
        let src = "agent.claims.admin AND (a == b OR 'x' in allowed.domains) AND a NOT IN [1]";
        let c = Condition::parse(src).unwrap();
        assert_eq!(c.source(), src);
        assert_eq!(c.to_string(), src);
        assert_eq!(
            names_of(&c),
            vec!["agent.claims.admin", "a", "b", "allowed.domains"]
        );
        assert!(names_of(&Condition::parse("true").unwrap()).is_empty());
        let parsed: Condition = "a == 1".parse().unwrap();
        assert!(parsed.eval(&ctx()));
    }

    fn check(src: &str, col: usize, kind: ConditionErrorKind) {
        let e = err(src);
        assert_eq!(e.kind, kind, "kind for {src:?}: {e}");
        assert_eq!(e.position, col, "column for {src:?}: {e}");
        assert_eq!(e.source, src);
        let msg = e.to_string();
        if !matches!(kind, ConditionErrorKind::TooLong { .. }) {
            assert!(msg.contains(src), "{msg}");
        }
        assert!(msg.contains(&format!("column {col}")), "{msg}");
    }

    #[test]
    fn error_positions() {
        use ConditionErrorKind as K;
        check(
            "time.hour >= 9 AN time.hour <= 17",
            16,
            K::UnexpectedToken {
                found: "AN".into(),
                expected: AFTER_EXPR_TOP,
            },
        );
        assert_eq!(
            err("time.hour >= 9 AN time.hour <= 17").to_string(),
            "condition \"time.hour >= 9 AN time.hour <= 17\": expected AND, OR or end of \
             condition but found `AN` at column 16"
        );
        check(
            "time.hour >= ",
            14,
            K::UnexpectedEnd {
                expected: RIGHT_OPERAND,
            },
        );
        check(
            "time.hour >>= 9",
            12,
            K::UnexpectedToken {
                found: ">=".into(),
                expected: RIGHT_OPERAND,
            },
        );
        check("\"unterminated", 1, K::UnterminatedString);
        check("a == 'abc", 6, K::UnterminatedString);
        check("a == 'abc\\", 6, K::UnterminatedString);
        check(
            "(a == 1",
            8,
            K::UnexpectedEnd {
                expected: AFTER_EXPR_PAREN,
            },
        );
        check(
            "a == 1)",
            7,
            K::UnexpectedToken {
                found: ")".into(),
                expected: AFTER_EXPR_TOP,
            },
        );
        check(
            "a ==",
            5,
            K::UnexpectedEnd {
                expected: RIGHT_OPERAND,
            },
        );
        check("null == a", 1, K::NullNotSupported);
        check("a == NULL", 6, K::NullNotSupported);
        check("a in [1, null]", 10, K::NullNotSupported);
        check("", 1, K::Empty);
        check("   ", 1, K::Empty);
        check("a = 1", 3, K::UnexpectedChar('='));
        check("a == 1 & b", 8, K::UnexpectedChar('&'));
        check("a == 1 | b", 8, K::UnexpectedChar('|'));
        check("a == - 1", 6, K::UnexpectedChar('-'));
        check("a == 1.", 6, K::InvalidNumber("1.".into()));
        check("a == 1.2.3", 6, K::InvalidNumber("1.2.3".into()));
        check("time.hour > 9am", 13, K::InvalidNumber("9am".into()));
        check("a == 1e5", 6, K::InvalidNumber("1e5".into()));
        check("a == 'x\\q'", 8, K::InvalidEscape('q'));
        check("time..hour == 1", 5, K::InvalidName("time..hour".into()));
        check("time. == 1", 5, K::InvalidName("time.".into()));
        check("a == .5", 6, K::UnexpectedChar('.'));
        check("é == 1", 1, K::UnexpectedChar('é'));
        check("'é' == a AND ü", 14, K::UnexpectedChar('ü'));
        check("'é' == a AND", 13, K::UnexpectedEnd { expected: OPERAND });
        check(
            "a b",
            3,
            K::UnexpectedToken {
                found: "b".into(),
                expected: AFTER_BARE_TOP,
            },
        );
        check(
            "(a b)",
            4,
            K::UnexpectedToken {
                found: "b".into(),
                expected: AFTER_BARE_PAREN,
            },
        );
        check(
            "'x'",
            4,
            K::UnexpectedEnd {
                expected: AFTER_LITERAL,
            },
        );
        check(
            "5 AND a",
            3,
            K::UnexpectedToken {
                found: "AND".into(),
                expected: AFTER_LITERAL,
            },
        );
        check(
            "a == b == c",
            8,
            K::UnexpectedToken {
                found: "==".into(),
                expected: AFTER_EXPR_TOP,
            },
        );
        check(
            "a NOT b",
            7,
            K::UnexpectedToken {
                found: "b".into(),
                expected: IN_AFTER_NOT,
            },
        );
        check(
            "a in 'x'",
            6,
            K::UnexpectedToken {
                found: "'x'".into(),
                expected: LIST_OR_NAME,
            },
        );
        check(
            "a in [b]",
            7,
            K::UnexpectedToken {
                found: "b".into(),
                expected: LIST_ITEM_OR_END,
            },
        );
        check(
            "a in [1 2]",
            9,
            K::UnexpectedToken {
                found: "2".into(),
                expected: LIST_SEP,
            },
        );
        check(
            "a in [1, , 2]",
            10,
            K::UnexpectedToken {
                found: ",".into(),
                expected: LIST_ITEM,
            },
        );
        check("a in [1", 8, K::UnexpectedEnd { expected: LIST_SEP });
        check(
            "AND a",
            1,
            K::UnexpectedToken {
                found: "AND".into(),
                expected: OPERAND,
            },
        );
        check(
            "()",
            2,
            K::UnexpectedToken {
                found: ")".into(),
                expected: OPERAND,
            },
        );
        check(
            "a == NOT b",
            6,
            K::UnexpectedToken {
                found: "NOT".into(),
                expected: RIGHT_OPERAND,
            },
        );
        check(
            "a == [1]",
            6,
            K::UnexpectedToken {
                found: "[".into(),
                expected: RIGHT_OPERAND,
            },
        );
        // The leftmost error wins even when a later token would not even lex.
        check(
            "a == 1) 'oops",
            7,
            K::UnexpectedToken {
                found: ")".into(),
                expected: AFTER_EXPR_TOP,
            },
        );
    }

    #[test]
    fn limits() {
        let ok = format!("{}a == 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(eval(&ok));
        let deep = format!("{}a == 1{}", "(".repeat(65), ")".repeat(65));
        check(&deep, 65, ConditionErrorKind::TooDeep { max: 64 });
        assert!(err(&deep).to_string().contains("deeper than 64"));
        let nots = format!("{}t", "NOT ".repeat(MAX_DEPTH));
        assert!(eval(&nots));
        let nots = format!("{}t", "! ".repeat(65));
        check(&nots, 129, ConditionErrorKind::TooDeep { max: 64 });
        let mixed = format!("{}t{}", "NOT (".repeat(33), ")".repeat(33));
        check(&mixed, 32 * 5 + 1, ConditionErrorKind::TooDeep { max: 64 });

        // Long flat chains are fine (no depth involved).
        let flat = vec!["a == 1"; 300].join(" AND ");
        assert!(flat.len() <= MAX_SOURCE_LEN);
        assert!(eval(&flat));

        let long = "a == 1 OR ".repeat(500) + "a == 1";
        let e = err(&long);
        assert_eq!(
            e.kind,
            ConditionErrorKind::TooLong {
                max: MAX_SOURCE_LEN
            }
        );
        assert_eq!(e.position, MAX_SOURCE_LEN + 1);
        assert!(e.to_string().contains("longer than 4096 bytes"));
        // Columns count characters even when the limit is measured in bytes.
        let long_unicode = "é".repeat(3000);
        assert_eq!(err(&long_unicode).position, 2049);
        let exact = format!("a == '{}'", "x".repeat(MAX_SOURCE_LEN - 7));
        assert_eq!(exact.len(), MAX_SOURCE_LEN);
        assert!(Condition::parse(&exact).is_ok());
        assert!(Condition::parse("1e400 == a").is_err());
        assert!(Condition::parse(&format!("a == {}", "9".repeat(400))).is_err());
    }

    #[test]
    fn error_is_std_error() {
        let e: Box<dyn std::error::Error> = Box::new(err("a =="));
        assert!(e.to_string().starts_with("condition \"a ==\": "));
    }

    /// Every name in order of appearance, as [`Condition::check_names`] sees them.
    fn names_of(c: &Condition) -> Vec<String> {
        let seen = std::cell::RefCell::new(Vec::<String>::new());
        let all_known = c.check_names(
            |n| {
                let mut seen = seen.borrow_mut();
                if !seen.iter().any(|s| s == n) {
                    seen.push(n.to_string());
                }
                true
            },
            String::new,
        );
        assert!(all_known.is_ok());
        seen.into_inner()
    }

    fn no_panic(src: &str, c: &Ctx) {
        match Condition::parse(src) {
            Ok(cond) => {
                let _ = cond.eval(c);
                let _ = names_of(&cond);
            }
            Err(e) => {
                let n = src.chars().count();
                assert!(e.position >= 1 && e.position <= n + 1, "{src:?} -> {e:?}");
                let _ = e.to_string();
            }
        }
    }

    #[test]
    fn no_panic_sweep() {
        let c = ctx();
        let seeds = [
            "time.hour >= 9 AND time.hour <= 17",
            "request.headers.x-recipient-domain in ['example.com', \"ex\\\"ample.org\"]",
            "NOT (a == -1.5 || b != 'x\\n') && !t",
            "agent.claims.department not in allowed.domains OR (f AND a IN [1, 2, true,])",
            "'héllo wörld ✓' == unicode and 😀 < 3",
        ];
        for seed in seeds {
            let chars: Vec<char> = seed.chars().collect();
            for i in 0..=chars.len() {
                let prefix: String = chars[..i].iter().collect();
                no_panic(&prefix, &c);
                let suffix: String = chars[i..].iter().collect();
                no_panic(&suffix, &c);
            }
            for i in 0..chars.len() {
                let deleted: String = chars
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, ch)| ch)
                    .collect();
                no_panic(&deleted, &c);
                for ins in ['(', ')', '"', '\'', '\\', '-', '.', '!', '=', '[', ']', 'é'] {
                    let mut inserted = chars.clone();
                    inserted.insert(i, ins);
                    no_panic(&inserted.iter().collect::<String>(), &c);
                }
            }
        }
        // Pseudo-random garbage from a fixed LCG, over an alphabet of interesting characters.
        let alphabet: Vec<char> =
            "aZ_09.-()[],'\"\\=!<>&| \t\nANDORNOTinnull trueé✓😀\u{0}\u{feff}"
                .chars()
                .collect();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 58) as usize;
            let mut src = String::new();
            for _ in 0..len {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                src.push(alphabet[(state >> 33) as usize % alphabet.len()]);
            }
            no_panic(&src, &c);
        }
        for weird in [
            "\u{0}",
            "\u{feff}a == 1",
            "\r\n",
            "((((",
            "))))",
            "[[[",
            "\\",
            "'",
            "-",
        ] {
            no_panic(weird, &c);
        }
    }
}
